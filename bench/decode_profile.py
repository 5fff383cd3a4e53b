"""Where a slot-engine decode step spends its time, and how the scheduler's knobs move throughput.

    python bench/decode_profile.py --gsm8k DIR --tokenizer TOK --model 8b --batch 512 --out prof.json
    LOOPER_SMOLLM2_GGUF=... python bench/decode_profile.py --gsm8k DIR --model smollm2 --batch 1024 --requests 4096

Four measurements, same requests as bench/generation_throughput.py:

1. steady state: every slot busy (no EOS), milliseconds per decode step replayed as a CUDA graph and run eagerly;
2. the GPU kernels of three eager decode steps and of one prefill of --prefill-rows prompts (torch.profiler),
   summed by kind: matmul, attention, sort (the sampler's top_p), other;
3. host synchronisations the scheduler makes in a short run (torch.cuda sync debug mode);
4. whole runs of the engine over --requests requests for each (sync_every, prefill_rows) in --sweep;
5. the decode step's attention alone (the model's head shapes, the ring's width, a column mask) through each SDPA
   backend and through two batched matmuls with a softmax between them.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, write_results  # noqa: E402
from generation_throughput import load_bench_model, make_requests, ms_per_call, sync  # noqa: E402

from looper.generation import SlotEngine, generate  # noqa: E402

KINDS = (("attention", ("fmha", "attention", "flash", "sdpa")), ("sort", ("sort", "radix", "scan_by_key")),
         ("matmul", ("gemm", "sm90_xmma", "cutlass", "cublas", "nvjet", "matmul")))


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def kernel_table(fn, repeats: int) -> dict:
    """GPU time per kernel kind and the top kernels, per call of fn."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        sync()
    by_kind, by_name = defaultdict(float), defaultdict(float)
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)
        if us and event.device_type.name == "CUDA":
            by_kind[kind_of(event.key)] += us / repeats / 1000
            by_name[event.key[:400]] += us / repeats / 1000
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:25]
    return {"ms_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "gpu_ms_total": round(sum(by_kind.values()), 3), "top_kernels_ms": [[k, round(v, 3)] for k, v in top]}


def plain_decode_attention(query, key, value, mask, scale):
    """One query token per row, grouped heads packed as transformers does: (B, KVH, R, D) x (B, KVH, C, D)."""
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(value.dtype)
    return torch.matmul(probs, value)


def attention_backends(cfg, batch: int, columns: int) -> dict:
    """Milliseconds per layer of decode attention on the ring: each SDPA backend, and plain matmuls."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads, rep = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    dev, dt = torch.device("cuda"), torch.bfloat16
    query = torch.randn(batch, kv_heads, rep, head_dim, device=dev, dtype=dt)
    key, value = (torch.randn(batch, kv_heads, columns, head_dim, device=dev, dtype=dt) for _ in range(2))
    lengths = torch.randint(columns // 4, columns, (batch, 1), device=dev)
    mask = (torch.arange(columns, device=dev)[None] < lengths)[:, None, None, :]  # (B, 1, 1, C)
    scale = head_dim ** -0.5
    reference = plain_decode_attention(query, key, value, mask, scale)
    out = {"kv_gib_per_layer": round(2 * key.numel() * 2 / 2**30, 3)}
    ways = {"plain_matmul": lambda: plain_decode_attention(query, key, value, mask, scale)}
    for name, backend in (("sdpa_default", None), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION), ("sdpa_math", SDPBackend.MATH)):
        def run(backend=backend):
            with sdpa_kernel(backend) if backend is not None else torch.no_grad():
                return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        ways[name] = run
    for name, fn in ways.items():
        try:
            err = (fn().float() - reference.float()).abs().max().item()
            out[name] = {"ms": ms_per_call(fn, 20), "max_abs_diff": round(err, 4)}
        except Exception as e:  # noqa: BLE001 - a backend may refuse the shape
            out[name] = {"error": str(e).splitlines()[0][:160]}
    return out


def matmul_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A transformers attention function: decode steps (one query token) through plain_decode_attention, the rest SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or attention_mask is None or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    packed = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    out = plain_decode_attention(packed, key, value, attention_mask, scaling)
    return out.reshape(batch, 1, heads, dim), None


def steady_by_attention(model, encoded, requests, batch, new_tokens, prefill_rows) -> dict:
    """ms per graph-replayed decode step with the decode attention forced through each way."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import AttentionInterface

    AttentionInterface.register("bench_matmul", matmul_attention)
    out = {}
    for name, backend in (("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION), ("sdpa_math", SDPBackend.MATH),
                          ("plain_matmul", None)):
        try:
            if backend is None:
                model.set_attn_implementation("bench_matmul")
            with sdpa_kernel([backend]) if backend else torch.no_grad():
                engine = filled_engine(model, encoded, requests, batch, new_tokens, prefill_rows)
            out[name] = ms_per_call(lambda: engine.decode(1), 20)
            del engine
        except Exception as e:  # noqa: BLE001
            out[name] = str(e).splitlines()[0][:160]
        finally:
            model.set_attn_implementation("sdpa")
            torch.cuda.empty_cache()
    return out


def filled_engine(model, encoded, requests, batch: int, new_tokens: int, prefill_rows: int) -> SlotEngine:
    """A slot engine with every slot holding a request that never ends (no EOS ids)."""
    columns = max(len(e) for e in encoded) + new_tokens
    engine = SlotEngine(model, batch, columns, new_tokens, [], use_top_p=True, cuda_graph=torch.cuda.is_available())
    for start in range(0, batch, prefill_rows):
        rows = list(range(start, min(batch, start + prefill_rows)))
        engine.prefill(rows, [encoded[r % len(encoded)] for r in rows], [requests[r % len(requests)] for r in rows])
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", required=True, type=Path)
    parser.add_argument("--tokenizer")
    parser.add_argument("--model", default="8b", choices=["8b", "smollm2", "tiny"])
    parser.add_argument("--model-dir", default="/tmp/looper-bench/llama-8b-random")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prefill-rows", type=int, default=64)
    parser.add_argument("--sweep", default="8x64", help="comma-separated SYNCxROWS pairs (sync_every x prefill_rows)")
    parser.add_argument("--skip-attention", action="store_true", help="skip measurement 5 and the per-way steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model, tokenizer = load_bench_model(args.model, args.tokenizer, args.model_dir)
    requests = make_requests(args.gsm8k, tokenizer, args.requests)
    encoded = tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    results = {"device": device_info(), "command": " ".join(sys.argv), "model": args.model, "batch": args.batch}

    if torch.cuda.is_available() and not args.skip_attention:
        columns = max(len(e) for e in encoded) + args.new_tokens
        with torch.inference_mode():
            results["attention_per_layer"] = attention_backends(model.config, args.batch, columns)
        print("attention per layer:", results["attention_per_layer"], flush=True)

    with torch.inference_mode():
        engine = filled_engine(model, encoded, requests, args.batch, args.new_tokens, args.prefill_rows)
        results["steady_ms_per_step"] = {"graph": ms_per_call(lambda: engine.decode(1), 20) if engine.graph else None,
                                         "eager": ms_per_call(engine._decode, 5)}
        print("steady state ms/step:", results["steady_ms_per_step"], flush=True)
        if torch.cuda.is_available():
            results["decode_step_kernels"] = kernel_table(engine._decode, 3)
            rows = list(range(args.prefill_rows))
            results["prefill_kernels"] = kernel_table(
                lambda: engine.prefill(rows, [encoded[r] for r in rows], [requests[r] for r in rows]), 2)
            results["prefill_ms_wall"] = ms_per_call(
                lambda: engine.prefill(rows, [encoded[r] for r in rows], [requests[r] for r in rows]), 5)
            from looper.generation import _sdpa_gqa_with_mask
            with _sdpa_gqa_with_mask(True):
                results["prefill_gqa_kernels"] = kernel_table(
                    lambda: engine.prefill(rows, [encoded[r] for r in rows], [requests[r] for r in rows]), 2)
                results["prefill_gqa_ms_wall"] = ms_per_call(
                    lambda: engine.prefill(rows, [encoded[r] for r in rows], [requests[r] for r in rows]), 5)
            print("prefill ms wall", results["prefill_ms_wall"], "with enable_gqa", results["prefill_gqa_ms_wall"], flush=True)
            for key in ("decode_step_kernels", "prefill_kernels", "prefill_gqa_kernels"):
                print(key, results[key]["ms_by_kind"], "total", results[key]["gpu_ms_total"], flush=True)
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            if not args.skip_attention:
                results["steady_ms_per_step_by_attention"] = steady_by_attention(model, encoded, requests, args.batch,
                                                                             args.new_tokens, args.prefill_rows)
                print("steady state ms/step by decode attention:", results["steady_ms_per_step_by_attention"], flush=True)
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                generate(model, tokenizer, requests[:64], 24, 16, progress=False, sync_every=4)
            torch.cuda.set_sync_debug_mode(0)
            places = defaultdict(int)
            for w in caught:
                places[str(w.message).splitlines()[0][:120]] += 1
            results["host_syncs_in_short_run"] = dict(places)
            print("host syncs:", dict(places), flush=True)

    results["sweep"] = []
    for pair in args.sweep.split(","):
        sync_every, prefill_rows = (int(x) for x in pair.split("x"))
        sync()
        started = time.perf_counter()
        out = generate(model, tokenizer, requests, args.new_tokens, args.batch, progress=False, sync_every=sync_every,
                       prefill_rows=prefill_rows)
        sync()
        seconds = time.perf_counter() - started
        tokens = sum(r.num_tokens for r in out)
        row = {"sync_every": sync_every, "prefill_rows": prefill_rows, "seconds": round(seconds, 2), "tokens": tokens,
               "tokens_per_s": round(tokens / seconds, 1)}
        print("sweep", row, flush=True)
        results["sweep"].append(row)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
