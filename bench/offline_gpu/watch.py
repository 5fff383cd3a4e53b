"""Mirror what the comparison's analysis needs from its runs folder into /tmp/res as it is made, so that whatever
ends the device session, the figures made so far come back with the next poll.

Per run folder: the stage markers, ``pipeline_timings.json``, the eval summary, and each finished eval's per-question
file without its generated texts (gzip; ``bench/regime_w_comparison.py --analyze-only`` reads these). Per seed, once
its rollouts are complete: Regime W's evidence (``regime_w_comparison.regime_w_evidence``) and ``looper regime-w
report``. Runs until /tmp/res/done appears (the job writes it when the comparison ends), then mirrors once more.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "src")]
RUNS, RES = Path("/tmp/cr"), Path("/tmp/res")
# what the analysis reads of each record and of each of its samples
KEEP = {"id", "gold", "tokens", "truncated", "answer_strict", "answer_flexible", "correct_strict", "correct_flexible"}


def slim(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k in KEEP}
    if record.get("samples") is not None:
        out["samples"] = [{k: v for k, v in s.items() if k in KEEP} for s in record["samples"]]
    return out


def mirror_run(run: Path, done: set[Path]) -> None:
    from looper.files import read_jsonl

    dst = RES / "run_summaries" / run.name
    for f in [*run.glob("stages/*.json"), run / "pipeline_timings.json", run / "eval" / "summary.json"]:
        if f.is_file():
            target = dst / f.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    if (run / "stages" / "eval.json").exists():  # the eval files are complete
        for f in run.glob("eval/*__*.jsonl"):
            if f not in done:
                target = dst / "eval" / (f.name + ".gz")
                with gzip.open(target, "wt", encoding="utf-8") as out:
                    out.writelines(json.dumps(slim(r)) + "\n" for r in read_jsonl(f))
                done.add(f)


def regime_w_evidence(run: Path) -> None:
    import regime_w_comparison

    seed = run.name.rsplit("-s", 1)[1].split("-")[0]
    target = RES / f"auroc_s{seed}.json"
    if target.exists() or not (run / "stages" / "collect-rollouts.json").exists():
        return
    rollouts, config = run / "data" / "rl_rollouts.jsonl", run / "config.yaml"
    target.write_text(json.dumps(regime_w_comparison.regime_w_evidence(rollouts, str(config), []), indent=1))
    report = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from looper.cli import main; sys.exit(main())",
            "regime-w",
            "report",
            str(rollouts),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    (RES / f"regime_w_report_s{seed}.md").write_text(report.stdout + report.stderr[-3000:])


def mirror(done: set[Path]) -> None:
    for run in sorted(p for p in RUNS.glob("*") if p.is_dir() and not p.name.startswith(".")):
        mirror_run(run, done)
        if run.name.endswith("-rollouts_b"):
            regime_w_evidence(run)
    for f in [*RUNS.glob("*.log"), *RUNS.glob("*.recipes.json")]:
        shutil.copy2(f, RES / f.name)


def main() -> None:
    done: set[Path] = set()
    while True:
        finished = (RES / "done").exists()
        try:
            mirror(done)
        except Exception as err:  # a file caught half-written is taken on the next pass
            print(f"watch: {err!r}", flush=True)
        if finished:
            return
        time.sleep(30)


if __name__ == "__main__":
    main()
