"""Two GPUs against one, through looper's own command line under `accelerate launch` (docs/scaling.md).

    python bench/scaling.py --gsm8k /path/to/gsm8k --tokenizer runs/tok --out docs/bench/scaling_2xh200.json \
        --parts sft,rollouts,fsdp,dpo,zero3,full1

Builds the 8B architecture with random weights (bench/common.py), then runs each part as a user would, one GPU
(`CUDA_VISIBLE_DEVICES=0 python -m looper.cli ...`) against two (`accelerate launch --config_file
configs/accelerate/<ddp|fsdp|deepspeed_zero3>.yaml --num_processes 2 -m looper.cli ...`), on
configs/r1-distill-llama-8b.yaml with the model pointed at the random checkpoint and step counts made small:

- sft: LoRA SFT, the fast recipe (bf16, packed padding-free 8,192-token micro-batches), 1 GPU vs DDP on 2; tokens/s
  from the run's metrics log (TRL counts the tokens of every process), warm-up steps excluded;
- rollouts: collect-rollouts with the SFT adapter, 1 process vs 2 (questions split round robin); generated tokens/s
  as the stage records it (all tokens / the slower process's generation time); the merged file is compared with
  the one-process file record by record (ids, order, arms, seeds, texts);
- fsdp / zero3: full-parameter SFT over the 2 GPUs with FSDP2 (full shard, cpu-RAM-efficient loading) or ZeRO-3;
  tokens/s, and each process's peak GPU memory as the stage records it;
- full1: full-parameter SFT on 1 GPU (gradient checkpointing), for comparison;
- dpo: build-preferences and DPO on the 2-process rollouts under DDP, then eval (2 processes) loads the saved adapter.

Each part's record is written to --out as soon as it is done, so a part that fails or is cut off leaves the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_args, device_info, random_checkpoint_for, stage_marker, write_results
from sft_throughput import throughput

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/r1-distill-llama-8b.yaml"
SFT_FAST = [
    "sft.data=gold",
    "sft.trainer.per_device_train_batch_size=1",
    "sft.trainer.gradient_accumulation_steps=1",
    "sft.trainer.max_length=8192",
    "sft.trainer.use_liger_kernel=false",
    "sft.trainer.logging_steps=1",
    "sft.trainer.save_strategy='no'",
    "sft.trainer.learning_rate=1e-5",
]
FULL = ["sft.method=full", "sft.trainer.max_length=4096"]  # + sft.trainer.max_steps=--full-steps


def looper(
    stage: str, overrides: list[str], gpus: int, accelerate_config: str = "ddp", log: Path | None = None
) -> dict[str, Any]:
    """Run one looper stage on ``gpus`` GPUs as a user would; wall time and exit status."""
    if gpus == 1:
        cmd = [sys.executable, "-m", "looper.cli", stage, CONFIG, *overrides]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            f"configs/accelerate/{accelerate_config}.yaml",
            "--num_processes",
            str(gpus),
            "-m",
            "looper.cli",
            stage,
            CONFIG,
            *overrides,
        ]
        env = dict(os.environ)
    started = time.perf_counter()
    with open(log or os.devnull, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(
            cmd, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    row = {
        "command": " ".join(cmd[1:] if gpus == 1 else ["accelerate", "launch", *cmd[3:]]),
        "gpus": gpus,
        "wall_s": round(time.perf_counter() - started, 1),
        "rc": rc,
    }
    print(f"== {stage} on {gpus} GPU(s): rc {rc}, {row['wall_s']} s", flush=True)
    return row


MARKER_KEYS = (
    "processes",
    "distributed",
    "peak_gpu_memory_gib",
    "generated_tokens",
    "generation_s",
    "tokens_per_s",
    "steps",
)


def marker(run_dir: Path, stage: str) -> dict[str, Any]:
    return stage_marker(run_dir, stage, MARKER_KEYS)


def same_rollouts(a: Path, b: Path) -> dict[str, Any]:
    """Record-by-record comparison of two rollout files: order, and each trajectory's arm, seed and text."""
    one = [json.loads(x) for x in a.read_text().splitlines()]
    two = [json.loads(x) for x in b.read_text().splitlines()]
    same_order = [r["id"] for r in one] == [r["id"] for r in two]
    pairs = [(s, t) for r, q in zip(one, two) for s, t in zip(r["trajectories"], q["trajectories"])]
    same_keys = all((s["arm"], s["sample"], s["seed"]) == (t["arm"], t["sample"], t["seed"]) for s, t in pairs)
    same_text = sum(s["text"] == t["text"] for s, t in pairs)
    first_diff = [
        next((i for i, (x, y) in enumerate(zip(s["text"], t["text"])) if x != y), min(len(s["text"]), len(t["text"])))
        for s, t in pairs
        if s["text"] != t["text"]
    ]
    return {
        "records": [len(one), len(two)],
        "same_order": same_order,
        "same_arms_and_seeds": same_keys,
        "trajectories": len(pairs),
        "identical_texts": same_text,
        "median_first_difference_char": sorted(first_diff)[len(first_diff) // 2] if first_diff else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--parts", default="sft,rollouts,fsdp,dpo,zero3,full1")
    parser.add_argument("--sft-steps", type=int, default=14)
    parser.add_argument("--full-steps", type=int, default=10, help="steps of the full-parameter SFT parts")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--questions", type=int, default=256, help="collect-rollouts questions (x 8 arms)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--runs-dir", default="/tmp/looper-bench/scaling")
    args = parser.parse_args()

    model_dir = random_checkpoint_for(args)
    runs = Path(args.runs_dir)
    log = runs / "scaling.log"
    runs.mkdir(parents=True, exist_ok=True)
    base = [
        f"runs_dir={runs}",
        "data.source=local",
        f"data.path={args.gsm8k}",
        "data.platinum.source=none",
        f"model.name_or_path={model_dir}",
        f"sft.trainer.max_steps={args.sft_steps}",
        *SFT_FAST,
        f"rollouts.num_questions={args.questions}",
        f"rollouts.max_new_tokens={args.new_tokens}",
        "rollouts.batch_size=512",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=6",
        "rl.dpo.logging_steps=1",
        "rl.dpo.save_strategy='no'",
        "eval.models=[sft,rl]",
        "eval.datasets=[gsm8k_test]",
        "eval.limit=256",
        "eval.max_new_tokens=128",
        "eval.batch_size=256",
    ]
    if args.shape == "tiny":
        base += ["model.dtype=float32", "model.attn_implementation=eager"]
    results: dict[str, Any] = {"device": device_info(), "command": " ".join(sys.argv), "parts": {}}

    def record(part: str, row: dict[str, Any]) -> None:
        results["parts"][part] = row
        write_results(args.out, results) if args.out else None

    def sft_part(name: str, gpus: int, extra: list[str], accelerate_config: str = "ddp") -> dict[str, Any]:
        shutil.rmtree(runs / name, ignore_errors=True)
        overrides = [f"name={name}", *base, *extra]
        prep = looper("prepare-data", overrides, 1, log=log)
        row = looper("sft", overrides, gpus, accelerate_config, log=log) if prep["rc"] == 0 else prep
        if row["rc"] == 0:
            row |= throughput(runs / name / "logs" / "sft.jsonl", args.warmup) | marker(runs / name, "sft")
        return row

    parts = args.parts.split(",")
    full = [*FULL, f"sft.trainer.max_steps={args.full_steps}"]
    if "sft" in parts:
        one, two = sft_part("sft-1gpu", 1, []), sft_part("sft-ddp", 2, [])
        row = {"1gpu": one, "ddp2": two}
        if "tokens_per_s" in one and "tokens_per_s" in two:
            row["speedup"] = round(two["tokens_per_s"] / one["tokens_per_s"], 3)
            row["speedup_median_step"] = round(two["median_step_tokens_per_s"] / one["median_step_tokens_per_s"], 3)
        record("sft_lora_ddp", row)
    if "rollouts" in parts:
        src = runs / "sft-1gpu"
        if not (src / "checkpoints" / "lora_sft").is_dir():
            raise SystemExit(
                f"the rollouts part uses the sft part's adapter: {src} has none (run --parts sft,rollouts)"
            )
        rows = {}
        for name, gpus in (("rollouts-1gpu", 1), ("rollouts-2proc", 2)):
            shutil.rmtree(runs / name, ignore_errors=True)
            shutil.copytree(src, runs / name)  # same data, same SFT adapter
            rows[name] = looper("collect-rollouts", [f"name={name}", *base], gpus, log=log) | marker(
                runs / name, "collect-rollouts"
            )
        row = {"1gpu": rows["rollouts-1gpu"], "2proc": rows["rollouts-2proc"]}
        if all(r["rc"] == 0 for r in rows.values()):
            row["speedup"] = round(row["2proc"]["tokens_per_s"] / row["1gpu"]["tokens_per_s"], 3)
            row["comparison"] = same_rollouts(*(runs / n / "data" / "rl_rollouts.jsonl" for n in rows))
        record("collect_rollouts", row)
    if "fsdp" in parts:
        record("full_sft_fsdp", sft_part("full-fsdp", 2, full, "fsdp"))
    if "dpo" in parts:
        name = "rollouts-2proc"
        overrides = [f"name={name}", *base]
        row = {"build-preferences": looper("build-preferences", overrides, 1, log=log)}
        row["train-rl"] = looper("train-rl", overrides, 2, log=log) | marker(runs / name, "train-rl")
        row["eval"] = looper("eval", overrides, 2, log=log) | marker(runs / name, "eval")
        summary = runs / name / "eval" / "summary.json"
        row["eval_models"] = sorted(json.loads(summary.read_text())["metrics"]) if summary.exists() else None
        row["adapter"] = sorted(p.name for p in (runs / name / "checkpoints" / "lora_rl").glob("*"))
        record("dpo_ddp", row)
    if "zero3" in parts:
        record(
            "full_sft_zero3",
            sft_part("full-zero3", 2, [*full, "sft.trainer.activation_checkpointing=true"], "deepspeed_zero3"),
        )
    if "full1" in parts:
        record("full_sft_1gpu", sft_part("full-1gpu", 1, [*full, "sft.trainer.activation_checkpointing=true"]))
    write_results(args.out, results)


if __name__ == "__main__":
    main()
