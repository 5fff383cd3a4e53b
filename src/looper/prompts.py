"""The one prompt template, shared by SFT, rollouts, GRPO/DPO and eval.

``plain`` (the plan's, docs/plan.md §2): ``{system}\\n\\nProblem: {question}\\n\\nSolution:``, completion `` {solution}``.
``chat``: system / user / assistant messages through the model's own chat template (instruct models).
``chat_user``: the same without a system message, the instruction opening the user turn (DeepSeek's advice
for its R1 models: no system prompt, every instruction in the user prompt).
A Regime W arm swaps in its own system prompt (instruction); nothing else changes.

Every stage, generating or training, sees a prompt as the text ``render_prompt`` returns, encoded by
``tokenizer(text)`` with its special tokens: the engines do, and TRL does for text examples, which is the
form every training path uses (prompt text + completion text, TRL appending the end-of-sequence token).
So training sees exactly the prompt tokens generation sees. Message-form examples would not: TRL renders
them through the chat template again, and a reasoning model's template (DeepSeek-R1's) renders the prompt
with ``<think>\\n`` only when it ends the prompt, and an assistant message only from its last ``</think>``.
"""

from __future__ import annotations

import datetime
from typing import Any

from looper.errors import InputError

# The date a chat template that writes one (Llama 3.1 / 3.2: "Today Date: ...") renders: fixed, so a prompt does not
# depend on the day it is rendered (SFT before midnight and eval after it would see different prompts; sglang #3296).
# 26 Jul 2024 is Llama 3.1's own fallback when no date is given.
TEMPLATE_DATE = datetime.date(2024, 7, 26)


PROBLEM_MARK, SOLUTION_MARK = "Problem:", "Solution:"  # the plain format's markers


def plain_prompt(question: str, system_prompt: str) -> str:
    return f"{system_prompt}\n\n{PROBLEM_MARK} {question.strip()}\n\n{SOLUTION_MARK}"


def format_restarts(prompt_text: str) -> tuple[str, ...]:
    """The text with which a completion of this rendered prompt begins the prompt's format again, where generation
    stops and the completion ends: ``PROBLEM_MARK`` for a plain prompt (a model that answers ``#### 72`` and goes on
    to invent ``Problem: ... #### 5`` would be scored 5; lm-eval's gsm8k task stops on its ``Question:`` the same
    way). Empty for the chat formats, whose turn ends on the template's end token, and for a prompt in no format of
    looper's (eval's deepseek protocol in plain text)."""
    return (PROBLEM_MARK,) if prompt_text.endswith(f"\n\n{SOLUTION_MARK}") else ()


def cut_at_restart(text: str, prompt_text: str) -> str | None:
    """``text`` (a completion of ``prompt_text``) up to where it begins the prompt's format again
    (``format_restarts``), or None where it does not. A copy of the prompt's own system prompt just before the
    marker is the restart's start and goes too (the plain format opens with it), and so does the blank line before."""
    starts = [i for i in (text.find(m) for m in format_restarts(prompt_text)) if i >= 0]
    if not starts:
        return None
    head = text[: min(starts)].rstrip()
    system = prompt_text.partition(f"\n\n{PROBLEM_MARK} ")[0].strip()
    if system and head.endswith(system):
        head = head[: -len(system)].rstrip()
    return head


CHAT_FORMATS = ("chat", "chat_user")


def chat_messages(question: str, system_prompt: str, in_user: bool = False) -> list[dict[str, str]]:
    if in_user:
        return [{"role": "user", "content": f"{system_prompt}\n\n{question.strip()}"}]
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question.strip()}]


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` puts the BOS token in front by itself (Llama 3 and the R1 distills do)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("1", add_special_tokens=True)["input_ids"][:1] == [bos]


def render_prompt(tokenizer: Any, question: str, system_prompt: str, prompt_format: str) -> str:
    """The prompt as text, ready for ``tokenizer(text)`` (chat: with the generation prompt)."""
    return render_messages(tokenizer, question_prompt(question, system_prompt, prompt_format))


def render_messages(tokenizer: Any, prompt: Any) -> str:
    """A ``question_prompt`` (text or messages) as text for ``tokenizer(text)``: a message list through the chat template with
    its generation prompt, or the text itself.

    A template that writes today's date renders ``TEMPLATE_DATE`` (its ``date_string``); one that reads the clock without
    taking a ``date_string`` is refused (InputError). A template that writes the BOS token (R1's, Llama 3's) loses it here
    when the tokenizer adds BOS on
    encoding too: encoded with special tokens, template text would start with two (the "chat template and
    tokenization don't compose" pitfall), and TRL encodes text examples with special tokens.
    """
    if isinstance(prompt, list):
        source = tokenizer.get_chat_template()
        # date_string is the variable Llama's templates read before they ask transformers' clock (strftime_now); a
        # template that asks the clock without it cannot be given a date (transformers passes no callable to a template)
        if "strftime_now" in source and "date_string" not in source:
            raise InputError(
                f"{tokenizer.name_or_path}: its chat template writes today's date (strftime_now) and takes no "
                "date_string, so its prompts would change with the day they are rendered; use "
                "model.prompt_format=plain or a tokenizer whose template takes date_string"
            )
        text = tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, date_string=TEMPLATE_DATE.strftime("%d %b %Y")
        )
    else:
        text = prompt
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and tokenizer_adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


def opens_thought(prompt_text: str) -> bool:
    """True when a rendered prompt ends inside a thought: an unclosed ``<think>`` (DeepSeek-R1's generation
    prompt ends ``<｜Assistant｜><think>\\n``). The completion then starts mid-thought, without an opening tag."""
    lower = prompt_text.lower()
    return lower.rfind("<think>") > lower.rfind("</think>")


def template_opens_thought(tokenizer: Any, prompt_format: str) -> bool:
    """Whether this tokenizer's prompts (in ``prompt_format``) leave a thought open; the same for every question."""
    return opens_thought(render_prompt(tokenizer, "1 + 1?", "", prompt_format))


def gold_completion(solution: str, prompt_format: str, thought_open: bool) -> str:
    """A GSM8K solution as the completion SFT trains on. After a prompt that opened a thought, the worked steps
    are the thought and the ``#### N`` line the answer after ``</think>``, as a reasoning model writes them
    (a completion that never closes the thought would give no answer)."""
    solution = solution.strip()
    if thought_open:
        steps, marker, answer = solution.rpartition("####")
        solution = f"{steps.strip()}\n</think>\n\n#### {answer.strip()}" if marker else f"\n</think>\n\n{solution}"
    return solution if prompt_format in CHAT_FORMATS else " " + solution


def sft_example(tokenizer: Any, question: str, solution: str, system_prompt: str, prompt_format: str) -> dict[str, str]:
    """One TRL prompt-completion text example (loss on the completion only): the prompt as generation renders
    it, the gold solution as ``gold_completion`` writes it."""
    prompt = render_prompt(tokenizer, question, system_prompt, prompt_format)
    return {"prompt": prompt, "completion": gold_completion(solution, prompt_format, opens_thought(prompt))}


# DeepSeek-R1's model card, usage recommendations: "For mathematical problems, it is advisable to include a directive
# in your prompt such as: 'Please reason step by step, and put your final answer within \boxed{}.'"
DEEPSEEK_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def deepseek_prompt(tokenizer: Any, question: str, prompt_format: str) -> str:
    """DeepSeek-R1's evaluation prompt (``eval.protocol: deepseek``): no system message, the question and then
    ``DEEPSEEK_MATH_INSTRUCTION`` in the user turn, rendered as ``render_prompt`` renders (plain text without a
    chat format)."""
    text = f"{question.strip()}\n{DEEPSEEK_MATH_INSTRUCTION}"
    return render_messages(tokenizer, [{"role": "user", "content": text}] if prompt_format in CHAT_FORMATS else text)


def question_prompt(question: str, system_prompt: str, prompt_format: str) -> Any:
    """The prompt of a question before rendering, for every stage (SFT, rollouts, DPO, GRPO, eval): text, or a
    message list for the chat formats; ``render_messages`` renders it."""
    if prompt_format in CHAT_FORMATS:
        return chat_messages(question, system_prompt, in_user=prompt_format == "chat_user")
    return plain_prompt(question, system_prompt)


def preference_completion(text: str, prompt_format: str) -> Any:
    return [{"role": "assistant", "content": text.strip()}] if prompt_format in CHAT_FORMATS else " " + text.strip()
