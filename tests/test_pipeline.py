"""The whole pipeline on a tiny model, then a rerun that skips every stage, and a config change refused."""

import json
import os
from pathlib import Path

import pytest

from conftest import run_looper

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.long
def test_pipeline_end_to_end_then_skips(tmp_path, tiny_model_dir):
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=4",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=3",
        "rollouts.max_new_tokens=12",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=1",
        "eval.limit=3",
        "eval.max_new_tokens=8",
    ]
    first = run_looper("pipeline", *a, cwd=REPO)
    assert "pipeline done" in first.stdout and "report:" in first.stdout
    assert "| rl " in first.stdout and "| sft " in first.stdout and "| base " in first.stdout
    # the end says what each stage did, from the run folder, and whether the models differ beyond chance
    end = first.stdout[first.stdout.index("=== pipeline done") :]
    for said in (
        "prepare-data: gsm_symbolic_train 16, gsm_symbolic_dev 4, gsm_symbolic_test 4 questions",
        "sft: 2 lora steps, train loss",
        "collect-rollouts: 24 trajectories (3 questions x 8), ",
        "build-preferences: ",
        "train-rl: 1 DPO step, train loss",
        "eval (strict, gsm_symbolic_test, n=3): base ",
        "No two models differ beyond chance",
    ):
        assert said in end, (said, end)
    stages = tmp_path / "demo" / "stages"
    marker = {
        s: json.loads((stages / f"{s}.json").read_text()) for s in ("sft", "collect-rollouts", "train-rl", "eval")
    }
    for stage in ("sft", "train-rl"):  # training: the trainer's token count, its loop's time, their ratio
        m = marker[stage]
        assert m["train_tokens"] > 0 and m["train_runtime_s"] > 0, m
        assert abs(m["tokens_per_s"] - m["train_tokens"] / m["train_runtime_s"]) < 0.01 * m["tokens_per_s"] + 0.1
    for stage in ("collect-rollouts", "eval"):  # generation: tokens generated over generation time
        m = marker[stage]
        assert m["generated_tokens"] > 0 and m["tokens_per_s"] > 0 and m["processes"] == 1, m
    assert marker["eval"]["models"] == ["base", "sft", "rl"] and marker["eval"]["peak_gpu_memory_gib"] == [None]
    second = run_looper("pipeline", *a, cwd=REPO)
    assert second.stdout.count("nothing to do") == 6, second.stdout
    changed = run_looper("pipeline", *a[:-1], "eval.max_new_tokens=9", cwd=REPO, check=False)
    assert changed.returncode == 0 and "eval.max_new_tokens" not in changed.stderr  # only eval reruns
    refused = run_looper("pipeline", *a, "sft.trainer.max_steps=3", cwd=REPO, check=False)
    assert refused.returncode != 0 and "sft.trainer.max_steps: 2 -> 3" in refused.stderr
    ranged = run_looper("pipeline", *a[:-1], "eval.max_new_tokens=9", "--from", "train-rl", "--to", "eval", cwd=REPO)
    assert "=== sft ===" not in ranged.stdout and ranged.stdout.count("nothing to do") == 2


def test_the_run_note_is_printed_once_last(tmp_path, tiny_model_dir):
    """The note under eval's table is printed by the pipeline once, at its end (not under eval's table and again at
    the end); eval alone prints it under its table."""
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=10",
        "data.symbolic_test_size=2",
        "eval.models=[base]",
        "eval.max_new_tokens=4",
        "note=what this run shows",
    ]
    run_looper("prepare-data", *a, cwd=REPO)
    piped = run_looper("pipeline", *a, "--from", "eval", cwd=REPO).stdout
    assert piped.count("note: ") == 1 and piped.rstrip().splitlines()[-1] == "note: what this run shows", piped
    alone = run_looper("eval", *a, "eval.max_new_tokens=5", cwd=REPO).stdout
    assert alone.count("note: ") == 1 and alone.rstrip().splitlines()[-1] == "note: what this run shows", alone


def test_overrides_are_read_before_between_and_after_the_options(tmp_path):
    """`looper pipeline CONFIG --from X key=value`: an override after an option is read like one before it, in the
    order typed (the last one wins); an unknown option is still refused."""
    run_looper(
        "pipeline",
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        "data.symbolic_train_size=50",
        "--from",
        "prepare-data",
        "data.symbolic_train_size=10",
        "--to",
        "prepare-data",
        "data.symbolic_test_size=3",
        cwd=REPO,
    )
    data = tmp_path / "demo" / "data"
    assert len((data / "gsm_symbolic_train.jsonl").read_text().splitlines()) == 8  # 10 less the 20% dev split
    assert len((data / "gsm_symbolic_test.jsonl").read_text().splitlines()) == 3
    bogus = run_looper(
        "pipeline", "configs/demo.yaml", f"runs_dir={tmp_path}", "--bogus", "eval.limit=3", cwd=REPO, check=False
    )
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus eval.limit=3" in bogus.stderr


def test_looper_version_names_looper_and_the_libraries_a_bug_report_needs():
    from importlib.metadata import version

    out = run_looper("--version", cwd=REPO).stdout.strip()
    assert out.startswith(
        f"looper {version('looper')} (torch {version('torch')}, transformers {version('transformers')}, "
        f"trl {version('trl')}, peft {version('peft')},"
    ), out
    assert len(out.splitlines()) == 1 and "; python 3." in out


def test_library_chatter_is_quiet_and_looper_speaks():
    """looper's INFO lines print; transformers' below ERROR and accelerate's below WARNING do not (accelerate's
    "The used dataset had no length ..." came at every logged step of a resumed DPO run). In a fresh interpreter,
    as the CLI sets logging up."""
    import subprocess
    import sys

    code = (
        "import logging; from looper.entrypoint import setup_logging; setup_logging(); "
        "print([logging.getLogger(n).isEnabledFor(level) for n, level in (('looper', logging.INFO), "
        "('accelerate.accelerator', logging.INFO), ('accelerate.accelerator', logging.WARNING), "
        "('transformers.generation.utils', logging.WARNING))])"
    )
    env = {k: v for k, v in os.environ.items() if k != "LOOPER_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[True, False, True, False]"
