"""DPO throughput on the 8B shape: looper's default reference (frozen adapter copy, one base) against the
plan's two-model layout, in one run, through `looper train-rl` itself.

    python bench/rl_throughput.py --gsm8k /path/to/gsm8k --tokenizer runs/tok --out bench_rl.json

The SFT adapter is a fresh LoRA (r=64, 7 modules) on the random-weight 8B; preference pairs are real
GSM8K texts (chosen: the question's own solution; rejected: another question's solution), so the
sequence lengths are GSM8K's. Reports tokens/s (chosen + rejected tokens, from the run's metrics
log, warm-up steps excluded) and peak GPU memory per layout.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_args, device_info, random_checkpoint_for, write_results
from sft_throughput import throughput

from looper.config import load_config
from looper.prompts import preference_completion, question_prompt


def make_run(config, gsm8k: Path, pairs: int) -> None:
    """A run folder with train data, a fresh SFT adapter and GSM8K preference pairs."""
    from peft import get_peft_model

    from looper.baseline_sft import prepare_data
    from looper.files import atomic_write_jsonl
    from looper.modeling import load_model, load_tokenizer, lora_config
    from looper.runs import RunDir
    from looper.trainers import save_atomically

    shutil.rmtree(config.run_dir, ignore_errors=True)
    prepare_data.main(config)
    run = RunDir.of(config)
    model = load_model(config.model)
    peft_model = get_peft_model(model, lora_config("baseline", config.sft.lora, model))
    save_atomically(
        peft_model, load_tokenizer(config.model), run.lora_sft, {"config_hash": "bench", "base_model": "random 8B"}
    )
    del model, peft_model
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    rows = [json.loads(x) for x in (gsm8k / "train.jsonl").read_text().splitlines()[:pairs]]
    others = rows[1:] + rows[:1]
    random.Random(0).shuffle(others)
    fmt = config.model.prompt_format
    atomic_write_jsonl(
        run.preferences,
        [
            {
                "prompt": question_prompt(r["question"], config.model.system_prompt, fmt),
                "chosen": preference_completion(r["answer"], fmt),
                "rejected": preference_completion(o["answer"], fmt),
                "better": r["answer"],
                "worse": o["answer"],
            }  # train-rl's DPO reads the two answers' text
            for r, o in zip(rows, others)
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--runs-dir", default="/tmp/looper-bench/runs")
    args = parser.parse_args()

    model_dir = random_checkpoint_for(args)
    from looper.rl_training import train_rl

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    base = [
        f"runs_dir={args.runs_dir}",
        "name=rl-bench",
        "data.source=local",
        f"data.path={args.gsm8k}",
        f"model.name_or_path={model_dir}",
        f"model.dtype={dtype}",
        "model.prompt_format=plain",
    ]
    make_run(load_config(None, base), args.gsm8k, pairs=args.batch * (args.steps + 1))
    results = {"device": device_info(), "command": " ".join(sys.argv), "layouts": {}}
    for layout in ("two_models", "adapter"):
        config = load_config(
            None,
            base
            + [
                f"rl.reference={layout}",
                f"rl.dpo.max_steps={args.steps}",
                f"rl.dpo.per_device_train_batch_size={args.batch}",
                "rl.dpo.gradient_accumulation_steps=1",
                "rl.dpo.logging_steps=1",
                "rl.dpo.save_strategy='no'",
                "rl.dpo.max_length=768",
                "rl.dpo.activation_checkpointing=true",
            ],
        )
        for leftover in ("checkpoints/lora_rl", "work/train-rl", "stages/train-rl.json", "logs/train-rl.jsonl"):
            path = config.run_dir / leftover
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            train_rl.main(config)
        except Exception as err:  # record (e.g. out of memory) and go on
            results["layouts"][layout] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            continue
        finally:
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
        row = throughput(config.run_dir / "logs" / "train-rl.jsonl", args.warmup)
        if torch.cuda.is_available():
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results["layouts"][layout] = row
        print(f"== {layout}: {row['tokens_per_s']:.0f} tokens/s, peak {row.get('peak_memory_gib', 0):.1f} GiB")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
