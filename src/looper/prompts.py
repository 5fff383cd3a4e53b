"""The one prompt template, shared by SFT, rollouts, GRPO/DPO and eval.

``plain`` (the plan's): ``{system}\\n\\nProblem: {question}\\n\\nSolution:``, completion `` {solution}``.
``chat``: system / user / assistant messages through the model's own chat template (instruct models).
``chat_user``: the same without a system message, the instruction opening the user turn (DeepSeek's advice
for its R1 models: no system prompt, every instruction in the user prompt).
A Regime W arm swaps in its own system prompt (instruction); nothing else changes.
"""

from __future__ import annotations

from typing import Any


def plain_prompt(question: str, system_prompt: str) -> str:
    return f"{system_prompt}\n\nProblem: {question.strip()}\n\nSolution:"


CHAT_FORMATS = ("chat", "chat_user")


def chat_messages(question: str, system_prompt: str, in_user: bool = False) -> list[dict[str, str]]:
    if in_user:
        return [{"role": "user", "content": f"{system_prompt}\n\n{question.strip()}"}]
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question.strip()}]


def sft_example(question: str, solution: str, system_prompt: str, prompt_format: str) -> dict[str, Any]:
    """One TRL prompt-completion example (loss on the completion only)."""
    if prompt_format in CHAT_FORMATS:
        return {"prompt": preference_prompt(question, system_prompt, prompt_format),
                "completion": [{"role": "assistant", "content": solution.strip()}]}
    return {"prompt": plain_prompt(question, system_prompt), "completion": " " + solution.strip()}


def render_prompt(tokenizer: Any, question: str, system_prompt: str, prompt_format: str) -> str:
    """The prompt as text, ready to tokenize for generation (chat: with the generation prompt)."""
    return render_messages(tokenizer, preference_prompt(question, system_prompt, prompt_format))


def render_messages(tokenizer: Any, prompt: Any) -> str:
    """A ``preference_prompt`` as generation text: a message list through the chat template, or the text itself."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


def preference_prompt(question: str, system_prompt: str, prompt_format: str) -> Any:
    """Prompt field of a TRL preference / GRPO example (text, or a message list for chat)."""
    if prompt_format in CHAT_FORMATS:
        return chat_messages(question, system_prompt, in_user=prompt_format == "chat_user")
    return plain_prompt(question, system_prompt)


def preference_completion(text: str, prompt_format: str) -> Any:
    return [{"role": "assistant", "content": text.strip()}] if prompt_format in CHAT_FORMATS else " " + text.strip()
