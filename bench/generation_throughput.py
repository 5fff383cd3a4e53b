"""Generation throughput: the plan's way against looper's rollout engine, in one run, on the 8B shape.

    python bench/generation_throughput.py --gsm8k /path/to/gsm8k --tokenizer runs/tok --out bench_gen.json

Both go through ``looper.generation.generate`` with the eight Regime W arms' temperatures and
seeds (sampling, bf16, random weights, so every sequence runs to --new-tokens):

- plan: one question at a time, its 8 arm samples as one batch (what a per-question loop does);
- engine: many questions at once, arms mixed in one batch, length-sorted, --batch sequences per
  generate() call (one row per batch size in --batches).

Prompts are real GSM8K questions in the plan's prompt, padded with a fixed preamble to about
--prompt-tokens tokens. Reports generated tokens/s and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_args, device_info, random_checkpoint_for, write_results  # noqa: E402

from looper.config import ModelConfig  # noqa: E402
from looper.generation import GenRequest, generate  # noqa: E402
from looper.modeling import load_model, load_tokenizer  # noqa: E402
from looper.prompts import plain_prompt  # noqa: E402
from looper.regime_w.arms import build_all_arms  # noqa: E402
from looper.runs import derive_seed  # noqa: E402


def make_prompts(gsm8k: Path, tokenizer, n: int, prompt_tokens: int) -> list[str]:
    questions = [json.loads(x)["question"] for x in (gsm8k / "test.jsonl").read_text().splitlines()[:n]]
    prompts = []
    for q in questions:
        p = plain_prompt(q, "You are a careful math tutor. Solve the problem step-by-step, then give the final answer in the format '#### 42'.")
        while len(tokenizer(p)["input_ids"]) < prompt_tokens:  # pad to the benchmark's prompt length
            p = "Read the problem carefully. " + p
        prompts.append(p)
    return prompts


def run(model, tokenizer, prompts, arms, batch: int, new_tokens: int, per_question: bool, cache: str | None) -> dict:
    requests = [GenRequest((i, a.name), p, a.temperature, a.top_p, derive_seed(0, i, a.name)) for i, p in enumerate(prompts) for a in arms]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    results = []
    if per_question:
        for i in range(len(prompts)):
            results += generate(model, tokenizer, requests[i * len(arms):(i + 1) * len(arms)], new_tokens, len(arms), progress=False,
                                cache_implementation=cache)
    else:
        results = generate(model, tokenizer, requests, new_tokens, batch, progress=False, cache_implementation=cache)
    if cache is None:
        cache = "dynamic"
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(r.num_tokens for r in results)
    row = {"questions": len(prompts), "sequences": len(results), "generated_tokens": tokens, "seconds": seconds,
           "tokens_per_s": tokens / seconds, "batch": len(arms) if per_question else batch, "cache": cache or "dynamic"}
    if torch.cuda.is_available():
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"== {'plan' if per_question else 'engine'} batch={row['batch']} cache={row['cache']}: {row['tokens_per_s']:.0f} tokens/s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--plan-questions", type=int, default=4)
    parser.add_argument("--engine-questions", type=int, default=128)
    parser.add_argument("--batches", default="256,512")
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--static-cache", action="store_true", help="also time cache_implementation=static")
    parser.add_argument("--profile", type=int, default=0, metavar="BATCH",
                        help="only profile one generate() of this batch size (16 new tokens) and print the top CUDA ops")
    args = parser.parse_args()

    model_dir = random_checkpoint_for(args)
    model_cfg = ModelConfig(name_or_path=str(model_dir), dtype="bfloat16" if torch.cuda.is_available() else "float32")
    model = load_model(model_cfg)
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    arms = build_all_arms()
    prompts = make_prompts(args.gsm8k, tokenizer, max(args.plan_questions, args.engine_questions), args.prompt_tokens)
    # warm-up (kernels, allocator) outside the timings
    generate(model, tokenizer, [GenRequest(0, prompts[0], 0.5, 1.0, 1)] * 8, 8, 8, progress=False)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        requests = [GenRequest(i, prompts[i % len(prompts)], arms[i % 8].temperature, arms[i % 8].top_p, i) for i in range(args.profile)]
        generate(model, tokenizer, requests, 4, args.profile, progress=False)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            generate(model, tokenizer, requests, 16, args.profile, progress=False)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
        return
    results = {"device": device_info(), "command": " ".join(sys.argv), "runs": []}
    results["runs"].append(dict(way="plan", **run(model, tokenizer, prompts[: args.plan_questions], arms, 8, args.new_tokens, True, None)))
    for b in map(int, args.batches.split(",")):
        results["runs"].append(dict(way="engine", **run(model, tokenizer, prompts[: args.engine_questions], arms, b, args.new_tokens, False, None)))
    if args.static_cache:
        b = int(args.batches.split(",")[-1])
        results["runs"].append(dict(way="engine", **run(model, tokenizer, prompts[: args.engine_questions], arms, b, args.new_tokens, False, "static")))
    plan = results["runs"][0]["tokens_per_s"]
    for row in results["runs"]:
        row["speedup_vs_plan"] = row["tokens_per_s"] / plan
    write_results(args.out, results)


if __name__ == "__main__":
    main()
