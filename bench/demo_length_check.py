"""The CPU demo's SFT length check, without training: how many of the demo's SFT examples
``sft.trainer.max_length`` cuts, and how many of those lose their answer line (docs/results.md, CPU demo).

    python bench/demo_length_check.py --out docs/bench/demo_sft_length_check.json

Runs the demo config's prepare-data (offline gsm_symbolic problems, seeded) in an empty runs folder, builds the SFT
examples as the sft stage does (``build_dataset``) and counts with the sft stage's own check
(``looper.trainers.check_lengths``), through the embedded SmolLM2's tokenizer (from ``$LOOPER_CACHE``, fetched
once as the demo does). CPU, a few seconds; nothing is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from looper.baseline_sft import prepare_data  # noqa: E402
from looper.baseline_sft.train_sft import build_dataset  # noqa: E402
from looper.config import load_config  # noqa: E402
from looper.modeling import load_tokenizer  # noqa: E402
from looper.runs import RunDir  # noqa: E402
from looper.trainers import check_lengths  # noqa: E402

CONFIG = "configs/demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "demo_sft_length_check.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        config = load_config(REPO / CONFIG, [f"runs_dir={runs}"])
        with contextlib.redirect_stdout(io.StringIO()):
            prepare_data.main(config)
        dataset = build_dataset(config, RunDir.of(config))
        max_length = config.sft.trainer["max_length"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            counts = check_lengths(dataset, load_tokenizer(config.model), max_length, "sft.trainer")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    result = {
        "what": f"{CONFIG}'s SFT examples against sft.trainer.max_length, counted by looper.trainers.check_lengths "
        "(bench/demo_length_check.py; nothing trained)",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "looper_commit": commit,
        "python": platform.python_version(),
        "transformers": importlib.metadata.version("transformers"),
        "model": config.model.name_or_path,
        "max_length": max_length,
        "examples": len(dataset),
        **counts,
        "printed": printed.getvalue().strip(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
