"""Regime W scoring speed: rewards for N questions x 8 arms of GSM8K-like outputs, on the CPU.

    python bench/regime_w_speed.py --gsm8k /path/to/gsm8k --questions 10000

Each arm output is a real GSM8K worked solution (with its calculator annotations) ending in
``#### N``; about one in eight gets a wrong final answer and one in eight none, so every path is used.
Reports questions/s for ``trajectory_rewards`` (answers, s_end, s_path, s_cf, s_wm, rewards).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, write_results

from looper.config import RegimeWConfig
from looper.regime_w.arms import build_all_arms
from looper.regime_w.reward import ArmOutput, trajectory_rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", required=True, type=Path)
    parser.add_argument("--questions", type=int, default=10000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [json.loads(x) for x in (args.gsm8k / "train.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    arms = build_all_arms()
    cfg = RegimeWConfig()
    questions = []
    for q in range(args.questions):
        row = rows[q % len(rows)]
        body, gold = row["answer"].rsplit("####", 1)
        outs = []
        for arm in arms:
            tail = {0: f"#### {gold.strip()}", 1: "#### 12345", 2: "I am not sure."}.get(
                rng.randrange(8), f"#### {gold.strip()}"
            )
            outs.append(ArmOutput(arm.name, arm.family, body + tail, num_tokens=rng.randint(80, 400)))
        questions.append((outs, gold.strip()))
    # The inputs are built up front; keep the collector from rescanning them (the stage itself scores one
    # question at a time and holds no such heap).
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for outs, gold in questions:
        trajectory_rewards(outs, gold, cfg)
    seconds = time.perf_counter() - started
    result = {
        "device": device_info(),
        "command": " ".join(sys.argv),
        "questions": args.questions,
        "arms": len(arms),
        "seconds": seconds,
        "questions_per_s": args.questions / seconds,
    }
    write_results(args.out, result)


if __name__ == "__main__":
    main()
