"""collect-rollouts: every Regime W arm answers each training question with the SFT model; scored and saved.

    looper collect-rollouts configs/demo.yaml
    python -m looper.rl_training.collect_rollouts configs/demo.yaml rollouts.num_questions=500

Loads the base model plus ``checkpoints/lora_sft`` (or the full SFT checkpoint), renders each
(question, arm) prompt with the SFT template and the arm's system prompt, and sends every
(question, arm, sample) request through one engine (``looper.generation``: vLLM on a GPU where it is
installed, else transformers' generate; questions and arms mixed). Per-sample seeds come from (seed, question id, arm, sample), so
any trajectory can be replayed alone. Each question's record, with its trajectories, Regime W
scores and rewards, is appended whole to ``data/rl_rollouts.jsonl`` as soon as its last sample
ends: a killed run loses only the questions in flight, and rerunning skips the questions already
written (a torn last line is dropped with a warning). When all are done the file is rewritten in
question order.

Across GPUs: ``accelerate launch -m looper.cli collect-rollouts CONFIG`` (or torchrun) runs one
process per GPU; each takes every n-th question into its own shard file (resumable on its own) and
the main process merges the shards in question order, the same records as a single-GPU run.

Round k > 1 of iterative RL (``rl.rounds``, run by train-rl) calls this stage on ``rounds/<k>/``: it
samples round k-1's RL adapter on the next ``rollouts.num_questions`` training questions (wrapping
around the split), with seeds that also depend on the round.
"""

from __future__ import annotations

from typing import Any

from looper.config import RunConfig
from looper.errors import InputError
from looper.files import read_jsonl, require_input
from looper.generation import (
    GenRequest,
    GenResult,
    LazyEngine,
    generate_records,
    generation_speed,
    open_engine,
    resolve_engine,
)
from looper.modeling import load_tokenizer, peak_gpu_memory_gib, stage_weights
from looper.processes import Shards, derive_seed
from looper.prompts import render_prompt, template_opens_thought
from looper.regime_w.arms import build_all_arms
from looper.regime_w.reward import ArmOutput, check_reward_config, trajectory_rewards
from looper.runs import ResumableOutput, RunDir, Stage

STAGE = "collect-rollouts"


def round_questions(questions: list[dict[str, Any]], num_questions: int | None, round_: int) -> list[dict[str, Any]]:
    """The questions of one round: the first ``num_questions``, then the next ones round after round (wrapping)."""
    if num_questions is None or num_questions >= len(questions):
        return questions
    start = (round_ - 1) * num_questions % len(questions)
    return (questions[start:] + questions[:start])[:num_questions]


def build_record(
    question: dict[str, Any],
    results: list[GenResult],
    config: RunConfig,
    model_name: str,
    adapter: str | None,
    thought_open: bool = False,
) -> dict[str, Any]:
    """One question's record: every trajectory (a result keyed by (arm, sample, seed)) with its reward parts, and
    the question's scores. ``thought_open``: the prompts left a thought open (R1's template)."""
    outputs = [
        ArmOutput(res.key[0].name, res.key[0].family, res.text, res.num_tokens, res.truncated, thought_open)
        for res in results
    ]
    scores, rewards = trajectory_rewards(outputs, question["gold"], config.regime_w)
    trajectories = []
    for res, reward in zip(results, rewards):
        arm, sample, seed = res.key
        trajectories.append(
            {
                "arm": arm.name,
                "family": arm.family,
                "sample": sample,
                "temperature": arm.temperature,
                "top_p": arm.top_p,
                "seed": seed,
                "text": res.text,
                "reasoning": res.text.rsplit("####", 1)[0].strip(),
                "answer": reward.answer,
                "num_tokens": res.num_tokens,
                "truncated": res.truncated,
                "thought_open": thought_open,
                "reward": reward.reward,
                "parts": reward.parts(),
            }
        )
    return {
        "id": question["id"],
        "question": question["question"],
        "gold": question["gold"],
        "scores": {
            "consensus": scores.consensus,
            "s_end": scores.s_end,
            "s_path": scores.s_path,
            "s_cf": scores.s_cf,
            "s_wm": scores.s_wm,
        },
        "trajectories": trajectories,
        "model": model_name,
        "adapter": adapter,
        "seed": config.seed,
    }


def rollout_requests(
    q: dict[str, Any], arms: list[Any], tokenizer: Any, config: RunConfig, round_: int
) -> list[GenRequest]:
    """One question's generation requests: every arm's prompt, ``rollouts.samples_per_arm`` samples each, in arm order
    then sample, each keyed (arm, sample, seed) with a seed drawn from the run seed, question, arm, sample (and the
    round after the first), so that a resumed or resharded run samples the same answers."""
    requests = []
    for arm in arms:
        prompt = render_prompt(tokenizer, q["question"], arm.system_prompt, config.model.prompt_format)
        for s in range(config.rollouts.samples_per_arm):
            seed = derive_seed(config.seed, q["id"], arm.name, s, *([f"round{round_}"] if round_ > 1 else []))
            requests.append(GenRequest((arm, s, seed), prompt, arm.temperature, arm.top_p, seed))
    return requests


def main(config: RunConfig, run: RunDir | None = None, round_: int = 1) -> RunDir:
    run = run or RunDir.of(config)
    check_reward_config(config.regime_w)  # a config error before a missing input: it is what the user must fix first
    stage = Stage(config, STAGE, run, output=run.rollouts)
    if stage.done():
        return run
    questions = read_jsonl(require_input(run.train, "prepare-data"), required=("id", "question", "gold"))
    questions = round_questions(questions, config.rollouts.num_questions, round_)
    if not questions:
        raise InputError(f"{run.train}: no training questions")
    arms = build_all_arms(config.regime_w)
    shards = Shards()  # one process per GPU under accelerate launch / torchrun; else a single shard
    rollouts = ResumableOutput(run.rollouts, stage.settings, shards)
    rollouts.check()  # a partial collection resumes only under the settings that began it
    engine = resolve_engine(config.rollouts.engine, "rollouts.engine")
    _, adapter = stage_weights(config, run, "sft")  # a round's starting adapter in rounds > 1; checked before any write
    if shards.is_main:
        run = stage.start()
    if rollouts.complete:  # merged earlier, stopped before the completion marker
        if shards.is_main:
            stage.finish(questions=len(questions))
        return run
    my_file = rollouts.begin()
    tokenizer = load_tokenizer(config.model)
    adapter_name = str(adapter.relative_to(run.data_root)) if adapter else None
    thought_open = template_opens_thought(tokenizer, config.model.prompt_format)

    def requests_of(q: dict[str, Any]) -> list[GenRequest]:
        return rollout_requests(q, arms, tokenizer, config, round_)

    def record_of(q: dict[str, Any], results: list[GenResult]) -> dict[str, Any]:
        return build_record(q, results, config, config.model.name_or_path, adapter_name, thought_open)

    with LazyEngine(
        lambda: open_engine(config, run, "sft", engine, "rollouts", config.rollouts.max_new_tokens, tokenizer)
    ) as lazy:
        tally = generate_records(
            lazy,
            my_file,
            shards.mine(questions),
            requests_of,
            record_of,
            config.rollouts.max_new_tokens,
            f"rollouts{'' if shards.world == 1 else f' [{shards.rank}]'}",
        )
    per_process = shards.gather(
        {**tally, "seconds": round(tally["seconds"], 2), "peak_gpu_memory_gib": peak_gpu_memory_gib()}
    )
    records = rollouts.finish([q["id"] for q in questions])  # in question order; refuses a duplicate id
    if not shards.is_main:
        return run
    speed = generation_speed(per_process)
    stage.finish(questions=len(records), **speed)
    acc = sum(t["parts"]["correct"] == 1.0 for r in records for t in r["trajectories"])
    cut = sum(t["truncated"] for r in records for t in r["trajectories"])
    total = sum(len(r["trajectories"]) for r in records)
    print(
        f"collect-rollouts{f' (round {round_})' if round_ > 1 else ''}: {len(records)} questions x {total // max(1, len(records))} trajectories, "
        f"{acc / max(1, total):.1%} correct, {cut / max(1, total):.1%} truncated at {config.rollouts.max_new_tokens} tokens, "
        f"{speed['tokens_per_s']:,.0f} tokens/s over {shards.world} process(es) -> {run.rollouts}"
    )
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "collect-rollouts")
