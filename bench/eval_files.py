"""Per-question eval files scored side by side: accuracy with 95% intervals, and paired differences against one of them.

    python bench/eval_files.py --against base \
        base=docs/bench/<dir>/run_a/base__gsm8k_dev.jsonl.gz sft=.../sft__gsm8k_dev.jsonl.gz rl=... [--json out.json]

Each ``LABEL=PATH`` is a file ``looper eval`` writes (``eval/<model>__<dataset>.jsonl``, gzip or not), one record per
question. Files from different run folders are compared only on the questions they share, matched by id; the table
names n. The metrics are eval's own (``looper.eval.report``: Wilson intervals, exact McNemar on the paired first
answers, flips), so a figure here is the figure eval's report would print for the same files. Used to read a
recipe choice made on dev from the per-question files the device brought back (docs/results.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from looper.eval.report import compare, dataset_metrics

FIELDS = ("id", "correct_strict", "correct_flexible", "truncated", "tokens")  # what the table reads of a record


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of one eval file; SystemExit naming the file (and line) where it cannot be read or is not one."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            records = [(n, json.loads(line)) for n, line in enumerate(f, 1) if line.strip()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{path}: cannot read it as an eval file ({err})") from None
    for n, record in records:
        missing = [k for k in FIELDS if not isinstance(record, dict) or k not in record]
        if missing:
            raise SystemExit(f"{path}:{n}: not a looper eval record (no {', '.join(missing)})")
    if not records:
        raise SystemExit(f"{path}: no records")
    return [record for _, record in records]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="LABEL=PATH")
    parser.add_argument("--against", help="the label every other file is compared with (default: the first)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.json and not args.json.parent.is_dir():  # refused before the files are read, not after
        raise SystemExit(f"--json {args.json}: its folder {args.json.parent} does not exist")
    runs: dict[str, list[dict[str, Any]]] = {}
    for item in args.files:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"{item}: expected LABEL=PATH")
        runs[label] = read_records(Path(path))
    against = args.against or next(iter(runs))
    if against not in runs:
        raise SystemExit(f"--against {against}: not one of the labels ({', '.join(runs)})")
    shared = set.intersection(*({r["id"] for r in records} for records in runs.values()))
    if not shared:
        raise SystemExit("the files share no question id")
    order = [r["id"] for r in runs[against] if r["id"] in shared]
    by_id = {label: {r["id"]: r for r in records} for label, records in runs.items()}
    aligned = {label: [by_id[label][i] for i in order] for label in runs}
    out: dict[str, Any] = {"n": len(order), "against": against, "models": {}}
    print(f"n = {len(order)} questions; paired differences against {against}\n")
    print(
        "| model | strict % [95% CI] | flexible % [95% CI] | truncated % | mean tokens | flexible Δ vs "
        f"{against} (points) | wrong→right / right→wrong | of wrong→right, {against} cut off | McNemar p |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, records in aligned.items():
        m = dataset_metrics(records)
        cells = [
            f"{100 * m[mode]['accuracy']:.2f} [{100 * m[mode]['ci95'][0]:.1f}, {100 * m[mode]['ci95'][1]:.1f}]"
            for mode in ("strict", "flexible")
        ]
        row = {"metrics": m}
        if label == against:
            paired = ["", "", "", ""]
        else:
            c = compare(aligned[against], records, "flexible")
            # a gain that only finishes answers the reference ran out of tokens on is length, not reasoning
            cut = sum(by_id[against][i]["truncated"] for i in c["wrong_to_right"])
            row["flexible_vs_against"] = {
                k: v for k, v in c.items() if k not in ("wrong_to_right", "right_to_wrong")
            } | {
                "wrong_to_right": len(c["wrong_to_right"]),
                "right_to_wrong": len(c["right_to_wrong"]),
                "wrong_to_right_reference_truncated": cut,
            }
            paired = [
                f"{100 * c['difference']:+.2f}",
                f"{len(c['wrong_to_right'])} / {len(c['right_to_wrong'])}",
                str(cut),
                f"{c['p_value']:.2g}",
            ]
        out["models"][label] = row
        print(
            f"| {label} | {' | '.join(cells)} | {100 * m['truncation_rate']:.1f} | {m['mean_tokens']:.0f} | "
            + " | ".join(paired)
            + " |"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
