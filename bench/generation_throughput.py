"""Generation throughput: plain ``model.generate`` against looper's engines, on the same requests, in one run.

    python bench/generation_throughput.py --gsm8k DIR --tokenizer TOK --model 8b --requests 512 --batch 512 --out gen.json
    LOOPER_SMOLLM2_GGUF=... python bench/generation_throughput.py --gsm8k DIR --tokenizer TOK --model smollm2 --requests 2048

Requests: real GSM8K test questions, each rendered with one of the eight Regime W arms' system
prompts through the tokenizer's chat template, with that arm's temperature / top_p and a per-request
seed; --new-tokens new tokens at most, bf16. Models: ``8b`` is DeepSeek-R1-Distill-Llama-8B's
architecture with random weights (never emits EOS, so every sequence runs the full length);
``smollm2`` is the real embedded SmolLM2-135M-Instruct (sequences end at EOS); ``tiny`` is a CPU
smoke test of this script. Ways (--ways):

- ``plain``: ``model.generate(do_sample=True)``, length-sorted left-padded batches of --batch (one
  temperature 0.7 / top_p 0.95 for all: generate has no per-row sampling settings);
- ``hf``: looper's ``engine="hf"`` (the same batches, per-row seeded sampling);
- ``slots``: looper's slot engine, --batch slots, decode step captured as a CUDA graph;
- ``slots-eager``: the same without the CUDA graph.

Also: the sampler alone on (batch, vocab) logits (its share of a step), the measured HBM copy
bandwidth, and the roofline (bytes a decode step must read: weights + KV cache) for the slot engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY, build_random_checkpoint, device_info, write_results  # noqa: E402

from looper.config import EMBEDDED_MODEL, ModelConfig  # noqa: E402
from looper.generation import GenRequest, generate, left_pad, sample  # noqa: E402
from looper.modeling import load_model, load_tokenizer, resolve_model_path  # noqa: E402
from looper.prompts import render_prompt  # noqa: E402
from looper.regime_w.arms import build_all_arms  # noqa: E402
from looper.runs import derive_seed  # noqa: E402


def make_requests(gsm8k: Path, tokenizer, n: int) -> list[GenRequest]:
    arms = build_all_arms()
    lines = [json.loads(x) for x in (gsm8k / "test.jsonl").read_text().splitlines()]
    requests = []
    for i in range(n):
        q, arm = lines[(i // len(arms)) % len(lines)]["question"], arms[i % len(arms)]
        requests.append(GenRequest(i, render_prompt(tokenizer, q, arm.system_prompt, "chat"), arm.temperature, arm.top_p,
                                   derive_seed(0, i, arm.name)))
    return requests


def load_bench_model(which: str, tokenizer_dir: str | None, model_dir: str):
    """(model, left-padding tokenizer): the real embedded SmolLM2, or a random checkpoint of the 8B / tiny shape."""
    tokenizer_dir = tokenizer_dir or resolve_model_path(EMBEDDED_MODEL)
    if which == "smollm2":
        path = resolve_model_path(EMBEDDED_MODEL)
    else:
        path = str(build_random_checkpoint(Path(model_dir), Path(tokenizer_dir), TINY if which == "tiny" else None))
    cfg = ModelConfig(name_or_path=path, dtype="bfloat16" if torch.cuda.is_available() else "float32")
    return load_model(cfg), load_tokenizer(cfg, padding_side="left")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_generate(model, tokenizer, requests: list[GenRequest], batch: int, new_tokens: int) -> int:
    """transformers' own sampling, length-sorted left-padded batches; returns generated tokens (to EOS)."""
    device = next(model.parameters()).device
    encoded = tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
    eos = model.generation_config.eos_token_id
    eos = set([eos] if isinstance(eos, int) else eos or []) | {tokenizer.eos_token_id}
    tokens = 0
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        ids, mask = left_pad([encoded[i] for i in idx], tokenizer.pad_token_id)
        width = ids.shape[1]
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.long().to(device), do_sample=True, temperature=0.7,
                             top_p=0.95, top_k=None, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
        for row in out[:, width:].tolist():
            end = next((k for k, t in enumerate(row) if t in eos), None)
            tokens += len(row) if end is None else end + 1
    return tokens


def time_way(way: str, model, tokenizer, requests, batch: int, new_tokens: int) -> tuple[dict, list[str] | None]:
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    texts = None
    if way == "plain":
        tokens = plain_generate(model, tokenizer, requests, batch, new_tokens)
    else:
        options = {"engine": "hf"} if way == "hf" else {"engine": "slots", "cuda_graph": way == "slots"}
        results = generate(model, tokenizer, requests, new_tokens, batch, progress=False, **options)
        tokens, texts = sum(r.num_tokens for r in results), [r.text for r in results]
    sync()
    seconds = time.perf_counter() - started
    row = {"way": way, "requests": len(requests), "batch": batch, "generated_tokens": tokens, "seconds": round(seconds, 2),
           "tokens_per_s": round(tokens / seconds, 1)}
    if torch.cuda.is_available():
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(f"== {way:12s} batch {batch}: {row['tokens_per_s']:>9.0f} tokens/s  ({tokens} tokens in {seconds:.1f} s)", flush=True)
    return row, texts


def ms_per_call(fn, n: int, warmup: int = 1) -> float:
    """Milliseconds per call of fn over n calls, after warmup calls, device work included."""
    for _ in range(warmup):
        fn()
    sync()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return round((time.perf_counter() - started) / n * 1000, 3)


def sampler_timing(batch: int, vocab: int, device: torch.device) -> dict:
    """Milliseconds per call of the sampler on (batch, vocab) logits, with and without the top_p sort."""
    logits = torch.randn(batch, vocab, device=device, dtype=torch.bfloat16)
    temps = torch.rand(batch, device=device) + 0.2
    top_ps = torch.full((batch,), 0.95, device=device)
    seeds = torch.arange(batch, device=device)
    steps = torch.full((batch,), 7, device=device)
    out = {}
    for label, use_top_p in (("with_top_p_ms", True), ("without_top_p_ms", False)):
        out[label] = ms_per_call(lambda: sample(logits, temps, top_ps, seeds, steps, use_top_p), 20, warmup=3)
    return out


def copy_bandwidth() -> float | None:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    if not torch.cuda.is_available():
        return None
    a = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync()
    started = time.perf_counter()
    for _ in range(20):
        b.copy_(a)
    sync()
    return 2 * a.numel() * 20 / (time.perf_counter() - started)


def roofline(model, tokenizer, requests, batch: int, new_tokens: int, bandwidth: float | None) -> dict:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2  # K and V, bf16
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    lengths = [len(x) for x in tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]]
    columns = max(lengths) + new_tokens  # the slot engine's ring: every step reads all of it
    mean_context = sum(lengths) / len(lengths) + new_tokens / 2  # what a step needs on average
    read_ring = weights + batch * columns * kv_per_token
    read_needed = weights + batch * mean_context * kv_per_token
    out = {"weights_gib": round(weights / 2**30, 2), "kv_bytes_per_token": kv_per_token, "ring_columns": columns,
           "bytes_per_step_ring_gib": round(read_ring / 2**30, 2), "bytes_per_step_needed_gib": round(read_needed / 2**30, 2)}
    if bandwidth:
        out["hbm_copy_bandwidth_tb_s"] = round(bandwidth / 1e12, 2)
        out["roofline_tokens_per_s_ring"] = round(batch * bandwidth / read_ring)
        out["roofline_tokens_per_s_needed"] = round(batch * bandwidth / read_needed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", required=True, type=Path, help="folder with GSM8K test.jsonl")
    parser.add_argument("--tokenizer", help="tokenizer folder for the random 8b / tiny model (default: the embedded model's)")
    parser.add_argument("--model", default="8b", choices=["8b", "smollm2", "tiny"])
    parser.add_argument("--model-dir", default="/tmp/looper-bench/llama-8b-random", help="where the random checkpoint goes")
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--batch", type=int, default=512, help="slots / generate() batch")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--ways", default="plain,hf,slots,slots-eager")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model, tokenizer = load_bench_model(args.model, args.tokenizer, args.model_dir)
    requests = make_requests(args.gsm8k, tokenizer, args.requests)
    device = next(model.parameters()).device
    for way in args.ways.split(","):  # warm-up: kernels, allocator, graph capture outside the timings
        if way != "plain":
            generate(model, tokenizer, requests[:8], 4, 8, progress=False, engine="hf" if way == "hf" else "slots")
    results = {"device": device_info(), "command": " ".join(sys.argv), "model": args.model, "new_tokens": args.new_tokens,
               "env": {k: v for k, v in os.environ.items() if k.startswith(("TRANSFORMERS_", "LOOPER_"))}, "runs": []}
    texts = {}
    for way in args.ways.split(","):
        row, texts[way] = time_way(way, model, tokenizer, requests, args.batch, args.new_tokens)
        results["runs"].append(row)
    for row in results["runs"]:  # same samples as the hf engine? (bf16 on a GPU: batch shapes can move low bits)
        if texts.get("hf") and texts.get(row["way"]) and row["way"] != "hf":
            row["same_text_as_hf"] = round(sum(a == b for a, b in zip(texts["hf"], texts[row["way"]])) / len(requests), 3)
    by_way = {r["way"]: r["tokens_per_s"] for r in results["runs"]}
    if "plain" in by_way:
        for row in results["runs"]:
            row["x_plain"] = round(row["tokens_per_s"] / by_way["plain"], 2)
    results["sampler"] = sampler_timing(args.batch, model.config.vocab_size, device)
    results["roofline"] = roofline(model, tokenizer, requests, args.batch, args.new_tokens, copy_bandwidth())
    write_results(args.out, results)


if __name__ == "__main__":
    main()
