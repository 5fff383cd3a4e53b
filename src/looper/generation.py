"""Generation for collect-rollouts, eval and ``sft.data: self``: one request format, two maintained engines.

Every request carries its own prompt, temperature, top_p and seed, so one batch can mix Regime W arms.
``open_engine`` picks the engine of a stage (``rollouts.engine``, ``eval.engine``):

* ``vllm``: vLLM's ``LLMEngine`` (its documented offline engine: ``add_request`` / ``step``), one
  ``SamplingParams`` per request, paged KV cache and continuous batching; a LoRA adapter merged into the base
  weights in a temporary checkpoint (``vllm_adapter: merged``) or served through ``LoRARequest`` (``lora``).
  For CUDA GPUs with looper's ``vllm`` extra (``pip install -e '.[vllm]'``). Per-request seeds are passed
  only with ``seeded: true``: vLLM samples seeded requests apart, a cost measured once at 2.2x (512 x 256
  tokens) and not seen in later runs (docs/benchmarks.md).
* ``hf``: transformers' public ``generate`` in length-sorted, left-padded batches of ``batch_size``,
  LoRA adapters merged into the base weights. Per-row temperature, top_p and seed come from
  ``SeededSampler``, a documented ``LogitsProcessor``: a sample depends only on (prompt, temperature,
  top_p, seed), never on the batch it lands in, so on a CPU any request replays token for token alone.
* ``auto`` (default): ``vllm`` where vLLM is installed and a CUDA GPU is present, else ``hf``.

``generate_records`` is the one loop every generating stage runs: build a question's requests,
generate, group the question's samples, append its record whole (resumable), whatever the engine.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import importlib.util
import itertools
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from looper.errors import ConfigValueError, InputError
from looper.files import JsonlAppender
from looper.modeling import (
    check_adapter_base,
    checkpoint_end_ids,
    end_token_ids,
    load_stage_model,
    resolve_dtype,
    resolve_model_path,
    stage_weights,
)
from looper.prompts import cut_at_restart, format_restarts

log = logging.getLogger("looper")

_MASK32 = 0xFFFFFFFF
ENGINES = ("auto", "hf", "vllm")


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
    truncated: (
        bool  # stopped by max_new_tokens, not by an end id or the prompt format's restart (prompts.format_restarts)
    )
    token_ids: list[int] = field(default_factory=list, repr=False)  # the generated ids, end-of-sequence included


# ----------------------------------------------------------------------------- seeded sampling (hf engine)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (int64 tensors holding values < 2**32); vectorised and deterministic."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def _row_hash(seeds: torch.Tensor, steps: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """(batch,) 32-bit hashes of each row's (seed, tokens generated so far)."""
    seeds = seeds.to(device=device, dtype=torch.int64)
    steps = torch.as_tensor(steps, dtype=torch.int64).to(device).expand_as(seeds)
    return _hash32(seeds * 0x9E3779B1 + _hash32(steps + 0x632BE5AB))


def _uniform(hashes: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), never 0 or 1, from the top 24 bits of 32-bit hashes."""
    return ((hashes >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def row_uniforms(seeds: torch.Tensor, steps: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """(batch,) uniforms in (0, 1), a pure function of each row's (seed, tokens generated so far)."""
    return _uniform(_hash32(_row_hash(seeds, steps, device) + 0x85EBCA6B))


def gumbel_noise(seeds: torch.Tensor, steps: torch.Tensor | int, vocab: int, device: torch.device) -> torch.Tensor:
    """(batch, vocab) standard Gumbel noise, a pure function of (seed, tokens generated so far, token id) per row."""
    tokens = torch.arange(vocab, device=device, dtype=torch.int64)
    u = _uniform(_hash32(_row_hash(seeds, steps, device)[:, None] + tokens[None, :] * 0x85EBCA6B))
    return -torch.log(-torch.log(u))


def sample(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_ps: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor | int,
    use_top_p: bool = True,
    method: str | None = None,
) -> torch.Tensor:
    """(batch,) token ids: each row's draw from softmax(logits / temperature) cut to its top_p nucleus.

    The nucleus is found on the logits sorted in their own dtype: its least probable member sets a
    threshold and every token at or above it is kept (ties with that member included), so the kept set
    does not depend on sort order, and a row with top_p = 1 draws the same whether or not its batch
    needed the sort (``use_top_p=False`` skips it when no row has top_p < 1). Temperature 0 is greedy.

    Two exact ways to draw, both pure functions of (seed, tokens generated so far):

    * ``inverse_cdf`` (default on CUDA): one seeded uniform per row, the token where the cumulative
      probability (vocabulary order) first exceeds ``u`` times the kept mass. Cheap: no per-token noise.
    * ``gumbel`` (default on CPU): seeded Gumbel noise per token added to the kept logits, argmax
      (the Gumbel-max trick, Gumbel 1954; Maddison et al. 2014). Only the leading tokens decide, so
      float32 differences in the last bits (another batch, another padding width) leave the draw
      unchanged: on a CPU a request replays token for token whatever batch it lands in.
    """
    method = method or ("inverse_cdf" if logits.is_cuda else "gumbel")
    greedy = temperatures <= 0
    inv_temp = 1.0 / torch.where(greedy, torch.ones_like(temperatures), temperatures)[:, None]
    scaled = logits.float() * inv_temp
    keep = None
    if use_top_p:
        sorted_logits = torch.sort(logits, dim=-1, descending=True).values
        sorted_probs = (sorted_logits.float() * inv_temp).softmax(dim=-1)
        # the nucleus: tokens whose more probable predecessors hold less than top_p (the first always stays)
        kept = ((sorted_probs.cumsum(dim=-1) - sorted_probs) < top_ps[:, None]).sum(dim=-1, keepdim=True).clamp(min=1)
        keep = logits >= sorted_logits.gather(1, kept - 1)
    if method == "gumbel":
        if keep is not None:
            scaled = scaled.masked_fill(~keep, float("-inf"))
        tokens = (scaled + gumbel_noise(seeds, steps, scaled.shape[-1], scaled.device)).argmax(dim=-1)
    elif method == "inverse_cdf":
        probs = scaled.softmax(dim=-1)
        if keep is not None:
            probs = torch.where(keep, probs, torch.zeros_like(probs))
        cum = probs.cumsum(dim=-1)
        target = row_uniforms(seeds, steps, logits.device)[:, None] * cum[:, -1:]
        tokens = torch.searchsorted(cum, target, right=True)
        # a draw at the very top of the range can round past the last cumulative sum: take the row's most
        # likely token then, never the vocabulary's last one (which may lie outside the nucleus)
        tokens = torch.where(tokens < cum.shape[-1], tokens, probs.argmax(dim=-1, keepdim=True)).squeeze(1)
    else:
        raise ValueError(f"unknown sampling method {method!r}; expected 'gumbel' or 'inverse_cdf'")
    return torch.where(greedy, logits.argmax(dim=-1), tokens)


class SeededSampler:
    """A ``LogitsProcessor`` for ``model.generate(do_sample=False)``: per-row temperature, top_p and seeded
    sampling (``sample``). It returns scores that are -inf everywhere but at the drawn token, so
    generate's greedy pick takes it."""

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32)
        self.seeds = torch.tensor(seeds, dtype=torch.int64)
        self.use_top_p = bool(((self.top_ps < 1) & (self.temperatures > 0)).any())
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start  # tokens generated so far; the same for every row
        device = scores.device
        tokens = sample(scores, self.temperatures.to(device), self.top_ps.to(device), self.seeds, step, self.use_top_p)
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens[:, None], 0.0)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (n, longest): each prompt right-aligned, so every row's last token is in the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = True
    return ids, mask


THOUGHT_MARKERS = ("<think>", "</think>")


def decode_completion(tokenizer: Any, ids: Sequence[int]) -> str:
    """Generated ids as the text every scorer reads: the tokenizer's special tokens (end, pad, role markers) left out,
    as ``skip_special_tokens=True`` leaves them out, but thought markers kept where a tokenizer makes ``<think>`` /
    ``</think>`` special: without them a thought the prompt opened never closes (every answer None) and a draft
    answer inside a thought is read as the answer (verl #1724). Used by the engines and by the GRPO / RLOO reward."""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    dropped = {i for i in special if str(tokenizer.convert_ids_to_tokens(i)).lower() not in THOUGHT_MARKERS}
    return tokenizer.decode([t for t in ids if t not in dropped], skip_special_tokens=False)


def make_result(
    key: Any, tokens: list[int], eos: list[int], max_new_tokens: int, tokenizer: Any, prompt: str = ""
) -> GenResult:
    """A result from the ids generated for ``prompt`` (its rendered text), as every consumer reads it (eval, Regime W,
    self data, preferences, the GRPO / RLOO reward): cut after the first end-of-sequence id (padding after it dropped),
    or where the completion begins the prompt's format again (``prompts.cut_at_restart``): the text before the
    restart, the ids up to the one that completed its marker (where the engines stop). Either way the answer
    stopped: truncated means only that ``max_new_tokens`` ran out first."""
    end = next((k for k, t in enumerate(tokens) if t in eos), None)
    kept = tokens if end is None else tokens[: end + 1]
    text = decode_completion(tokenizer, kept)
    cut = cut_at_restart(text, prompt)
    if cut is not None:
        kept = kept[: _ids_through_marker(tokenizer, kept, format_restarts(prompt))]
        return GenResult(key, cut, num_tokens=len(kept), truncated=False, token_ids=kept)
    return GenResult(
        key, text, num_tokens=len(kept), truncated=end is None and len(kept) >= max_new_tokens, token_ids=kept
    )


def _ids_through_marker(tokenizer: Any, ids: list[int], markers: Sequence[str]) -> int:
    """The length of the shortest prefix of ``ids`` whose text holds one of ``markers`` (the whole of ``ids`` does):
    a binary search, ~log2(len) decodes, since a longer prefix's text holds what a shorter one's does. The ids the
    hf engine pads a stopped row with, and vLLM's tokens past its stop, fall outside."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        text = decode_completion(tokenizer, ids[:mid])
        if any(m in text for m in markers):
            hi = mid
        else:
            lo = mid + 1
    return hi


# ----------------------------------------------------------------------------- engines

# What both engines apply besides each request's temperature and top_p: no model's generation_config sampling fields
# (hf: HFEngine replaces the model's; vLLM: generation_config="vllm"). Eval records it with its sampling.
STATED_SAMPLING = {"top_k": None, "min_p": None, "repetition_penalty": 1.0, "model_generation_config": "not applied"}


class HFEngine:
    """transformers' ``generate`` over length-sorted, left-padded batches of ``batch_size`` prompts."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int):
        from transformers import GenerationConfig

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos = end_token_ids(tokenizer, model.generation_config.eos_token_id if model.generation_config else None)
        # generate() fills every field of the GenerationConfig it is given that holds transformers' default with the
        # model's own value (Qwen2.5-Coder's repetition_penalty 1.1: "greedy" that is not greedy, lm-eval #3154); with
        # a config holding only the model's token ids as the model's, only looper's stated settings apply
        # (STATED_SAMPLING); the end ids stay the model's
        self._own_generation_config = own = model.generation_config  # given back at close: the model may outlive us
        model.generation_config = GenerationConfig(
            **{k: getattr(own, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        )

    @torch.inference_mode()
    def run(
        self, requests: Sequence[GenRequest], encoded: list[list[int]], max_new_tokens: int
    ) -> Iterator[tuple[int, GenResult]]:
        """(request index, result) pairs, a batch at a time, longest prompts first."""
        from transformers import GenerationConfig

        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0]
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            input_ids, attention = left_pad([encoded[i] for i in idx], pad_id)
            sampler = SeededSampler(
                [requests[i].temperature for i in idx],
                [requests[i].top_p for i in idx],
                [requests[i].seed for i in idx],
            )
            # greedy decoding with the seeded sampler as the last logits processor: the sampler picks, argmax takes it.
            # Sampling fields at transformers' defaults (1.0, 1.0, 50), stated: else a model's own (R1: 0.6 / 0.95) are
            # merged in and flagged as unused under do_sample=False. A row also stops where its completion begins the
            # prompt's format again (transformers' stop_strings, matched per row; a stage's prompts share one format,
            # so one set); make_result cuts the text there
            stops = sorted({m for i in idx for m in format_restarts(requests[i].prompt)})
            gen_config = GenerationConfig(
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=self.eos,
                temperature=1.0,
                top_p=1.0,
                top_k=50,
                stop_strings=stops or None,
            )
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.long().to(device),
                generation_config=gen_config,
                logits_processor=[sampler],
                tokenizer=self.tokenizer,
            )
            new = out[:, input_ids.shape[1] :].cpu()
            for row, i in enumerate(idx):
                yield (
                    i,
                    make_result(
                        requests[i].key, new[row].tolist(), self.eos, max_new_tokens, self.tokenizer, requests[i].prompt
                    ),
                )

    def close(self) -> None:
        self.model.generation_config = self._own_generation_config
        del self.model
        _free_memory()


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRAConfig accepts as max_lora_rank


def vllm_engine_args(
    model: str,
    tokenizer: str,
    *,
    adapter_rank: int | None,
    dtype: str,
    quantization: str,
    seed: int,
    max_num_seqs: int,
    max_model_len: int,
    revision: str | None,
    trust_remote_code: bool,
    overrides: dict[str, Any],
    adapters: int = 1,
) -> dict[str, Any]:
    """Keyword arguments of vLLM's ``EngineArgs`` for one stage's model; ``overrides`` (``rollouts.vllm`` /
    ``eval.vllm``) win. ``adapters`` LoRA adapters of rank up to ``adapter_rank`` (None: no LoRA) are served at once,
    the rank rounded up to one vLLM accepts; ``quantization: 4bit``
    becomes vLLM's in-flight bitsandbytes quantization (vLLM has no in-flight 8-bit: the 8-bit plan config
    generates from the bf16 base)."""
    # generation_config="vllm": vLLM's own sampling defaults, not the model's generation_config (STATED_SAMPLING)
    args: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "seed": seed,
        "max_num_seqs": max_num_seqs,
        "max_model_len": max_model_len,
        "trust_remote_code": trust_remote_code,
        "generation_config": "vllm",
    }
    if revision:
        args["revision"] = revision
    if adapter_rank is not None:
        if dtype == "float32":  # vLLM's LoRA kernels (lora_expand / lora_shrink) assert a 16-bit dtype
            raise ConfigValueError(
                "model.dtype=float32: vLLM runs LoRA adapters in bfloat16 or float16 only; set "
                "model.dtype=bfloat16 (or the stage's engine to hf)",
                fields=("model.dtype",),
            )
        rank = next((r for r in VLLM_LORA_RANKS if r >= adapter_rank), None)
        if rank is None:
            raise InputError(
                f"LoRA rank {adapter_rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); use engine: hf"
            )
        args.update(enable_lora=True, max_lora_rank=rank, max_loras=max(1, adapters))
    if quantization == "4bit":
        args["quantization"] = "bitsandbytes"
    if max_num_seqs > 512 and not {"enforce_eager", "compilation_config"} & set(overrides):
        # vLLM captures CUDA graphs for batches of at most min(2 * max_num_seqs, 512) sequences and decodes larger
        # ones eagerly; a small model at 1,024 sequences spends most of a step launching kernels
        args["max_cudagraph_capture_size"] = max_num_seqs
    return args | dict(overrides)


def vllm_sampling_kwargs(request: GenRequest, max_new_tokens: int, eos: list[int], seeded: bool) -> dict[str, Any]:
    """Keyword arguments of vLLM's ``SamplingParams`` for one request: its temperature (0 is greedy in vLLM too)
    and top_p, the same end-of-sequence ids as the hf engine, the same stop where the completion begins the prompt's
    format again (``prompts.format_restarts``), and its seed only when ``seeded`` (and sampled)."""
    stops = list(format_restarts(request.prompt))
    # looper reads the ids (make_result), never vLLM's text; but vLLM matches stop strings on its own detokenized text
    # and refuses them without it
    kwargs: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p if request.temperature > 0 else 1.0,
        "max_tokens": max_new_tokens,
        "stop_token_ids": list(eos),
        "detokenize": bool(stops),
    }
    if stops:
        kwargs["stop"] = stops
    if seeded and request.temperature > 0:
        kwargs["seed"] = request.seed
    return kwargs


class VLLMEngine:
    """vLLM's offline ``LLMEngine`` (vLLM's own streaming example: ``add_request``, then ``step`` until no request is
    unfinished): every request added at once, each result taken as soon as it finishes."""

    name = "vllm"

    def __init__(
        self, engine_args: dict[str, Any], tokenizer: Any, eos: list[int], adapters: dict[str, Path], seeded: bool
    ):
        """``adapters``: model name (``sft``, ``rl``) -> LoRA adapter folder, each served as a ``LoRARequest``
        (``engine_args`` must enable LoRA for them); requests carry none until ``serving`` picks a model."""
        from vllm import EngineArgs, LLMEngine
        from vllm.lora.request import LoRARequest
        from vllm.usage.usage_lib import UsageContext

        self.tokenizer, self.eos, self.seeded = tokenizer, eos, seeded
        self.loras = {
            which: LoRARequest(path.name, i, str(path)) for i, (which, path) in enumerate(adapters.items(), 1)
        }
        self.lora = None
        self._used_before, self.gpu_memory_gib = device_memory_used_gib(), None
        with _engine_process_env():
            # vLLM's offline-batch scheduler defaults, as ``vllm.LLM`` takes them (16,384 tokens a step on GPUs of
            # 70 GiB or more); LLMEngine's own default context allows 2,048, so a batch of 1,024 decoding
            # sequences leaves room to prefill only a few new prompts a step and the batch runs part-empty
            self.engine = LLMEngine.from_engine_args(EngineArgs(**engine_args), usage_context=UsageContext.LLM_CLASS)
        self._ids = itertools.count()  # request ids unique over the engine's life, shared by its views

    def serving(self, which: str) -> VLLMEngine:
        """This engine (the same vLLM process: no second start) with model ``which``'s ``LoRARequest`` on every request
        it runs, or none where ``which`` has no adapter here (the base). The caller closes the engine, not the view."""
        view = copy.copy(self)
        view.lora, view.gpu_memory_gib = self.loras.get(which), None
        return view

    def run(
        self, requests: Sequence[GenRequest], encoded: list[list[int]], max_new_tokens: int
    ) -> Iterator[tuple[int, GenResult]]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        index = {}
        for i, (request, prompt_ids) in enumerate(zip(requests, encoded)):
            rid = str(next(self._ids))  # one engine serves several models and datasets in eval
            index[rid] = i
            # FINAL_ONLY: a request appears in step()'s outputs once, finished, not at every step
            params = SamplingParams(
                **vllm_sampling_kwargs(request, max_new_tokens, self.eos, self.seeded),
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            self.engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt_ids), params, lora_request=self.lora)
        while self.engine.has_unfinished_requests():
            for output in self.engine.step():
                if output.finished:
                    i = index.pop(output.request_id)
                    yield (
                        i,
                        make_result(
                            requests[i].key,
                            list(output.outputs[0].token_ids),
                            self.eos,
                            max_new_tokens,
                            self.tokenizer,
                            requests[i].prompt,
                        ),
                    )
        used = device_memory_used_gib()
        if used is not None and self._used_before is not None:
            self.gpu_memory_gib = max(self.gpu_memory_gib or 0.0, round(used - self._used_before, 2))

    def close(self) -> None:
        # the engine core runs in a child process (vLLM's default): dropping the engine ends it and frees its GPU memory
        del self.engine
        _free_memory()


def device_memory_used_gib() -> float | None:
    """GPU memory in use on the device a vLLM engine runs on, in GiB, as nvidia-smi reports it (NVML, through
    ``torch.cuda.device_memory_used``): every process's, the engine core's child process included, which this
    process's own allocator statistics do not see. None without CUDA or NVML (``nvidia-ml-py``). Reads NVML only:
    creates no CUDA context in this process."""
    if not torch.cuda.is_available():
        return None
    try:
        with _engine_process_env():  # device 0 of what the engine core is given to see
            return torch.cuda.device_memory_used(0) / 2**30
    except (ImportError, RuntimeError, OSError):  # no NVML library or module here
        return None


def _free_memory() -> None:
    """What an engine held, back to the allocator and (on a GPU) the device, before the next stage loads a model."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _engine_process_env() -> Iterator[None]:
    """The environment vLLM's engine core process starts with (it reads it at its start).

    ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` (vLLM's documented setting; the user's own value is kept): a forked engine
    core cannot use CUDA once this process has touched it, which training stages and tests do before generating.
    Under ``accelerate launch`` / torchrun (one process per GPU) the engine sees only this process's GPU (LOCAL_RANK).
    """
    saved = {k: os.environ.get(k) for k in ("VLLM_WORKER_MULTIPROC_METHOD", "CUDA_VISIBLE_DEVICES")}
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    local_rank, world = os.environ.get("LOCAL_RANK"), int(os.environ.get("WORLD_SIZE", "1"))
    if local_rank is not None and world > 1:
        visible = saved["CUDA_VISIBLE_DEVICES"]
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(local_rank)]
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


Engine = HFEngine | VLLMEngine


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(engine: str, field_name: str) -> str:
    """``hf`` or ``vllm`` for a stage's ``engine`` setting; InputError where ``vllm`` cannot run here."""
    if engine not in ENGINES:
        raise ConfigValueError(
            f"{field_name}: unknown generation engine {engine!r}; expected one of {', '.join(ENGINES)}",
            fields=(field_name,),
        )
    if engine == "auto":
        return "vllm" if torch.cuda.is_available() and vllm_installed() else "hf"
    if engine == "vllm" and not vllm_installed():
        raise InputError(
            f"{field_name}=vllm needs vLLM: install looper's vllm extra (pip install -e '.[vllm]' in a "
            f"clone), or set {field_name}=hf"
        )
    if engine == "vllm" and not torch.cuda.is_available():
        raise ConfigValueError(
            f"{field_name}=vllm needs a CUDA GPU; set {field_name}=hf on a CPU", fields=(field_name,)
        )
    return engine


def remove_stale_merged(checkpoints: Path) -> list[Path]:
    """Remove the merged checkpoints (``.merged-<model>-<host>-<pid>-*``) that a stopped process left in a run's
    ``checkpoints/``: a process killed outright (SIGKILL, out of memory) skips ``merged_weights``' clean-up, and an
    8B copy holds ~16 GB of disk. Only folders of this host whose process is gone: other ranks of a sharded stage
    share the folder while they run. Returns the folders removed."""
    removed = []
    for folder in checkpoints.glob(".merged-*"):
        parts = folder.name.split("-")
        # .merged-<which>-<host>-<pid>-<random>: the host may hold dashes, the pid is the second field from the end
        host, pid = "-".join(parts[2:-2]), parts[-2]
        if host != socket.gethostname() or not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}: a merged checkpoint left by a stopped process ({pid})")
        removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def merged_weights(config: Any, run: Any, which: str, tokenizer: Any) -> Iterator[Path]:
    """Model ``which`` with its LoRA adapter merged into the base weights (PEFT's ``merge_and_unload``, as the hf
    engine runs it), saved with the tokenizer in a temporary folder of the run, removed when the block ends. vLLM
    then serves a plain model: on one H200, SmolLM2's rollouts with the adapter as a LoRARequest ran at ~9,500
    tokens/s at 1,024 sequences, the plain model at 22,198 (docs/benchmarks.md)."""
    checkpoints = run.root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    remove_stale_merged(checkpoints)
    model = load_stage_model(config, run, which, merge=True)
    folder = Path(tempfile.mkdtemp(dir=checkpoints, prefix=f".merged-{which}-{socket.gethostname()}-{os.getpid()}-"))
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        _free_memory()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def vllm_engine_for(
    config: Any, run: Any, models: Sequence[str], settings: Any, tokenizer: Any, max_new_tokens: int
) -> Iterator[VLLMEngine]:
    """One vLLM engine for ``models`` of the run (base, sft, rl), which must share their weights (the base model, or
    the full SFT checkpoint): those weights as vLLM's model and each model's LoRA adapter as a ``LoRARequest``
    (``VLLMEngine.serving`` picks one). A single model's adapter is merged into the weights instead
    (``settings.vllm_adapter: merged``, on an unquantized base); a 4-bit base always serves adapters as LoRA. The
    same end-of-sequence ids as the hf engine. ``settings`` is the stage's config section (batch_size, seeded,
    vllm_adapter, vllm). Raises InputError for an adapter trained on another base, ValueError for models on
    different weights."""
    from transformers import AutoConfig

    weights_of = {which: stage_weights(config, run, which) for which in models}
    checkpoints = {checkpoint for checkpoint, _ in weights_of.values()}
    if len(checkpoints) != 1:
        raise ValueError(f"models {list(models)} do not share their weights; one engine cannot serve them")
    checkpoint = checkpoints.pop()
    adapters = {which: adapter for which, (_, adapter) in weights_of.items() if adapter is not None}
    revision = None if checkpoint else config.model.revision  # a revision names a Hub commit of the base model
    base = str(checkpoint or resolve_model_path(config.model.name_or_path))
    model_cfg = AutoConfig.from_pretrained(base, revision=revision, trust_remote_code=config.model.trust_remote_code)
    for adapter in adapters.values():
        check_adapter_base(adapter, model_cfg)
    end_ids = checkpoint_end_ids(base, tokenizer, revision)
    # room for the longest prompt: GSM8K-style prompts (instruction, question, chat template) stay far below 2,048
    max_model_len = min(getattr(model_cfg, "max_position_embeddings", None) or 10**9, max_new_tokens + 2048)
    dtype = str(resolve_dtype(config.model.dtype)).removeprefix("torch.")
    with contextlib.ExitStack() as stack:
        weights = base
        if len(models) == 1 and adapters and settings.vllm_adapter == "merged" and config.model.quantization == "none":
            weights = str(stack.enter_context(merged_weights(config, run, models[0], tokenizer)))
            adapters, revision = {}, None
        ranks = [json.loads((a / "adapter_config.json").read_text())["r"] for a in adapters.values()]
        args = vllm_engine_args(
            weights,
            weights,
            adapter_rank=max(ranks, default=None),
            adapters=len(adapters),
            dtype=dtype,
            quantization=config.model.quantization,
            seed=config.seed,
            max_num_seqs=settings.batch_size,
            max_model_len=max_model_len,
            revision=revision,
            trust_remote_code=config.model.trust_remote_code,
            overrides=settings.vllm,
        )
        engine = VLLMEngine(args, tokenizer, end_ids, adapters, settings.seeded)
        try:
            yield engine
        finally:
            engine.close()  # before the merged folder goes


@contextlib.contextmanager
def open_engine(
    config: Any, run: Any, which: str, kind: str, section: str, max_new_tokens: int, tokenizer: Any
) -> Iterator[Engine]:
    """The engine ``kind`` (``hf`` or ``vllm``: ``resolve_engine``) for model ``which`` (base, sft, rl) with the
    settings of config section ``section`` (``rollouts`` or ``eval``: batch_size, seeded, vllm) and the stage's own
    tokenizer (the engines pad and decode themselves); its memory is freed on leaving the block."""
    settings = getattr(config, section)
    if kind == "vllm":
        with vllm_engine_for(config, run, [which], settings, tokenizer, max_new_tokens) as engine:
            log.info("generation: vllm engine for %s (%s)", which, section)
            yield engine.serving(which)
        return
    hf = HFEngine(load_stage_model(config, run, which, merge=True), tokenizer, settings.batch_size)
    log.info("generation: hf engine for %s (%s)", which, section)
    try:
        yield hf
    finally:
        hf.close()


class StageEngines:
    """The engines of a stage that generates with several models in turn (eval: base, sft, rl), one open at a time.

    ``for_model(which)`` gives a ``LazyEngine``-like callable for one model. With vLLM and adapters served as LoRA
    (``vllm_adapter: lora``, or a 4-bit base), the models on the same weights share one engine, each request
    carrying its model's ``LoRARequest``: vLLM starts once per stage (about a minute each start, measured on an
    H100, docs/results.md), not once per model. Otherwise (hf, or adapters merged) each model has an engine of
    its own, closed when the next model asks for one, so that two never hold the GPU together. Use as a context
    manager: the last engine closes at its end.
    """

    def __init__(
        self, config: Any, run: Any, kind: str, section: str, max_new_tokens: int, tokenizer: Any, models: Sequence[str]
    ):
        self.config, self.run, self.kind, self.section = config, run, kind, section
        self.max_new_tokens, self.tokenizer = max_new_tokens, tokenizer
        settings = getattr(config, section)
        self.shared = kind == "vllm" and (settings.vllm_adapter == "lora" or config.model.quantization != "none")
        # every model the stage will ask for, with the weights its adapter sits on: a shared engine loads the adapters
        # of all the models on the same weights
        self.weights = {m: stage_weights(config, run, m)[0] for m in models} if self.shared else {}
        self._key: Any = object()
        self._lazy: LazyEngine | None = None

    def for_model(self, which: str) -> Callable[[], Engine]:
        group = [m for m, w in self.weights.items() if w == self.weights[which]] if self.shared else [which]
        key = tuple(group)
        if key != self._key:
            self.close()
            settings = getattr(self.config, self.section)
            if self.shared:
                opener = functools.partial(
                    vllm_engine_for, self.config, self.run, group, settings, self.tokenizer, self.max_new_tokens
                )
            else:
                opener = functools.partial(
                    open_engine,
                    self.config,
                    self.run,
                    which,
                    self.kind,
                    self.section,
                    self.max_new_tokens,
                    self.tokenizer,
                )
            self._key, self._lazy = key, LazyEngine(opener)
        lazy = self._lazy
        return (lambda: lazy().serving(which)) if self.shared else lazy

    def close(self) -> None:
        if self._lazy is not None:
            self._lazy.__exit__(None, None, None)
        self._key, self._lazy = object(), None

    def __enter__(self) -> StageEngines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------- entry points


def generate_stream(
    engine: Engine, requests: Sequence[GenRequest], max_new_tokens: int, desc: str = "generate", progress: bool = True
) -> Iterator[tuple[int, GenResult]]:
    """(request index, result) for every request, each as soon as the engine has it (not in request order), with a
    progress bar of sequences and generated tokens/s."""
    if not requests:
        return
    # with special tokens, as TRL encodes text examples: render_prompt left the BOS to a tokenizer that adds it
    encoded = engine.tokenizer([r.prompt for r in requests])["input_ids"]
    bar = tqdm(total=len(requests), desc=desc, unit="seq", disable=not progress, dynamic_ncols=True)
    tokens, started = 0, time.perf_counter()
    for i, result in engine.run(requests, encoded, max_new_tokens):
        tokens += result.num_tokens
        bar.update(1)
        bar.set_postfix(tok_per_s=f"{tokens / (time.perf_counter() - started):.0f}", refresh=False)
        yield i, result
    bar.close()


def generate(
    engine: Engine, requests: Sequence[GenRequest], max_new_tokens: int, desc: str = "generate", progress: bool = True
) -> list[GenResult]:
    """Generate for every request; results come back in the requests' order."""
    results: list[GenResult | None] = [None] * len(requests)
    for i, result in generate_stream(engine, requests, max_new_tokens, desc, progress):
        results[i] = result
    return results  # type: ignore[return-value]


class LazyEngine:
    """A stage's engine, opened by ``opener`` (e.g. ``open_engine``) on the first call and closed when the ``with``
    block ends: a stage with nothing left to generate never loads a model."""

    def __init__(self, opener: Callable[[], contextlib.AbstractContextManager[Engine]]):
        self.opener, self.stack, self.engine = opener, contextlib.ExitStack(), None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = self.stack.enter_context(self.opener())
        return self.engine

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.close()
        self.engine = None


def generate_records(
    engine: Callable[[], Engine],
    path: Path,
    questions: Sequence[dict[str, Any]],
    requests_of: Callable[[dict[str, Any]], list[GenRequest]],
    record_of: Callable[[dict[str, Any], list[GenResult]], dict[str, Any]],
    max_new_tokens: int,
    desc: str,
) -> dict[str, Any]:
    """The generate-and-record loop of every generating stage, resumable: one record per question in ``path``.

    Questions whose ``id`` is already in ``path`` are skipped (a torn last line is dropped: ``JsonlAppender``).
    ``requests_of(question)`` gives the question's requests (their keys are the caller's, handed back in the
    results); all requests of all remaining questions stream through ``engine()`` (a ``LazyEngine``, called only if
    there is work); once a question's last sample ends, ``record_of(question, results in request order)``
    is appended whole. A killed run loses only the questions in flight. Returns ``{"tokens", "seconds"}``
    generated here (0 when nothing was left).
    """
    tally: dict[str, Any] = {"tokens": 0, "seconds": 0.0, "engine": None}
    with JsonlAppender(path) as out:
        done = out.done_keys
        todo = [q for q in questions if q["id"] not in done]
        if not todo:
            return tally
        if done:
            print(f"{desc}: resuming, {len(done)} questions already done, {len(todo)} to go")
        requests, owners, pending = [], [], {}
        for q in todo:
            mine = requests_of(q)
            pending[q["id"]] = [None] * len(mine)
            for k, r in enumerate(mine):
                requests.append(r)
                owners.append((q, k))
        # The bar counts samples, a whole batch at a time (hf ends a batch's rows together; vLLM's batch_size is
        # absent, so one by one), with the run's mean rate (smoothing=0): counting questions, or single samples of
        # a batch that ended at once, read "1/30 [05:57<2:52:37]" when 30 answers decoded together came back.
        generator = engine()
        # the clock starts once the engine is up: a vLLM engine's start (about a minute) counted in the rate made the
        # first estimate read hours ("1/4000 [00:55<61:36:56]") and the stage's tokens/s a fifth of vLLM's
        started, saved, arrived, shown = time.perf_counter(), len(done), 0, 0
        bar = tqdm(total=len(requests), desc=desc, unit="sample", dynamic_ncols=True, smoothing=0)
        tally["engine"] = generator.name
        batch = getattr(generator, "batch_size", 1)
        for i, result in generate_stream(generator, requests, max_new_tokens, progress=False):
            q, k = owners[i]
            group = pending[q["id"]]
            group[k] = result
            tally["tokens"] += result.num_tokens
            if all(r is not None for r in group):
                out.append(record_of(q, pending.pop(q["id"])))
                saved += 1
            arrived += 1
            if arrived - shown == min(batch, len(requests) - shown):
                bar.set_postfix(
                    questions=f"{saved}/{len(questions)}",
                    tok_per_s=f"{tally['tokens'] / (time.perf_counter() - started):.0f}",
                    refresh=False,
                )
                bar.update(arrived - shown)
                shown = arrived
        bar.close()
        tally["seconds"] = time.perf_counter() - started
        tally["engine_gpu_memory_gib"] = getattr(generator, "gpu_memory_gib", None)
    return tally


def generation_speed(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    """What a generation stage records of its processes' ``{"engine", "tokens", "seconds", "peak_gpu_memory_gib",
    "engine_gpu_memory_gib"}`` (one dict per process, in process order): the engine, tokens generated in all, the
    slowest process's generation time, their ratio, every process's peak GPU memory (this process's allocator
    only), and, for a vLLM engine, the GPU memory its engine core process added on its device (GiB, None for hf:
    ``VLLMEngine.gpu_memory_gib``; device-wide, so another job's memory on a shared GPU counts in it)."""
    tokens = sum(p["tokens"] for p in per_process)
    seconds = max(p["seconds"] for p in per_process)
    engines = sorted({p["engine"] for p in per_process if p.get("engine")})
    return {
        "engine": ",".join(engines) or None,
        "processes": len(per_process),
        "generated_tokens": tokens,
        "generation_s": seconds,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "peak_gpu_memory_gib": [p["peak_gpu_memory_gib"] for p in per_process],
        "engine_gpu_memory_gib": [p.get("engine_gpu_memory_gib") for p in per_process],
    }
