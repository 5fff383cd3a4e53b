"""SFT on a tiny random Llama: loss logged, LoRA weights changed, resume after a kill, bad input."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_jsonl, run_looper
from looper.config import load_config

REPO = Path(__file__).resolve().parents[1]


def tiny_run_config(tmp_path: Path, tiny_model_dir: Path, *extra: str) -> list[str]:
    return [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=40",
        "data.symbolic_test_size=8",
        *extra,
    ]


@pytest.fixture()
def prepared(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *tiny_run_config(tmp_path, tiny_model_dir), cwd=REPO)
    return tmp_path


def test_sft_trains_lora_and_logs_loss(prepared, tiny_model_dir):
    args = tiny_run_config(
        prepared,
        tiny_model_dir,
        "sft.trainer.max_steps=4",
        "sft.trainer.learning_rate=1e-2",
        "sft.lora.r=4",
        "sft.lora.alpha=8",
    )
    run_looper("sft", *args, cwd=REPO)
    adapter = prepared / "demo" / "checkpoints" / "lora_sft"
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 7  # 2 layers x q/k/v/o/gate/up/down
    assert all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero: training moved every one
    losses = [r["loss"] for r in read_jsonl(prepared / "demo" / "logs" / "sft.jsonl") if "loss" in r]
    assert losses and all(loss > 0 for loss in losses)
    # loadable the standard PEFT way
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    assert model.peft_config["default"].r == 4
    # a second run with the same config does nothing; with a different config it refuses
    again = run_looper("sft", *args, cwd=REPO)
    assert "nothing to do" in again.stdout
    other = run_looper("sft", *args[:-2], "sft.lora.r=8", "sft.lora.alpha=8", cwd=REPO, check=False)
    assert other.returncode != 0 and "made with other settings" in other.stderr and "sft.lora.r: 4 -> 8" in other.stderr


@pytest.mark.long
def test_sft_resumes_after_interrupt(prepared, tiny_model_dir, monkeypatch, capsys):
    """Interrupt after step 3 (checkpoint at step 2), rerun: it resumes and ends at the same step count."""
    from transformers import TrainerCallback

    import looper.baseline_sft.train_sft as train_sft
    import looper.trainers as trainers

    config = load_config(
        REPO / "configs" / "demo.yaml",
        tiny_run_config(
            prepared, tiny_model_dir, "sft.trainer.max_steps=6", "sft.trainer.save_steps=2", "sft.lora.r=4"
        )[1:],
    )
    original = trainers.metrics_callback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(trainers, "metrics_callback", lambda path, section=None: Crash())
    with pytest.raises(KeyboardInterrupt):
        train_sft.main(config)
    run = prepared / "demo"
    assert not (run / "checkpoints" / "lora_sft").exists()  # no half-written output
    assert (run / "work" / "sft" / "checkpoint-2").is_dir()
    monkeypatch.setattr(trainers, "metrics_callback", original)
    train_sft.main(config)
    out = capsys.readouterr().out
    assert "resuming from" in out and "checkpoint-2" in out
    assert "sft: 6 steps" in out
    steps = [r["step"] for r in read_jsonl(run / "logs" / "sft.jsonl") if "loss" in r]
    assert min(steps) > 2  # logging restarted after the checkpoint, not from zero


@pytest.mark.long
def test_sft_bad_inputs(tmp_path, tiny_model_dir):
    proc = run_looper("sft", *tiny_run_config(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "gsm_symbolic_train.jsonl: not found" in proc.stderr
    run_looper("prepare-data", *tiny_run_config(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper(
        "sft",
        *tiny_run_config(tmp_path, tiny_model_dir, "sft.method=full", "model.quantization=8bit"),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode != 0 and "cannot use a quantized base" in proc.stderr
    assert (
        "sft" not in json.loads((tmp_path / "demo" / "manifest.json").read_text())["stages"]
    )  # refused before starting
    proc = run_looper(
        "sft", *tiny_run_config(tmp_path, tiny_model_dir, "sft.lora.target_modules=[wq,wk]"), cwd=REPO, check=False
    )
    assert proc.returncode != 0 and "its linear modules are" in proc.stderr and "q_proj" in proc.stderr
    (tmp_path / "demo" / "data" / "gsm_symbolic_train.jsonl").write_text("")
    proc = run_looper("sft", *tiny_run_config(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "training set is empty" in proc.stderr
    proc = run_looper(
        "sft", *tiny_run_config(tmp_path, tiny_model_dir, "model.quantization=4bit"), cwd=REPO, check=False
    )
    assert proc.returncode != 0 and ("needs a CUDA GPU" in proc.stderr or "empty" in proc.stderr)


@pytest.mark.long
def test_full_sft_then_rloo_pipeline(tmp_path, tiny_model_dir):
    """sft.method=full trains every weight, saves checkpoints/sft; RLOO and eval then take that checkpoint."""
    from safetensors.torch import load_file as load

    a = tiny_run_config(
        tmp_path,
        tiny_model_dir,
        "sft.method=full",
        "sft.trainer.max_steps=2",
        "sft.trainer.learning_rate=1e-2",
        "rollouts.num_questions=2",
        "rollouts.max_new_tokens=8",
        "preferences.min_margin=0.0",
        "rl.algorithm=rloo",
        "rl.num_questions=1",
        "rl.rloo.max_steps=1",
        "rl.rloo.max_completion_length=8",
        "sft.lora.r=4",
        "eval.limit=2",
        "eval.max_new_tokens=4",
    )
    out = run_looper("pipeline", *a, cwd=REPO)
    assert "sft (full): memory estimate per GPU, GiB" in out.stdout
    full = tmp_path / "demo" / "checkpoints" / "sft"
    before, after = load(tiny_model_dir / "model.safetensors"), load(full / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # every layer trained, not an adapter
    assert not (tmp_path / "demo" / "checkpoints" / "lora_sft").exists()
    assert (tmp_path / "demo" / "checkpoints" / "lora_rl" / "adapter_model.safetensors").exists()
    assert "| rl " in out.stdout


@pytest.mark.long
def test_sft_on_the_models_own_correct_answers(prepared, tiny_model_dir):
    """sft.data=self: the base model samples every training question (saved, resumable); only its correct,
    untruncated, distinct answers become examples, rendered as the generation prompt + the text verbatim."""
    args = tiny_run_config(
        prepared,
        tiny_model_dir,
        "sft.data=self",
        "sft.self_data.samples=2",
        "sft.self_data.max_questions=5",
        "sft.self_data.max_new_tokens=6",
        "sft.self_data.per_question=1",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.batch_size=4",
    )
    proc = run_looper("sft", *args, cwd=REPO, check=False)  # a random model answers nothing correctly
    assert proc.returncode != 0 and "answered no training question correctly" in proc.stderr
    samples_path = prepared / "demo" / "data" / "sft_self_samples.jsonl"
    records = read_jsonl(samples_path)
    train = read_jsonl(prepared / "demo" / "data" / "gsm_symbolic_train.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in train[:5]] and all(len(r["samples"]) == 2 for r in records)
    assert not (prepared / "demo" / "checkpoints" / "lora_sft").exists()

    # as if the model had answered: record 0 twice the same correct text, record 1 once correct but truncated
    records[0]["samples"] = [
        {
            "text": f"<think>6*7</think> so #### {records[0]['gold']}",
            "num_tokens": 5,
            "truncated": False,
            "correct": True,
        }
    ] * 2
    records[1]["samples"][0].update(text=f"#### {records[1]['gold']}", correct=True, truncated=True)
    samples_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    from looper.baseline_sft.train_sft import self_examples
    from looper.runs import RunDir

    config = load_config(args[0], args[1:])
    examples = self_examples(config, RunDir.of(config))
    assert [e["completion"] for e in examples] == [records[0]["samples"][0]["text"]]
    assert examples[0]["prompt"].endswith("assistant\n") and records[0]["question"].strip() in examples[0]["prompt"]
    run_looper("sft", *args, cwd=REPO)  # the saved samples are reused, not drawn again
    assert (prepared / "demo" / "checkpoints" / "lora_sft" / "adapter_model.safetensors").exists()
    # the answer mode that judged the samples and the engine that drew them are SFT's settings too, under self data
    for change, named in (
        ("regime_w.answer_mode=flexible", "regime_w.answer_mode: 'strict' -> 'flexible'"),
        ("rollouts.seeded=true", "rollouts.seeded: False -> True"),
    ):
        proc = run_looper("sft", *args, change, cwd=REPO, check=False)
        assert proc.returncode != 0 and f"stages/sft.json: made with other settings ({named})" in proc.stderr, (
            proc.stderr
        )
    import shutil

    (
        prepared / "demo" / "stages" / "sft.json"
    ).unlink()  # sft redone with other sampling settings: the samples are stale
    shutil.rmtree(prepared / "demo" / "checkpoints" / "lora_sft")
    proc = run_looper("sft", *[a.replace("samples=2", "samples=3") for a in args], cwd=REPO, check=False)
    assert (
        proc.returncode != 0
        and "sft_self_samples.jsonl: made with other settings (self_data.samples: 2 -> 3)" in proc.stderr
    )
    proc = run_looper("sft", *args, "regime_w.answer_mode=flexible", cwd=REPO, check=False)
    assert (
        "sft_self_samples.jsonl: made with other settings (regime_w.answer_mode: 'strict' -> 'flexible')" in proc.stderr
    )


def test_full_sft_of_a_16_bit_model_updates_float32_master_weights(tmp_path, tiny_model_dir, monkeypatch):
    """Full SFT in one process trains float32 weights (bf16 weights would round away small updates) and saves the
    checkpoint in model.dtype; under FSDP / ZeRO-3 accelerate keeps the master weights, so model.dtype loads as it is."""
    from safetensors.torch import load_file as load

    from looper.baseline_sft.train_sft import master_weights_dtype

    assert master_weights_dtype(load_config(None, ["sft.method=full", "model.dtype=bfloat16"])) is torch.float32
    assert master_weights_dtype(load_config(None, ["sft.method=full", "model.dtype=float32"])) is None
    assert master_weights_dtype(load_config(None, ["sft.method=lora", "model.dtype=bfloat16"])) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert master_weights_dtype(load_config(None, ["sft.method=full", "model.dtype=bfloat16"])) is None
    monkeypatch.delenv("ACCELERATE_USE_FSDP")

    a = tiny_run_config(
        tmp_path,
        tiny_model_dir,
        "sft.method=full",
        "model.dtype=bfloat16",
        "sft.trainer.max_steps=2",
        "sft.trainer.learning_rate=1e-4",
    )
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("sft", *a, cwd=REPO)
    saved = load(tmp_path / "demo" / "checkpoints" / "sft" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    before = load(tiny_model_dir / "model.safetensors")
    moved = [k for k in before if k in saved and not torch.equal(before[k].to(torch.bfloat16), saved[k])]
    assert len(moved) > len(before) // 2


def test_training_speed_reads_the_trainers_counts_from_the_metrics_log(tmp_path):
    """Steady rate between the first and last logged counts; the loop's rate from the trainer's run time; GRPO-style
    logs (a count on generation steps only) give the loop's rate alone; no log, nothing."""
    from looper.trainers import training_speed

    log = tmp_path / "m.jsonl"
    rows = [
        {"time": 100.0, "step": 1, "loss": 2.0, "num_tokens": 1000.0},
        {"time": 102.0, "step": 2, "loss": 1.9, "num_tokens": 2000.0},
        {"time": 104.0, "step": 3, "loss": 1.8, "num_tokens": 3000.0},
        {"time": 104.5, "step": 3, "train_runtime": 6.0},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_speed(log) == {
        "train_tokens": 3000,
        "train_runtime_s": 6.0,
        "tokens_per_s": 500.0,
        "steady_tokens_per_s": 500.0,
        "steady_steps": "1-3",
    }
    log.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], {"time": 103.0, "step": 2, "loss": 0.1}, rows[3]]))
    assert training_speed(log) == {"train_tokens": 1000, "train_runtime_s": 6.0, "tokens_per_s": 166.7}
    assert training_speed(tmp_path / "missing.jsonl") == {}


def test_examples_longer_than_max_length_are_counted_with_what_they_lose(real_tokenizer_dir, capsys):
    """A length limit is checked, not assumed: examples it cuts lose EOS, and some their '#### N' line."""
    from transformers import AutoTokenizer

    from looper.trainers import check_lengths

    tok = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    steps = " ".join(f"Step {i}: 3 + {i} = {3 + i}." for i in range(40))
    examples = [
        {"prompt": "Problem: 2 + 2?\n\nSolution:", "completion": " 2 + 2 = 4\n#### 4"},  # fits
        {"prompt": "Problem: long?\n\nSolution:", "completion": f" #### 7\n{steps}"},  # cut after its answer
        {"prompt": "Problem: long?\n\nSolution:", "completion": f" {steps}\n#### 42"},
    ]  # cut before its answer
    limit = len(tok(examples[0]["prompt"] + examples[0]["completion"] + tok.eos_token)["input_ids"]) + 5
    assert check_lengths(examples, tok, limit, "sft.trainer") == {"examples_cut": 2, "answers_cut": 1}
    assert f"sft.trainer.max_length={limit}: 2 of 3 completion examples are longer" in capsys.readouterr().out
    assert check_lengths(examples, tok, None, "sft.trainer") == {"examples_cut": 0, "answers_cut": 0}
