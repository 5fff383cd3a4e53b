"""The power figures of docs/results.md's registration (issue 29), computed from their raw files.

    python bench/power.py --out docs/bench/registration_power.json

avg@16 (the primary metric): the SFT adapter's 16 samples per dev question
(``docs/bench/rl_recipes3_sft_samples16_dev_summary.json``: avg@16 = its ``pass@1``, and ``pass@16``) fitted by a
Beta(a, b) distribution of per-question success probability p matching both (mean a / (a + b) = avg@16, and
1 - E[(1 - p)^16] = pass@16); then the sd of p between questions and E[p(1 - p)] / 16, the sampling variance of a
question's avg@16. For a difference between two arms on one question, with their p correlated rho (0.8 or 0) and
their samples independent, var = 2 Var(p) (1 - rho) + 2 E[p(1 - p)] / 16; the smallest difference detectable with
80% power at alpha 0.05 is (z_0.975 + z_0.8) x sd / sqrt(n) (``looper.stats``' Z95 + Z80, as the runs'
``detectable_80``), n = 1,319 test questions, or 3 x 1,319 pooled over three seeds (the seeds' differences taken
independent).

Greedy strict: each default-recipe run's SFT -> RL flips (``docs/bench/pooled_default_recipe_4runs_test.json``)
as per-question changes (+1, -1 or 0 on 1,319 questions) through ``looper.stats.paired_difference``: the sd of a
question's change and the detectable difference per run.

Standard library and looper only; runs in a second on any CPU. tests/test_figures.py checks the registration's
figures against the output and the output against this script.
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
from looper.stats import Z80, Z95, paired_difference  # noqa: E402

SAMPLES = "docs/bench/rl_recipes3_sft_samples16_dev_summary.json"
FLIPS = "docs/bench/pooled_default_recipe_4runs_test.json"
TEST_QUESTIONS, SEEDS, K = 1319, 3, 16
CORRELATIONS = (0.8, 0.0)  # the arms' per-question success: strongly correlated, or not at all


def beta_fit(mean: float, pass_k: float, k: int) -> tuple[float, float]:
    """Beta(a, b) with mean ``mean`` and 1 - E[(1 - p)^k] = ``pass_k`` (bisection on a; pass@k rises with a)."""

    def pass_at(a: float) -> float:
        b = a * (1 - mean) / mean
        return 1 - math.exp(sum(math.log((b + i) / (a + b + i)) for i in range(k)))

    lo, hi = 1e-6, 1e4
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if pass_at(mid) < pass_k else (lo, mid)
    a = math.sqrt(lo * hi)
    return a, a * (1 - mean) / mean


def compute(samples: dict[str, Any], flips: dict[str, Any]) -> dict[str, Any]:
    strict = samples["metrics"]["sft"]["gsm8k_dev"]["strict"]
    mean, pass_k = strict["pass@1"], strict[f"pass@{K}"]
    a, b = beta_fit(mean, pass_k, K)
    var_p = a * b / ((a + b) ** 2 * (a + b + 1))
    sampling = a * b / ((a + b) * (a + b + 1)) / K  # E[p(1 - p)] / k
    z = Z95 + Z80
    arms = []
    for rho in CORRELATIONS:
        sd = math.sqrt(2 * var_p * (1 - rho) + 2 * sampling)
        arms.append(
            {
                "correlation": rho,
                "sd_difference": sd,
                "detectable_80_per_seed_points": 100 * z * sd / math.sqrt(TEST_QUESTIONS),
                "detectable_80_pooled_points": 100 * z * sd / math.sqrt(SEEDS * TEST_QUESTIONS),
            }
        )
    greedy = []
    for run in flips["runs"]:
        up, down = run["wrong_to_right"], run["right_to_wrong"]
        before = [0] * up + [1] * down + [0] * (TEST_QUESTIONS - up - down)
        after = [1] * up + [0] * down + [0] * (TEST_QUESTIONS - up - down)
        d = paired_difference(before, after)
        greedy.append(
            {
                "source": run["source"],
                "wrong_to_right": up,
                "right_to_wrong": down,
                "sd_change": d["detectable_80"] / z * math.sqrt(TEST_QUESTIONS),
                "detectable_80_points": 100 * d["detectable_80"],
            }
        )
    return {
        "inputs": {
            "samples": SAMPLES,
            "avg@16": mean,
            "pass@16": pass_k,
            "flips": FLIPS,
            "test_questions": TEST_QUESTIONS,
            "seeds": SEEDS,
            "z_0.975 + z_0.8": z,
        },
        "beta": {"a": a, "b": b, "sd_between_questions": math.sqrt(var_p), "sampling_variance": sampling},
        "avg16_difference": arms,
        "greedy": greedy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "registration_power.json")
    args = parser.parse_args()
    result = compute(json.loads((REPO / SAMPLES).read_text()), json.loads((REPO / FLIPS).read_text()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
