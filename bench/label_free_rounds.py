"""Label-free RL over rounds: does agreement rise while the agreed answers get worse? (issue 46's collapse watch)

    python bench/label_free_rounds.py runs/<name> [--dev K=FILE ...] [--json OUT]

For each round of an iterative run (``rl.rounds``; round 1's rollouts in ``data/rl_rollouts.jsonl``, round k's in
``rounds/<k>/data/rl_rollouts.jsonl``), from the rollouts that round sampled from the policy before it (gold is in
the records, whatever the pairs were ranked by):

- agreement: the share of trajectories whose answer is the question's consensus (modal) answer, as Regime W
  votes it (the record's ``scores.consensus``);
- majority accuracy: the share of questions whose consensus answer equals gold;
- sample accuracy: the share of trajectories that are correct.

``--dev K=FILE``: round K's policy scored on the dev split (a per-question eval file, greedy; flexible when the
run reads answers flexibly); its accuracy joins the row. Rising agreement with falling majority or dev accuracy is
the collapse SRT (arXiv 2505.21444) reports for label-free rewards. Rollouts of round k come from the policy after
round k-1, so round k's row describes the policy of round k-1 (round 1: the SFT policy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_files import read_records

from looper.answers import answers_equal
from looper.regime_w.records import read_rollouts


def round_files(run: Path) -> dict[int, Path]:
    """Round -> its rollouts file, for the rounds that have one."""
    files = {1: run / "data" / "rl_rollouts.jsonl"}
    for folder in sorted((run / "rounds").glob("*")) if (run / "rounds").is_dir() else []:
        if folder.name.isdigit():
            files[int(folder.name)] = folder / "data" / "rl_rollouts.jsonl"
    return {k: f for k, f in sorted(files.items()) if f.exists()}


def round_row(records: list[dict[str, Any]]) -> dict[str, Any]:
    trajectories = [t for r in records for t in r["trajectories"]]
    agree = sum(answers_equal(t["answer"], r["scores"]["consensus"]) for r in records for t in r["trajectories"])
    majority = sum(answers_equal(r["scores"]["consensus"], r["gold"]) for r in records)
    correct = sum(t["parts"]["correct"] == 1.0 for t in trajectories)
    return {
        "questions": len(records),
        "trajectories": len(trajectories),
        "agreement": agree / len(trajectories),
        "majority_accuracy": majority / len(records),
        "sample_accuracy": correct / len(trajectories),
    }


def dev_accuracy(path: Path) -> float:
    rows = read_records(path)
    key = "correct_flexible" if any(r.get("correct_flexible") for r in rows) else "correct_strict"
    return sum(bool(r[key]) for r in rows) / len(rows)


def analyse(run: Path, dev: dict[int, Path]) -> list[dict[str, Any]]:
    rows = []
    for k, path in round_files(run).items():
        row = {"round": k, "rollouts": str(path), **round_row(read_rollouts(path, scored=True))}
        if k in dev:
            row["dev_accuracy"] = dev_accuracy(dev[k])
        rows.append(row)
    if not rows:
        raise SystemExit(f"{run}: no rollouts file (data/rl_rollouts.jsonl); is this a run folder?")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder (runs/<name>)")
    parser.add_argument("--dev", nargs="*", default=[], metavar="K=FILE", help="round K's policy's dev eval file")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    dev = {}
    for item in args.dev:
        k, sep, file = item.partition("=")
        if not sep or not k.isdigit():
            raise SystemExit(f"--dev {item!r}: expected K=FILE, e.g. 2=runs/x/eval/rl__gsm8k_dev.jsonl")
        dev[int(k)] = Path(file)
    rows = analyse(args.run, dev)
    print("| round | questions | agreement % | majority accuracy % | sample accuracy % | dev accuracy % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        dev_cell = f"{100 * r['dev_accuracy']:.2f}" if "dev_accuracy" in r else ""
        print(
            f"| {r['round']} | {r['questions']} | {100 * r['agreement']:.2f} | {100 * r['majority_accuracy']:.2f} | "
            f"{100 * r['sample_accuracy']:.2f} | {dev_cell} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
