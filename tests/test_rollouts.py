"""collect-rollouts and build-preferences on a tiny model; a real kill mid-run; torn-line recovery."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_jsonl, run_looper
from looper.regime_w.arms import build_all_arms
from looper.regime_w.scoring import s_cf_for_question, s_end_for_question
from looper.runs import JsonlAppender

REPO = Path(__file__).resolve().parents[1]


def args(tmp_path, tiny_model_dir, *extra):
    return ["configs/demo.yaml", f"runs_dir={tmp_path}", f"model.name_or_path={tiny_model_dir}", "data.symbolic_train_size=40",
            "data.symbolic_test_size=8", "sft.trainer.max_steps=2", "sft.lora.r=4", "rollouts.max_new_tokens=12",
            "rollouts.batch_size=16", *extra]


@pytest.fixture()
def sft_done(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    run_looper("sft", *args(tmp_path, tiny_model_dir), cwd=REPO)
    return tmp_path


def test_rollouts_and_preferences(sft_done, tiny_model_dir):
    a = args(sft_done, tiny_model_dir, "rollouts.num_questions=5", "rollouts.samples_per_arm=2", "preferences.min_margin=0.0")
    run_looper("collect-rollouts", *a, cwd=REPO)
    records = read_jsonl(sft_done / "demo" / "data" / "rl_rollouts.jsonl")
    assert len(records) == 5
    rec = records[0]
    assert set(rec) >= {"id", "question", "gold", "trajectories", "scores", "model", "adapter", "seed"}
    assert set(rec["scores"]) == {"consensus", "s_end", "s_path", "s_cf", "s_wm"}
    assert len(rec["trajectories"]) == 8 * 2
    t = rec["trajectories"][0]
    assert set(t) >= {"arm", "family", "sample", "temperature", "seed", "text", "reasoning", "answer", "num_tokens",
                      "truncated", "reward", "parts"}
    assert len({tr["seed"] for tr in rec["trajectories"]}) == 16  # per (question, arm, sample)
    # the values hold what the keys promise: each arm's own sampling settings, the token limit, and scores that
    # recompute from the saved answers
    arms = {arm.name: arm for arm in build_all_arms()}
    for record in records:
        trajectories = record["trajectories"]
        assert all(tr["temperature"] == arms[tr["arm"]].temperature and tr["family"] == arms[tr["arm"]].family
                   for tr in trajectories)
        assert all(0 < tr["num_tokens"] <= 12 and (tr["num_tokens"] == 12 or not tr["truncated"]) for tr in trajectories)
        assert record["scores"]["s_end"] == pytest.approx(s_end_for_question([tr["answer"] for tr in trajectories]))
        assert record["scores"]["s_cf"] == pytest.approx(s_cf_for_question(trajectories))
    out = run_looper("build-preferences", *a, cwd=REPO)
    assert "pairs from" in out.stdout
    pairs = read_jsonl(sft_done / "demo" / "data" / "preferences.jsonl")
    assert pairs and set(pairs[0]) >= {"prompt", "chosen", "rejected", "question", "better", "worse", "id", "chosen_arm",
                                       "rejected_arm", "chosen_reward", "rejected_reward"}
    assert all(p["chosen_reward"] - p["rejected_reward"] >= 0.0 for p in pairs)
    again = run_looper("collect-rollouts", *a, cwd=REPO)
    assert "nothing to do" in again.stdout


def test_killed_rollouts_resume_with_every_question_once(sft_done, tiny_model_dir):
    a = args(sft_done, tiny_model_dir, "rollouts.num_questions=24")
    out_file = sft_done / "demo" / "data" / "rl_rollouts.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "looper.cli", "collect-rollouts", *a], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out_file.exists() and len(out_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, no cleanup
    proc.wait()
    written = len(read_jsonl(out_file))
    assert 3 <= written < 24
    with out_file.open("a") as f:  # as if the kill had torn a record in half
        f.write('{"id": "gsm_symbolic-train-99999", "question": "half a rec')
    result = run_looper("collect-rollouts", *a, cwd=REPO)
    assert "resuming" in result.stdout
    ids = [r["id"] for r in read_jsonl(out_file)]
    assert len(ids) == 24 and len(set(ids)) == 24


def test_jsonl_appender_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": 1}) + "\n" + '{"id": 2, "te')
    with JsonlAppender(path) as out:
        assert out.done_keys == {1}
        out.append({"id": 2})
    assert [r["id"] for r in read_jsonl(path)] == [1, 2]


def test_bad_inputs(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper("collect-rollouts", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "not a PEFT adapter" in proc.stderr
    proc = run_looper("build-preferences", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "run `looper collect-rollouts` first" in proc.stderr
