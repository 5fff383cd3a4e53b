"""How often a model's samples are right, from a run's slim sample files (gold-scored by the one answer checker).

    python bench/sample_accuracy.py docs/bench/qwen2.5-coder-1.5b_h100_2026-12-07 [--out summary.json]

Reads ``sft_self_samples_slim.jsonl.gz`` (``sft.data: self``: the base model's samples of each training question,
each marked correct / truncated) and ``rl_rollouts_slim.jsonl.gz`` (collect-rollouts: one trajectory per Regime W arm,
with its extracted answer), both written from a run folder by keeping those fields of ``data/sft_self_samples.jsonl``
and ``data/rl_rollouts.jsonl``. Prints and writes: the share of samples right, of questions with at least one right
(pass@k), per arm, and how often the arms' majority answer (ties: the first answer to reach the top count, in arm
order) is right (maj@k), against the mean single arm.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def self_samples(rows: list[dict]) -> dict:
    samples = [s for r in rows for s in r["samples"]]
    return {
        "questions": len(rows),
        "samples": len(samples),
        "correct": round(sum(s["correct"] for s in samples) / len(samples), 4),
        "truncated": round(sum(s["truncated"] for s in samples) / len(samples), 4),
        "questions_with_a_correct_sample": round(
            sum(any(s["correct"] for s in r["samples"]) for r in rows) / len(rows), 4
        ),
        "samples_per_question": len(samples) // len(rows),
    }


def rollouts(rows: list[dict]) -> dict:
    per_arm: dict[str, list[dict]] = defaultdict(list)
    majority_right = 0
    for r in rows:
        for t in r["trajectories"]:
            per_arm[t["arm"]].append(t)
        votes = Counter(t["answer"] for t in r["trajectories"] if t["answer"] is not None)
        if votes:
            top = max(votes.values())
            answer = next(
                t["answer"] for t in r["trajectories"] if t["answer"] is not None and votes[t["answer"]] == top
            )
            majority_right += any(t["answer"] == answer and t["correct"] == 1.0 for t in r["trajectories"])
    arms = {
        arm: {
            "correct": round(sum(t["correct"] == 1.0 for t in ts) / len(ts), 4),
            "truncated": round(sum(t["truncated"] for t in ts) / len(ts), 4),
            "mean_tokens": round(sum(t["num_tokens"] for t in ts) / len(ts), 1),
        }
        for arm, ts in per_arm.items()
    }
    every = [t for ts in per_arm.values() for t in ts]
    return {
        "questions": len(rows),
        "trajectories": len(every),
        "arms": arms,
        "correct": round(sum(t["correct"] == 1.0 for t in every) / len(every), 4),
        "pass_at_arms": round(sum(any(t["correct"] == 1.0 for t in r["trajectories"]) for r in rows) / len(rows), 4),
        "majority_of_arms_correct": round(majority_right / len(rows), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", type=Path, help="holds sft_self_samples_slim.jsonl.gz and / or rl_rollouts_slim.jsonl.gz"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    summary = {}
    if (args.folder / "sft_self_samples_slim.jsonl.gz").exists():
        summary["self_samples"] = self_samples(read(args.folder / "sft_self_samples_slim.jsonl.gz"))
    if (args.folder / "rl_rollouts_slim.jsonl.gz").exists():
        summary["rollouts"] = rollouts(read(args.folder / "rl_rollouts_slim.jsonl.gz"))
    if not summary:
        parser.error(f"{args.folder}: neither sft_self_samples_slim.jsonl.gz nor rl_rollouts_slim.jsonl.gz")
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
