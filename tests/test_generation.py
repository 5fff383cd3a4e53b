"""Generation: seeded per-row sampling that does not depend on the batch (hf engine), the requests and engine
arguments handed to vLLM, and the one generate-and-record loop."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import read_jsonl
from looper import generation
from looper.config import ModelConfig, load_config
from looper.errors import InputError
from looper.generation import (
    GenRequest,
    HFEngine,
    LazyEngine,
    SeededSampler,
    VLLMEngine,
    device_memory_used_gib,
    generate,
    generate_records,
    generate_stream,
    generation_speed,
    gumbel_noise,
    remove_stale_merged,
    resolve_engine,
    row_uniforms,
    sample,
    vllm_engine_args,
    vllm_engine_for,
    vllm_sampling_kwargs,
)
from looper.modeling import load_model, load_tokenizer
from looper.runs import RunDir


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    return load_model(cfg), load_tokenizer(cfg, padding_side="left")


def hf(model, tokenizer, batch_size):
    return HFEngine(model, tokenizer, batch_size)


def test_row_uniforms_are_a_pure_function_of_seed_and_step():
    cpu = torch.device("cpu")
    a = row_uniforms(torch.tensor([1, 2]), 5, cpu)
    b = row_uniforms(torch.tensor([2, 1]), torch.tensor([5, 5]), cpu)
    assert torch.equal(a, b.flip(0))  # rows depend on their own seed only
    assert a[0] != row_uniforms(torch.tensor([1]), 6, cpu)[0]
    many = row_uniforms(torch.arange(100000), 3, cpu)
    assert 0 < many.min() and many.max() < 1 and abs(many.mean().item() - 0.5) < 0.005
    assert abs(many.std().item() - (1 / 12) ** 0.5) < 0.005
    steps = row_uniforms(torch.full((100000,), 9), torch.arange(100000), cpu)  # one row along its steps
    assert abs(steps.mean().item() - 0.5) < 0.005


def test_gumbel_noise_is_a_pure_function_of_seed_step_token():
    a = gumbel_noise(torch.tensor([1, 2]), 5, 100, torch.device("cpu"))
    b = gumbel_noise(torch.tensor([2, 1]), 5, 100, torch.device("cpu"))
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])  # rows depend on their own seed only
    assert not torch.equal(a[0], gumbel_noise(torch.tensor([1]), 6, 100, torch.device("cpu"))[0])
    big = gumbel_noise(torch.tensor([7]), 0, 200000, torch.device("cpu"))[0]
    assert abs(big.mean().item() - 0.5772) < 0.02  # Euler-Mascheroni: the mean of a standard Gumbel


METHODS = ["gumbel", "inverse_cdf"]


def _frequencies(logits, temperature, top_p, n=20000, use_top_p=True, method="gumbel"):
    rows = logits.expand(n, -1)
    tokens = sample(rows, torch.full((n,), temperature), torch.full((n,), top_p), torch.arange(n), 0, use_top_p, method)
    return torch.bincount(tokens, minlength=logits.shape[-1]).float() / n


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("use_top_p", [True, False])
def test_sample_draws_from_the_tempered_softmax(use_top_p, method):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    expected = (logits / 0.7).softmax(-1)[0]
    assert torch.allclose(_frequencies(logits, 0.7, 1.0, use_top_p=use_top_p, method=method), expected, atol=0.01)


@pytest.mark.parametrize("method", METHODS)
def test_sample_cuts_to_the_nucleus_and_renormalises(method):
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -9.0]])  # probabilities .032 .644 .087 .237 .000
    p = logits.softmax(-1)[0]
    freq = _frequencies(logits, 1.0, 0.85, method=method)  # .644 + .237 = .881 >= .85: the nucleus is tokens 1 and 3
    assert torch.allclose(freq, torch.tensor([0, p[1], 0, p[3], 0]) / (p[1] + p[3]), atol=0.01)
    assert torch.equal(
        _frequencies(logits, 1.0, 0.5, n=500, method=method), torch.tensor([0.0, 1, 0, 0, 0])
    )  # the top token alone
    row = torch.tensor([[1.0, 0, 0, 0, 0, -3]])  # .35 of the mass on token 0: the nucleus needs one 0-logit token,
    ties = _frequencies(
        row, 1.0, 0.5, method=method
    )  # and the tokens tied with it come along; token 5 (below them) does not
    kept = row.softmax(-1)[0, :5] / row.softmax(-1)[0, :5].sum()
    assert ties[5] == 0 and torch.allclose(ties[:5], kept, atol=0.015)
    ties = _frequencies(
        torch.tensor([[0.0, 2, 2, 0, 2, 0]]), 1.0, 0.5, method=method
    )  # three tied tokens: all kept, drawn evenly
    assert torch.allclose(ties, torch.tensor([0, 1, 1, 0, 1, 0]) / 3, atol=0.015)


def test_sample_mixes_rows_and_is_greedy_at_temperature_zero():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 4.9], [0.0, 0.0, 0.1]])
    tokens = sample(logits, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.5, 0.9]), torch.tensor([1, 2, 3]), 4)
    assert tokens[:2].tolist() == [1, 0]  # greedy rows: the argmax whatever their top_p
    alone = sample(logits[2:], torch.tensor([1.0]), torch.tensor([0.9]), torch.tensor([3]), 4)
    assert tokens[2] == alone[0]  # a row's draw does not depend on the other rows


@pytest.mark.parametrize("method", METHODS)
def test_a_row_without_top_p_draws_the_same_whether_or_not_its_batch_sorts(method):
    logits = torch.randn(64, 500)
    temps, seeds = torch.full((64,), 0.8), torch.arange(64)
    with_sort = sample(logits, temps, torch.ones(64), seeds, 3, use_top_p=True, method=method)
    without = sample(logits, temps, torch.ones(64), seeds, 3, use_top_p=False, method=method)
    assert torch.equal(with_sort, without)


def test_cpu_draws_survive_last_bit_differences():
    """What makes CPU replay exact: Gumbel-max ignores float32 noise of the size batch composition causes."""
    logits = torch.randn(256, 49152)
    noisy = logits * (1 + 1e-6 * torch.randn_like(logits))
    args = (torch.full((256,), 0.7), torch.full((256,), 0.95), torch.arange(256), 5)
    assert torch.equal(sample(logits, *args), sample(noisy, *args))  # CPU default: gumbel


def test_sampler_matches_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    counts = torch.zeros(4)
    for seed in range(4000):
        s = SeededSampler([1.0], [1.0], [seed])
        counts[s(torch.zeros((1, 3), dtype=torch.long), logits).argmax()] += 1
    assert torch.allclose(counts / counts.sum(), logits.softmax(-1)[0], atol=0.03)


def test_top_p_keeps_the_nucleus_and_temperature_zero_is_greedy():
    logits = torch.tensor([[5.0, 4.9, -5.0, -6.0]])
    picked = {
        SeededSampler([1.0], [0.5], [seed])(torch.zeros((1, 1), dtype=torch.long), logits).argmax().item()
        for seed in range(200)
    }
    assert picked == {0}  # token 0 alone holds > 50% of the mass
    out = SeededSampler([0.0], [1.0], [3])(torch.zeros((1, 1), dtype=torch.long), logits)
    assert out.argmax().item() == 0 and torch.isinf(out).sum() == 3  # generate's argmax takes the drawn token


def test_samples_replay_whatever_the_batch(tiny):
    model, tokenizer = tiny
    prompts = [
        "Problem: 2 + 2?\nSolution:",
        "Problem: a much longer question about apples and pears and more?\nSolution:",
    ]
    alone = generate(hf(model, tokenizer, 4), [GenRequest("x", prompts[0], 0.9, 0.95, seed=11)], 12, progress=False)[0]
    mixed = generate(
        hf(model, tokenizer, 4),
        [
            GenRequest("y", prompts[1], 0.5, 1.0, seed=5),
            GenRequest("x", prompts[0], 0.9, 0.95, seed=11),
            GenRequest("z", prompts[0], 0.0, 1.0, seed=0),
        ],
        12,
        progress=False,
    )
    assert [r.key for r in mixed] == ["y", "x", "z"]  # results come back in request order
    assert mixed[1].text == alone.text and mixed[1].num_tokens == alone.num_tokens
    other = generate(hf(model, tokenizer, 4), [GenRequest("x", prompts[0], 0.9, 0.95, seed=12)], 12, progress=False)[0]
    assert other.text != alone.text  # a different seed gives a different sample (random tiny model: near-uniform)
    stops = set(model.generation_config.eos_token_id)  # the tiny model's stop tokens (conftest.stops_sometimes)
    assert alone.num_tokens <= 12 and alone.truncated == (alone.token_ids[-1] not in stops)


@pytest.fixture(scope="module")
def eos_biased(tiny_model_dir):
    """The tiny model with a bias on EOS in its head: sampled rows end after 1 to 20 tokens, at different steps."""
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    model, tokenizer = load_model(cfg), load_tokenizer(cfg, padding_side="left")
    with torch.no_grad():
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 7.0
    model.lm_head = head
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # only EOS stops here, not the tiny model's stop list
    return model, tokenizer


def _mixed_requests(n=23):
    prompts = [f"Problem {i}: " + "apples and pears " * (i % 7) + "how many?" for i in range(n)]
    return [
        GenRequest(i, p, [0.0, 0.7, 1.0][i % 3], [1.0, 0.9, 0.95][i % 3], seed=100 + i) for i, p in enumerate(prompts)
    ]


@pytest.mark.long
def test_a_request_replays_alone_whatever_its_batch(eos_biased):
    """Batches of 4 (rows ending at different steps, padded to different widths) give every request the tokens it
    gets alone and in one batch of all: a sample depends only on (prompt, temperature, top_p, seed)."""
    model, tokenizer = eos_biased
    requests = _mixed_requests()
    everything = generate(hf(model, tokenizer, 23), requests, 20, progress=False)
    crowd = generate(hf(model, tokenizer, 4), requests, 20, progress=False)
    assert (
        len({r.num_tokens for r in crowd}) >= 3
        and any(r.truncated for r in crowd)
        and not all(r.truncated for r in crowd)
    )
    assert [(r.key, r.text, r.num_tokens, r.truncated) for r in crowd] == [
        (r.key, r.text, r.num_tokens, r.truncated) for r in everything
    ]
    for request, result in list(zip(requests, crowd))[:8]:
        alone = generate(hf(model, tokenizer, 1), [request], 20, progress=False)[0]
        assert (alone.text, alone.num_tokens, alone.token_ids) == (result.text, result.num_tokens, result.token_ids), (
            request.key
        )
    ended = [r for r in crowd if not r.truncated]
    assert all(
        r.token_ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in r.token_ids[:-1] for r in ended
    )
    streamed = dict(generate_stream(hf(model, tokenizer, 4), requests, 20, progress=False))
    assert sorted(streamed) == list(range(len(requests))) and {i: r.text for i, r in streamed.items()} == {
        i: r.text for i, r in enumerate(crowd)
    }
    one = generate(hf(model, tokenizer, 4), requests, 1, progress=False)
    assert all(r.num_tokens == 1 for r in one)


def test_generate_with_transformers_warns_of_nothing(tiny, caplog, recwarn):
    """No deprecation or generation-flag warning from looper's own calls into transformers, also for a model whose
    generation_config.json asks for sampling (as DeepSeek-R1's: temperature 0.6, top_p 0.95)."""
    import copy
    import logging

    model, tokenizer = tiny
    model = copy.deepcopy(model)
    model.generation_config.do_sample, model.generation_config.temperature, model.generation_config.top_p = (
        True,
        0.6,
        0.95,
    )
    with caplog.at_level(logging.WARNING):
        generate(
            hf(model, tokenizer, 2),
            [GenRequest(0, "Problem: 1+1?", 0.7, 0.9, 1), GenRequest(1, "Hi", 0.0)],
            4,
            progress=False,
        )
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [
        str(w.message) for w in recwarn if issubclass(w.category, (DeprecationWarning, FutureWarning, UserWarning))
    ]


def test_an_8bit_base_does_not_print_bitsandbytes_cast_warning_on_every_matmul(monkeypatch):
    """LLM.int8 warns on each call that it casts bfloat16 inputs to float16. Any filter change elsewhere resets
    warnings' once-per-place memory, so generation printed the line once per layer and token (115,584 lines in
    docs/bench/quant_generation_8b_h200/gen_8bit_hf.log). Loading an 8-bit base silences that one message only."""
    import warnings

    from looper import modeling

    monkeypatch.setattr(modeling, "check_quantization", lambda quantization: None)  # bitsandbytes needs a GPU
    cast = "MatMul8bitLt: inputs will be cast from torch.bfloat16 to float16 during quantization"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert modeling.quantization_config("4bit", torch.bfloat16).load_in_4bit
        warnings.warn(cast, UserWarning, stacklevel=1)  # a 4-bit base leaves it alone
        assert modeling.quantization_config("8bit", torch.bfloat16).load_in_8bit
        for _ in range(3):
            warnings.warn(cast, UserWarning, stacklevel=1)
        warnings.warn("MatMul8bitLt: something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [cast, "MatMul8bitLt: something else"]


def test_engine_names_are_checked():
    assert resolve_engine("hf", "eval.engine") == "hf"
    expected = "vllm" if torch.cuda.is_available() and "vllm" in sys.modules else "hf"
    assert resolve_engine("auto", "eval.engine") in (expected, "vllm")
    with pytest.raises(InputError, match="eval.engine: unknown generation engine 'slots'"):
        resolve_engine("slots", "eval.engine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_auto_is_hf_on_a_cpu_and_vllm_is_refused():
    assert resolve_engine("auto", "rollouts.engine") == "hf"
    with pytest.raises(InputError, match=r"rollouts.engine=vllm needs (vLLM|a CUDA GPU)"):
        resolve_engine("vllm", "rollouts.engine")


def test_vllm_sampling_settings_per_request():
    eos = [2, 7]
    sampled = vllm_sampling_kwargs(GenRequest("k", "p", 0.7, 0.95, seed=42), 256, eos, seeded=False)
    assert sampled == {
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 256,
        "stop_token_ids": [2, 7],
        "detokenize": False,
    }
    assert vllm_sampling_kwargs(GenRequest("k", "p", 0.7, 0.95, seed=42), 256, eos, seeded=True)["seed"] == 42
    greedy = vllm_sampling_kwargs(GenRequest("k", "p", 0.0, 0.5, seed=42), 16, eos, seeded=True)
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "seed" not in greedy  # greedy: no draw to seed


def test_vllm_engine_arguments():
    base = dict(
        dtype="bfloat16",
        quantization="none",
        seed=3,
        max_num_seqs=64,
        max_model_len=4096,
        revision=None,
        trust_remote_code=False,
        overrides={},
    )
    plain = vllm_engine_args("/m", "/m", adapter_rank=None, **base)
    assert plain == {
        "model": "/m",
        "tokenizer": "/m",
        "dtype": "bfloat16",
        "seed": 3,
        "max_num_seqs": 64,
        "max_model_len": 4096,
        "trust_remote_code": False,
        "generation_config": "vllm",
    }
    lora = vllm_engine_args("/m", "/m", adapter_rank=48, **base)
    assert (
        lora["enable_lora"] and lora["max_lora_rank"] == 64 and lora["max_loras"] == 1
    )  # rounded up to a rank vLLM takes
    assert (
        vllm_engine_args("/m", "/m", adapter_rank=None, **(base | {"quantization": "4bit"}))["quantization"]
        == "bitsandbytes"
    )
    assert "quantization" not in vllm_engine_args("/m", "/m", adapter_rank=None, **(base | {"quantization": "8bit"}))
    mine = vllm_engine_args(
        "/m", "/m", adapter_rank=None, **(base | {"overrides": {"gpu_memory_utilization": 0.5, "seed": 9}})
    )
    assert mine["gpu_memory_utilization"] == 0.5 and mine["seed"] == 9  # the user's rollouts.vllm / eval.vllm win
    wide = base | {"max_num_seqs": 1024}
    assert vllm_engine_args("/m", "/m", adapter_rank=None, **wide)["max_cudagraph_capture_size"] == 1024
    assert "max_cudagraph_capture_size" not in vllm_engine_args(
        "/m", "/m", adapter_rank=None, **(wide | {"overrides": {"enforce_eager": True}})
    )
    with pytest.raises(InputError, match="vLLM runs LoRA adapters in bfloat16 or float16 only"):  # seen on the H200
        vllm_engine_args("/m", "/m", adapter_rank=8, **(base | {"dtype": "float32"}))
    with pytest.raises(InputError, match="LoRA rank 1024 is above vLLM's largest"):
        vllm_engine_args("/m", "/m", adapter_rank=1024, **base)


@pytest.fixture
def fake_vllm(monkeypatch, tiny):
    """A stand-in for vLLM's offline engine on a CPU (vLLM needs a GPU): it records what looper hands it and
    finishes requests in reverse order of arrival, a few per step, as a continuous-batching engine may."""
    _, tokenizer = tiny
    seen = {"added": [], "engine_args": None}

    class EngineArgs:
        def __init__(self, **kwargs):
            seen["engine_args"] = kwargs
            seen.setdefault("starts", []).append(kwargs)

    class LLMEngine:
        @classmethod
        def from_engine_args(cls, args, usage_context=None):
            seen["usage_context"] = usage_context
            return cls()

        def __init__(self):
            self.waiting = []

        def add_request(self, request_id, prompt, params, lora_request=None):
            seen["added"].append((request_id, prompt, params, lora_request))
            self.waiting.append((request_id, prompt, params))

        def has_unfinished_requests(self):
            return bool(self.waiting)

        def step(self):
            done, self.waiting = self.waiting[-3:], self.waiting[:-3]
            outputs = []
            for rid, prompt, params in reversed(done):  # answers: the prompt's last token, then a stop id
                ids = [prompt["prompt_token_ids"][-1]] * (params.kwargs["max_tokens"] - 1) + [
                    params.kwargs["stop_token_ids"][0]
                ]
                outputs.append(
                    types.SimpleNamespace(
                        request_id=rid,
                        finished=True,
                        outputs=[types.SimpleNamespace(token_ids=ids[: params.kwargs["max_tokens"]])],
                    )
                )
            outputs.append(types.SimpleNamespace(request_id="unfinished", finished=False, outputs=[]))
            return outputs

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, name, id_, path):
            self.args = (name, id_, path)

    vllm = types.ModuleType("vllm")
    vllm.EngineArgs, vllm.LLMEngine, vllm.SamplingParams = EngineArgs, LLMEngine, SamplingParams
    vllm.TokensPrompt = dict
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = LoRARequest
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = types.SimpleNamespace(FINAL_ONLY="final-only")
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    usage = types.ModuleType("vllm.usage.usage_lib")
    usage.UsageContext = types.SimpleNamespace(LLM_CLASS="LLM_CLASS")
    monkeypatch.setitem(sys.modules, "vllm.usage", types.ModuleType("vllm.usage"))
    monkeypatch.setitem(sys.modules, "vllm.usage.usage_lib", usage)
    return seen, tokenizer


def test_vllm_engine_hands_each_request_its_settings_and_takes_results_as_they_finish(fake_vllm, tmp_path):
    seen, tokenizer = fake_vllm
    adapter = tmp_path / "lora_sft"
    engine = VLLMEngine({"model": "/m"}, tokenizer, [tokenizer.eos_token_id], {"sft": adapter}, seeded=True).serving(
        "sft"
    )
    requests = [GenRequest(("q", k), f"Problem {k}: how many?", [0.0, 0.7][k % 2], 0.9, seed=100 + k) for k in range(7)]
    results = generate(engine, requests, 5, progress=False)
    assert seen["engine_args"] == {"model": "/m"}
    assert seen["usage_context"] == "LLM_CLASS"  # vllm.LLM's offline scheduler defaults, not the server engine's
    assert [r.key for r in results] == [r.key for r in requests]  # back in request order, though finished out of order
    prompt_ids = tokenizer([r.prompt for r in requests], add_special_tokens=False)["input_ids"]
    assert [a[1]["prompt_token_ids"] for a in seen["added"]] == prompt_ids  # token ids, tokenised as the hf engine does
    assert [a[2].kwargs.get("seed") for a in seen["added"]] == [None, 101, None, 103, None, 105, None]
    assert all(a[2].kwargs["output_kind"] == "final-only" and a[2].kwargs["max_tokens"] == 5 for a in seen["added"])
    assert all(a[3].args == ("lora_sft", 1, str(adapter)) for a in seen["added"])
    for r, ids in zip(results, prompt_ids):
        assert r.num_tokens == 5 and not r.truncated and r.token_ids == [ids[-1]] * 4 + [tokenizer.eos_token_id]
        assert r.text == tokenizer.decode([ids[-1]] * 4)  # the stop id is a special token: not in the text
    assert len({a[0] for a in seen["added"]}) == 7


def test_vllm_engine_memory_is_read_on_the_device_around_its_child_process(fake_vllm, monkeypatch, tmp_path):
    """The engine core is another process: its memory is the device's used memory after generating minus before the
    engine started (NVML), recorded per stage; without CUDA or NVML it is None, never a guess."""
    _, tokenizer = fake_vllm
    readings = iter([3.0 * 2**30, 43.5 * 2**30])  # before the engine starts, after the last request finishes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_memory_used", lambda device: next(readings))
    engine = VLLMEngine({"model": "/m"}, tokenizer, [tokenizer.eos_token_id], {}, seeded=False)
    questions = [{"id": f"q{k}", "question": f"Problem {k}?"} for k in range(3)]
    tally = generate_records(
        lambda: engine,
        tmp_path / "out.jsonl",
        questions,
        lambda q: [GenRequest(q["id"], q["question"], 0.0, 1.0, 0)],
        lambda q, results: {"id": q["id"]},
        4,
        "t",
    )
    assert engine.gpu_memory_gib == 40.5 and tally["engine_gpu_memory_gib"] == 40.5
    assert generation_speed([{**tally, "peak_gpu_memory_gib": 0.1}])["engine_gpu_memory_gib"] == [40.5]

    def no_nvml(device):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "device_memory_used", no_nvml)
    assert device_memory_used_gib() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = VLLMEngine({"model": "/m"}, tokenizer, [tokenizer.eos_token_id], {}, seeded=False)
    generate(engine, [GenRequest("a", "Problem?", 0.0, 1.0, 0)], 4, progress=False)
    assert engine.gpu_memory_gib is None


@pytest.mark.parametrize("mode", ["merged", "lora"])
def test_vllm_serves_an_adapter_merged_in_a_temporary_checkpoint_or_as_a_lora_request(
    fake_vllm, tiny_model_dir, tmp_path, mode
):
    from peft import LoraConfig, get_peft_model

    seen, tokenizer = fake_vllm
    config = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            f"model.name_or_path={tiny_model_dir}",
            "model.dtype=bfloat16",
            f"rollouts.vllm_adapter={mode}",
        ],
    )
    run = RunDir.of(config)
    base = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    get_peft_model(
        base,
        LoraConfig(
            r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]
        ),
    ).save_pretrained(run.lora_sft)
    with vllm_engine_for(config, run, ["sft"], config.rollouts, tokenizer, 16) as engine:
        served = Path(seen["engine_args"]["model"])
        if mode == "merged":  # a plain checkpoint vLLM loads as a model: config, weights, tokenizer; no LoRA
            assert served.parent == run.root / "checkpoints" and served.name.startswith(".merged-sft-")
            assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {f.name for f in served.iterdir()}
            assert engine.serving("sft").lora is None and "enable_lora" not in seen["engine_args"]
        else:
            assert served == tiny_model_dir and engine.serving("sft").lora.args[2] == str(run.lora_sft)
            assert seen["engine_args"]["enable_lora"] and seen["engine_args"]["max_lora_rank"] == 8
    assert [p.name for p in (run.root / "checkpoints").iterdir()] == ["lora_sft"]  # the merged copy is gone


@pytest.mark.parametrize("mode", ["lora", "merged"])
def test_eval_starts_vllm_once_for_base_sft_and_rl_each_adapter_a_lora_request(
    fake_vllm, tiny_model_dir, tmp_path, monkeypatch, mode
):
    """eval.vllm_adapter lora: one engine on the base weights serves all three models, every request carrying its
    model's adapter (none for the base); merged: an engine per model, each closed before the next starts."""
    from peft import LoraConfig, get_peft_model

    from looper.baseline_sft import prepare_data
    from looper.eval import eval_gsm8k

    seen, _ = fake_vllm
    config = load_config(
        "configs/demo.yaml",
        [
            f"runs_dir={tmp_path}",
            f"model.name_or_path={tiny_model_dir}",
            "model.dtype=bfloat16",
            "data.symbolic_train_size=10",
            "data.symbolic_test_size=3",
            "eval.max_new_tokens=4",
            "eval.datasets=[gsm_symbolic_dev,gsm_symbolic_test]",
            "eval.limit=2",
            f"eval.vllm_adapter={mode}",
        ],
    )
    run = prepare_data.main(config)
    base = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules=["q_proj"]))
    for folder in (run.lora_sft, run.lora_rl):
        lora.save_pretrained(folder)
    closed = []
    monkeypatch.setattr(VLLMEngine, "close", lambda self: closed.append(len(seen["starts"])))
    monkeypatch.setattr(eval_gsm8k, "resolve_engine", lambda engine, field: "vllm")
    eval_gsm8k.main(config)
    served = [(a[1]["prompt_token_ids"], a[3].args[:2] if a[3] else None) for a in seen["added"]]
    assert len(served) == 3 * 2 * 2  # models x datasets x questions
    if mode == "lora":
        assert len(seen["starts"]) == 1 and closed == [1]
        args = seen["starts"][0]
        assert Path(args["model"]) == tiny_model_dir and args["enable_lora"] and args["max_loras"] == 2
        assert [lora for _, lora in served] == [None] * 4 + [("lora_sft", 1)] * 4 + [("lora_rl", 2)] * 4
        assert len({a[0] for a in seen["added"]}) == 12  # request ids unique over the engine's life
    else:
        assert len(seen["starts"]) == 3 and closed == [1, 2, 3]  # each closed before the next began
        assert Path(seen["starts"][0]["model"]) == tiny_model_dir
        assert [Path(a["model"]).name[:11] for a in seen["starts"][1:]] == [".merged-sft", ".merged-rl-"]
        assert all(lora is None for _, lora in served)
    for which in ("base", "sft", "rl"):
        assert len(read_jsonl(run.eval_dir / f"{which}__gsm_symbolic_test.jsonl")) == 2


def test_a_merged_checkpoint_left_by_a_killed_process_is_removed_and_a_running_ones_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    host = socket.gethostname()
    stale = tmp_path / f".merged-sft-{host}-{gone.stdout.strip()}-abc123"
    running = tmp_path / f".merged-rl-{host}-{os.getpid()}-def456"
    elsewhere = tmp_path / f".merged-sft-other-host-{gone.stdout.strip()}-ghi789"  # another machine's rank
    for folder in (stale, running, elsewhere, tmp_path / "lora_sft"):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    assert remove_stale_merged(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name, "lora_sft"])


def test_generate_records_resumes_and_keeps_questions_whole(tiny, tmp_path):
    """The one loop of collect-rollouts, eval and self data: a record per question, all of its samples in request
    order; a rerun generates only the questions not yet written; no model is opened when nothing is left."""
    model, tokenizer = tiny
    questions = [{"id": f"q{i}", "question": f"What is {i} + 1?"} for i in range(5)]
    opened = []

    def opener():
        opened.append(1)
        return contextlib_nullcontext(hf(model, tokenizer, 3))

    def requests_of(q):
        return [GenRequest(("sample", s), q["question"], 0.8, 1.0, seed=s) for s in range(3)]

    def record_of(q, results):
        return {"id": q["id"], "keys": [r.key for r in results], "texts": [r.text for r in results]}

    path = tmp_path / "out.jsonl"
    with LazyEngine(opener) as lazy:
        first = generate_records(lazy, path, questions[:2], requests_of, record_of, 4, "test")
    assert first["tokens"] == 2 * 3 * 4 and first["engine"] == "hf" and len(opened) == 1
    with LazyEngine(opener) as lazy:
        generate_records(lazy, path, questions, requests_of, record_of, 4, "test")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [q["id"] for q in questions]  # each question once
    assert all(r["keys"] == [["sample", 0], ["sample", 1], ["sample", 2]] for r in records)
    with LazyEngine(opener) as lazy:
        nothing = generate_records(lazy, path, questions, requests_of, record_of, 4, "test")
    assert nothing == {"tokens": 0, "seconds": 0.0, "engine": None} and len(opened) == 2


def test_generate_records_bar_counts_samples_a_batch_at_a_time(tiny, tmp_path, monkeypatch):
    """hf ends a batch's rows together: the bar moves by whole batches of samples, so its first estimate (after one
    batch) is the time of a batch per batch left, not the time of a batch per question left ("1/30 [05:57<2:52:37]")."""
    model, tokenizer = tiny
    bars = []

    class Bar(generation.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})
            self.kwargs, self.steps = kwargs, []
            if kwargs.get("desc") == "test":  # not generate_stream's own (hidden) bar
                bars.append(self)

        def update(self, n=1):
            self.steps.append(n)
            return super().update(n)

    monkeypatch.setattr(generation, "tqdm", Bar)
    questions = [{"id": f"q{i}", "question": f"What is {i} + 1?"} for i in range(4)]
    requests_of = lambda q: [GenRequest(s, q["question"], 0.8, 1.0, seed=s) for s in range(2)]  # noqa: E731
    with LazyEngine(lambda: contextlib_nullcontext(hf(model, tokenizer, 3))) as lazy:
        generate_records(lazy, tmp_path / "out.jsonl", questions, requests_of, lambda q, rs: {"id": q["id"]}, 2, "test")
    (bar,) = bars
    assert bar.kwargs["unit"] == "sample" and bar.kwargs["smoothing"] == 0  # the run's mean rate, not the last burst's
    assert bar.total == 8 and bar.steps == [3, 3, 2]  # 8 samples in batches of 3
    assert bar.postfix.startswith("questions=4/4")


def contextlib_nullcontext(value):
    import contextlib

    return contextlib.nullcontext(value)


def test_inverse_cdf_draw_at_the_top_of_the_range_takes_the_most_likely_token(monkeypatch):
    """A uniform that rounds onto the last cumulative sum must not fall through to the vocabulary's last token
    (outside the nucleus, or of ~zero probability)."""
    import looper.generation as g

    monkeypatch.setattr(g, "row_uniforms", lambda seeds, steps, device: torch.ones(len(seeds), device=device))
    logits = torch.tensor([[0.0, 5.0, 1.0, -30.0], [2.0, 0.0, 0.0, -1e9]])
    one = torch.ones(2)
    tokens = g.sample(
        logits,
        one,
        torch.tensor([0.9, 1.0]),
        torch.tensor([1, 2]),
        torch.zeros(2, dtype=torch.long),
        method="inverse_cdf",
    )
    assert tokens.tolist() == [1, 0]


def test_a_diverged_loss_stops_training_with_a_clear_error(tmp_path):
    from types import SimpleNamespace

    from looper.trainers import TrainingDiverged, metrics_callback

    cb = metrics_callback(tmp_path / "log.jsonl", "rl.grpo")
    state = SimpleNamespace(global_step=10, epoch=0.1, is_world_process_zero=True)
    args = SimpleNamespace(output_dir=str(tmp_path / "work"))
    cb.on_log(args, state, None, logs={"loss": 0.5, "grad_norm": 0.1})
    state.global_step = 20
    with pytest.raises(
        TrainingDiverged, match=r"grad_norm = nan at step 20 \(last finite log at step 10\).*rl.grpo.learning_rate"
    ):
        cb.on_log(args, state, None, logs={"loss": 0.4, "grad_norm": float("nan")})
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2  # the bad line is logged too


def test_non_finite_gradients_stop_training_before_the_step_and_keep_its_batches(tmp_path):
    from types import SimpleNamespace

    from looper.trainers import TrainingDiverged, watch_gradients

    layer = torch.nn.Linear(2, 1)
    trainer = SimpleNamespace(
        compute_loss=lambda model, inputs, num_items_in_batch=None: torch.tensor(0.5), callbacks=[]
    )
    trainer.add_callback = trainer.callbacks.append
    watch_gradients(trainer, tmp_path, "rl.grpo")
    (watch,) = trainer.callbacks
    state = SimpleNamespace(global_step=6)
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "advantages": torch.tensor([0.0])}
    trainer.compute_loss(layer, batch)
    layer.weight.grad, layer.bias.grad = torch.ones(1, 2), torch.ones(1)
    watch.on_pre_optimizer_step(None, state, None, model=layer)  # finite: the window is cleared, nothing written
    assert not list(tmp_path.iterdir())
    trainer.compute_loss(layer, batch)
    trainer.compute_loss(layer, {**batch, "input_ids": torch.tensor([[4, 5]])}, num_items_in_batch=torch.tensor(5))
    layer.weight.grad = torch.tensor([[1.0, float("nan")]])
    state.global_step = 7
    with pytest.raises(
        TrainingDiverged,
        match=r"non-finite gradients at step 8, before the optimizer applied them.*"
        r"2 micro-batch\(es\) and the weights before it are in .*diverged_step8.pt"
        r".*rl.grpo.learning_rate",
    ):
        watch.on_pre_optimizer_step(None, state, None, model=layer)
    dump = torch.load(tmp_path / "diverged_step8.pt")
    assert dump["step"] == 8 and [m["inputs"]["input_ids"].tolist() for m in dump["micro_batches"]] == [
        [[1, 2, 3]],
        [[4, 5]],
    ]
    assert dump["micro_batches"][1]["kwargs"]["num_items_in_batch"].item() == 5
    assert torch.equal(dump["trainable"]["weight"], layer.weight.detach())


def _special_think_tokenizer(real_tokenizer_dir):
    """SmolLM2's tokenizer with <think> / </think> as special tokens, as some reasoning models' tokenizers have them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    return tok


def test_thought_markers_survive_decoding_where_they_are_special_tokens(real_tokenizer_dir):
    """Issue 44 (verl #1724): decoding with skip_special_tokens=True drops special <think> / </think>; the engines' text
    and the GRPO / RLOO reward keep them, and leave out the end and pad tokens as before."""
    from looper.answers import extract_answer, is_correct
    from looper.config import RunConfig
    from looper.generation import make_result
    from looper.rl_training.train_rl import RegimeWRewards

    tok = _special_think_tokenizer(real_tokenizer_dir)
    assert tok.convert_tokens_to_ids("<think>") in tok.all_special_ids
    # Qwen3-style: a draft answer inside the thought, the real one after it
    qwen3 = tok("<think>maybe #### 5</think>\nThe answer is \\boxed{72}", add_special_tokens=False)["input_ids"]
    result = make_result(
        0, qwen3 + [tok.eos_token_id, tok.pad_token_id or tok.eos_token_id], [tok.eos_token_id], 64, tok
    )
    assert "<think>" in result.text and "</think>" in result.text and tok.eos_token not in result.text
    assert extract_answer(result.text, "flexible") == "72"
    # R1-style: the prompt opened the thought, the completion closes it
    r1 = tok("48 + 24 = 72\n</think>\n\n#### 72", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert is_correct(make_result(0, r1, [tok.eos_token_id], 64, tok).text, "72", thought_open=True)
    rewards = RegimeWRewards(RunConfig(), 64, [tok.eos_token_id], thought_open=True, tokenizer=tok)
    correct = rewards.functions()[0]
    # TRL hands the reward its own text, decoded with skip_special_tokens=True: the reward reads the ids instead
    trl_text = tok.decode(r1, skip_special_tokens=True)
    assert correct(
        prompts=["p"],
        completions=[trl_text],
        completion_ids=[r1],
        id=["q"],
        gold=["72"],
        arm=["sft"],
        family=["compute"],
    ) == [1.0]


def test_the_hf_engine_applies_no_sampling_field_of_the_models_generation_config(tiny_model_dir):
    """Issue 44 (lm-eval #3154): a model whose generation_config asks for a repetition penalty generates, greedy, exactly
    what the same weights without it generate; vLLM is told to ignore the model's generation_config too."""
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    tokenizer = load_tokenizer(cfg, padding_side="left")
    requests = [GenRequest(i, p, 0.0) for i, p in enumerate(["Problem: 2 + 2?\n\nSolution:", "Tom has 3 apples."])]
    plain = [r.token_ids for r in generate(hf(load_model(cfg), tokenizer, 2), requests, 24, progress=False)]
    model = load_model(cfg)
    model.generation_config.repetition_penalty, model.generation_config.no_repeat_ngram_size = 5.0, 1
    engine = hf(model, tokenizer, 2)
    assert [r.token_ids for r in generate(engine, requests, 24, progress=False)] == plain
    engine.close()  # the model's own generation config is given back: the engine changed it only while it ran
    assert model.generation_config.repetition_penalty == 5.0 and model.generation_config.no_repeat_ngram_size == 1
    args = vllm_engine_args(
        "m",
        "m",
        adapter_rank=None,
        dtype="bfloat16",
        quantization="none",
        seed=0,
        max_num_seqs=8,
        max_model_len=512,
        revision=None,
        trust_remote_code=False,
        overrides={},
    )
    assert args["generation_config"] == "vllm"


def _scripted(model, script):
    """Make ``model`` write ``script`` (ids), one token per forward pass of generate, whatever it would have written: a
    forward hook (PyTorch's public one) leaves only the next scripted token possible. Returns the passes made."""
    passes = []

    def hook(module, args, output):
        step = len(passes)
        passes.append(step)
        forced = torch.full_like(output.logits[:, -1, :], float("-inf"))
        forced[:, script[min(step, len(script) - 1)]] = 0.0
        output.logits[:, -1, :] = forced
        return output

    model.register_forward_hook(hook)
    return passes


def test_a_plain_completion_ends_where_the_prompt_format_begins_again(tiny_model_dir):
    """Issue 44 (lm-eval's gsm8k `until`, sglang PR #29264): with prompt_format plain a model that answers `#### 72` and
    goes on to invent `Problem: ... #### 5` was scored 5. Both engines stop at the plain format's marker, every
    consumer's text (make_result: eval, Regime W, self data, preferences; the GRPO / RLOO reward, whose completions
    TRL does not stop) ends before the restart, and a stopped answer is not truncated. Chat prompts are unaffected."""
    from looper.answers import extract_answer
    from looper.config import PLAN_SYSTEM_PROMPT, RunConfig
    from looper.generation import make_result
    from looper.prompts import cut_at_restart, render_prompt
    from looper.rl_training.train_rl import RegimeWRewards

    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    tokenizer = load_tokenizer(cfg, padding_side="left")
    prompt = render_prompt(
        tokenizer, "Natalia sold 48 clips in April and half as many in May. How many?", PLAN_SYSTEM_PROMPT, "plain"
    )
    answer = " 48 / 2 = 24\n48 + 24 = 72\n#### 72"
    invented = "\n\nProblem: Tom has 3 apples and buys 2. How many?\n\nSolution: 3 + 2 = 5\n#### 5"
    script = tokenizer(answer + invented, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert extract_answer(tokenizer.decode(script, skip_special_tokens=True)) == "5"  # what the old code scored

    # hf: transformers' stop_strings end generation at the marker, make_result ends the text before it
    model = load_model(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # the tiny model's extra end ids would cut the script
    passes = _scripted(model, script)
    result = generate(hf(model, tokenizer, 1), [GenRequest("q", prompt, 0.0)], len(script) + 8, progress=False)[0]
    assert result.text == answer and extract_answer(result.text) == "72" and not result.truncated
    assert (
        len(passes) < len(script) - 10 and result.token_ids == script[: result.num_tokens]
    )  # it stopped, not only cut
    assert "Problem:" in tokenizer.decode(result.token_ids) and "Problem:" not in tokenizer.decode(
        result.token_ids[:-1]
    )
    # ... also where the stop lands at the token limit: stopped, so not truncated
    limited = make_result("q", result.token_ids, [tokenizer.eos_token_id], result.num_tokens, tokenizer, prompt)
    assert (limited.text, limited.truncated) == (answer, False)

    # vLLM: the same stop in each plain request's SamplingParams (detokenized, as vLLM requires for stop strings);
    # whatever ids it returns past the stop, make_result cuts them as the hf engine's
    eos = [tokenizer.eos_token_id]
    kwargs = vllm_sampling_kwargs(GenRequest("q", prompt, 0.0), 256, eos, seeded=False)
    assert kwargs["stop"] == ["Problem:"] and kwargs["detokenize"] is True
    assert make_result("q", script, eos, 256, tokenizer, prompt).text == answer
    chat = render_prompt(tokenizer, "Natalia sold 48 clips. How many?", PLAN_SYSTEM_PROMPT, "chat")
    assert "stop" not in vllm_sampling_kwargs(GenRequest("q", chat, 0.0), 256, eos, seeded=False)
    assert (
        "Problem: Tom" in make_result("q", script, eos, 256, tokenizer, chat).text
    )  # a chat turn ends on its end token

    # GRPO / RLOO: TRL generated past the restart up to its length limit; the reward reads the answer, untruncated
    ids = script[:60]
    config = RunConfig()
    parts = {
        name: f
        for name, f in zip(RegimeWRewards.PARTS, RegimeWRewards(config, 60, eos, tokenizer=tokenizer).functions())
    }
    kw = dict(prompts=[prompt], completion_ids=[ids], id=["q"], gold=["72"], arm=["direct"], family=["compute"])
    assert parts["correct"](completions=[tokenizer.decode(ids, skip_special_tokens=True)], **kw) == [1.0]
    assert parts["truncated"](completions=["other text"], **kw) == [0.0]
    text_only = RegimeWRewards(config, 60, eos).functions()  # TRL's own text, no tokenizer
    assert text_only[0](completions=[tokenizer.decode(ids, skip_special_tokens=True)], **kw) == [1.0]

    # a restart that opens with the prompt's own system prompt goes whole
    assert cut_at_restart(f"{answer}\n\n{PLAN_SYSTEM_PROMPT}{invented}", prompt) == answer
    assert cut_at_restart(answer, prompt) is None and cut_at_restart(answer + invented, chat) is None
