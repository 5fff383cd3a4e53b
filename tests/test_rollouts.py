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
from looper.answers import answers_equal, extract_answer
from looper.config import load_config
from looper.files import JsonlAppender
from looper.processes import derive_seed
from looper.prompts import preference_completion, question_prompt
from looper.regime_w.arms import build_all_arms
from looper.regime_w.scoring import s_cf_for_question, s_end_for_question

REPO = Path(__file__).resolve().parents[1]


def args(tmp_path, tiny_model_dir, *extra):
    return [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=40",
        "data.symbolic_test_size=8",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.max_new_tokens=12",
        "rollouts.batch_size=16",
        *extra,
    ]


@pytest.fixture()
def sft_done(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    run_looper("sft", *args(tmp_path, tiny_model_dir), cwd=REPO)
    return tmp_path


def test_rollouts_and_preferences(sft_done, tiny_model_dir):
    a = args(
        sft_done, tiny_model_dir, "rollouts.num_questions=5", "rollouts.samples_per_arm=2", "preferences.min_margin=0.0"
    )
    run_looper("collect-rollouts", *a, cwd=REPO)
    records = read_jsonl(sft_done / "demo" / "data" / "rl_rollouts.jsonl")
    assert len(records) == 5
    config = load_config(REPO / a[0], a[1:])
    rw = config.regime_w
    # the first rollouts.num_questions training questions, in order, answered by the model given with its SFT
    # adapter under the run's seed
    train = read_jsonl(sft_done / "demo" / "data" / "gsm_symbolic_train.jsonl")[:5]
    assert [(r["id"], r["question"], r["gold"]) for r in records] == [
        (q["id"], q["question"], q["gold"]) for q in train
    ]
    assert {(r["model"], r["adapter"], r["seed"]) for r in records} == {
        (str(tiny_model_dir), "checkpoints/lora_sft", config.seed)
    }
    assert len({tr["seed"] for tr in records[0]["trajectories"]}) == 16  # per (question, arm, sample)
    # the values hold what the keys promise: every arm's samples 0..n-1 in arm order, each with its own seed and
    # sampling settings, the token limit, the reasoning before '####', the reward parts and reward that recompute
    # from the saved answer (docs/regime_w.md), and scores that recompute from the saved answers
    arms = {arm.name: arm for arm in build_all_arms()}
    for record in records:
        trajectories = record["trajectories"]
        assert [(tr["arm"], tr["sample"]) for tr in trajectories] == [(name, s) for name in arms for s in range(2)]
        assert all(tr["seed"] == derive_seed(config.seed, record["id"], tr["arm"], tr["sample"]) for tr in trajectories)
        scores = record["scores"]
        assert set(scores) == {"consensus", "s_end", "s_path", "s_cf", "s_wm"}
        assert all(0.0 <= scores[k] <= 1.0 for k in ("s_end", "s_path", "s_cf", "s_wm"))
        assert scores["s_wm"] == pytest.approx(
            (rw.w_end * scores["s_end"] + rw.w_path * scores["s_path"] + rw.w_cf * scores["s_cf"])
            / (rw.w_end + rw.w_path + rw.w_cf)
        )
        for tr in trajectories:
            parts = tr["parts"]
            assert tr["reasoning"] == tr["text"].rsplit("####", 1)[0].strip()
            assert tr["answer"] == parts["answer"] == extract_answer(tr["text"], rw.answer_mode)
            assert parts["correct"] == float(answers_equal(tr["answer"], record["gold"]))
            assert parts["agree"] is (tr["answer"] is not None and tr["answer"] == scores["consensus"])
            assert parts["missing"] is (tr["answer"] is None) and parts["truncated"] is tr["truncated"]
            over = (tr["num_tokens"] - rw.length_free_tokens) / (rw.length_cap_tokens - rw.length_free_tokens)
            assert parts["length_penalty"] == pytest.approx(rw.length_penalty * min(1.0, max(0.0, over)))
            assert (
                tr["reward"]
                == parts["reward"]
                == pytest.approx(
                    rw.correct_reward * parts["correct"]
                    + rw.consensus_weight * scores["s_wm"] * parts["agree"]
                    - parts["length_penalty"]
                    - rw.missing_penalty * parts["missing"]
                    - rw.truncation_penalty * parts["truncated"]
                )
            )
        assert all(
            tr["temperature"] == arms[tr["arm"]].temperature and tr["family"] == arms[tr["arm"]].family
            for tr in trajectories
        )
        assert all(
            0 < tr["num_tokens"] <= 12 and (tr["num_tokens"] == 12 or not tr["truncated"]) for tr in trajectories
        )
        assert record["scores"]["s_end"] == pytest.approx(s_end_for_question([tr["answer"] for tr in trajectories]))
        assert record["scores"]["s_cf"] == pytest.approx(s_cf_for_question(trajectories))
    out = run_looper("build-preferences", *a, cwd=REPO)
    assert "pairs from" in out.stdout
    # a finished stage whose output was deleted makes it again, not "complete ... nothing to do" over a missing file
    (sft_done / "demo" / "data" / "preferences.jsonl").unlink()
    out = run_looper("build-preferences", *a, cwd=REPO)
    assert "preferences.jsonl is gone; making it again" in out.stdout and "pairs from" in out.stdout
    pairs = read_jsonl(sft_done / "demo" / "data" / "preferences.jsonl")
    assert pairs and all(p["chosen_reward"] - p["rejected_reward"] >= 0.0 for p in pairs)
    # each pair is two trajectories of its question, better one not truncated, with their arms and rewards; the
    # prompt is the question's SFT prompt; a question's first pair is its best finished trajectory against its worst
    by_id = {r["id"]: r for r in records}
    fmt = config.model.prompt_format
    for p in pairs:
        rec = by_id[p["id"]]
        assert (p["question"], p["gold"]) == (rec["question"], rec["gold"])
        assert p["prompt"] == question_prompt(rec["question"], config.model.system_prompt, fmt)
        assert (p["chosen"], p["rejected"]) == (
            preference_completion(p["better"], fmt),
            preference_completion(p["worse"], fmt),
        )
        assert any(
            (t["text"], t["arm"], t["reward"], t["truncated"])
            == (p["better"], p["chosen_arm"], p["chosen_reward"], False)
            for t in rec["trajectories"]
        )
        assert any(
            (t["text"], t["arm"], t["reward"]) == (p["worse"], p["rejected_arm"], p["rejected_reward"])
            for t in rec["trajectories"]
        )
    for question_id, p in {p["id"]: p for p in reversed(pairs)}.items():
        rewards = [(t["reward"], t["truncated"]) for t in by_id[question_id]["trajectories"]]
        assert p["chosen_reward"] == max(r for r, cut in rewards if not cut)
        assert p["rejected_reward"] == min(r for r, _ in rewards)
    again = run_looper("collect-rollouts", *a, cwd=REPO)
    assert "nothing to do" in again.stdout


@pytest.mark.long
def test_killed_rollouts_resume_with_every_question_once(sft_done, tiny_model_dir):
    a = args(sft_done, tiny_model_dir, "rollouts.num_questions=24")
    out_file = sft_done / "demo" / "data" / "rl_rollouts.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "looper.cli", "collect-rollouts", *a],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


@pytest.mark.long
def test_bad_inputs(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper("collect-rollouts", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "not a PEFT adapter" in proc.stderr
    proc = run_looper("build-preferences", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "run `looper collect-rollouts` first" in proc.stderr
