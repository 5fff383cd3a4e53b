"""build-preferences: the best vs the worst trajectory of each question become a chosen/rejected pair.

    looper build-preferences configs/demo.yaml
    python -m looper.rl_training.build_preferences configs/demo.yaml preferences.min_margin=0.2

Reads ``data/rl_rollouts.jsonl`` and writes ``data/preferences.jsonl``: TRL's explicit-prompt format
(``prompt``, ``chosen``, ``rejected``), the plan's names (``question``, ``better``, ``worse``; docs/plan.md §5) and
metadata (id, both arms, both rewards). train-rl trains on the prompt rendered as generation saw it
and the ``better`` / ``worse`` texts verbatim (a reasoning model's chat template would cut the
message-form answers at ``</think>``). A pair is kept when the reward gap is at least
``preferences.min_margin`` (and, with ``require_correct_chosen``, only if chosen is correct and
rejected is not). ``max_pairs_per_question > 1`` adds correct x incorrect pairs, largest gaps first. A
trajectory cut off at the token limit is never chosen (TRL would append EOS to it: DPO would teach the
policy to stop mid-answer); it may be rejected.

``preferences.correctness_only``: the same rollouts ranked by gold correctness alone (1 or 0), Regime W's
parts left out: the control that asks whether they add anything (docs/results.md, "Regime W against correctness
alone"). Equal rewards are then the rule, so the trajectories are visited in an order drawn from the seed and the
question id: otherwise the first arm's correct answer would always be chosen and the last arm's wrong one rejected.

``preferences.random_rewards``: the random-reward control. Each trajectory's reward is drawn uniformly from [0, 1)
with the seed and the question id, so the pairs keep the recipe's shape (best vs worst, truncated never chosen) but
carry no information about the answers: a gain of Regime W over this control is a gain of its ranking, not of DPO
on the model's own samples (Spurious Rewards, arXiv 2506.10947, saw Qwen2.5-Math improve under random rewards).

``preferences.label_free``: no gold. Each question's trajectories are re-scored from their saved
texts with the Regime W reward's label-free form (the consensus answer, trusted as much as s_wm,
replaces correctness; "correct" then means "agrees with the consensus"), so the same rollouts serve
both modes. Gold is kept in the pairs' metadata for reporting only.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from looper.config import RunConfig
from looper.errors import InputError
from looper.files import atomic_write_jsonl, require_input
from looper.prompts import preference_completion, question_prompt
from looper.regime_w.arms import build_all_arms
from looper.regime_w.pairs import select_pairs
from looper.regime_w.records import read_rollouts
from looper.regime_w.reward import trajectory_rewards
from looper.runs import RunDir, Stage, stage_marker

STAGE = "build-preferences"


def ranking(record: dict[str, Any], config: RunConfig) -> tuple[list[float], list[bool]]:
    """Each trajectory's reward and whether it counts as correct: as collected (the Regime W reward with gold),
    gold correctness alone (``preferences.correctness_only``), drawn at random (``preferences.random_rewards``;
    correct is gold's, for reporting), or re-scored without gold (``preferences.label_free``: correct = agrees with
    the s_wm-weighted consensus)."""
    trajs = record["trajectories"]
    correct = [t["parts"]["correct"] == 1.0 for t in trajs]
    if config.preferences.correctness_only:
        return [float(c) for c in correct], correct
    if config.preferences.random_rewards:
        draw = random.Random(f"{config.seed}:{record['id']}:random-rewards")
        return [draw.random() for _ in trajs], correct
    if not config.preferences.label_free:
        return [t["reward"] for t in trajs], correct
    _, rewards = trajectory_rewards(trajs, None, config.regime_w)  # the saved records, re-scored
    return [r.reward for r in rewards], [r.agree for r in rewards]


def visiting_order(record: dict[str, Any], config: RunConfig) -> list[int]:
    """The order in which a question's trajectories are offered to ``select_pairs`` (which breaks reward ties by
    it): as collected, or under ``correctness_only`` a permutation drawn from the seed and the question id."""
    n = len(record["trajectories"])
    if not config.preferences.correctness_only:
        return list(range(n))
    return random.Random(f"{config.seed}:{record['id']}").sample(range(n), n)


def question_pairs(rec: dict[str, Any], config: RunConfig) -> tuple[list[dict[str, Any]], str | None]:
    """One question's chosen/rejected pairs (``select_pairs`` on its ranking, visited in ``visiting_order``), each in
    TRL's explicit-prompt format with the plan's names and metadata; with none, why not."""
    trajs = rec["trajectories"]
    rewards, correct = ranking(rec, config)
    order = visiting_order(rec, config)
    picked, why = select_pairs(
        [rewards[i] for i in order],
        [correct[i] for i in order],
        config.preferences,
        [trajs[i]["truncated"] for i in order],
    )
    fmt = config.model.prompt_format
    # DPO trains the policy on the plan's SFT prompt (docs/plan.md §2, §5): the chosen arm's system prompt would make
    # chosen and rejected come from different prompts, so both use the SFT system prompt.
    prompt = question_prompt(rec["question"], config.model.system_prompt, fmt)
    pairs = []
    for ci, ri in ((order[c], order[r]) for c, r in picked):
        chosen, rejected = trajs[ci], trajs[ri]
        pairs.append(
            {
                "prompt": prompt,
                "chosen": preference_completion(chosen["text"], fmt),
                "rejected": preference_completion(rejected["text"], fmt),
                "question": rec["question"],
                "better": chosen["text"],
                "worse": rejected["text"],
                "id": rec["id"],
                "gold": rec["gold"],
                "chosen_arm": chosen["arm"],
                "rejected_arm": rejected["arm"],
                "chosen_reward": rewards[ci],
                "rejected_reward": rewards[ri],
                "chosen_correct": chosen["parts"]["correct"],
                "rejected_correct": rejected["parts"]["correct"],
            }
        )
    return pairs, (None if pairs else why)


def main(config: RunConfig, run: RunDir | None = None) -> None:
    run = run or RunDir.of(config)
    stage = Stage(config, STAGE, run, output=run.preferences)
    if stage.done():
        return
    require_input(run.rollouts, "collect-rollouts")
    marker = stage_marker(run, "collect-rollouts")
    records = read_rollouts(run.rollouts, required=("id", "question", "gold", "trajectories"), scored=True)
    if marker is None:
        print(
            f"build-preferences: note: {run.rollouts} is from an unfinished collect-rollouts run ({len(records)} questions)"
        )
    build_all_arms(config.regime_w)  # validates the config's arm changes before any work
    pairs, reasons = [], Counter()
    for rec in records:
        made, why = question_pairs(rec, config)
        pairs += made
        if not made:
            reasons[why] += 1
    if not pairs:
        hint = (
            "raise rollouts.max_new_tokens (a truncated trajectory is never chosen)"
            if set(reasons) <= {"every trajectory truncated", "no untruncated trajectory ranks above another"}
            else "lower preferences.min_margin or collect more rollouts"
        )
        raise InputError(f"no preference pairs from {len(records)} questions ({dict(reasons)}); {hint}")
    run = stage.start()
    atomic_write_jsonl(run.preferences, pairs)
    n_q = len({p["id"] for p in pairs})
    stage.finish(pairs=len(pairs), questions=n_q)
    clean = sum(p["chosen_correct"] == 1.0 and p["rejected_correct"] != 1.0 for p in pairs)
    print(
        f"build-preferences: {len(pairs)} pairs from {n_q} of {len(records)} questions -> {run.preferences}; "
        f"by gold, chosen correct and rejected wrong in {clean} ({clean / len(pairs):.0%})"
    )
    for why, count in reasons.most_common():
        print(f"  no pair for {count} questions: {why}")


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "build-preferences")
