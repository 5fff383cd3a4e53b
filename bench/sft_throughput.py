"""SFT throughput: the plan's recipe against looper's fast recipes, in one run, through `looper sft` itself.

    python bench/sft_throughput.py --gsm8k /path/to/gsm8k --tokenizer runs/tok --out bench_sft.json

Builds the 8B architecture with random weights (bench/common.py), prepares the real GSM8K train
texts (the sequence lengths come from them, tokenized with the embedded model's tokenizer), then
runs looper's SFT stage once per recipe for a few steps and reports tokens/s (from the run's own
metrics log, warm-up steps excluded), peak GPU memory and model FLOPs utilisation, counting
4 x 8.03e9 FLOPs per token (LoRA: forward + activation gradients; no weight gradients).

Recipes (--recipes picks): plan = 8-bit base, LoRA r=64 on 7 modules, batch 1, 256 tokens;
fast = bf16 base, same LoRA, padding-free (BFD) packed micro-batches of --pack tokens;
fast-liger = fast + Liger's fused linear cross-entropy (no full logits tensor); fast-gc = fast with
gradient checkpointing and twice the tokens per micro-batch; fast-4bit = NF4 base, packed 2,048 tokens, gradient checkpointing
(the consumer-GPU recipe: must fit in 24 GB).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PARAMS_8B, add_model_args, device_info, peak_flops, random_checkpoint_for, write_results

from looper.config import load_config


def recipes(pack: int) -> dict[str, list[str]]:
    common = [
        "sft.lora_preset=baseline",
        "model.dtype=bfloat16",
        "sft.trainer.logging_steps=1",
        "sft.trainer.save_strategy='no'",
        "sft.trainer.learning_rate=1e-5",
        "sft.trainer.gradient_accumulation_steps=1",
        "sft.trainer.report_to=none",
    ]
    return {
        "plan": common
        + [
            "model.quantization=8bit",
            "sft.trainer.per_device_train_batch_size=1",
            "sft.trainer.max_length=256",
            "sft.trainer.packing=false",
            "sft.trainer.activation_checkpointing=true",
        ],
        "fast": common
        + [
            "model.quantization=none",
            "sft.trainer.per_device_train_batch_size=1",
            f"sft.trainer.max_length={pack}",
            "sft.trainer.packing=true",
            "sft.trainer.packing_strategy=bfd",
            "sft.trainer.padding_free=true",
            "sft.trainer.activation_checkpointing=false",
        ],
        "fast-liger": common
        + [
            "model.quantization=none",
            "sft.trainer.per_device_train_batch_size=1",
            f"sft.trainer.max_length={pack}",
            "sft.trainer.packing=true",
            "sft.trainer.packing_strategy=bfd",
            "sft.trainer.padding_free=true",
            "sft.trainer.activation_checkpointing=false",
            "sft.trainer.use_liger_kernel=true",
        ],
        "fast-gc": common
        + [
            "model.quantization=none",
            "sft.trainer.per_device_train_batch_size=1",
            f"sft.trainer.max_length={2 * pack}",
            "sft.trainer.packing=true",
            "sft.trainer.packing_strategy=bfd",
            "sft.trainer.padding_free=true",
            "sft.trainer.activation_checkpointing=true",
        ],
        "fast-4bit": common
        + [
            "model.quantization=4bit",
            "sft.trainer.per_device_train_batch_size=1",
            "sft.trainer.max_length=2048",
            "sft.trainer.packing=true",
            "sft.trainer.packing_strategy=bfd",
            "sft.trainer.padding_free=true",
            "sft.trainer.activation_checkpointing=true",
        ],
    }


def throughput(log_path: Path, warmup: int) -> dict[str, float]:
    rows = [json.loads(x) for x in log_path.read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "num_tokens" in r]
    timed = steps[warmup:]
    if len(timed) < 2:
        raise RuntimeError(f"too few logged steps in {log_path} to time ({len(steps)})")
    tokens = timed[-1]["num_tokens"] - timed[0]["num_tokens"]
    seconds = timed[-1]["time"] - timed[0]["time"]
    per_step = sorted((b["num_tokens"] - a["num_tokens"]) / (b["time"] - a["time"]) for a, b in zip(timed, timed[1:]))
    return {
        "tokens_per_s": tokens / seconds,
        "median_step_tokens_per_s": per_step[len(per_step) // 2],
        "timed_steps": len(timed) - 1,
        "tokens_per_step": tokens / (len(timed) - 1),
        "mean_loss": sum(r["loss"] for r in timed) / len(timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--recipes", default="plan,fast,fast-4bit")
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--pack", type=int, default=8192, help="tokens per packed micro-batch in the fast recipe")
    parser.add_argument("--runs-dir", default="/tmp/looper-bench/runs")
    args = parser.parse_args()

    model_dir = random_checkpoint_for(args)
    from looper.baseline_sft import prepare_data, train_sft

    results = {"device": device_info(), "command": " ".join(sys.argv), "recipes": {}}
    flops_per_token = 4 * (PARAMS_8B if args.shape == "8b" else 1)
    for name in args.recipes.split(","):
        overrides = [
            f"name=sft-{name}",
            f"runs_dir={args.runs_dir}",
            "data.source=local",
            f"data.path={args.gsm8k}",
            f"model.name_or_path={model_dir}",
            "model.prompt_format=plain",
            f"sft.trainer.max_steps={args.steps}",
            *recipes(args.pack)[name],
        ]
        if args.shape == "tiny":
            overrides = [o for o in overrides if "quantization" not in o and "liger" not in o] + ["model.dtype=float32"]
        config = load_config(None, overrides)
        import shutil

        shutil.rmtree(config.run_dir, ignore_errors=True)
        prepare_data.main(config)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            train_sft.main(config)
        except Exception as err:  # record a recipe that fails (e.g. out of memory) and go on
            results["recipes"][name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print(f"recipe {name} failed: {err}")
            continue
        finally:
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
        row = throughput(config.run_dir / "logs" / "sft.jsonl", args.warmup)
        row["wall_s"] = time.perf_counter() - started
        if torch.cuda.is_available():
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            row["mfu"] = row["tokens_per_s"] * flops_per_token / peak_flops()
        row["overrides"] = overrides
        results["recipes"][name] = row
        print(f"== {name}: {row['tokens_per_s']:.0f} tokens/s, peak {row.get('peak_memory_gib', 0):.1f} GiB")
    plan = results["recipes"].get("plan", {}).get("tokens_per_s")
    for row in results["recipes"].values():
        if plan and "tokens_per_s" in row:
            row["speedup_vs_plan"] = row["tokens_per_s"] / plan
    write_results(args.out, results)


if __name__ == "__main__":
    main()
