"""The one generation engine, shared by collect-rollouts and eval: batched HF ``generate``.

Requests are tokenized, sorted by prompt length (longest first, so padding is small and memory
peaks early), left-padded and generated in batches with the KV cache. Each request carries its own
temperature, top_p and seed, so one batch can mix Regime W arms.

Sampling is exact and replayable per sample: ``SeededSampler`` applies each row's temperature and
top_p and adds Gumbel noise computed by a counter-based hash of (row seed, step, token id); greedy
decoding of the perturbed logits is then a draw from the filtered softmax (the Gumbel-max trick).
The noise depends only on the row's own seed, never on the batch it lands in, so a record can be
replayed from (prompt, temperature, top_p, seed) alone. Temperature 0 is plain greedy decoding.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

_MASK32 = 0xFFFFFFFF


@dataclass
class GenRequest:
    key: Any  # the caller's handle, returned with the result
    prompt: str  # rendered prompt text (chat template already applied)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class GenResult:
    key: Any
    text: str
    num_tokens: int  # generated tokens, the end-of-sequence token included when present
    truncated: bool  # stopped by max_new_tokens, not by end-of-sequence


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (int64 tensors holding values < 2**32); vectorised and deterministic."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def gumbel_noise(seeds: torch.Tensor, step: int, vocab: int, device: torch.device) -> torch.Tensor:
    """(batch, vocab) standard Gumbel noise, a pure function of (seed, step, token id)."""
    row = _hash32(seeds.to(device=device, dtype=torch.int64) * 0x9E3779B1 + _hash32(torch.tensor(step + 0x632BE5AB, device=device)))
    tokens = torch.arange(vocab, device=device, dtype=torch.int64)
    bits = _hash32(row[:, None] + tokens[None, :] * 0x85EBCA6B) >> 8  # 24 random bits
    u = (bits.to(torch.float32) + 0.5) / float(1 << 24)  # uniform in (0, 1), never 0 or 1
    return -torch.log(-torch.log(u))


class SeededSampler:
    """A LogitsProcessor for ``generate(do_sample=False)``: per-row temperature, top_p and seeded sampling."""

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32)
        self.seeds = torch.tensor(seeds, dtype=torch.int64)
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start  # tokens generated so far; the same for every row
        device = scores.device
        temps = self.temperatures.to(device)
        sampled = temps > 0
        if not bool(sampled.any()):
            return scores
        logits = scores.float() / torch.where(sampled, temps, torch.ones_like(temps))[:, None]
        top_p = self.top_ps.to(device)
        if bool((top_p < 1).any()):
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = sorted_logits.softmax(dim=-1)
            # drop a token when the mass before it already reaches top_p (the first token always stays)
            drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        noisy = logits + gumbel_noise(self.seeds, step, logits.shape[-1], device)
        return torch.where(sampled[:, None], noisy, scores.float())


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@contextlib.contextmanager
def _sdpa_gqa_with_mask(enabled: bool) -> Iterator[None]:
    """Let SDPA do grouped-query attention itself under a padding mask, instead of transformers copying
    K/V to every query head at every step (measured: the copy dominated batched decoding on an H200).
    Scoped to generation: training keeps transformers' default."""
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    old = os.environ.get(key)
    if enabled:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if enabled:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, requests: Sequence[GenRequest], max_new_tokens: int, batch_size: int,
             desc: str = "generate", progress: bool = True, cache_implementation: str | None = None) -> list[GenResult]:
    """Generate for every request; results come back in the requests' order.

    The KV cache is transformers' dynamic one by default. ``cache_implementation="static"`` was faster
    in the benchmark (one prompt shape), but transformers compiles the forward for a static cache and
    recompiles for every new batch shape, which stalled a real rollout run whose batches differ in
    prompt width (docs/benchmarks.md); it stays available for uniform workloads.
    """
    from transformers import GenerationConfig

    if not requests:
        return []
    device = next(model.parameters()).device
    on_cuda = device.type == "cuda"
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    encoded = tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
    gen_config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos,
                                  temperature=None, top_p=None, top_k=None, cache_implementation=cache_implementation)
    results: list[GenResult | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc=desc, unit="seq", disable=not progress, dynamic_ncols=True)
    generated_tokens, started = 0, time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(encoded[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: every row's last prompt token is at the same column
            ids = encoded[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        sampler = SeededSampler([requests[i].temperature for i in idx], [requests[i].top_p for i in idx],
                                [requests[i].seed for i in idx])
        with _sdpa_gqa_with_mask(on_cuda):
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=gen_config, logits_processor=[sampler])
        new = out[:, width:].cpu()
        for row, i in enumerate(idx):
            tokens = new[row].tolist()
            end = next((k for k, t in enumerate(tokens) if t in eos), None)
            kept = tokens if end is None else tokens[: end + 1]
            results[i] = GenResult(requests[i].key, tokenizer.decode(kept, skip_special_tokens=True),
                                   num_tokens=len(kept), truncated=end is None and len(tokens) >= max_new_tokens)
            generated_tokens += len(kept)
        bar.update(len(idx))
        bar.set_postfix(tok_per_s=f"{generated_tokens / (time.perf_counter() - started):.0f}")
    bar.close()
    return results  # type: ignore[return-value]
