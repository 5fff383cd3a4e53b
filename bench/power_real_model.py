"""The power figures of the real-model Regime W comparison's registration (issue 46, docs/results.md), computed from
the per-question eval files of Qwen2.5-Coder-1.5B-Instruct's first runs.

    python bench/power_real_model.py --out docs/bench/registration_power_qwen.json

The primary metric is greedy flexible accuracy on the full GSM8K test, paired per question. What decides how small a
difference the comparison can see is the spread of the per-question change between two arms (+1, -1 or 0 for one
greedy answer each). No two RL arms of this model have been scored yet, so the spread is taken from the nearest
measured pairs of one recipe: SFT -> RL (DPO + NLL, lr 1e-4) and SFT -> RL (lr 2e-5) on GSM8K dev, the two RL
policies against each other on dev, and base -> SFT on test. For each: the flips, the sd of a question's change,
and the difference detectable with 80% power at alpha 0.05 on the 1,319 test questions,
(z_0.975 + z_0.8) x sd / sqrt(n) (``looper.stats.paired_difference``' ``detectable_80``); pooled over three seeds
(each question's change averaged over the seeds, the seeds' changes taken independent) the sd shrinks by sqrt(3),
an optimistic bound: seeds of one recipe share questions that are hard for all.

Standard library and looper only; runs in a second on any CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
from eval_files import read_records  # noqa: E402

from looper.stats import Z80, Z95, paired_difference  # noqa: E402

RUNS = "docs/bench/qwen2.5-coder-1.5b_h100_2026-12-07_recipe"
PAIRS = {  # name: (file of A, file of B), B minus A
    "dev: SFT -> RL lr 1e-4": ("run_a/sft__gsm8k_dev.jsonl.gz", "run_b/rl__gsm8k_dev.jsonl.gz"),
    "dev: SFT -> RL lr 2e-5": ("run_a/sft__gsm8k_dev.jsonl.gz", "run_a/rl__gsm8k_dev.jsonl.gz"),
    "dev: RL lr 2e-5 -> RL lr 1e-4": ("run_a/rl__gsm8k_dev.jsonl.gz", "run_b/rl__gsm8k_dev.jsonl.gz"),
    "test: base -> SFT": ("run_a/base__gsm8k_test.jsonl.gz", "run_a/sft__gsm8k_test.jsonl.gz"),
}
TEST_QUESTIONS, SEEDS = 1319, 3


def correct_by_id(path: Path) -> dict[str, float]:
    return {r["id"]: float(r["correct_flexible"]) for r in read_records(path)}


def compute(root: Path) -> dict[str, Any]:
    z = Z95 + Z80
    pairs = {}
    for name, (a_file, b_file) in PAIRS.items():
        a, b = correct_by_id(root / RUNS / a_file), correct_by_id(root / RUNS / b_file)
        if set(a) != set(b):
            raise SystemExit(f"{name}: the two files score different questions")
        ids = sorted(a)
        d = paired_difference([a[i] for i in ids], [b[i] for i in ids])
        sd = d["detectable_80"] / z * math.sqrt(len(ids))
        pairs[name] = {
            "files": [f"{RUNS}/{a_file}", f"{RUNS}/{b_file}"],
            "questions": len(ids),
            "accuracy_a": sum(a.values()) / len(ids),
            "accuracy_b": sum(b.values()) / len(ids),
            "wrong_to_right": sum(a[i] == 0 and b[i] == 1 for i in ids),
            "right_to_wrong": sum(a[i] == 1 and b[i] == 0 for i in ids),
            "sd_change": sd,
            "detectable_80_test_per_seed_points": 100 * z * sd / math.sqrt(TEST_QUESTIONS),
            "detectable_80_test_pooled_points": 100 * z * sd / math.sqrt(SEEDS * TEST_QUESTIONS),
        }
    return {"inputs": {"test_questions": TEST_QUESTIONS, "seeds": SEEDS, "z_0.975 + z_0.8": z}, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "registration_power_qwen.json")
    args = parser.parse_args()
    result = compute(REPO)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, p in result["pairs"].items():
        print(
            f"{name}: {100 * p['accuracy_a']:.2f}% -> {100 * p['accuracy_b']:.2f}%, flips +{p['wrong_to_right']} "
            f"-{p['right_to_wrong']} of {p['questions']}, sd {p['sd_change']:.3f}; detectable at 80% power on test: "
            f"{p['detectable_80_test_per_seed_points']:.2f} points per seed, "
            f"{p['detectable_80_test_pooled_points']:.2f} pooled over {SEEDS} seeds"
        )


if __name__ == "__main__":
    main()
