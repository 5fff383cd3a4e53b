"""The shared generation engine: seeded per-row sampling that does not depend on the batch."""

import pytest
import torch

from looper.config import ModelConfig
from looper.generation import GenRequest, SeededSampler, capturable, generate, generate_stream, gumbel_noise, row_uniforms, sample
from looper.modeling import load_model, load_tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    return load_model(cfg), load_tokenizer(cfg, padding_side="left")


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
    assert torch.equal(_frequencies(logits, 1.0, 0.5, n=500, method=method), torch.tensor([0.0, 1, 0, 0, 0]))  # the top token alone
    row = torch.tensor([[1.0, 0, 0, 0, 0, -3]])  # .35 of the mass on token 0: the nucleus needs one 0-logit token,
    ties = _frequencies(row, 1.0, 0.5, method=method)  # and the tokens tied with it come along; token 5 (below them) does not
    kept = row.softmax(-1)[0, :5] / row.softmax(-1)[0, :5].sum()
    assert ties[5] == 0 and torch.allclose(ties[:5], kept, atol=0.015)
    ties = _frequencies(torch.tensor([[0.0, 2, 2, 0, 2, 0]]), 1.0, 0.5, method=method)  # three tied tokens: all kept, drawn evenly
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
    picked = {SeededSampler([1.0], [0.5], [seed])(torch.zeros((1, 1), dtype=torch.long), logits).argmax().item()
              for seed in range(200)}
    assert picked == {0}  # token 0 alone holds > 50% of the mass
    out = SeededSampler([0.0], [1.0], [3])(torch.zeros((1, 1), dtype=torch.long), logits)
    assert out.argmax().item() == 0 and torch.isinf(out).sum() == 3  # generate's argmax takes the drawn token


def test_samples_replay_whatever_the_batch(tiny):
    model, tokenizer = tiny
    prompts = ["Problem: 2 + 2?\nSolution:", "Problem: a much longer question about apples and pears and more?\nSolution:"]
    alone = generate(model, tokenizer, [GenRequest("x", prompts[0], 0.9, 0.95, seed=11)], 12, 4, progress=False)[0]
    mixed = generate(model, tokenizer, [GenRequest("y", prompts[1], 0.5, 1.0, seed=5), GenRequest("x", prompts[0], 0.9, 0.95, seed=11),
                                        GenRequest("z", prompts[0], 0.0, 1.0, seed=0)], 12, 4, progress=False)
    assert [r.key for r in mixed] == ["y", "x", "z"]  # results come back in request order
    assert mixed[1].text == alone.text and mixed[1].num_tokens == alone.num_tokens
    other = generate(model, tokenizer, [GenRequest("x", prompts[0], 0.9, 0.95, seed=12)], 12, 4, progress=False)[0]
    assert other.text != alone.text  # a different seed gives a different sample (random tiny model: near-uniform)
    assert alone.truncated and alone.num_tokens == 12  # a random model rarely stops: cut at max_new_tokens


@pytest.fixture(scope="module")
def eos_biased(tiny_model_dir):
    """The tiny model with a bias on EOS in its head: sampled rows end after 1 to 20 tokens, so slots free up and refill
    at different steps."""
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32")
    model, tokenizer = load_model(cfg), load_tokenizer(cfg, padding_side="left")
    with torch.no_grad():
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 7.0
    model.lm_head = head
    return model, tokenizer


def _mixed_requests(n=23):
    prompts = [f"Problem {i}: " + "apples and pears " * (i % 7) + "how many?" for i in range(n)]
    return [GenRequest(i, p, [0.0, 0.7, 1.0][i % 3], [1.0, 0.9, 0.95][i % 3], seed=100 + i) for i, p in enumerate(prompts)]


def test_slot_engine_draws_what_the_hf_engine_draws(eos_biased):
    """Continuous batching (5 slots for 23 requests, rows ending at different steps, refilled) gives every request
    the same tokens as transformers' generate() in one batch."""
    model, tokenizer = eos_biased
    requests = _mixed_requests()
    hf = generate(model, tokenizer, requests, 20, 23, progress=False, engine="hf")
    slots = generate(model, tokenizer, requests, 20, 5, progress=False, engine="slots", sync_every=3)
    assert len({r.num_tokens for r in hf}) >= 3 and any(r.truncated for r in hf) and not all(r.truncated for r in hf)
    assert [(r.key, r.text, r.num_tokens, r.truncated) for r in slots] == [(r.key, r.text, r.num_tokens, r.truncated) for r in hf]


def test_slot_engine_replays_a_request_alone_and_streams_all(eos_biased):
    model, tokenizer = eos_biased
    requests = _mixed_requests(12)
    crowd = generate(model, tokenizer, requests, 16, 4, progress=False, sync_every=2)
    for request, result in zip(requests, crowd):
        alone = generate(model, tokenizer, [request], 16, 1, progress=False)[0]
        assert (alone.text, alone.num_tokens) == (result.text, result.num_tokens), request.key
    streamed = list(generate_stream(model, tokenizer, requests, 16, 4, progress=False))
    assert sorted(r.key for r in streamed) == [r.key for r in requests]
    assert {r.key: r.text for r in streamed} == {r.key: r.text for r in crowd}
    one = generate(model, tokenizer, requests, 1, 4, progress=False)
    assert all(r.num_tokens == 1 for r in one)


def test_an_llm_int8_model_is_not_captured_as_a_cuda_graph(tiny):
    """bitsandbytes' 8-bit layers sync with the host; a failed capture would break the CUDA generator (seen on the H200)."""
    model, _ = tiny
    assert capturable(model)

    class Linear8bitLt(torch.nn.Linear):  # the name is what is checked: bitsandbytes needs a GPU to build the real one
        pass

    int8 = torch.nn.Sequential(torch.nn.Linear(2, 2), Linear8bitLt(2, 2))
    assert not capturable(int8)


def test_unknown_engine_is_an_error(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="unknown generation engine"):
        generate(model, tokenizer, [GenRequest("x", "hi")], 4, 1, progress=False, engine="vllm")


def test_inverse_cdf_draw_at_the_top_of_the_range_takes_the_most_likely_token(monkeypatch):
    """A uniform that rounds onto the last cumulative sum must not fall through to the vocabulary's last token
    (outside the nucleus, or of ~zero probability)."""
    import looper.generation as g

    monkeypatch.setattr(g, "row_uniforms", lambda seeds, steps, device: torch.ones(len(seeds), device=device))
    logits = torch.tensor([[0.0, 5.0, 1.0, -30.0], [2.0, 0.0, 0.0, -1e9]])
    one = torch.ones(2)
    tokens = g.sample(logits, one, torch.tensor([0.9, 1.0]), torch.tensor([1, 2]), torch.zeros(2, dtype=torch.long),
                      method="inverse_cdf")
    assert tokens.tolist() == [1, 0]


def test_a_diverged_loss_stops_training_with_a_clear_error(tmp_path):
    from types import SimpleNamespace

    from looper.trainers import TrainingDiverged, metrics_callback

    cb = metrics_callback(tmp_path / "log.jsonl", "rl.grpo")
    state = SimpleNamespace(global_step=10, epoch=0.1, is_world_process_zero=True)
    args = SimpleNamespace(output_dir=str(tmp_path / "work"))
    cb.on_log(args, state, None, logs={"loss": 0.5, "grad_norm": 0.1})
    state.global_step = 20
    with pytest.raises(TrainingDiverged, match=r"grad_norm = nan at step 20 \(last finite log at step 10\).*rl.grpo.learning_rate"):
        cb.on_log(args, state, None, logs={"loss": 0.4, "grad_norm": float("nan")})
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2  # the bad line is logged too


def test_non_finite_gradients_stop_training_before_the_step_and_keep_its_batches(tmp_path):
    from types import SimpleNamespace

    from looper.trainers import TrainingDiverged, watch_gradients

    layer = torch.nn.Linear(2, 1)
    trainer = SimpleNamespace(compute_loss=lambda model, inputs, num_items_in_batch=None: torch.tensor(0.5), callbacks=[])
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
    with pytest.raises(TrainingDiverged, match=r"non-finite gradients at step 8, before the optimizer applied them.*"
                                               r"2 micro-batch\(es\) and the weights before it are in .*diverged_step8.pt"
                                               r".*rl.grpo.learning_rate"):
        watch.on_pre_optimizer_step(None, state, None, model=layer)
    dump = torch.load(tmp_path / "diverged_step8.pt")
    assert dump["step"] == 8 and [m["inputs"]["input_ids"].tolist() for m in dump["micro_batches"]] == [[[1, 2, 3]], [[4, 5]]]
    assert dump["micro_batches"][1]["kwargs"]["num_items_in_batch"].item() == 5
    assert torch.equal(dump["trainable"]["weight"], layer.weight.detach())
