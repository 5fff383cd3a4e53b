"""Rollouts and eval split across two processes (torchrun, gloo on CPU) merge into the single-process output."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import read_jsonl, run_looper

REPO = Path(__file__).resolve().parents[1]


def args(runs_dir, tiny_model_dir, *extra):
    return ["configs/demo.yaml", f"runs_dir={runs_dir}", f"model.name_or_path={tiny_model_dir}", "data.symbolic_train_size=30",
            "data.symbolic_test_size=6", "sft.trainer.max_steps=1", "sft.lora.r=4", "rollouts.num_questions=5",
            "rollouts.max_new_tokens=10", "eval.models=[base,sft]", "eval.limit=5",
            "eval.max_new_tokens=6", *extra]


def torchrun(*cli_args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "looper.cli", *cli_args], cwd=REPO, capture_output=True, text=True, env=env)
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
        assert [(t["arm"], t["seed"], t["text"]) for t in a["trajectories"]] == [(t["arm"], t["seed"], t["text"]) for t in b["trajectories"]]
    assert not list((sharded / "demo" / "data").glob("*.shard*"))  # shards merged and removed
    assert (sharded / "demo" / "stages" / "collect-rollouts.json").exists()

    run_looper("eval", *args(single, tiny_model_dir), cwd=REPO)
    torchrun("eval", *args(sharded, tiny_model_dir))
    for name in ("base__gsm_symbolic_test.jsonl", "sft__gsm_symbolic_test.jsonl"):
        a = read_jsonl(single / "demo" / "eval" / name)
        b = read_jsonl(sharded / "demo" / "eval" / name)
        assert [(r["id"], r["output"]) for r in a] == [(r["id"], r["output"]) for r in b]
    assert (sharded / "demo" / "eval" / "report.md").exists()
