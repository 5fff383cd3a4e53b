"""Rollouts and eval split across two processes (torchrun, gloo on CPU) merge into the single-process output."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_looper

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

REPO = Path(__file__).resolve().parents[1]


def args(runs_dir, tiny_model_dir, *extra):
    return [
        "configs/demo.yaml",
        f"runs_dir={runs_dir}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=30",
        "data.symbolic_test_size=6",
        "sft.trainer.max_steps=1",
        "sft.lora.r=4",
        "rollouts.num_questions=5",
        "rollouts.max_new_tokens=10",
        "eval.models=[base,sft]",
        "eval.limit=5",
        "eval.max_new_tokens=6",
        *extra,
    ]


def torchrun(*cli_args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "looper.cli",
            *cli_args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_two_process_rollouts_and_eval_match_one_process(tmp_path, tiny_model_dir):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for stage in ("prepare-data", "sft"):
        run_looper(stage, *args(single, tiny_model_dir), cwd=REPO)
    shutil.copytree(single, sharded)  # same data and adapter
    run_looper("collect-rollouts", *args(single, tiny_model_dir), cwd=REPO)
    torchrun("collect-rollouts", *args(sharded, tiny_model_dir))
    one = read_jsonl(single / "demo" / "data" / "rl_rollouts.jsonl")
    two = read_jsonl(sharded / "demo" / "data" / "rl_rollouts.jsonl")
    assert [r["id"] for r in one] == [r["id"] for r in two]  # same records, same order
    for a, b in zip(one, two):
        assert [(t["arm"], t["seed"], t["text"]) for t in a["trajectories"]] == [
            (t["arm"], t["seed"], t["text"]) for t in b["trajectories"]
        ]
    assert not list((sharded / "demo" / "data").glob("*.shard*"))  # shards merged and removed
    assert (sharded / "demo" / "stages" / "collect-rollouts.json").exists()

    run_looper("eval", *args(single, tiny_model_dir), cwd=REPO)
    torchrun("eval", *args(sharded, tiny_model_dir))
    for name in ("base__gsm_symbolic_test.jsonl", "sft__gsm_symbolic_test.jsonl"):
        a = read_jsonl(single / "demo" / "eval" / name)
        b = read_jsonl(sharded / "demo" / "eval" / name)
        assert [(r["id"], r["output"]) for r in a] == [(r["id"], r["output"]) for r in b]
    assert (sharded / "demo" / "eval" / "report.md").exists()


def test_two_process_training_saves_once_and_eval_loads_it(tmp_path, tiny_model_dir):
    """SFT and DPO under DDP (2 processes, gloo): one adapter saved by the first process, a stage marker that names
    both processes, and eval (also 2 processes) scores the DPO adapter."""
    extra = ["preferences.min_margin=0.0", "rl.dpo.max_steps=2", "eval.models=[sft,rl]"]
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir, *extra), cwd=REPO)
    sft = torchrun("sft", *args(tmp_path, tiny_model_dir, *extra))
    assert sft.stdout.count("sft: 1 steps") == 1  # the summary line once, from the first process
    run_looper("collect-rollouts", *args(tmp_path, tiny_model_dir, *extra), cwd=REPO)
    run_looper("build-preferences", *args(tmp_path, tiny_model_dir, *extra), cwd=REPO)
    torchrun("train-rl", *args(tmp_path, tiny_model_dir, *extra))
    run = tmp_path / "demo"
    for stage, folder in (("sft", "lora_sft"), ("train-rl", "lora_rl")):
        marker = json.loads((run / "stages" / f"{stage}.json").read_text())
        assert (
            marker["processes"] == 2
            and marker["distributed"] == "multi_cpu"
            and len(marker["peak_gpu_memory_gib"]) == 2
        )
        saved = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert not [n for n in saved if n.startswith(".")]  # no half-written copy left by a second writer
        assert (run / "checkpoints" / folder / "adapter_config.json").is_file()
    assert not (run / "checkpoints" / "lora_rl" / "ref").exists()  # DPO's frozen reference copy is not saved
    torchrun("eval", *args(tmp_path, tiny_model_dir, *extra))
    metrics = json.loads((run / "eval" / "summary.json").read_text())["metrics"]
    assert sorted(metrics) == ["rl", "sft"]
