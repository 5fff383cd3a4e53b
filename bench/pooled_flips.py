"""Several independent runs of one comparison (e.g. SFT -> RL on GSM8K test), read together.

    python bench/pooled_flips.py docs/bench/pipeline_default_run1_smollm2_gpu_h200.json \
        docs/bench/pipeline_default_run2_smollm2_gpu_h200.json docs/bench/rl_recipes_smollm2_h200.json:c_dpo_rounds

Each source is an eval ``summary.json``, a JSON file holding one under ``eval_summary`` or ``summary``, an
``rl_recipes`` output followed by ``:<recipe>``, or a run kept as counts only (``wrong_to_right`` and
``right_to_wrong`` numbers, e.g. ``docs/bench/pipeline_default_run4_smollm2_gpu_h200_counts.json``): such a run
enters the pooled flips and Fisher's combination but not the per-question sum, which needs question ids. For the comparison ``--a`` -> ``--b`` on ``--dataset`` it prints
each run's flips (wrong->right / right->wrong, question ids from the summary) and exact McNemar p, then three ways
of reading the runs together:

- per question: each question's net change summed over the runs (+1 per wrong->right, -1 per right->wrong), and an
  exact two-sided sign test over the questions whose sum is not 0. The runs score the same test questions, so this
  keeps a question that flips in several runs as one observation;
- all flips pooled: the flips of every run in one exact two-sided sign test (treats them as independent);
- Fisher's combination of each run's one-sided exact p (chi-squared with 2 x runs degrees of freedom).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from looper.stats import binomial_half_cdf, mcnemar_exact


def load_summary(source: str) -> dict[str, Any]:
    path, _, recipe = source.partition(":")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read it as JSON ({err})") from None
    if recipe:
        match = [r for r in data.get("results", []) if r.get("recipe") == recipe]
        if not match or "summary" not in match[0]:
            raise SystemExit(f"{path}: no finished recipe {recipe!r}")
        return match[0]["summary"]
    if "wrong_to_right" in data or "right_to_wrong" in data:  # a run kept as counts only
        counts = [data.get(k) for k in ("wrong_to_right", "right_to_wrong")]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise SystemExit(
                f"{path}: wrong_to_right and right_to_wrong must both be counts (integers >= 0), "
                f"not {counts[0]!r} and {counts[1]!r}"
            )
        return data
    for key in ("eval_summary", "summary"):
        if key in data:
            return data[key]
    if "comparisons" not in data:
        raise SystemExit(f"{path}: not an eval summary (no 'comparisons')")
    return data


def flips(
    summary: dict[str, Any], a: str, b: str, dataset: str, metric: str
) -> tuple[list[str], list[str]] | tuple[int, int]:
    """The question ids that flipped each way, or their counts for a run kept as counts only."""
    if "comparisons" not in summary:
        return summary["wrong_to_right"], summary["right_to_wrong"]
    comps = summary["comparisons"].get(dataset, [])
    comp = next((c for c in comps if c["a"] == a and c["b"] == b), None)
    if comp is None:
        raise SystemExit(f"no {a} -> {b} comparison on {dataset}")
    return list(comp[metric]["wrong_to_right"]), list(comp[metric]["right_to_wrong"])


def fisher_combined(ps: list[float]) -> float:
    """Fisher's method: P(chi2 with 2 len(ps) df >= -2 sum ln p), in closed form for even degrees of freedom."""
    half = -sum(math.log(p) for p in ps)  # x / 2
    return math.exp(-half) * sum(half**i / math.factorial(i) for i in range(len(ps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--a", default="sft")
    parser.add_argument("--b", default="rl")
    parser.add_argument("--dataset", default="gsm8k_test")
    parser.add_argument("--metric", default="strict", choices=["strict", "flexible"])
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()

    net: Counter[str] = Counter()
    runs, one_sided, counts_only = [], [], []
    for source in args.sources:
        up, down = flips(load_summary(source), args.a, args.b, args.dataset, args.metric)
        if isinstance(up, int):
            counts_only.append(source)
            n_up, n_down = up, down
        else:
            net.update({q: 1 for q in up})
            net.subtract({q: 1 for q in down})
            n_up, n_down = len(up), len(down)
        runs.append(
            {
                "source": source,
                "wrong_to_right": n_up,
                "right_to_wrong": n_down,
                "p_two_sided": mcnemar_exact(n_up, n_down),
                "question_ids": not isinstance(up, int),
            }
        )
        one_sided.append(binomial_half_cdf(n_down, n_up + n_down))  # P(X >= up): the one-sided exact p
        print(
            f"{source}: {n_up} / {n_down} flips, McNemar p = {runs[-1]['p_two_sided']:.3g}"
            + (" (counts only)" if isinstance(up, int) else "")
        )
    better = sum(1 for v in net.values() if v > 0)
    worse = sum(1 for v in net.values() if v < 0)
    up_all, down_all = sum(r["wrong_to_right"] for r in runs), sum(r["right_to_wrong"] for r in runs)
    result = {
        "comparison": f"{args.a} -> {args.b} on {args.dataset} ({args.metric})",
        "runs": runs,
        "per_question": {
            "better": better,
            "worse": worse,
            "p_two_sided": mcnemar_exact(better, worse),
            "runs_left_out": counts_only,
        },
        "pooled_flips": {
            "wrong_to_right": up_all,
            "right_to_wrong": down_all,
            "p_two_sided": mcnemar_exact(up_all, down_all),
        },
        "fisher_one_sided": fisher_combined(one_sided),
    }
    print(
        f"per question, net over {len(runs) - len(counts_only)} runs: {better} better / {worse} worse, sign test p = "
        f"{result['per_question']['p_two_sided']:.3g}"
        + (f" ({len(counts_only)} counts-only run(s) left out)" if counts_only else "")
    )
    print(f"all flips pooled: {up_all} / {down_all}, p = {result['pooled_flips']['p_two_sided']:.3g}")
    print(f"Fisher's combination of one-sided p: {result['fisher_one_sided']:.3g}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
