"""On a CUDA GPU (``-m gpu``): vLLM as looper's engine, from the requests it is handed to the stages that use it,
and a bitsandbytes-quantized base (``model.quantization``) from loading to training and generating.

A small random Llama whose head size vLLM's attention kernels take (64), with SmolLM2's tokenizer and a scaled-up
head (larger logit gaps). Skipped without a GPU; the vLLM tests also without vLLM installed, the quantized ones
without bitsandbytes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import read_jsonl, run_looper, write_gsm8k
from looper.generation import (
    GenRequest,
    HFEngine,
    VLLMEngine,
    generate,
    vllm_engine_args,
    vllm_installed,
)
from looper.modeling import end_token_ids

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_vllm = pytest.mark.skipif(not vllm_installed(), reason="needs vLLM (pip install 'looper[vllm]')")
needs_bitsandbytes = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes (pip install 'looper[gpu]')"
)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # decisive logits: greedy choices far apart
    out = tmp_path_factory.mktemp("small-llama")
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(small_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter (r=8) with random, non-zero B, so that it changes what the model writes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    peft = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            init_lora_weights=False,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    out = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(out)
    return out


def _requests(n: int = 16) -> list[GenRequest]:
    return [
        GenRequest(i, f"Problem {i}: Tom has {i} apples and buys {i + 3} more. How many?", 0.0, 1.0, seed=i)
        for i in range(n)
    ]


def _tokenizer(path: Path):
    from looper.config import ModelConfig
    from looper.modeling import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path=str(path)), padding_side="left")


def _vllm(path: Path, adapter: Path | None = None, seeded: bool = False) -> VLLMEngine:
    tokenizer = _tokenizer(path)
    args = vllm_engine_args(
        str(path),
        str(path),
        adapter_rank=8 if adapter else None,
        dtype="bfloat16",
        quantization="none",
        seed=0,
        max_num_seqs=16,
        max_model_len=1024,
        revision=None,
        trust_remote_code=False,
        overrides={"gpu_memory_utilization": 0.3},
    )
    engine = VLLMEngine(
        args, tokenizer, end_token_ids(tokenizer, tokenizer.eos_token_id), {"model": adapter} if adapter else {}, seeded
    )
    return engine.serving("model")


def _hf(path: Path, adapter: Path | None = None) -> HFEngine:
    from looper.config import ModelConfig
    from looper.modeling import load_model

    cfg = ModelConfig(name_or_path=str(path), dtype="bfloat16")
    return HFEngine(load_model(cfg, adapter=adapter, merge=True), _tokenizer(path), 16)


@needs_vllm
def test_vllm_and_transformers_agree_greedily_with_and_without_an_adapter(small_model_dir, adapter_dir):
    """The adapter reaches vLLM (through LoRARequest) as it reaches transformers (merged): greedy texts agree between
    the engines, and the adapter changes them."""
    requests = _requests()
    got = {}
    for name, adapter in (("base", None), ("lora", adapter_dir)):
        engine = _vllm(small_model_dir, adapter)
        got[("vllm", name)] = generate(engine, requests, 24, progress=False)
        engine.close()
        engine = _hf(small_model_dir, adapter)
        got[("hf", name)] = generate(engine, requests, 24, progress=False)
        engine.close()

    def agree(a, b):  # outputs whose first 8 greedy tokens are the same
        return sum(x.token_ids[:8] == y.token_ids[:8] for x, y in zip(got[a], got[b]))

    # bf16 alone moves near-ties: transformers in float32 vs bfloat16 agree on 13-14 of these 16 (measured on a CPU),
    # so the bar is set below that; an adapter that did not reach vLLM, or reached it wrongly, would agree on ~0
    assert agree(("vllm", "base"), ("hf", "base")) >= 10, agree(("vllm", "base"), ("hf", "base"))
    assert agree(("vllm", "lora"), ("hf", "lora")) >= 10, agree(("vllm", "lora"), ("hf", "lora"))
    assert (
        agree(("vllm", "lora"), ("hf", "base")) <= 3 and agree(("vllm", "lora"), ("vllm", "base")) <= 3
    )  # it changes them
    assert all(r.num_tokens <= 24 for r in got[("vllm", "lora")])


@needs_vllm
def test_vllm_seeds_replay_samples_and_results_come_back_in_order(small_model_dir):
    engine = _vllm(small_model_dir, seeded=True)
    base = [GenRequest(i, f"Problem {i % 4}: how many apples?", 1.0, 0.95, seed=100 + i % 8) for i in range(16)]
    results = generate(engine, base, 16, progress=False)
    assert [r.key for r in results] == list(range(16))
    for i in range(8):  # requests i and i + 8 share prompt and seed: the same sample
        assert results[i].token_ids == results[i + 8].token_ids
    assert len({tuple(r.token_ids) for r in results[:8]}) >= 6  # other seeds, other samples
    again = generate(engine, base[:4], 16, progress=False)  # the same engine later, other neighbours
    assert [r.token_ids for r in again] == [r.token_ids for r in results[:4]]
    engine.close()


@needs_vllm
def test_stages_generate_with_vllm_and_resume(small_model_dir, tmp_path):
    """prepare-data, sft (LoRA r=8), collect-rollouts and eval with engine vllm through the CLI; an eval cut short (its
    last records gone, as after a kill) generates only what is missing."""
    data = write_gsm8k(tmp_path / "gsm8k", 24)
    cli = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        "data.source=local",
        f"data.path={data}",
        f"model.name_or_path={small_model_dir}",
        "model.dtype=bfloat16",
        "sft.trainer.max_steps=2",
        "sft.lora.r=8",
        "rollouts.num_questions=6",
        "rollouts.max_new_tokens=16",
        "rollouts.engine=vllm",
        "rollouts.vllm={gpu_memory_utilization: 0.3}",
        "eval.engine=vllm",
        "eval.vllm={gpu_memory_utilization: 0.3}",
        "eval.max_new_tokens=16",
        "eval.datasets=[gsm8k_test]",
        "eval.models=[base,sft]",
    ]
    for stage in ("prepare-data", "sft", "collect-rollouts"):
        run_looper(stage, *cli, cwd=REPO)
    run = tmp_path / "runs" / "demo"
    marker = json.loads((run / "stages" / "collect-rollouts.json").read_text())
    assert marker["engine"] == "vllm" and marker["generated_tokens"] > 0
    # the engine core's memory (a child process) is recorded: about gpu_memory_utilization 0.3 of the GPU
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    assert 0.2 * total < marker["engine_gpu_memory_gib"][0] < 0.4 * total
    records = read_jsonl(run / "data" / "rl_rollouts.jsonl")
    assert len(records) == 6 and all(len(r["trajectories"]) == 8 for r in records)
    run_looper("eval", *cli, "eval.limit=10", cwd=REPO)
    path = run / "eval" / "sft__gsm8k_test.jsonl"
    first = read_jsonl(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in first[:4]))
    (run / "stages" / "eval.json").unlink()
    proc = run_looper("eval", *cli, "eval.limit=10", cwd=REPO)
    assert "resuming, 4 questions already done, 6 to go" in proc.stdout
    assert [r["id"] for r in read_jsonl(path)] == [r["id"] for r in first]
    assert json.loads((run / "stages" / "eval.json").read_text())["engine"] == "vllm"


@needs_bitsandbytes
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_a_quantized_base_loads_trains_an_adapter_and_generates(small_model_dir, tmp_path, quantization):
    """model.quantization: the linear layers load as bitsandbytes' (NF4 or LLM.int8), the model smaller than in bf16,
    and transformers generates from it; through the CLI, sft trains a LoRA adapter on the quantized base and eval
    generates with base and adapter: 4-bit through vLLM's bitsandbytes where vLLM is installed, 8-bit through
    transformers (vLLM has no in-flight 8-bit)."""
    import bitsandbytes as bnb

    from looper.config import ModelConfig
    from looper.modeling import load_model

    quantized = load_model(ModelConfig(name_or_path=str(small_model_dir), dtype="bfloat16", quantization=quantization))
    layer = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[quantization]
    assert isinstance(quantized.model.layers[0].self_attn.q_proj, layer)
    assert isinstance(quantized.model.layers[1].mlp.down_proj, layer)
    bf16 = load_model(ModelConfig(name_or_path=str(small_model_dir), dtype="bfloat16"))
    assert quantized.get_memory_footprint() < bf16.get_memory_footprint()
    del bf16
    results = generate(HFEngine(quantized, _tokenizer(small_model_dir), 16), _requests(), 16, progress=False)
    assert [r.key for r in results] == list(range(16)) and all(0 < r.num_tokens <= 16 for r in results)
    del quantized
    torch.cuda.empty_cache()

    engine = "vllm" if quantization == "4bit" and vllm_installed() else "hf"
    data = write_gsm8k(tmp_path / "gsm8k", 24)
    cli = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        "data.source=local",
        f"data.path={data}",
        f"model.name_or_path={small_model_dir}",
        "model.dtype=bfloat16",
        f"model.quantization={quantization}",
        "sft.trainer.max_steps=2",
        "sft.lora.r=8",
        f"eval.engine={engine}",
        "eval.vllm={gpu_memory_utilization: 0.3}",
        "eval.max_new_tokens=16",
        "eval.datasets=[gsm8k_test]",
        "eval.models=[base,sft]",
        "eval.limit=8",
    ]
    for stage in ("prepare-data", "sft", "eval"):
        run_looper(stage, *cli, cwd=REPO)
    run = tmp_path / "runs" / "demo"
    assert (run / "checkpoints" / "lora_sft" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "stages" / "eval.json").read_text())["engine"] == engine
    for model in ("base", "sft"):
        records = read_jsonl(run / "eval" / f"{model}__gsm8k_test.jsonl")
        assert len(records) == 8, model
