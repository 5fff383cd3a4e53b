"""Shared by the benchmarks: the 8B architecture with random weights, device facts, result records.

Speed does not depend on weight values, so the benchmarks build DeepSeek-R1-Distill-Llama-8B's
architecture (its config.json: Llama 3.1 8B shape) with random weights and save it once as a local
checkpoint, which then goes through looper's own loading code like any model (bf16, 8-bit, 4-bit).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

# deepseek-ai/DeepSeek-R1-Distill-Llama-8B config.json (architecture fields)
R1_DISTILL_LLAMA_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128001,
)
# A CPU smoke-test shape (--shape tiny) for the benchmark scripts themselves
TINY = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)
PARAMS_8B = 8.03e9
BF16_PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM)


def build_random_checkpoint(out: Path, tokenizer_dir: Path, shape: dict[str, Any] | None = None) -> Path:
    """Save a random-weight Llama of the given shape (default: the 8B) with a real tokenizer, once."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**(shape or R1_DISTILL_LLAMA_8B))
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def add_model_args(parser: Any) -> None:
    """Arguments every benchmark takes: data, tokenizer, where the random checkpoint goes, its shape."""
    parser.add_argument("--gsm8k", required=True, type=Path, help="folder with GSM8K train.jsonl / test.jsonl")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (the embedded model's)")
    parser.add_argument(
        "--model-dir", default="/tmp/looper-bench/llama-8b-random", help="where the random checkpoint goes"
    )
    parser.add_argument("--shape", default="8b", choices=["8b", "tiny"], help="tiny: a CPU smoke test of the script")
    parser.add_argument("--out", type=Path, help="write the results JSON here")


def random_checkpoint_for(args: Any) -> Path:
    return build_random_checkpoint(Path(args.model_dir), Path(args.tokenizer), TINY if args.shape == "tiny" else None)


def device_info() -> dict[str, Any]:
    import transformers

    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for name in ("trl", "peft", "bitsandbytes", "datasets", "accelerate", "liger_kernel"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # optional packages
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def stage_marker(run_dir: Path, stage: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """What a run folder's stage marker (``stages/<stage>.json``) records, without the config it repeats (``keys``: only
    those); empty when the stage has not finished."""
    path = Path(run_dir) / "stages" / f"{stage}.json"
    if not path.exists():
        return {}
    found = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("config", "config_hash")}
    return {k: found[k] for k in keys if k in found} if keys else found


def link_outputs(src: Path, dst: Path, patterns: list[str]) -> None:
    """Hard-link the outputs of run folder ``src`` matching ``patterns`` (globs, folders whole) into ``dst``, where
    missing: a run that starts from another's data or adapters (the stages replace files, they never edit them)."""
    import os
    import shutil

    for pattern in patterns:
        for path in Path(src).glob(pattern):
            target = Path(dst) / path.relative_to(src)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, copy_function=os.link)
            else:
                os.link(path, target)


def peak_flops() -> float:
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return next((v for k, v in BF16_PEAK.items() if k in name), 989e12)


def write_results(path: Path | None, results: dict[str, Any]) -> None:
    print(json.dumps(results, indent=2))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")
