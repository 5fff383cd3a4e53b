"""Every long stage, killed with SIGKILL at a random point and run again, ends exactly where an
uninterrupted run ends: the same adapter weights, records, metrics log and report, nothing lost or
repeated. The kill point is drawn afresh each run; set LOOPER_KILL_SEED to replay one."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_jsonl, run_looper

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

REPO = Path(__file__).resolve().parents[1]

# stage -> (the state it starts from, its overrides, what counts as progress, how many units there are)
STAGES = {
    "sft": ("data", ["sft.trainer.max_steps=12", "sft.trainer.save_steps=3", "sft.trainer.logging_steps=1"], "log", 12),
    "collect-rollouts": ("sft", ["rollouts.num_questions=10", "rollouts.batch_size=4"], "rollouts", 10),
    "train-rl": ("preferences", ["rl.dpo.max_steps=10", "rl.dpo.save_steps=3", "rl.dpo.logging_steps=1"], "log", 10),
    "eval": ("sft", ["eval.models=[base,sft]", "eval.limit=12", "eval.batch_size=1"], "eval", 24),
}


# what the rerun after the kill changes: fields that change no result (config.NOT_RESULT_FIELDS), e.g. the generation
# batch lowered after running out of memory; the rerun must still resume and end where the uninterrupted run did
RERUN = {
    "sft": ["sft.trainer.save_total_limit=3"],
    "collect-rollouts": ["rollouts.batch_size=2"],
    "train-rl": ["rl.dpo.save_total_limit=3"],
    "eval": ["eval.batch_size=3"],
}


def common(runs: Path, tiny_model_dir: Path) -> list[str]:
    return [
        "configs/demo.yaml",
        f"runs_dir={runs}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=30",
        "data.symbolic_test_size=12",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=4",
        "rollouts.max_new_tokens=16",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=2",
        "eval.max_new_tokens=12",
    ]


@pytest.fixture(scope="module")
def states(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("resume-states")
    made = {}
    for state, stages in {
        "data": ["prepare-data"],
        "sft": ["prepare-data", "sft"],
        "preferences": ["prepare-data", "sft", "collect-rollouts", "build-preferences"],
    }.items():
        for stage in stages:
            run_looper(stage, *common(base / state, tiny_model_dir), cwd=REPO)
        made[state] = base / state
    return made


def progress(run: Path, stage: str, kind: str) -> int:
    if kind == "log":
        path = run / "logs" / f"{stage}.jsonl"
        return sum('"loss"' in line for line in path.read_text().splitlines()) if path.exists() else 0
    if kind == "rollouts":
        path = run / "data" / "rl_rollouts.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0
    return (
        sum(len(p.read_text().splitlines()) for p in (run / "eval").glob("*__*.jsonl"))
        if (run / "eval").exists()
        else 0
    )


def outcome(run: Path, stage: str) -> dict:
    """What the stage produced, in a form two runs can be compared by."""
    if stage in ("sft", "train-rl"):
        adapter = run / "checkpoints" / ("lora_sft" if stage == "sft" else "lora_rl") / "adapter_model.safetensors"
        logs = [(r["step"], r["loss"]) for r in read_jsonl(run / "logs" / f"{stage}.jsonl") if "loss" in r]
        return {"adapter": load_file(adapter), "log": logs}
    if stage == "collect-rollouts":
        return {"records": read_jsonl(run / "data" / "rl_rollouts.jsonl")}
    summary = (run / "eval" / "summary.json").read_text()
    return {
        "samples": {p.name: read_jsonl(p) for p in sorted((run / "eval").glob("*__*.jsonl"))},
        "summary": summary.replace(str(run), "RUN"),
    }


def assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if key == "adapter":
            assert a[key].keys() == b[key].keys(), what
            different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
            assert not different, f"{what}: adapter tensors differ: {different[:3]}"
        else:
            assert a[key] == b[key], f"{what}: {key} differs"


def kill_9(command: str, cli: list[str], progress_now, kill_after: int, rng: random.Random, what: str) -> int:
    """Start ``looper COMMAND CLI``, SIGKILL it once ``progress_now()`` reaches ``kill_after`` (plus a random
    0-0.2 s, so the kill can land mid-write or mid-save); returns the progress at the kill."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "looper.cli", command, *cli],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    extra_wait = rng.uniform(0.0, 0.2)
    deadline = time.monotonic() + 300
    while proc.poll() is None and progress_now() < kill_after and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra_wait)
    assert proc.poll() is None, f"{what}: finished before the kill; make the stage longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return progress_now()


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_a_random_point_then_rerun_equals_an_uninterrupted_run(stage, states, tiny_model_dir, tmp_path):
    start_state, overrides, kind, units = STAGES[stage]
    seed = int(os.environ.get("LOOPER_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(f"{stage}-{seed}")
    what = f"{stage} (LOOPER_KILL_SEED={seed})"
    print(f"kill test {what}")  # pytest shows a failing test's output: every failure names the seed to replay

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(states[start_state], whole)
    shutil.copytree(states[start_state], killed)
    run_looper(stage, *common(whole, tiny_model_dir), *overrides, cwd=REPO)

    kill_after = rng.randint(1, units - 3)  # progress units seen before the kill...
    done_at_kill = kill_9(
        stage,
        [*common(killed, tiny_model_dir), *overrides],
        lambda: progress(killed / "demo", stage, kind),
        kill_after,
        rng,
        what,
    )  # may be all units: then the finishing work (report, save) resumes

    rerun = run_looper(stage, *common(killed, tiny_model_dir), *overrides, *RERUN[stage], cwd=REPO)
    assert "nothing to do" not in rerun.stdout or done_at_kill == units, f"{what}: the rerun did not resume"
    assert_same(
        outcome(whole / "demo", stage),
        outcome(killed / "demo", stage),
        f"{what}, killed after {done_at_kill} of {units} units, rerun with {RERUN[stage]}",
    )
    assert not (killed / "demo.lock").exists(), f"{what}: the lock was left behind"


def test_rl_rounds_killed_in_round_two_then_rerun_equal_an_uninterrupted_run(states, tiny_model_dir, tmp_path):
    """rl.rounds=2: a kill inside round 2 (its rollouts or its DPO) loses nothing and repeats nothing."""
    overrides = [
        "rl.rounds=2",
        "rl.dpo.max_steps=6",
        "rl.dpo.save_steps=2",
        "rl.dpo.logging_steps=1",
        "rollouts.batch_size=2",
    ]
    seed = int(os.environ.get("LOOPER_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(f"rounds-{seed}")
    what = f"train-rl rounds (LOOPER_KILL_SEED={seed})"
    print(f"kill test {what}")  # pytest shows a failing test's output: every failure names the seed to replay
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(states["preferences"], whole)
    shutil.copytree(states["preferences"], killed)
    run_looper("train-rl", *common(whole, tiny_model_dir), *overrides, cwd=REPO)

    round2 = killed / "demo" / "rounds" / "2"
    units = 4 + 6  # round 2's rollout records, then its DPO steps
    done = kill_9(
        "train-rl",
        [*common(killed, tiny_model_dir), *overrides],
        lambda: progress(round2, "collect-rollouts", "rollouts") + progress(round2, "train-rl", "log"),
        rng.randint(1, units - 3),
        rng,
        what,
    )
    run_looper("train-rl", *common(killed, tiny_model_dir), *overrides, cwd=REPO)
    for sub, stage in (("", "train-rl"), ("rounds/2", "collect-rollouts"), ("rounds/2", "train-rl")):
        assert_same(
            outcome(whole / "demo" / sub, stage),
            outcome(killed / "demo" / sub, stage),
            f"{what}, {sub or 'round 1'} {stage}, killed after {done} units",
        )


def test_eval_killed_after_starting_a_file_over_is_not_complete_for_its_old_settings(states, tiny_model_dir, tmp_path):
    """An eval with changed settings starts its files over; killed there, a rerun with the settings it had before must
    redo them, not find its old marker and call the emptied files complete."""
    run = tmp_path / "run"
    shutil.copytree(states["sft"], run)
    before = [*common(run, tiny_model_dir), "eval.models=[base,sft]", "eval.limit=12", "eval.batch_size=1"]
    run_looper("eval", *before, cwd=REPO)
    whole = outcome(run / "demo", "eval")
    seed = int(os.environ.get("LOOPER_KILL_SEED", time.time_ns() % 2**31))

    def started_over() -> int:  # files whose settings record is already the new one (written as a file starts over)
        return sum('"max_new_tokens": 10' in p.read_text() for p in (run / "demo" / "eval").glob("*.meta.json"))

    kill_9(
        "eval",
        [*before, "eval.max_new_tokens=10"],
        started_over,
        1,
        random.Random(seed),
        f"eval with changed settings (LOOPER_KILL_SEED={seed})",
    )
    rerun = run_looper("eval", *before, cwd=REPO)
    assert "nothing to do" not in rerun.stdout and "starting it over" in rerun.stdout, rerun.stdout
    assert_same(whole, outcome(run / "demo", "eval"), "eval rerun with its earlier settings")
