"""looper plan: each stage's work from the config and data sizes, its cost from a measured rate, nothing run or written."""

from pathlib import Path

import pytest

from conftest import run_looper

REPO = Path(__file__).resolve().parents[1]


def row(out: str, stage: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.startswith(f"| {stage} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.long
def test_the_8b_plan_counts_each_stages_work_and_prices_it_at_the_measured_rates(tmp_path):
    out = run_looper("plan", "configs/r1-distill-llama-8b.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    # 5,978 training questions (GSM8K's 7,473 less the 20% dev split), 2 samples each, <= 2,048 tokens, at 11,499 tokens/s
    assert row(out, "sft (self data)")[1:4] == [
        "5,978 questions x 2 samples = 11,956 answers",
        "24,485,888 generated, at most",
        "<= 35",
    ]
    rollouts = row(out, "collect-rollouts")
    assert rollouts[1].endswith("2,000 questions x 8 arms x 1 = 16,000 trajectories") and rollouts[3] == "<= 47"
    assert "generation_hf_vllm_8b_256x2048_h200.json" in rollouts[5]
    assert (
        row(out, "eval")[1] == "3 models x 4,023 questions x 8 = 96,552 answers"
    )  # dev 1,495 + test 1,319 + Platinum 1,209
    # vLLM's engine reserves its share of the GPU (vLLM's default 0.9 of the H200's 139.8 GiB) whatever the work
    assert row(out, "eval")[4] == "125.8 (vLLM: 0.9 of the GPU)"
    # epochs over examples: at most one optimizer step per batch x accumulation examples (packing makes fewer)
    assert "5,978 kept self-data answers x 1 epoch(s) = <= 2,989 optimizer steps of 2" in row(out, "sft")[1]
    assert row(out, "train-rl (DPO)")[1].startswith("<= 2,000 pairs x 1 epoch(s) = <= 125 optimizer steps of 16 pairs")
    # no split prepared, no tokenizer here: nothing counted, so the bound is every kept answer at max_length, priced
    # at the Liger rate (5,978 x 8,192 tokens at 7,536 tokens/s), and the summary says why it is so loose
    assert row(out, "sft")[2:5] == ["48,971,776 trained, at most (every example at max_length)", "<= 108", "77.2"]
    assert "SFT as if every example filled its max_length (not counted: that needs the prepared train split" in out
    grpo = run_looper(
        "plan", "configs/r1-distill-llama-8b.yaml", f"runs_dir={tmp_path}", "rl.algorithm=grpo", cwd=REPO
    ).stdout
    # 256 questions x 8 arms x 4 completions; TRL's optimizer step takes 8 of them (the config's batch, no accumulation)
    assert row(grpo, "train-rl (GRPO)")[1:3] == [
        "256 questions x 1 epoch(s) -> 8,192 completions = 1,024 optimizer steps of 8",
        "16,777,216 generated, at most",
    ]
    capped = run_looper(
        "plan",
        "configs/r1-distill-llama-8b.yaml",
        f"runs_dir={tmp_path}",
        "rl.algorithm=grpo",
        "rl.grpo.max_steps=10",
        cwd=REPO,
    ).stdout  # max_steps decides how many completions are made
    assert row(capped, "train-rl (GRPO)")[1:3] == [
        "max_steps 10 optimizer steps of 8 completions -> 80 completions",
        "163,840 generated, at most",
    ]
    assert "collect-rollouts" not in grpo  # GRPO samples its own completions
    # as written, TRL generates with transformers: 16,777,216 tokens at 313.1 tokens/s; with TRL's vLLM colocated, 2,061.5
    assert row(grpo, "train-rl (GRPO)")[3] == "<= 893" and "transformers' generate" in row(grpo, "train-rl (GRPO)")[5]
    vllm = run_looper(
        "plan",
        "configs/r1-distill-llama-8b.yaml",
        f"runs_dir={tmp_path}",
        "rl.algorithm=rloo",
        "rl.rloo.use_vllm=true",
        "rl.rloo.vllm_mode=colocate",
        cwd=REPO,
    ).stdout
    assert row(vllm, "train-rl (RLOO)")[3:5] == ["<= 128", "70.7"]  # 16,777,216 / 2,176.8 / 60
    assert not any(tmp_path.iterdir())  # nothing written, no run folder, no lock


@pytest.mark.long
def test_a_quantized_base_is_priced_at_its_own_generation_rate(tmp_path):
    """4-bit through vLLM: vLLM's bitsandbytes rate, a bound; 8-bit through transformers: LLM.int8's rate, measured at
    shorter answers than the stages', so '~' and 'About', not a bound; 8-bit through vLLM: the bf16 base's rate,
    since vLLM has no in-flight 8-bit (docs/benchmarks.md)."""
    qlora = run_looper("plan", "configs/r1-distill-llama-8b-qlora.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    rollouts = row(qlora, "collect-rollouts")  # 32,768,000 tokens at 8,154.7 tokens/s
    assert rollouts[3] == "<= 67" and "generation_4bit_vllm_256x2048.json" in rollouts[5]
    assert row(qlora, "sft (self data)")[3] == "<= 50" and "At most 11.4 GPU-hours" in qlora
    int8 = run_looper("plan", "configs/r1-distill-llama-8b-plan.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    rollouts = row(int8, "collect-rollouts")  # 32,768,000 tokens at 531.8 tokens/s
    assert rollouts[3:5] == ["~1,027", "14.3"] and "generation_8bit_hf_64x512.json" in rollouts[5]
    assert row(int8, "train-rl (DPO)")[3] == "<= 48"  # a bound still
    assert "About 122.8 GPU-hours" in int8 and "collect-rollouts, eval at a rate measured at shorter answers" in int8
    bf16 = run_looper(
        "plan",
        "configs/r1-distill-llama-8b-plan.yaml",
        f"runs_dir={tmp_path}",
        "rollouts.engine=vllm",
        "eval.engine=vllm",
        cwd=REPO,
    ).stdout
    assert row(bf16, "collect-rollouts")[3] == "<= 47" and "generation_hf_vllm_8b_256x2048_h200.json" in bf16
    assert "At most 8.0 GPU-hours" in bf16 and "shorter answers" not in bf16


def test_the_smollm2_gpu_plan_prices_dpo_at_its_pipeline_rate_and_says_what_it_leaves_out(tmp_path):
    out = run_looper("plan", "configs/smollm2-135m-gpu.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    # 2 rounds x 2,000 questions x 2 pairs = 8,000 pairs, chosen + rejected <= 640 tokens: 10,240,000 tokens at 20,432/s
    dpo = row(out, "train-rl (DPO)")
    assert dpo[2:5] == ["10,240,000 trained, at most", "<= 8", "13.1"] and "pipeline_default_run5" in dpo[5]
    assert row(out, "sft")[4] == "12.4" and row(out, "collect-rollouts")[3] == "<= 25"  # 32,768,000 tokens at 22,198/s
    assert "Not counted: loading each model, and each vLLM engine's start" in out


@pytest.mark.long
def test_gold_sft_tokens_are_counted_once_the_split_is_prepared(tmp_path, tiny_model_dir):
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "sft.trainer.max_steps=-1",
        "sft.trainer.num_train_epochs=2",
    ]
    # before prepare-data nothing is counted: 16 examples x 2 epochs, each at demo's max_length, 256
    assert (
        row(run_looper("plan", *a, cwd=REPO).stdout, "sft")[2] == "8,192 trained, at most (every example at max_length)"
    )
    run_looper("prepare-data", *a, cwd=REPO)
    sft = row(run_looper("plan", *a, cwd=REPO).stdout, "sft")
    tokens, kind = sft[2].split(" ", 1)
    assert (
        sft[1].startswith("16 examples x 2 epoch(s)")
        and kind == "trained"
        and 16 * 2 * 20 < int(tokens.replace(",", "")) < 8192
    )
    # splits prepared with other data settings do not count: the plan is for the config given
    assert row(run_looper("plan", *a, "data.symbolic_train_size=40", cwd=REPO).stdout, "sft")[1].startswith(
        "32 examples"
    )
    assert run_looper("plan", *a, "data.source=hub", cwd=REPO).returncode == 0


@pytest.mark.long
def test_self_data_sft_is_bounded_once_the_split_is_prepared(tmp_path, tiny_model_dir):
    """sft.data=self: at most min(per_question, samples) kept answers per sampled question, each its prompt plus
    max_new_tokens plus the end token; packing that keeps the overflow (wrapped, bfd_split) cuts nothing."""
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "sft.trainer.max_steps=-1",
        "sft.trainer.num_train_epochs=2",
        "sft.trainer.max_length=4096",
        "sft.data=self",
        "sft.self_data.samples=3",
        "sft.self_data.per_question=2",
        "sft.self_data.max_new_tokens=64",
    ]
    # no split prepared yet: nothing counted, 32 kept answers x 2 epochs at max_length 4,096
    assert (
        row(run_looper("plan", *a, cwd=REPO).stdout, "sft")[2]
        == "262,144 trained, at most (every example at max_length)"
    )
    run_looper("prepare-data", *a, cwd=REPO)
    sft = row(run_looper("plan", *a, cwd=REPO).stdout, "sft")
    assert (
        sft[1] == "<= 32 kept self-data answers x 2 epoch(s) = <= 16 optimizer steps of 4, sequences <= 4,096 tokens"
    )  # 16 questions x 2 kept
    tokens, kind = sft[2].split(" ", 1)
    assert kind == "trained, at most" and 2 * 32 * 65 < int(tokens.replace(",", "")) < 2 * 32 * (65 + 200)
    cut = row(run_looper("plan", *a, "sft.trainer.max_length=80", cwd=REPO).stdout, "sft")
    assert cut[2] == f"{2 * 32 * 80:,} trained, at most"  # every prompt + 65 is over 80 tokens: each cut at 80
    wrapped = row(
        run_looper(
            "plan",
            *a,
            "sft.trainer.max_length=80",
            "sft.trainer.packing=true",
            "sft.trainer.packing_strategy=wrapped",
            cwd=REPO,
        ).stdout,
        "sft",
    )
    assert wrapped[1].endswith("sequences not cut") and wrapped[2] == sft[2]


@pytest.mark.long
def test_plan_bad_input_is_one_line(tmp_path):
    # a trainer section's error names the file and the override that set the field; a load error made by the command
    # line alone says so
    for override, message in (
        ("rollouts.num_questionz=5", "command line: rollouts: unknown key 'num_questionz'"),
        ("sft.trainer.max_steps=abc", "r1-distill-llama-8b.yaml with sft.trainer.max_steps=abc: sft.trainer.max_steps"),
        ("eval.datasets=[nope]", "unknown dataset 'nope'"),
        ("eval.models=[]", "eval.models: empty"),
        ("eval.models=[sft,sft]", "eval.models: 'sft' is named twice"),
        ("rl.dpo.beta=-1", "r1-distill-llama-8b.yaml with rl.dpo.beta=-1: rl.dpo.beta: -1"),
        (
            "rl.algorithm=grpo rl.grpo.learning_rate=fast",
            "r1-distill-llama-8b.yaml with rl.grpo.learning_rate=fast: rl.grpo.learning_rate: expected float",
        ),
    ):
        proc = run_looper("plan", "configs/r1-distill-llama-8b.yaml", *override.split(), cwd=REPO, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and message in proc.stderr, override


def test_plan_says_max_steps_when_it_replaces_the_epochs(tmp_path):
    out = run_looper("plan", "configs/demo.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    assert (
        row(out, "sft")[1] == "max_steps 12 optimizer steps, sequences <= 256 tokens"
    )  # not "240 examples x 3 epochs"
    # bounded as DPO is: 12 steps x batch 4 x 256 tokens; a bound under half a minute is "< 1", not "<= 0"
    assert row(out, "sft")[2:4] == ["12,288 trained, at most", "< 1"]
    assert "Under 0.1 GPU-hours on one H200 for 4 of 4 stages" in out


def test_plan_counts_the_epochs_and_length_sft_trains_with(tmp_path):
    """A YAML without num_train_epochs / max_length trains with looper's defaults (trainers.TRAINER_DEFAULTS: 1 epoch,
    512 tokens), not TRL's (3 epochs, 1,024 tokens); the plan reads the trainer config the stage builds."""
    (tmp_path / "run.yaml").write_text("data:\n  source: gsm_symbolic\n  symbolic_train_size: 100\n")
    out = run_looper("plan", str(tmp_path / "run.yaml"), f"runs_dir={tmp_path / 'runs'}", cwd=REPO).stdout
    # 100 less the 20% dev split, in batches of 4 x 4 accumulation (looper's defaults)
    assert row(out, "sft")[1] == "80 examples x 1 epoch(s) = <= 5 optimizer steps of 16, sequences <= 512 tokens"
    assert not (tmp_path / "runs").exists()


def test_plan_takes_the_gpu_settings_of_the_run_it_plans(tmp_path):
    """A plan is made on any machine for the GPU the run is meant for: tf32 and bf16 as an H200 config writes them are
    not refused where transformers would refuse them for this machine (tf32 needs an Ampere GPU); their type still is."""
    gpu = ["sft.trainer.bf16=true", "sft.trainer.tf32=true", "rl.dpo.bf16=true", "rl.dpo.tf32=true"]
    out = run_looper("plan", "configs/demo.yaml", f"runs_dir={tmp_path}", *gpu, cwd=REPO).stdout
    assert row(out, "sft")[1] == "max_steps 12 optimizer steps, sequences <= 256 tokens"
    bad = run_looper(
        "plan", "configs/demo.yaml", f"runs_dir={tmp_path}", "sft.trainer.tf32=maybe", cwd=REPO, check=False
    )
    assert (
        bad.returncode == 2
        and "demo.yaml with sft.trainer.tf32=maybe: sft.trainer.tf32: expected true/false, got 'maybe'" in bad.stderr
    )


def test_rft_plan_counts_the_correct_trajectories_it_trains_on(tmp_path):
    """rl.algorithm=rft trains on the rollouts' correct trajectories: at most rft_per_question (4) of each question's
    8 arms x 1 sample, 12 questions (the demo's rollouts.num_questions); rl.rft takes looper's defaults (batch 8 x 1,
    1 epoch, 1,024 tokens)."""
    out = run_looper("plan", "configs/demo.yaml", f"runs_dir={tmp_path}", "rl.algorithm=rft", cwd=REPO).stdout
    assert row(out, "train-rl (RFT)")[1:3] == [
        "1 round(s) x <= 48 correct trajectories x 1 epoch(s) = <= 6 optimizer steps, sequences <= 1,024 tokens",
        "49,152 trained, at most",
    ]
    stepped = run_looper(
        "plan",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "rl.algorithm=rft",
        "rl.rounds=2",
        "rl.rft.max_steps=5",
        cwd=REPO,
    ).stdout
    assert row(stepped, "train-rl (RFT)")[1:3] == [  # each round trains max_steps steps of 8 sequences
        "2 round(s) x max_steps 5 optimizer steps of 8 trajectories, sequences <= 1,024 tokens",
        "81,920 trained, at most",
    ]
    assert row(stepped, "collect-rollouts")[1].startswith("2 round(s) x 12 questions")


def test_dpo_plan_counts_the_epochs_or_the_steps_it_trains(tmp_path):
    """DPO's token bound follows what TRL trains: 12 questions x 2 pairs x the epochs, or max_steps x the batch (the
    demo's 8 steps of 4 pairs), each pair a chosen and a rejected sequence of at most max_length (512)."""

    def dpo(*overrides: str) -> list[str]:
        return row(
            run_looper("plan", "configs/demo.yaml", f"runs_dir={tmp_path}", *overrides, cwd=REPO).stdout,
            "train-rl (DPO)",
        )[1:3]

    assert dpo("rl.dpo.max_steps=-1", "rl.dpo.num_train_epochs=2") == [
        "<= 24 pairs x 2 epoch(s) = <= 12 optimizer steps of 4 pairs, chosen + rejected <= 512 tokens each",
        "49,152 trained, at most",
    ]
    assert dpo() == [
        "1 round(s) x max_steps 8 optimizer steps of 4 pairs, chosen + rejected <= 512 tokens each",
        "32,768 trained, at most",
    ]


def test_plan_piped_into_a_reader_that_stops_early_ends_quietly():
    """`looper plan CONFIG | head`: a reader that closes the pipe before the output is written (`true` reads
    nothing) gets no BrokenPipeError traceback, and looper exits 1 as Unix tools do."""
    import subprocess
    import sys

    cmd = f"set -o pipefail; {sys.executable} -m looper.cli plan configs/demo.yaml | true"
    proc = subprocess.run(
        ["bash", "-c", cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


def test_a_model_without_measured_rates_gets_its_work_and_says_why_nothing_is_priced(tmp_path):
    (tmp_path / "model").mkdir()  # a local model looper plan knows no rate for (nothing is loaded)
    out = run_looper(
        "plan",
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        f"model.name_or_path={tmp_path / 'model'}",
        cwd=REPO,
    ).stdout
    assert (
        row(out, "collect-rollouts")[3] == "-"
        and row(out, "collect-rollouts")[5] == "not measured"
        and "GPU-hours" not in out
    )
    assert "No stage priced: no rate was measured on one GPU for this model's architecture" in out


BENCH = REPO / "docs" / "bench"


def _generation_figures(work: str, raw: dict) -> tuple[float, float | None]:
    """bench/generation_throughput.py: the run of the work's engine (``generate:ENGINE[:QUANTIZATION]``), in a file
    measured with the work's quantization."""
    _, engine, *quant = work.split(":")
    assert raw.get("quantization", "none") == (quant[0] if quant else "none"), work
    run = next(r for r in raw["runs"] if r["way"] == engine)
    return run["tokens_per_s"], run.get("peak_memory_gib")


def _sft_figures(work: str, raw: dict) -> tuple[float, float | None]:
    """bench/sft_throughput.py: the one recipe with the work's base (``sft:bf16``, ``sft:4bit``, ``sft:8bit``) and
    Liger setting (``:liger``)."""
    _, base, *liger = work.split(":")
    quant = "none" if base == "bf16" else base
    recipes = [
        r
        for r in raw["recipes"].values()
        if f"model.quantization={quant}" in r["overrides"]
        and ("sft.trainer.use_liger_kernel=true" in r["overrides"]) == bool(liger)
    ]
    assert len(recipes) == 1, work
    return recipes[0]["tokens_per_s"], recipes[0]["peak_memory_gib"]


def _plan_8b_figures(work: str, raw: dict) -> tuple[float, float | None]:
    """bench/plan_8b.py: the train-rl stage of the work's algorithm (``grpo:ENGINE``, ``rloo:ENGINE``) in the bf16 8B
    config, which generated through vLLM exactly when its command turned TRL's use_vllm on."""
    algorithm, engine = work.split(":")
    step = raw["configs"]["8b"]["steps"][algorithm]
    assert (f"rl.{algorithm}.use_vllm=true" in step["train-rl"]["command"]) == (engine == "vllm"), work
    stage = next(s for s in step["stages"] if s["stage"] == "train-rl")
    return stage["tokens_per_s"], stage["peak_gpu_memory_gib"]


# Each raw file's layout, by the bench script that wrote it (its `command`): where a work's figures are
READERS = {
    "bench/generation_throughput.py": _generation_figures,
    "bench/sft_throughput.py": _sft_figures,
    "bench/plan_8b.py": _plan_8b_figures,
}

# The rates whose figure the work alone does not pick out of the raw file, each with where it is and why
PLACED = {
    # bench/rl_throughput.py times two reference layouts; looper's DPO takes the frozen SFT adapter as its reference
    # (rl.reference: adapter), not a second model
    ("llama-8b", "dpo"): lambda raw: (
        raw["layouts"]["adapter"]["tokens_per_s"],
        raw["layouts"]["adapter"]["peak_memory_gib"],
    ),
    # GRPO through TRL's generate was not measured: it takes RLOO's figure, which generates through the same TRL path
    ("llama-8b", "grpo:hf"): lambda raw: _plan_8b_figures("rloo:hf", raw),
    # a pipeline run's stage markers each hold two rates, over the whole stage and past its first steps (steady);
    # SFT's rate is the steady one, DPO's the whole stage's
    ("smollm2-135m", "sft:bf16"): lambda raw: (
        raw["stages"]["sft"]["steady_tokens_per_s"],
        raw["stages"]["sft"]["peak_gpu_memory_gib"][0],
    ),
    ("smollm2-135m", "dpo"): lambda raw: (
        raw["stages"]["train-rl"]["tokens_per_s"],
        raw["stages"]["train-rl"]["peak_gpu_memory_gib"][0],
    ),
    # the real model's: the run's own stage markers (stages/sft.json, stages/train-rl.json), the same two rates
    ("qwen2.5-1.5b", "sft:bf16"): lambda raw: (raw["steady_tokens_per_s"], raw["peak_gpu_memory_gib"][0]),
    ("qwen2.5-1.5b", "dpo"): lambda raw: (raw["tokens_per_s"], raw["peak_gpu_memory_gib"][0]),
}


def test_each_measured_rate_is_the_figure_of_its_raw_file():
    """Every rate ``looper plan`` prices with (plan_rates.yaml) names a raw file under docs/bench/ that holds its
    tokens/s (to the whole token, or as written) and its peak GiB (to the tenth, or as written; none where the file
    records none), read by the file's layout or from the place ``PLACED`` gives."""
    import json

    from looper.plan import RATES

    assert set(PLACED) <= set(RATES)
    for key, rate in RATES.items():
        path = BENCH / rate.source
        assert path.is_file(), (key, rate.source)
        raw = json.loads(path.read_text())
        tokens_per_s, peak_gib = PLACED[key](raw) if key in PLACED else READERS[raw["command"].split()[0]](key[1], raw)
        assert abs(rate.tokens_per_s - tokens_per_s) < 0.5, (key, rate.tokens_per_s, tokens_per_s)
        assert (rate.peak_gib is None) == (peak_gib is None), (key, rate.peak_gib, peak_gib)
        assert peak_gib is None or abs(rate.peak_gib - peak_gib) < 0.05, (key, rate.peak_gib, peak_gib)


def test_the_measured_rates_ship_with_the_package():
    """plan_rates.yaml is package data, so `looper plan` prices a run where looper is installed without docs/."""
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "plan_rates.yaml" in pyproject["tool"]["setuptools"]["package-data"]["looper"]
    assert (REPO / "src" / "looper" / "plan_rates.yaml").is_file()


def test_the_real_model_is_priced_at_its_h100_rates(tmp_path):
    """The Qwen config's rates were measured on one H100: its minutes, total and vLLM share (0.9 of 79.2 GiB) are an
    H100's; an architecture whose rates came from two GPUs would be refused when the rates load."""
    out = run_looper("plan", "configs/qwen2.5-coder-1.5b-gpu.yaml", f"runs_dir={tmp_path}", cwd=REPO).stdout
    assert "| minutes on one H100 |" in out and "GPU-hours on one H100 for 5 of 5 stages" in out
    assert row(out, "eval")[4] == "71.3 (vLLM: 0.9 of the GPU)"
    # 1,000 questions x 8 arms x 512 tokens at 24,229.5 tokens/s; <= 2,000 pairs x 2 x 1,024 tokens at 6,444.4 tokens/s
    assert row(out, "collect-rollouts")[2:4] == ["4,096,000 generated, at most", "<= 3"]
    assert row(out, "train-rl (DPO)")[3:5] == ["<= 11", "23.4"]
