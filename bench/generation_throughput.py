"""Generation throughput: transformers' ``generate`` against vLLM, through looper's engines and vLLM called
directly, on the same requests, in one run.

    python bench/generation_throughput.py --gsm8k DIR --tokenizer TOK --model 8b --requests 256 --batch 256 \
        --new-tokens 2048 --ways hf,vllm,vllm-seeded,vllm-direct --out gen.json
    python bench/generation_throughput.py --gsm8k DIR --model tiny --requests 12 --batch 4 --new-tokens 8   (CPU smoke)
    python bench/generation_throughput.py ... --model 8b --quantization 4bit --ways hf,vllm   (a quantized base, GPU)

Requests (``make_requests``): real GSM8K test questions, each rendered with one of the eight Regime W arms' system
prompts through the tokenizer's chat template, with that arm's temperature / top_p and a per-request seed;
--new-tokens new tokens at most, bf16 on a GPU (``--quantization 4bit`` / ``8bit``: the base loaded as looper's
``model.quantization`` loads it, bitsandbytes NF4 or LLM.int8 in transformers, bitsandbytes 4-bit in vLLM). Models:
``8b`` is DeepSeek-R1-Distill-Llama-8B's architecture with random weights (``bench/common.py``; it almost never
emits EOS, so nearly every sequence runs the full length);
``smollm2`` is the real embedded SmolLM2-135M-Instruct, ``qwen1.5b`` the real embedded Qwen2.5-Coder-1.5B-Instruct; ``tiny`` is a CPU smoke test of this script. Ways (--ways),
each timed from the first request to the last result, engine start-up excluded:

- ``plain``: ``model.generate(do_sample=True)``, length-sorted left-padded batches of --batch (one temperature 0.7 /
  top_p 0.95 for all: generate has no per-row sampling settings);
- ``hf``: looper's ``engine: hf`` (transformers' ``generate``, the same batches, per-row seeded sampling);
- ``vllm``: looper's ``engine: vllm`` (vLLM's ``LLMEngine``, max_num_seqs --batch, no per-request seeds);
- ``vllm-seeded``: the same engine with ``seeded: true`` (one seed per sampled request);
- ``vllm-direct``: ``vllm.LLM.generate`` called directly with one ``SamplingParams`` per request, the same settings
  as ``vllm`` (the reference looper's engine must stay within 10% of).

vLLM ways run after the transformers ways, with the transformers model freed, each vLLM engine in its own child
process (vLLM's default), ``--gpu-memory-utilization`` of the GPU.
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
from common import TINY, build_random_checkpoint, device_info, write_results

from looper.config import EMBEDDED_MODEL, ModelConfig
from looper.generation import (
    GenRequest,
    HFEngine,
    VLLMEngine,
    generate,
    left_pad,
    vllm_engine_args,
    vllm_sampling_kwargs,
)
from looper.modeling import end_token_ids, load_model, load_tokenizer, resolve_model_path
from looper.processes import derive_seed
from looper.prompts import render_prompt
from looper.regime_w.arms import build_all_arms

TRANSFORMERS_WAYS = ("plain", "hf")
VLLM_WAYS = ("vllm", "vllm-seeded", "vllm-direct")


def make_requests(gsm8k: Path, tokenizer, n: int) -> list[GenRequest]:
    arms = build_all_arms()
    lines = [json.loads(x) for x in (gsm8k / "test.jsonl").read_text().splitlines()]
    requests = []
    for i in range(n):
        q, arm = lines[(i // len(arms)) % len(lines)]["question"], arms[i % len(arms)]
        requests.append(
            GenRequest(
                i,
                render_prompt(tokenizer, q, arm.system_prompt, "chat"),
                arm.temperature,
                arm.top_p,
                derive_seed(0, i, arm.name),
            )
        )
    return requests


def bench_model_path(which: str, tokenizer_dir: str | None, model_dir: str) -> str:
    """The real embedded SmolLM2 or Qwen2.5-Coder-1.5B, or a random checkpoint of the 8B / tiny shape (built once)."""
    if which == "smollm2":
        return resolve_model_path(EMBEDDED_MODEL)
    if which == "qwen1.5b":
        return resolve_model_path("embedded:qwen2.5-coder-1.5b-instruct")
    tokenizer_dir = tokenizer_dir or resolve_model_path(EMBEDDED_MODEL)
    return str(build_random_checkpoint(Path(model_dir), Path(tokenizer_dir), TINY if which == "tiny" else None))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_generate(model, tokenizer, requests: list[GenRequest], batch: int, new_tokens: int) -> int:
    """transformers' own sampling, length-sorted left-padded batches; returns generated tokens (to EOS)."""
    device = next(model.parameters()).device
    encoded = tokenizer([r.prompt for r in requests])["input_ids"]
    order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
    eos = set(end_token_ids(tokenizer, model.generation_config.eos_token_id))
    tokens = 0
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        ids, mask = left_pad([encoded[i] for i in idx], tokenizer.pad_token_id)
        width = ids.shape[1]
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.long().to(device),
            do_sample=True,
            temperature=0.7,
            top_p=0.95,
            top_k=None,
            max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in out[:, width:].tolist():
            end = next((k for k, t in enumerate(row) if t in eos), None)
            tokens += len(row) if end is None else end + 1
    return tokens


def vllm_direct(
    path: str, tokenizer, requests: list[GenRequest], batch: int, new_tokens: int, eos: list[int], memory: float
) -> tuple[float, int, list[str]]:
    """``vllm.LLM.generate`` with one SamplingParams per request: (seconds, generated tokens, texts)."""
    from vllm import LLM, SamplingParams, TokensPrompt

    llm = LLM(
        model=path,
        dtype="bfloat16",
        max_num_seqs=batch,
        max_model_len=new_tokens + 2048,
        seed=0,
        gpu_memory_utilization=memory,
    )
    encoded = tokenizer([r.prompt for r in requests])["input_ids"]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
    params = [SamplingParams(**vllm_sampling_kwargs(r, new_tokens, eos, seeded=False)) for r in requests]
    llm.generate(prompts[:8], params[:8], use_tqdm=False)  # warm-up outside the timing, as for the other ways
    sync()
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    texts = [tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outputs]
    del llm
    gc.collect()
    return seconds, tokens, texts


def row_for(way: str, requests, batch: int, tokens: int, seconds: float) -> dict:
    row = {
        "way": way,
        "requests": len(requests),
        "batch": batch,
        "generated_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
    }
    print(
        f"== {way:12s} batch {batch}: {row['tokens_per_s']:>9.0f} tokens/s  ({tokens} tokens in {seconds:.1f} s)",
        flush=True,
    )
    return row


def run_transformers_ways(ways, path, requests, batch, new_tokens, quantization) -> tuple[list[dict], dict]:
    cfg = ModelConfig(
        name_or_path=path, dtype="bfloat16" if torch.cuda.is_available() else "float32", quantization=quantization
    )
    model, tokenizer = load_model(cfg), load_tokenizer(cfg, padding_side="left")
    engine = HFEngine(model, tokenizer, batch)
    generate(engine, requests[:8], 4, progress=False)  # warm-up: kernels and allocator outside the timings
    rows, texts = [], {}
    for way in ways:
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        if way == "plain":
            tokens = plain_generate(model, tokenizer, requests, batch, new_tokens)
        else:
            results = generate(engine, requests, new_tokens, progress=False)
            tokens, texts[way] = sum(r.num_tokens for r in results), [r.text for r in results]
        sync()
        row = row_for(way, requests, batch, tokens, time.perf_counter() - started)
        if torch.cuda.is_available():
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        rows.append(row)
    engine.close()
    del model, engine
    gc.collect()
    return rows, texts


def run_vllm_ways(ways, path, requests, batch, new_tokens, quantization, memory) -> tuple[list[dict], dict]:
    from transformers import GenerationConfig

    tokenizer = load_tokenizer(ModelConfig(name_or_path=path), padding_side="left")
    eos = end_token_ids(tokenizer, GenerationConfig.from_pretrained(path).eos_token_id)
    rows, texts = [], {}
    looper_ways = [w for w in ways if w in ("vllm", "vllm-seeded")]
    if looper_ways:
        args = vllm_engine_args(
            path,
            path,
            adapter_rank=None,
            dtype="bfloat16",
            quantization=quantization,
            seed=0,
            max_num_seqs=batch,
            max_model_len=new_tokens + 2048,
            revision=None,
            trust_remote_code=False,
            overrides={"gpu_memory_utilization": memory},
        )
        engine = VLLMEngine(args, tokenizer, eos, adapters={}, seeded=False)
        generate(engine, requests[:8], 4, progress=False)  # warm-up
        for way in looper_ways:
            engine.seeded = way == "vllm-seeded"
            started = time.perf_counter()
            results = generate(engine, requests, new_tokens, progress=False)
            rows.append(
                row_for(way, requests, batch, sum(r.num_tokens for r in results), time.perf_counter() - started)
            )
            texts[way] = [r.text for r in results]
        engine.close()
        del engine
        gc.collect()
    if "vllm-direct" in ways:
        seconds, tokens, texts["vllm-direct"] = vllm_direct(path, tokenizer, requests, batch, new_tokens, eos, memory)
        rows.append(row_for("vllm-direct", requests, batch, tokens, seconds))
    return rows, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", required=True, type=Path, help="folder with GSM8K test.jsonl")
    parser.add_argument(
        "--tokenizer", help="tokenizer folder for the random 8b / tiny model (default: the embedded model's)"
    )
    parser.add_argument("--model", default="8b", choices=["8b", "smollm2", "qwen1.5b", "tiny"])
    parser.add_argument(
        "--model-dir", default="/tmp/looper-bench/llama-8b-random", help="where the random checkpoint goes"
    )
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256, help="generate() batch / vLLM max_num_seqs")
    parser.add_argument("--new-tokens", type=int, default=2048)
    parser.add_argument("--ways", default="hf", help=f"comma-separated, of {', '.join(TRANSFORMERS_WAYS + VLLM_WAYS)}")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM's share of the GPU")
    parser.add_argument(
        "--quantization",
        default="none",
        choices=["none", "4bit", "8bit"],
        help="the base model's, as model.quantization (vllm-direct runs unquantized: not with it)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ways = args.ways.split(",")
    unknown = [w for w in ways if w not in TRANSFORMERS_WAYS + VLLM_WAYS]
    if unknown:
        parser.error(f"unknown ways {unknown}")
    if args.quantization != "none" and "vllm-direct" in ways:
        parser.error("vllm-direct loads the checkpoint as it is: leave it out with --quantization")

    path = bench_model_path(args.model, args.tokenizer, args.model_dir)
    requests = make_requests(args.gsm8k, load_tokenizer(ModelConfig(name_or_path=path)), args.requests)
    info = device_info()
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError:
        pass
    results = {
        "device": info,
        "command": " ".join(sys.argv),
        "model": args.model,
        "quantization": args.quantization,
        "new_tokens": args.new_tokens,
        "runs": [],
    }
    texts = {}
    for group, runner in ((TRANSFORMERS_WAYS, run_transformers_ways), (VLLM_WAYS, run_vllm_ways)):
        chosen = [w for w in ways if w in group]
        if chosen:
            extra = (args.gpu_memory_utilization,) if group is VLLM_WAYS else ()
            rows, found = runner(chosen, path, requests, args.batch, args.new_tokens, args.quantization, *extra)
            results["runs"] += rows
            texts.update(found)
    by_way = {r["way"]: r["tokens_per_s"] for r in results["runs"]}
    for row in results["runs"]:
        for ref in ("hf", "vllm-direct"):
            if ref in by_way and row["way"] != ref:
                row[f"x_{ref.replace('-', '_')}"] = round(row["tokens_per_s"] / by_way[ref], 3)
        if (
            "hf" in texts and row["way"] in texts and row["way"] != "hf"
        ):  # greedy rows agree across engines? (bf16 moves bits)
            row["same_text_as_hf"] = round(
                sum(a == b for a, b in zip(texts["hf"], texts[row["way"]])) / len(requests), 3
            )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
