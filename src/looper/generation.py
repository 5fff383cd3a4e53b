"""The one generation engine, shared by collect-rollouts and eval.

``generate`` returns results in request order; ``generate_stream`` yields each result as soon as its
sequence ends. Each request carries its own temperature, top_p and seed, so one batch can mix
Regime W arms, and a sample depends only on (prompt, temperature, top_p, seed), never on the batch
it lands in: it can be replayed alone.

Two engines (``engine=``):

* ``slots`` (default): request-level continuous batching. ``batch_size`` slots decode together; when
  a sequence ends, the next waiting request is prefilled into its slot while the others keep going,
  so few steps are spent on finished rows. The KV cache is preallocated once
  (``SlotKVCache``: per layer ``(slots, kv_heads, columns, head_dim)``) and used as a ring: every
  decode step writes all slots at the same column, and a new request's prompt is written just behind
  that column, so prompts and continuations of different lengths share one fixed shape. Attention
  does not care where a key sits (rotary positions are applied before caching; each row's
  ``position_ids`` and its own column mask are passed explicitly), so the ring changes nothing in
  what is computed. Fixed shapes let the decode step (forward + sampling + bookkeeping, all on the
  device) be captured once as a CUDA graph and replayed; the host looks at the batch every
  ``sync_every`` steps, one such chunk behind the device, so the device never waits for it
  (``_generate_slots``). transformers provides the model's forward; what it lacks (per-request seeded
  sampling inside continuous batching) is the small scheduler here.
* ``hf``: length-sorted, left-padded batches through ``model.generate`` with the dynamic cache, kept
  for models whose attention the slot cache does not fit (sliding windows, other cache types).

Sampling is exact: each row's logits are divided by its temperature and cut to its top_p nucleus, and
a counter-based hash of (row seed, tokens generated so far) picks the token: by inverse CDF from one
uniform per row on CUDA, by Gumbel-max on CPU, where the draw must survive last-bit differences
between batches (``sample``). Temperature 0 is greedy decoding. Both engines use the same sampler, so
they draw the same samples from the same logits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache

log = logging.getLogger("looper")

_MASK32 = 0xFFFFFFFF
ENGINES = ("slots", "hf")


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
    token_ids: list[int] = field(default_factory=list, repr=False)  # the generated ids, end-of-sequence included


# ----------------------------------------------------------------------------- sampling


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


def sample(logits: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor, seeds: torch.Tensor,
           steps: torch.Tensor | int, use_top_p: bool = True, method: str | None = None) -> torch.Tensor:
    """(batch,) token ids: each row's draw from softmax(logits / temperature) cut to its top_p nucleus.

    The nucleus is found on the logits sorted in their own dtype (bf16 logits sort on 16-bit keys):
    its least probable member sets a threshold and every token at or above it is kept (ties with that
    member included), so the kept set does not depend on sort order, and a row with top_p = 1 draws
    the same whether or not its batch needed the sort (``use_top_p=False`` skips it when no row has
    top_p < 1). Temperature 0 is greedy. No host synchronisation: it runs inside a CUDA graph.

    Two exact ways to draw, both pure functions of (seed, tokens generated so far):

    * ``inverse_cdf`` (default on CUDA): one seeded uniform per row, the token where the cumulative
      probability (vocabulary order) first exceeds ``u`` times the kept mass. Cheap: no per-token noise.
      Its draw moves when any probability moves in the last bits, which bf16 batch shapes do anyway.
    * ``gumbel`` (default on CPU): seeded Gumbel noise per token added to the kept logits, argmax.
      Costs a hash per token, but only the leading tokens decide, so float32 differences in the last
      bits (a different batch, a different cache width) leave the draw unchanged: on a CPU a request
      replays token for token whatever batch it lands in.
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
    """A LogitsProcessor for ``model.generate(do_sample=False)`` (the ``hf`` engine): per-row temperature,
    top_p and seeded sampling (``sample``), the same draws as the slot engine. It returns scores that are
    -inf everywhere but at the drawn token, so generate's argmax picks it."""

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


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (n, longest): each prompt right-aligned, so every row's last token is in the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = True
    return ids, mask


def _result(key: Any, tokens: list[int], eos: list[int], max_new_tokens: int, tokenizer: Any) -> GenResult:
    end = next((k for k, t in enumerate(tokens) if t in eos), None)
    kept = tokens if end is None else tokens[: end + 1]
    return GenResult(key, tokenizer.decode(kept, skip_special_tokens=True), num_tokens=len(kept),
                     truncated=end is None and len(kept) >= max_new_tokens, token_ids=kept)


# ----------------------------------------------------------------------------- slot engine

class SlotKVCache(Cache):
    """The slot engine's KV cache, handed to the model's forward as ``past_key_values``.

    Per layer, keys and values of shape ``(slots, kv_heads, columns, head_dim)``, allocated once. In
    decode, ``update`` writes every slot's new key/value at ``column`` (a device tensor, so a CUDA
    graph can replay it) and returns the whole ring; the caller's 4D mask says which columns each slot
    may attend to. While ``prefill_at = (slots, columns)`` is set, ``update`` stores a prompt's
    keys/values at those places and returns them unchanged, so prompt tokens attend among themselves.
    """

    is_compileable = False

    def __init__(self, num_layers: int, slots: int, kv_heads: int, columns: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device):
        # Cache.__init__ builds transformers' own layer objects; this cache keeps plain tensors instead.
        self.layers = []
        self.keys = [torch.zeros(slots, kv_heads, columns, head_dim, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.prefill_at: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.prefill_at is not None:
            slots, columns = self.prefill_at  # (n,), (prompt width,)
            keys.transpose(1, 2)[slots[:, None], columns[None, :]] = key_states.transpose(1, 2).to(keys.dtype)
            values.transpose(1, 2)[slots[:, None], columns[None, :]] = value_states.transpose(1, 2).to(values.dtype)
            return key_states, value_states
        keys.index_copy_(2, self.column, key_states.to(keys.dtype))
        values.index_copy_(2, self.column, value_states.to(values.dtype))
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly

    def __len__(self) -> int:
        return len(self.keys)


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def capturable(model: Any) -> bool:
    """False for a model whose decode step cannot be captured as a CUDA graph, known before trying: bitsandbytes'
    LLM.int8 layers (``model.quantization: 8bit``) read their outlier columns on the host. Trying is not free: a
    capture that fails midway leaves the CUDA generator marked as capturing, and the next random draw outside the
    graph (LoRA dropout in GRPO's training step, measured on the H200) then fails with "Offset increment outside
    graph capture"."""
    return not any(type(m).__name__ == "Linear8bitLt" for m in model.modules())


class SlotEngine:
    """Continuous batching over ``slots`` rows with a ring KV cache of ``columns`` columns (module docstring).

    State lives on the device, one row per slot: the token to feed and its position, the row's column
    mask, its sampling settings, tokens generated so far and whether it is done.
    """

    def __init__(self, model: Any, slots: int, columns: int, max_new_tokens: int, eos: list[int], use_top_p: bool,
                 cuda_graph: bool):
        cfg = _text_config(model)
        self.model = model
        self.device = next(model.parameters()).device
        dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.slots, self.columns, self.max_new = slots, columns, max_new_tokens
        self.cache = SlotKVCache(cfg.num_hidden_layers, slots, kv_heads, columns, head_dim, dtype, self.device)
        dev = self.device
        self.ids = torch.zeros(slots, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(slots, 1, dtype=torch.long, device=dev)
        self.mask = torch.zeros(slots, columns, dtype=torch.bool, device=dev)
        self.temps = torch.zeros(slots, dtype=torch.float32, device=dev)
        self.top_ps = torch.ones(slots, dtype=torch.float32, device=dev)
        self.seeds = torch.zeros(slots, dtype=torch.long, device=dev)
        self.step = torch.zeros(slots, dtype=torch.long, device=dev)
        self.done = torch.ones(slots, dtype=torch.bool, device=dev)
        self.out = torch.zeros(slots, max_new_tokens, dtype=torch.long, device=dev)
        self.eos = torch.tensor(eos or [-1], dtype=torch.long, device=dev)
        self.use_top_p = use_top_p
        self.host_column = 0  # mirror of cache.column, advanced once per decode step
        self.graph = self._capture() if cuda_graph and dev.type == "cuda" and capturable(model) else None

    # -- one decode step for every slot; device work only, so it can be captured and replayed
    def _decode(self) -> None:
        self.mask.index_fill_(1, self.cache.column, True)  # each row attends to the token it writes now
        logits = self.model(input_ids=self.ids, position_ids=self.pos, attention_mask=self.mask[:, None, None, :],
                            past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        tokens = sample(logits, self.temps, self.top_ps, self.seeds, self.step, self.use_top_p)
        self._record(tokens, ~self.done)
        self.ids.copy_(tokens[:, None])
        self.pos.add_(1)
        self.cache.column.add_(1).remainder_(self.columns)

    def _record(self, tokens: torch.Tensor, active: torch.Tensor) -> None:
        """Append each active row's token to its output; mark rows that ended (EOS or max_new_tokens)."""
        at = self.step.clamp(max=self.max_new - 1)[:, None]
        self.out.scatter_(1, at, torch.where(active, tokens, self.out.gather(1, at).squeeze(1))[:, None])
        self.step.add_(active.long())
        self.done.logical_or_(active & (self._is_eos(tokens) | (self.step >= self.max_new)))

    def _is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, None] == self.eos[None, :]).any(-1)

    def _capture(self) -> torch.cuda.CUDAGraph | None:
        """Capture the decode step as a CUDA graph (after warm-up on a side stream); None if it cannot be."""
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._decode()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._decode()
        except Exception as err:  # a model whose forward syncs with the host cannot be captured
            log.warning("generation: the decode step could not be captured as a CUDA graph (%s: %s); running it eagerly",
                        type(err).__name__, str(err).splitlines()[0][:200])
            graph = None
        # warm-up and capture ran on idle rows (all done); start from a clean state
        self.cache.column.zero_()
        self.mask.zero_()
        self.pos.zero_()
        self.ids.zero_()
        return graph

    def decode(self, steps: int) -> None:
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._decode()
        self.host_column = (self.host_column + steps) % self.columns

    def _upload(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Host tensors to the device without making the host wait for the work queued before them."""
        if self.device.type != "cuda":
            return list(tensors)
        return [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]

    def prefill(self, slots: list[int], prompts: list[list[int]], requests: list[GenRequest]) -> None:
        """Write each prompt's keys/values just behind the current column of its slot and sample its first token."""
        dev = self.device
        ids, valid = left_pad(prompts, pad_id=0)  # the pad id is never attended to
        width = ids.shape[1]
        settings = torch.tensor([[r.temperature, r.top_p] for r in requests], dtype=torch.float32)
        numbers = torch.tensor([[s, r.seed] for s, r in zip(slots, requests)], dtype=torch.long)
        ids, valid, settings, numbers = self._upload(ids, valid, settings, numbers)
        rows, seeds = numbers[:, 0], numbers[:, 1]
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=dev).tril()
        # padding queries attend to themselves only, so that no row of the softmax is empty
        mask = (causal[None] & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=dev)[None]
        columns = (torch.arange(width, device=dev) + self.host_column - width) % self.columns
        self.cache.prefill_at = (rows, columns)
        try:
            logits = self.model(input_ids=ids, position_ids=positions, attention_mask=mask[:, None], past_key_values=self.cache,
                                use_cache=True, logits_to_keep=1).logits[:, -1]
        finally:
            self.cache.prefill_at = None
        self.mask[rows] = False
        self.mask[rows[:, None], columns[None, :]] = valid
        self.pos[rows, 0] = valid.sum(-1)  # the first generated token's position
        self.temps[rows], self.top_ps[rows], self.seeds[rows] = settings[:, 0], settings[:, 1], seeds
        tokens = sample(logits, settings[:, 0], settings[:, 1], seeds, 0, self.use_top_p)
        self.ids[rows, 0] = tokens
        self.out[rows, 0] = tokens
        self.step[rows] = 1
        self.done[rows] = self._is_eos(tokens) | (self.max_new <= 1)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        """Host copies of (done, step, out) as of the work queued so far, and the event that says they have arrived.

        The copies are only started here, so the host can go on queueing work while they travel.
        """
        if self.device.type != "cuda":
            return self.done.clone(), self.step.clone(), self.out.clone(), None
        copies = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                  for t in (self.done, self.step, self.out)]
        event = torch.cuda.Event()
        event.record()
        return copies[0], copies[1], copies[2], event


def _generate_slots(model: Any, tokenizer: Any, requests: Sequence[GenRequest], encoded: list[list[int]], max_new_tokens: int,
                    slots: int, eos: list[int], sync_every: int, cuda_graph: bool, prefill_rows: int) -> Iterator[tuple[int, GenResult]]:
    """The scheduler. The host runs one chunk of ``sync_every`` decode steps behind the device: it queues
    chunk k, then reads the snapshot taken after chunk k-1 (long arrived), hands out the sequences that
    ended and refills their slots before queueing chunk k+1. The device never waits for the host (its
    decoding, refilling and the caller's work on the results all overlap a chunk in flight); the price
    is that a finished slot idles for one chunk before its next request."""
    waiting = deque(sorted(range(len(requests)), key=lambda i: -len(encoded[i])))  # long prompts first
    slots = min(slots, len(requests))
    use_top_p = any(r.top_p < 1 and r.temperature > 0 for r in requests)
    engine = SlotEngine(model, slots, max(len(e) for e in encoded) + max_new_tokens, max_new_tokens, eos, use_top_p, cuda_graph)
    owner: list[int | None] = [None] * slots  # request index held by each slot
    previous = None  # (snapshot, owners when it was taken)
    while waiting or any(o is not None for o in owner):
        free = [s for s in range(slots) if owner[s] is None]
        for start in range(0, min(len(free), len(waiting)), prefill_rows):
            group = free[start : start + prefill_rows][: len(waiting)]
            taken = [waiting.popleft() for _ in group]
            engine.prefill(group, [encoded[i] for i in taken], [requests[i] for i in taken])
            for s, i in zip(group, taken):
                owner[s] = i
        engine.decode(sync_every)
        current = (engine.snapshot(), list(owner))
        if previous is not None:
            (done, steps, outs, event), owners = previous
            if event is not None:
                event.synchronize()
            # a slot ended in that snapshot and still holds the same request (not handed out before, not refilled)
            for s in torch.nonzero(done).flatten().tolist():
                i = owners[s]
                if i is not None and owner[s] == i:
                    owner[s] = None
                    yield i, _result(requests[i].key, outs[s, : steps[s]].tolist(), eos, max_new_tokens, tokenizer)
        previous = current


# ----------------------------------------------------------------------------- hf engine


@contextlib.contextmanager
def _sdpa_gqa_with_mask(enabled: bool) -> Iterator[None]:
    """transformers < 5.2x copies K/V to every query head under a padding mask at each decode step
    (measured: the copy dominated batched decoding on an H200); this lets SDPA do grouped-query
    attention itself. Scoped to generation: training keeps transformers' default."""
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


def _generate_hf(model: Any, tokenizer: Any, requests: Sequence[GenRequest], encoded: list[list[int]], max_new_tokens: int,
                 batch_size: int, eos: list[int]) -> Iterator[tuple[int, GenResult]]:
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
    gen_config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos,
                                  temperature=None, top_p=None, top_k=None)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        input_ids, attention = left_pad([encoded[i] for i in idx], pad_id)
        width = input_ids.shape[1]
        sampler = SeededSampler([requests[i].temperature for i in idx], [requests[i].top_p for i in idx],
                                [requests[i].seed for i in idx])
        with _sdpa_gqa_with_mask(device.type == "cuda"):
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.long().to(device),
                                 generation_config=gen_config, logits_processor=[sampler])
        new = out[:, width:].cpu()
        for row, i in enumerate(idx):
            yield i, _result(requests[i].key, new[row].tolist(), eos, max_new_tokens, tokenizer)


# ----------------------------------------------------------------------------- entry points


@torch.inference_mode()
def _indexed_stream(model: Any, tokenizer: Any, requests: Sequence[GenRequest], max_new_tokens: int, batch_size: int,
                    desc: str, progress: bool, engine: str = "slots", sync_every: int = 8, cuda_graph: bool = True,
                    prefill_rows: int = 256) -> Iterator[tuple[int, GenResult]]:
    if engine not in ENGINES:
        raise ValueError(f"unknown generation engine {engine!r}; expected one of {ENGINES}")
    if not requests:
        return
    eos = _eos_ids(model, tokenizer)
    encoded = tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    bar = tqdm(total=len(requests), desc=desc, unit="seq", disable=not progress, dynamic_ncols=True)
    tokens, started = 0, time.perf_counter()
    if engine == "slots":
        results = _generate_slots(model, tokenizer, requests, encoded, max_new_tokens, batch_size, eos, sync_every,
                                  cuda_graph, prefill_rows)
    else:
        results = _generate_hf(model, tokenizer, requests, encoded, max_new_tokens, batch_size, eos)
    for i, result in results:
        tokens += result.num_tokens
        bar.update(1)
        bar.set_postfix(tok_per_s=f"{tokens / (time.perf_counter() - started):.0f}", refresh=False)
        yield i, result
    bar.close()


def generate_stream(model: Any, tokenizer: Any, requests: Sequence[GenRequest], max_new_tokens: int, batch_size: int,
                    desc: str = "generate", progress: bool = True, **engine_options: Any) -> Iterator[GenResult]:
    """Yield one GenResult per request, each as soon as its sequence ends (not in request order).

    ``batch_size``: sequences decoded together (slots, or rows of one ``generate`` call). Engine
    options: ``engine`` ("slots" or "hf"); slot engine: ``sync_every`` (decode steps between looks at
    which rows ended, default 8), ``prefill_rows`` (most prompts prefilled in one forward, default 256),
    ``cuda_graph`` (capture the decode step on CUDA, default True).
    """
    for _, result in _indexed_stream(model, tokenizer, requests, max_new_tokens, batch_size, desc, progress, **engine_options):
        yield result


def complete_groups(results: Iterable[GenResult], size: int) -> Iterator[list[GenResult]]:
    """Group streamed results by ``key[0]`` (a question); yield each group, sorted by key, once it holds ``size``."""
    pending: dict[Any, list[GenResult]] = {}
    for result in results:
        group = pending.setdefault(result.key[0], [])
        group.append(result)
        if len(group) == size:
            yield sorted(pending.pop(result.key[0]), key=lambda r: r.key)


def generate(model: Any, tokenizer: Any, requests: Sequence[GenRequest], max_new_tokens: int, batch_size: int,
             desc: str = "generate", progress: bool = True, **engine_options: Any) -> list[GenResult]:
    """Generate for every request; results come back in the requests' order (options: ``generate_stream``)."""
    results: list[GenResult | None] = [None] * len(requests)
    for i, result in _indexed_stream(model, tokenizer, requests, max_new_tokens, batch_size, desc, progress, **engine_options):
        results[i] = result
    return results  # type: ignore[return-value]


def generation_speed(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    """What a generation stage records of its processes' ``{"tokens", "seconds", "peak_gpu_memory_gib"}`` (one dict per
    process, in process order): tokens generated in all, the slowest process's generation time, their ratio, and
    every process's peak GPU memory."""
    tokens = sum(p["tokens"] for p in per_process)
    seconds = max(p["seconds"] for p in per_process)
    return {"processes": len(per_process), "generated_tokens": tokens, "generation_s": seconds,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
            "peak_gpu_memory_gib": [p["peak_gpu_memory_gib"] for p in per_process]}

