"""``looper plan`` for the three 8B configs (the default one also with GRPO, the 8-bit one also generating with
vLLM), saved as the raw file of docs/guide.md's "What a run costs" table.

    python bench/looper_plan_8b.py --out docs/bench/looper_plan_8b

Each file holds a header (the command, the date, looper's commit and Python) and then exactly what
``looper plan CONFIG [key=value ...]`` prints, run against an empty runs folder so that the data sizes are the
sources' published ones (no prepared split of this checkout counts). ``looper plan`` loads nothing and runs on any
CPU in seconds; its rates are ``looper/plan_rates.yaml``'s, each measured on one H200 (docs/benchmarks.md).
tests/test_figures.py checks docs/guide.md's table against these files and these files against what ``looper plan``
prints now.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from looper.config import load_config  # noqa: E402
from looper.plan import render  # noqa: E402

# file name -> (config, overrides), in docs/guide.md's row order
PLANS = {
    "r1-distill-llama-8b.txt": ("configs/r1-distill-llama-8b.yaml", []),
    "r1-distill-llama-8b_grpo.txt": ("configs/r1-distill-llama-8b.yaml", ["rl.algorithm=grpo"]),
    "r1-distill-llama-8b_grpo_vllm.txt": (
        "configs/r1-distill-llama-8b.yaml",
        ["rl.algorithm=grpo", "rl.grpo.use_vllm=true", "rl.grpo.vllm_mode=colocate"],
    ),
    "r1-distill-llama-8b-qlora.txt": ("configs/r1-distill-llama-8b-qlora.yaml", []),
    "r1-distill-llama-8b-plan.txt": ("configs/r1-distill-llama-8b-plan.yaml", []),
    "r1-distill-llama-8b-plan_vllm.txt": (
        "configs/r1-distill-llama-8b-plan.yaml",
        ["rollouts.engine=vllm", "eval.engine=vllm"],
    ),
}


def plan_text(config: str, overrides: list[str], runs_dir: str) -> str:
    """What ``looper plan config overrides`` prints, with ``runs_dir`` (an empty folder) in place of the config's."""
    return render(load_config(REPO / config, [*overrides, f"runs_dir={runs_dir}"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "looper_plan_8b")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "src", "configs"], capture_output=True, text=True, check=False
    ).stdout.strip()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory() as empty:
        for name, (config, overrides) in PLANS.items():
            header = [
                f"# looper plan {' '.join([config, *overrides])} (runs_dir: an empty folder)",
                (
                    f"# {when}; looper commit {commit}{' (src/ or configs/ modified)' if dirty else ''}; "
                    f"Python {platform.python_version()}; {platform.machine()} CPU, nothing loaded; bench/looper_plan_8b.py"
                ),
            ]
            (args.out / name).write_text("\n".join(header) + "\n" + plan_text(config, overrides, empty) + "\n")
            print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
