"""Regime W diagnostics on saved rollouts, re-scored without generating again.

    looper regime-w report runs/demo/data/rl_rollouts.jsonl [--config configs/demo.yaml] [--out report.md]

1. Per arm: accuracy vs gold, agreement with the consensus, mean length, truncation rate.
2. How well each score predicts that the consensus answer is correct (AUROC against gold),
   s_wm against plain majority agreement (s_end alone); then the same per arm family: the consensus,
   majority share and s_wm of the compute arms alone and of the reflective arms alone (s_cf, which
   compares the two families, is 0 inside one), next to all arms.
3. Ablations: each reward part switched off, and how the chosen/rejected pairs would change.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

from looper.answers import answers_equal
from looper.config import RegimeWConfig, RunConfig
from looper.errors import InputError
from looper.files import atomic_write_text
from looper.regime_w.pairs import select_pairs
from looper.regime_w.records import read_rollouts
from looper.regime_w.reward import as_arm_outputs, check_reward_config, trajectory_rewards
from looper.stats import auroc, auroc_difference
from looper.tables import text_table

ABLATIONS = {
    "full": {},
    "no s_end": {"w_end": 0.0},
    "no s_path": {"w_path": 0.0},
    "no s_cf": {"w_cf": 0.0},
    "no consensus term": {"consensus_weight": 0.0},
    "no length penalty": {"length_penalty": 0.0},
    "no missing penalty": {"missing_penalty": 0.0},
    "no truncation penalty": {"truncation_penalty": 0.0},
}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


FAMILIES = {"all arms": None, "compute arms": "compute", "reflective arms": "reflective"}


def family_auroc(records: list[dict[str, Any]], cfg: RegimeWConfig, family: str | None) -> dict[str, Any]:
    """How well plain majority agreement (s_end) and s_wm predict a correct consensus answer, with the consensus
    taken over one family's trajectories (None: all): questions, consensus correct, the two AUROCs (None when
    the consensus is right on every question or on none) and ``s_wm_minus_majority``, their paired difference with
    its 95% CI and p (``looper.stats.auroc_difference``, DeLong's test; None with under two questions of a class)."""
    s_end, s_wm, labels = [], [], []
    for rec in records:
        outputs = [o for o in as_arm_outputs(rec["trajectories"]) if family is None or o.family == family]
        if not outputs:
            continue
        scores, _ = trajectory_rewards(outputs, rec.get("gold"), cfg)
        s_end.append(scores.s_end)
        s_wm.append(scores.s_wm)
        labels.append(answers_equal(scores.consensus, rec.get("gold")))
    return {
        "questions": len(labels),
        "consensus_correct": sum(labels),
        "auroc_majority": auroc(s_end, labels),
        "auroc_s_wm": auroc(s_wm, labels),
        "s_wm_minus_majority": auroc_difference(s_end, s_wm, labels),
    }


def _family_row(fam: dict[str, Any]) -> list[str]:
    a_end, a_wm = fam["auroc_majority"], fam["auroc_s_wm"]
    better = (
        "n/a" if a_end is None or a_wm is None else ("s_wm" if a_wm > a_end else "majority" if a_end > a_wm else "tie")
    )
    return [
        str(fam["questions"]),
        str(fam["consensus_correct"]),
        _fmt(a_end),
        _fmt(a_wm),
        auroc_difference_cell(fam.get("s_wm_minus_majority")),
        better,
    ]


def auroc_difference_cell(d: dict[str, Any] | None, missing: str = "n/a") -> str:
    """``stats.auroc_difference``'s result as one table cell: difference [95% CI], p."""
    if d is None:
        return missing
    return f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], p={d['p_value']:.2g}"


def build_report(records: list[dict[str, Any]], cfg: RegimeWConfig, config: RunConfig | None = None) -> str:
    prefs = (config or RunConfig()).preferences
    per_arm: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    score_rows: dict[str, list[float]] = defaultdict(list)
    consensus_correct: list[bool] = []
    correct_flags: list[list[bool]] = []  # re-scored correctness of each record's trajectories
    pairs_by_variant: dict[str, list[tuple[int, int] | None]] = {}
    for name, change in ABLATIONS.items():
        try:
            variant = dataclasses.replace(cfg, **change)
            pairs_by_variant[name] = []
            for rec in records:
                scores, rewards = trajectory_rewards(as_arm_outputs(rec["trajectories"]), rec.get("gold"), variant)
                chosen = select_pairs(
                    [r.reward for r in rewards],
                    [r.correct == 1.0 for r in rewards],
                    prefs,
                    [r.truncated for r in rewards],
                )[0]
                pairs_by_variant[name].append(chosen[0] if chosen else None)
                if name != "full":
                    continue
                consensus_correct.append(answers_equal(scores.consensus, rec.get("gold")))
                correct_flags.append([r.correct == 1.0 for r in rewards])
                for key in ("s_end", "s_path", "s_cf", "s_wm"):
                    score_rows[key].append(getattr(scores, key))
                for t, r in zip(rec["trajectories"], rewards):
                    stats = per_arm[t["arm"]]
                    stats["correct"].append(r.correct)
                    stats["agree"].append(float(r.agree))
                    stats["tokens"].append(t.get("num_tokens", 0))
                    stats["truncated"].append(float(t.get("truncated", False)))
                    stats["missing"].append(float(r.missing))
        except ValueError as err:  # e.g. an ablation that breaks the ordering guarantee
            pairs_by_variant.pop(name, None)
            print(f"regime-w report: ablation {name!r} skipped: {err}")
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    out = [
        f"# Regime W report\n\n{len(records)} questions, {sum(len(r['trajectories']) for r in records)} trajectories.\n",
        "## Per arm\n",
        "```",
        text_table(
            [
                [
                    arm,
                    f"{mean(s['correct']):.3f}",
                    f"{mean(s['agree']):.3f}",
                    f"{mean(s['tokens']):.0f}",
                    f"{mean(s['truncated']):.3f}",
                    f"{mean(s['missing']):.3f}",
                ]
                for arm, s in per_arm.items()
            ],
            ["arm", "accuracy", "agrees w/ consensus", "mean tokens", "truncated", "no answer"],
        ),
        "```\n",
        f"## Scores as predictors of a correct consensus answer\n\nConsensus correct on "
        f"{sum(consensus_correct)}/{len(consensus_correct)} questions. AUROC (0.5 = no signal):\n",
        "```",
        text_table(
            [[k, _fmt(auroc(v, consensus_correct)), f"{mean(v):.3f}"] for k, v in score_rows.items()],
            ["score", "AUROC", "mean"],
        ),
        "```",
        "s_end alone is plain majority agreement; s_wm is the combined score.\n",
        "Per arm family (consensus over that family's trajectories only):\n",
        "```",
        text_table(
            [[name, *_family_row(family_auroc(records, cfg, fam))] for name, fam in FAMILIES.items()],
            [
                "arms",
                "questions",
                "consensus correct",
                "AUROC majority (s_end)",
                "AUROC s_wm",
                "s_wm - majority [95% CI], p (DeLong)",
                "better",
            ],
        ),
        "```\n",
        "## Ablations: how the best-vs-worst pairs change\n",
        "```",
    ]
    full = pairs_by_variant.get("full", [])
    rows = []
    for name, pairs in pairs_by_variant.items():
        kept = sum(p is not None for p in pairs)
        changed = sum(p != f for p, f in zip(pairs, full))
        clean = 0
        for flags, p in zip(correct_flags, pairs):
            if p is not None:
                clean += flags[p[0]] and not flags[p[1]]
        rows.append([name, str(kept), str(changed), f"{clean / kept:.3f}" if kept else "n/a"])
    out += [
        text_table(
            rows, ["variant", "questions with a pair", "pairs changed vs full", "chosen correct & rejected wrong"]
        ),
        "```\n",
    ]
    return "\n".join(out)


def main(rollouts: str, config: RunConfig | None = None, out: str | None = None) -> None:
    cfg = config.regime_w if config else RegimeWConfig()
    check_reward_config(cfg)  # before reading: a bad config is one error line, not a failed ablation
    if out and Path(out).is_dir():
        raise InputError(f"--out {out}: a folder; give the report's file name")
    records = read_rollouts(Path(rollouts))
    text = build_report(records, cfg, config)
    print(text)
    if out:
        atomic_write_text(Path(out), text)
        print(f"written to {out}")
