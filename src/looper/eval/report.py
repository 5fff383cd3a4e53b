"""Evaluation metrics, model comparisons and the report (summary.json, report.md, PNG plots)."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

from looper.answers import parse_number
from looper.files import atomic_write_json, atomic_write_text
from looper.stats import (
    holm,
    mcnemar_exact,
    mean_interval,
    paired_difference,
    pass_at_k,
    wilson_interval,
)
from looper.tables import markdown_table

MODES = ("strict", "flexible")


def _all_samples(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rec] + (rec.get("samples") or [])


def majority_correct(rec: dict[str, Any], mode: str) -> bool:
    """maj@k: the most common extracted answer among the k samples equals gold. Answers vote by value (``5`` and
    ``5.00`` are one answer); a sample with no extracted answer does not vote; a tie goes to the value seen first."""
    values = [parse_number(s[f"answer_{mode}"]) for s in _all_samples(rec) if s[f"answer_{mode}"] is not None]
    values = [v for v in values if v is not None]
    if not values:
        return False
    top = Counter(values).most_common(1)[0][0]  # most_common keeps first-seen order among equal counts
    return top == parse_number(rec["gold"])


def dataset_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    k = len(_all_samples(records[0])) if records else 1
    out: dict[str, Any] = {"n": n, "samples": k}
    for mode in MODES:
        correct = sum(r[f"correct_{mode}"] for r in records)
        lo, hi = wilson_interval(correct, n)
        out[mode] = {"correct": correct, "accuracy": correct / n if n else 0.0, "ci95": [lo, hi]}
        if k > 1:
            out[mode][f"maj@{k}"] = sum(majority_correct(r, mode) for r in records) / n
            out[mode][f"pass@{k}"] = (
                sum(pass_at_k(k, sum(s[f"correct_{mode}"] for s in _all_samples(r)), k) for r in records) / n
            )
            out[mode]["pass@1"] = (
                sum(pass_at_k(k, sum(s[f"correct_{mode}"] for s in _all_samples(r)), 1) for r in records) / n
            )
            mean, lo, hi = mean_interval(question_scores(records, mode))
            out[mode][f"avg@{k}"] = {"accuracy": mean, "ci95": [lo, hi]}  # = pass@1, with its interval
    out["truncation_rate"] = sum(r["truncated"] for r in records) / n if n else 0.0
    out["mean_tokens"] = sum(r["tokens"] for r in records) / n if n else 0.0
    return out


def question_scores(records: list[dict[str, Any]], mode: str) -> list[float]:
    """Each question's share of correct answers over its k samples (0 or 1 for one answer)."""
    return [sum(s[f"correct_{mode}"] for s in _all_samples(r)) / len(_all_samples(r)) for r in records]


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Paired comparison of model A and B on the same questions: the first answers' difference, exact McNemar and
    flips; and over all k samples (``paired``: per-question shares correct, ``stats.paired_difference``), which
    sees differences one greedy answer per question cannot, with the smallest difference the run could detect."""
    wrong_to_right = [x["id"] for x, y in zip(a, b) if not x[f"correct_{mode}"] and y[f"correct_{mode}"]]
    right_to_wrong = [x["id"] for x, y in zip(a, b) if x[f"correct_{mode}"] and not y[f"correct_{mode}"]]
    n = len(a)
    return {
        "difference": (len(wrong_to_right) - len(right_to_wrong)) / n if n else 0.0,
        "p_value": mcnemar_exact(len(right_to_wrong), len(wrong_to_right)),
        "wrong_to_right": wrong_to_right,
        "right_to_wrong": right_to_wrong,
        "paired": paired_difference(question_scores(a, mode), question_scores(b, mode)),
    }


def _plots(summary: dict[str, Any], out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, MaxNLocator
    except ImportError:
        return []
    made = []
    datasets = sorted({d for m in summary["metrics"].values() for d in m})
    models = list(summary["metrics"])
    fig, axes = plt.subplots(1, len(MODES), figsize=(5 * len(MODES), 3.6), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, mode in zip(axes[0], MODES):
        for i, model in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for j, d in enumerate(datasets):
                m = summary["metrics"][model].get(d)
                if m:
                    xs.append(j + i * width)
                    ys.append(100 * m[mode]["accuracy"])
                    # clamped: at 0% or 100% the Wilson bound and the accuracy can differ by a rounding error,
                    # and matplotlib refuses a negative error bar
                    lo.append(max(0.0, 100 * (m[mode]["accuracy"] - m[mode]["ci95"][0])))
                    hi.append(max(0.0, 100 * (m[mode]["ci95"][1] - m[mode]["accuracy"])))
            bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=model)
            # a model with no right answer has a bar of height 0, which draws nothing: a line in its colour at 0,
            # and the value on every bar (over its interval's line)
            color = bars.patches[0].get_facecolor() if bars.patches else None
            for x, y in zip(xs, ys):
                if y == 0:
                    ax.hlines(0, x - width / 2, x + width / 2, colors=[color], linewidth=3, clip_on=False)
                ax.text(
                    x,
                    y,
                    f"{y:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
                )
        ax.set_ylim(bottom=0)
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(datasets))], datasets)
        ax.set_ylabel(f"{mode} accuracy (%)")
        ax.set_title(f"{mode} accuracy, 95% Wilson intervals")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)
    made.append("accuracy.png")
    pairs = [(d, c) for d, comps in summary["comparisons"].items() for c in comps]
    if pairs:
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(pairs)), 3.6))
        labels = [f"{c['a']}→{c['b']}\n{d}" for d, c in pairs]
        up = [len(c["strict"]["wrong_to_right"]) for _, c in pairs]
        down = [len(c["strict"]["right_to_wrong"]) for _, c in pairs]
        ax.bar(range(len(pairs)), up, label="wrong → right")
        ax.bar(range(len(pairs)), [-n for n in down], label="right → wrong")
        ax.axhline(0, color="black", linewidth=0.8)
        for x, (u, d) in enumerate(zip(up, down)):  # each count written on its side of 0, a 0 too
            ax.text(x, u, f"{u}", ha="center", va="bottom", fontsize=7)
            ax.text(x, -d, f"{d}", ha="center", va="top", fontsize=7)
        # whole questions: integer ticks, counted both ways from 0 (right → wrong drawn downwards, labelled as a count)
        top = max(up + down + [1])
        ax.set_ylim(-1.25 * top, 1.25 * top)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):.0f}"))
        ax.set_xticks(range(len(pairs)), labels, fontsize=8)
        ax.set_ylabel("questions (strict)")
        ax.set_title("Flipped questions between models")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "flips.png", dpi=120)
        plt.close(fig)
        made.append("flips.png")
    return made


def _paired_cells(paired: dict[str, Any]) -> list[str]:
    lo, hi = paired["ci95"]
    return [
        f"{100 * paired['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
        f"{paired['p_value']:.3g}",
        f"{100 * paired['detectable_80']:.1f}",
    ]


def protocol_line(config: Any) -> str:
    ev = config.eval
    if ev.protocol == "deepseek":
        return (
            f"protocol deepseek (DeepSeek-R1's: no system prompt, \\boxed{{}} instruction, {ev.samples} samples per "
            "question at T=0.6, top_p=0.95; pass@1 = avg@k)"
        )
    if ev.protocol == "lm-eval":
        return "protocol lm-eval (lm-evaluation-harness's `gsm8k` task run by lm-eval itself: 5-shot, greedy)"
    how = "greedy" if ev.samples == 1 else f"{ev.samples} samples at T={ev.temperature}, top_p={ev.top_p}"
    return f"protocol looper (prompt format `{config.model.prompt_format}`, {how})"


def scoring_line(config: Any) -> str:
    """How a report's answers were generated and checked, for its header."""
    if config.eval.protocol == "lm-eval":
        from looper.eval.lm_eval_gsm8k import MAX_GEN_TOKS

        return (
            f"max {MAX_GEN_TOKS} new tokens (lm-eval's task setting). Answers extracted and scored by lm-eval: "
            "strict = its strict-match filter, flexible = its flexible-extract."
        )
    return (
        f"max {config.eval.max_new_tokens} new tokens. Answers checked by `looper.answers` (strict: `#### N`; "
        "flexible: also `\\boxed{}` and 'the answer is')."
    )


def reading_line(summary: dict[str, Any], mode: str, k: int) -> str:
    """One sentence on whether any two models differ beyond chance: each paired comparison's p (exact McNemar on
    one answer per question; with k samples, the paired test over all of them), Holm-adjusted over every comparison
    of the report, against 0.05. Empty with fewer than two models. A small run (the CPU demo's 30 questions, where
    one question is 3.3 points) mostly reads "noise", and should: its table alone can look as if a stage hurts."""
    found = [
        (d, c, c[mode]["paired"] if k > 1 else c[mode]) for d, comps in summary["comparisons"].items() for c in comps
    ]
    if not found:
        return ""
    adjusted = holm([x["p_value"] for _, _, x in found])
    beyond = [
        f"{c['a']} → {c['b']} on {d} ({100 * x['difference']:+.1f} pts, p {p:.2g})"
        for (d, c, x), p in zip(found, adjusted)
        if p < 0.05
    ]
    if beyond:
        return f"Beyond chance ({mode}, Holm-adjusted p < 0.05): {'; '.join(beyond)}; the other differences are noise."
    n = min(x["n"] for by_d in summary["metrics"].values() for d, x in by_d.items() if d in summary["comparisons"])
    return (
        f"No two models differ beyond chance ({mode}: Holm-adjusted p >= 0.05 in all {len(found)} paired "
        f"comparisons; at n={n} one question is {100 / n:.1f} points): read the differences as noise, not as a "
        "stage helping or hurting."
    )


def write_report(records: dict[str, dict[str, list[dict[str, Any]]]], config: Any, out_dir: Path) -> dict[str, Any]:
    """records[model][dataset] -> per-sample records (same question order for every model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {m: {d: dataset_metrics(rs) for d, rs in by_d.items()} for m, by_d in records.items()}
    comparisons: dict[str, list[dict[str, Any]]] = {}
    datasets = sorted({d for by_d in records.values() for d in by_d})
    for d in datasets:
        present = [m for m in records if d in records[m]]
        comparisons[d] = [
            {"a": a, "b": b, **{mode: compare(records[a][d], records[b][d], mode) for mode in MODES}}
            for a, b in combinations(present, 2)
        ]
    rows = []
    for m, by_d in metrics.items():
        for d, x in by_d.items():
            row = [m, d, str(x["n"])]
            for mode in MODES:
                lo, hi = x[mode]["ci95"]
                row.append(f"{100 * x[mode]['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
            row += [f"{100 * x['truncation_rate']:.1f}", f"{x['mean_tokens']:.0f}"]
            rows.append(row)
    header = ["model", "dataset", "n", "strict % [95% CI]", "flexible % [95% CI]", "truncated %", "mean tokens"]
    table = markdown_table(rows, header)
    comp_rows = [
        [
            d,
            f"{c['a']} → {c['b']}",
            f"{100 * c['strict']['difference']:+.1f}",
            f"{c['strict']['p_value']:.3g}",
            str(len(c["strict"]["wrong_to_right"])),
            str(len(c["strict"]["right_to_wrong"])),
            f"{100 * c['flexible']['difference']:+.1f}",
            f"{c['flexible']['p_value']:.3g}",
        ]
        for d, comps in comparisons.items()
        for c in comps
    ]
    comp_table = (
        markdown_table(
            comp_rows,
            [
                "dataset",
                "models",
                "strict Δ pts",
                "strict McNemar p",
                "wrong→right",
                "right→wrong",
                "flexible Δ pts",
                "flexible McNemar p",
            ],
        )
        if comp_rows
        else "(one model only)"
    )
    k = config.eval.samples
    headline = "flexible" if config.eval.protocol == "deepseek" else "strict"
    paired_rows = [
        [d, f"{c['a']} → {c['b']}", *_paired_cells(c[headline]["paired"])]
        for d, comps in comparisons.items()
        for c in comps
    ]
    paired_table = (
        markdown_table(
            paired_rows,
            ["dataset", "models", f"{headline} Δ avg@{k} pts [95% CI]", "paired p", "detectable Δ pts (80% power)"],
        )
        if paired_rows
        else ""
    )
    if k > 1:
        avg_rows = [
            [
                m,
                d,
                str(x["n"]),
                *(
                    f"{100 * x[mode][f'avg@{k}']['accuracy']:.1f} [{100 * x[mode][f'avg@{k}']['ci95'][0]:.1f}, "
                    f"{100 * x[mode][f'avg@{k}']['ci95'][1]:.1f}]"
                    for mode in MODES
                ),
            ]
            for m, by_d in metrics.items()
            for d, x in by_d.items()
        ]
        table = (
            markdown_table(
                avg_rows,
                [
                    "model",
                    "dataset",
                    "n",
                    f"strict avg@{k} (pass@1) % [95% CI]",
                    f"flexible avg@{k} (pass@1) % [95% CI]",
                ],
            )
            + "\n\nFirst sample of each question:\n\n"
            + table
        )
    summary = {
        "metrics": metrics,
        "comparisons": comparisons,
        "table": table + "\n\n" + comp_table + ("\n\n" + paired_table if paired_table else ""),
    }
    summary["reading"] = reading_line(summary, headline, k)
    plots = _plots(summary, out_dir)
    sampled = []
    for m, by_d in metrics.items():
        for d, x in by_d.items():
            k = x["samples"]
            if k > 1:
                parts = [
                    f"{mode} maj@{k} {100 * x[mode][f'maj@{k}']:.1f}%, pass@{k} {100 * x[mode][f'pass@{k}']:.1f}%"
                    for mode in MODES
                ]
                sampled.append(f"- {m}/{d}: " + "; ".join(parts))
    flips = [
        f"- {d}, {c['a']} → {c['b']} (strict): wrong→right {', '.join(c['strict']['wrong_to_right'][:20]) or '-'}; "
        f"right→wrong {', '.join(c['strict']['right_to_wrong'][:20]) or '-'}"
        for d, comps in comparisons.items()
        for c in comps
    ]
    md = [
        f"# Evaluation report: {config.name}\n",
        *([f"> {config.note}\n"] if config.note else []),
        (
            f"Model `{config.model.name_or_path}`, {protocol_line(config)}, {scoring_line(config)} "
            "Intervals: 95% Wilson (one answer), normal (avg@k). "
            "p: exact McNemar on paired questions (first answers); paired test on per-question shares correct (all "
            "samples), with the smallest difference the run could detect at 80% power.\n"
        ),
        "## Accuracy\n",
        table,
        "\n## Paired comparisons\n",
        comp_table,
        "",
        paired_table,
        "",
        *([summary["reading"], ""] if summary["reading"] else []),
    ]
    if sampled:
        md += ["## Sampling metrics\n", *sampled, ""]
    md += [f"![{p}]({p})" for p in plots]
    md += ["\n## Flipped questions (first 20 ids each; all in summary.json)\n", *flips, ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
