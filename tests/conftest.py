"""Shared fixtures: tiny random Llama models built locally from a config and a real tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Path:
    """SmolLM2's real tokenizer, from the embedded model (fetched once into the looper cache)."""
    from looper.config import EMBEDDED_MODEL
    from looper.modeling import resolve_model_path

    return Path(resolve_model_path(EMBEDDED_MODEL))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A 2-layer, hidden-32 random Llama with SmolLM2's tokenizer and chat template (tests plumbing, not quality)."""
    return tiny_llama(real_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


def tiny_llama(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 random Llama (weights drawn with ``seed``) with the tokenizer of ``tokenizer_dir`` and its
    vocabulary, in ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    stops_sometimes(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def stops_sometimes(model, tokenizer, share: int = 24) -> None:
    """A random model almost never writes its end-of-sequence token, so every answer would run to the token limit
    and count as truncated (never a DPO chosen answer, never self data). One token in ``share`` (a fixed set, plus
    the real EOS) ends a sequence, set as the model's generation_config ``eos_token_id``, as a model with several
    stop tokens does: sampled answers of a few dozen tokens then end on their own, as a real model's do."""
    import random

    rng = random.Random(0)
    stops = sorted(rng.sample(range(len(tokenizer)), len(tokenizer) // share))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *(t for t in stops if t != tokenizer.eos_token_id)]


R1_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "r1_distill_llama_8b" / "tokenizer_config.json"


@pytest.fixture(scope="session")
def r1_tokenizer_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A tokenizer that behaves like DeepSeek-R1-Distill-Llama-8B's (its real chat template and special-token
    settings, fixtures/r1_distill_llama_8b) on SmolLM2's vocabulary: BOS added on every encoding, and written by
    the template too; the generation prompt opens a thought (``<｜Assistant｜><think>\n``)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    settings = json.loads(R1_FIXTURE.read_text())
    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    tokenizer.add_special_tokens(
        {
            "bos_token": settings["bos_token"],
            "eos_token": settings["eos_token"],
            "pad_token": settings["pad_token"],
            "additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>"],
        }
    )
    tokenizer.add_tokens(["<think>", "</think>"])  # added, not special, as in the R1 distills' vocabulary
    tokenizer.chat_template = settings["chat_template"]
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    out = tmp_path_factory.mktemp("r1-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def r1_tiny_model_dir(tmp_path_factory, r1_tokenizer_dir) -> Path:
    """The tiny random Llama of ``tiny_model_dir`` with the R1-like tokenizer (and its vocabulary size)."""
    return tiny_llama(r1_tokenizer_dir, tmp_path_factory.mktemp("r1-tiny-llama"))


QWEN_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "qwen2_5_coder"


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory) -> Path:
    """Qwen2.5-Coder's real tokenizer as read from its GGUF (fixtures/qwen2_5_coder), with the EOS transformers 5.17
    reads there (``<|endoftext|>``, where the chat template ends a turn with ``<|im_end|>``)."""
    import gzip
    import shutil

    out = tmp_path_factory.mktemp("qwen-tokenizer")
    with gzip.open(QWEN_FIXTURE / "tokenizer.json.gz") as src, open(out / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(QWEN_FIXTURE / name, out / name)
    return out


@pytest.fixture(scope="session")
def qwen_tiny_model_dir(tmp_path_factory, qwen_tokenizer_dir) -> Path:
    """A 2-layer, hidden-32 random Qwen2 (q/k/v biases, as Qwen's) with Qwen2.5-Coder's tokenizer, whose
    generation_config names ``<|endoftext|>`` but not ``<|im_end|>`` among its ends (as a checkpoint converted by
    transformers 5.17 did), with the random stop tokens of ``stops_sometimes`` so that its answers end on their own."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    stops_sometimes(model, tokenizer)
    model.generation_config.eos_token_id = [
        t for t in model.generation_config.eos_token_id if t != 151645
    ]  # no <|im_end|>
    out = tmp_path_factory.mktemp("qwen-tiny")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_gsm8k(folder: Path, n: int) -> Path:
    """A local GSM8K copy (train.jsonl and test.jsonl, the same ``n`` one-step problems) for data.source=local."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"question": f"Tom has {i} apples and buys 2 more. How many?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
        for i in range(n)
    ]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_looper(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "looper.cli", *args], cwd=cwd, capture_output=True, text=True, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"looper {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
