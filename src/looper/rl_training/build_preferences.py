"""build-preferences: the best vs the worst trajectory of each question become a chosen/rejected pair.

    looper build-preferences configs/demo.yaml
    python -m looper.rl_training.build_preferences configs/demo.yaml preferences.min_margin=0.2

Reads ``data/rl_rollouts.jsonl`` and writes ``data/preferences.jsonl``: TRL's explicit-prompt format
(``prompt``, ``chosen``, ``rejected``), the plan's names (``question``, ``better``, ``worse``) and
metadata (id, both arms, both rewards). A pair is kept when the reward gap is at least
``preferences.min_margin`` (and, with ``require_correct_chosen``, only if chosen is correct and
rejected is not). ``max_pairs_per_question > 1`` adds correct x incorrect pairs, largest gaps first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from looper.config import PreferencesConfig, RunConfig
from looper.prompts import preference_completion, preference_prompt
from looper.regime_w.arms import build_all_arms
from looper.runs import InputError, atomic_write_jsonl, check_stage, finish_stage, read_jsonl, stage_marker, start_stage

STAGE = "build-preferences"


def select_pairs(rewards: Sequence[float], correct: Sequence[bool], cfg: PreferencesConfig) -> tuple[list[tuple[int, int]], str]:
    """Indices (chosen, rejected) for one question's trajectories, and why none when empty.

    Ties in reward go to the earlier trajectory for chosen and the later one for rejected, so the
    result is deterministic.
    """
    n = len(rewards)
    if n < 2:
        return [], "fewer than 2 trajectories"
    order = sorted(range(n), key=lambda i: (-rewards[i], i))
    candidates = [(order[0], order[-1])]
    if cfg.max_pairs_per_question > 1:
        good = [i for i in order if correct[i]]
        bad = [i for i in order if not correct[i]]
        candidates += sorted(((g, b) for g in good for b in bad), key=lambda p: -(rewards[p[0]] - rewards[p[1]]))
    pairs, seen = [], set()
    reason = "reward gap below min_margin"
    for chosen, rejected in candidates:
        if (chosen, rejected) in seen:
            continue
        seen.add((chosen, rejected))
        if rewards[chosen] - rewards[rejected] < cfg.min_margin:
            continue
        if cfg.require_correct_chosen and not (correct[chosen] and not correct[rejected]):
            reason = "no correct-vs-incorrect pair"
            continue
        pairs.append((chosen, rejected))
        if len(pairs) >= cfg.max_pairs_per_question:
            break
    return pairs, ("" if pairs else reason)


def main(config: RunConfig) -> None:
    from looper.runs import RunDir

    run = RunDir(config.run_dir)
    if check_stage(run, STAGE, config):
        print(f"build-preferences: {run.preferences} is complete for this config; nothing to do")
        return
    if not run.rollouts.exists():
        raise InputError(f"{run.rollouts}: no rollouts yet; run `looper collect-rollouts` first")
    marker = stage_marker(run, "collect-rollouts")
    records = read_jsonl(run.rollouts, required=("id", "question", "gold", "trajectories"))
    if not records:
        raise InputError(f"{run.rollouts}: no rollout records")
    if marker is None:
        print(f"build-preferences: note: {run.rollouts} is from an unfinished collect-rollouts run ({len(records)} questions)")
    build_all_arms(config.regime_w)  # validates the config's arm changes before any work
    fmt = config.model.prompt_format
    pairs, reasons = [], Counter()
    for rec in records:
        trajs = rec["trajectories"]
        chosen_rejected, why = select_pairs([t["reward"] for t in trajs], [bool(t["parts"]["correct"] == 1.0) for t in trajs],
                                            config.preferences)
        if not chosen_rejected:
            reasons[why] += 1
        for ci, ri in chosen_rejected:
            chosen, rejected = trajs[ci], trajs[ri]
            # DPO trains the policy on the plan's SFT prompt: the chosen arm's system prompt would make
            # chosen and rejected come from different prompts, so both use the SFT system prompt.
            prompt = preference_prompt(rec["question"], config.model.system_prompt, fmt)
            pairs.append({
                "prompt": prompt, "chosen": preference_completion(chosen["text"], fmt),
                "rejected": preference_completion(rejected["text"], fmt),
                "question": rec["question"], "better": chosen["text"], "worse": rejected["text"],
                "id": rec["id"], "gold": rec["gold"],
                "chosen_arm": chosen["arm"], "rejected_arm": rejected["arm"],
                "chosen_reward": chosen["reward"], "rejected_reward": rejected["reward"],
                "chosen_correct": chosen["parts"]["correct"], "rejected_correct": rejected["parts"]["correct"],
            })
    if not pairs:
        raise InputError(f"no preference pairs from {len(records)} questions ({dict(reasons)}); "
                         "lower preferences.min_margin or collect more rollouts")
    run = start_stage(config, STAGE)
    atomic_write_jsonl(run.preferences, pairs)
    n_q = len({p["id"] for p in pairs})
    finish_stage(run, STAGE, config, pairs=len(pairs))
    print(f"build-preferences: {len(pairs)} pairs from {n_q} of {len(records)} questions -> {run.preferences}")
    for why, count in reasons.most_common():
        print(f"  no pair for {count} questions: {why}")


if __name__ == "__main__":
    from looper.cli import run_stage_module

    run_stage_module(main, __doc__)
