"""The RL recipes beyond one round of DPO, on a tiny model: rejection-sampling fine-tuning (train questions
only), correct-chosen and label-free pairs, iterative rounds."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import read_jsonl, run_looper
from test_rl import _lora, args

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rollouts_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("recipes")
    for stage in ("prepare-data", "sft", "collect-rollouts"):
        run_looper(stage, *args(tmp, tiny_model_dir), cwd=REPO)
    return tmp


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "demo", dst / "demo")
    return dst


def _make_correct(run: Path, per_record: dict[int, list[int]], duplicate: bool = False) -> list[dict]:
    """Rewrite some trajectories of the saved rollouts as correct answers (a random model never is)."""
    path = run / "demo" / "data" / "rl_rollouts.jsonl"
    records = read_jsonl(path)
    for r, trajs in per_record.items():
        rec = records[r]
        for k, t in enumerate(trajs):
            traj = rec["trajectories"][t]
            traj["text"] = f"{'same' if duplicate else f'way {k}'}: {rec['gold']}\n#### {rec['gold']}"
            traj["parts"]["correct"], traj["truncated"], traj["reward"] = 1.0, False, 1.0 - 0.01 * k
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_rft_trains_on_distinct_correct_train_trajectories(rollouts_run, tiny_model_dir, tmp_path):
    from looper.config import load_config
    from looper.rl_training.train_rl import rft_dataset
    from looper.runs import RunDir

    run_dir = _copy(rollouts_run, tmp_path)
    # record 0: three distinct correct texts (cap 2 keeps the two best); record 1: one text three times
    records = _make_correct(run_dir, {0: [1, 4, 6]})
    records = _make_correct(run_dir, {1: [0, 2, 3]}, duplicate=True)
    cli = args(
        run_dir,
        tiny_model_dir,
        "rl.algorithm=rft",
        "rl.rft_per_question=2",
        "rl.rft.max_steps=2",
        "rl.rft.learning_rate=0.05",
    )
    config = load_config(cli[0], cli[1:])
    data = rft_dataset(config, RunDir.of(config))
    train_ids = {r["id"] for r in read_jsonl(run_dir / "demo" / "data" / "gsm_symbolic_train.jsonl")}
    assert set(data["id"]) <= train_ids
    assert list(data["id"]) == [records[0]["id"]] * 2 + [records[1]["id"]]
    assert data["completion"][0].endswith(f"#### {records[0]['gold']}")  # the generated text verbatim
    assert records[0]["question"].strip() in data["prompt"][0] and data["prompt"][0].endswith("assistant\n")

    run_looper("train-rl", *cli, cwd=REPO)
    sft, rl = _lora(run_dir / "demo" / "checkpoints" / "lora_sft"), _lora(run_dir / "demo" / "checkpoints" / "lora_rl")
    assert set(sft) == set(rl) and any(not torch.equal(sft[k], rl[k]) for k in sft)
    info = json.loads((run_dir / "demo" / "checkpoints" / "lora_rl" / "looper_adapter.json").read_text())
    assert info["algorithm"] == "rft"


def test_rft_refuses_questions_outside_the_train_split(rollouts_run, tiny_model_dir, tmp_path):
    run_dir = _copy(rollouts_run, tmp_path)
    records = _make_correct(run_dir, {0: [0]})
    dev = read_jsonl(run_dir / "demo" / "data" / "gsm_symbolic_dev.jsonl")[0]
    records[1] = {**records[1], "id": dev["id"], "question": dev["question"], "gold": dev["gold"]}
    (run_dir / "demo" / "data" / "rl_rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = run_looper("train-rl", *args(run_dir, tiny_model_dir, "rl.algorithm=rft"), cwd=REPO, check=False)
    assert proc.returncode != 0
    assert "not in the train split" in proc.stderr and dev["id"] in proc.stderr
    assert not (run_dir / "demo" / "checkpoints" / "lora_rl").exists()


def test_rft_without_correct_trajectories_says_what_to_do(rollouts_run, tiny_model_dir, tmp_path):
    run_dir = _copy(rollouts_run, tmp_path)
    proc = run_looper("train-rl", *args(run_dir, tiny_model_dir, "rl.algorithm=rft"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "no correct, untruncated trajectory" in proc.stderr


def test_correct_chosen_and_label_free_pairs(rollouts_run, tiny_model_dir, tmp_path):
    run_dir = _copy(rollouts_run, tmp_path)
    records = _make_correct(run_dir, {0: [2]})
    # correct-chosen: only record 0 has a correct trajectory, so only it gives a pair, and its chosen is that one
    run_looper("build-preferences", *args(run_dir, tiny_model_dir, "preferences.require_correct_chosen=true"), cwd=REPO)
    pairs = read_jsonl(run_dir / "demo" / "data" / "preferences.jsonl")
    assert {p["id"] for p in pairs} == {records[0]["id"]}
    assert all(p["chosen_correct"] == 1.0 and p["rejected_correct"] != 1.0 for p in pairs)

    # label-free: three wrong trajectories agree on 999 and outvote the one correct answer, so the consensus
    # (not gold) decides: chosen agrees with 999, and the gold-correct trajectory is not chosen
    rec = records[0]
    for t in (3, 4, 5):  # finished answers (a truncated one is never chosen)
        # with a step of working: a bare answer, as a copied format example, does not vote (regime_w.md)
        rec["trajectories"][t]["text"], rec["trajectories"][t]["truncated"] = "999 + 0 = 999\n#### 999", False
    (run_dir / "demo" / "data" / "rl_rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "demo" / "stages" / "build-preferences.json").unlink()
    run_looper("build-preferences", *args(run_dir, tiny_model_dir, "preferences.label_free=true"), cwd=REPO)
    pairs = {p["id"]: p for p in read_jsonl(run_dir / "demo" / "data" / "preferences.jsonl")}
    assert pairs[rec["id"]]["better"] == "999 + 0 = 999\n#### 999"

    proc = run_looper(
        "build-preferences",
        *args(run_dir, tiny_model_dir, "preferences.label_free=true", "preferences.require_correct_chosen=true"),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode != 0 and "needs gold answers" in proc.stderr


def test_correctness_only_pairs_ignore_regime_w_and_vary_the_arms(rollouts_run, tiny_model_dir, tmp_path):
    run_dir = _copy(rollouts_run, tmp_path)
    records = _make_correct(run_dir, {r: [0, 1, 2, 3, 4] for r in range(4)})
    # Regime W's saved rewards would pick the same trajectories every time (chosen 0, the highest, in _make_correct);
    # correctness alone ties all correct ones, so the seed and the question decide which are chosen
    cli = (
        "preferences.correctness_only=true",
        "preferences.require_correct_chosen=true",
        "preferences.max_pairs_per_question=2",
    )
    run_looper("build-preferences", *args(run_dir, tiny_model_dir, *cli), cwd=REPO)
    pairs = read_jsonl(run_dir / "demo" / "data" / "preferences.jsonl")
    assert len(pairs) == 8 and {p["id"] for p in pairs} == {r["id"] for r in records[:4]}
    assert all(p["chosen_correct"] == 1.0 and p["rejected_correct"] != 1.0 for p in pairs)
    assert all(p["chosen_reward"] == 1.0 and p["rejected_reward"] == 0.0 for p in pairs)
    by_text = {(r["id"], t["text"]): i for r in records for i, t in enumerate(r["trajectories"])}
    chosen = [by_text[(p["id"], p["better"])] for p in pairs]
    assert set(chosen) <= {0, 1, 2, 3, 4} and len(set(chosen)) > 1  # not always the first correct one

    # the same seed gives the same pairs; another seed other ones
    (run_dir / "demo" / "stages" / "build-preferences.json").unlink()
    run_looper("build-preferences", *args(run_dir, tiny_model_dir, *cli), cwd=REPO)
    assert read_jsonl(run_dir / "demo" / "data" / "preferences.jsonl") == pairs
    (run_dir / "demo" / "stages" / "build-preferences.json").unlink()
    run_looper("build-preferences", *args(run_dir, tiny_model_dir, *cli, "seed=7"), cwd=REPO, check=False)
    other = read_jsonl(run_dir / "demo" / "data" / "preferences.jsonl")
    assert [p["better"] for p in other] != [p["better"] for p in pairs]

    proc = run_looper(
        "build-preferences",
        *args(run_dir, tiny_model_dir, "preferences.correctness_only=true", "preferences.label_free=true"),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode != 0 and "set one of them to false" in proc.stderr


def test_two_rounds_of_dpo(rollouts_run, tiny_model_dir, tmp_path):
    run_dir = _copy(rollouts_run, tmp_path)
    cli = args(run_dir, tiny_model_dir, "rl.rounds=2", "eval.models=[rl]", "eval.limit=2", "eval.max_new_tokens=4")
    run_looper("build-preferences", *cli, cwd=REPO)
    demo = run_dir / "demo"
    run_looper("train-rl", *[c for c in cli if c != "rl.rounds=2"], cwd=REPO)  # one round first...
    first = (demo / "checkpoints" / "lora_rl" / "adapter_model.safetensors").read_bytes()
    proc = run_looper("train-rl", *cli, cwd=REPO)  # ...then extended to two: round 1 is kept, not retrained
    assert "round 2 of 2" in proc.stdout and "train-rl (dpo): " in proc.stdout and "nothing to do" in proc.stdout
    assert (demo / "checkpoints" / "lora_rl" / "adapter_model.safetensors").read_bytes() == first
    one, two = (
        read_jsonl(demo / "data" / "rl_rollouts.jsonl"),
        read_jsonl(demo / "rounds" / "2" / "data" / "rl_rollouts.jsonl"),
    )
    train = [r["id"] for r in read_jsonl(demo / "data" / "gsm_symbolic_train.jsonl")]
    assert [r["id"] for r in one] == train[:4] and [r["id"] for r in two] == train[4:8]  # the next questions
    assert all(r["adapter"] == "checkpoints/lora_rl" for r in two)  # sampled from round 1's policy
    r1, r2 = _lora(demo / "checkpoints" / "lora_rl"), _lora(demo / "rounds" / "2" / "checkpoints" / "lora_rl")
    assert set(r1) == set(r2) and any(not torch.equal(r1[k], r2[k]) for k in r1)
    assert (
        json.loads((demo / "rounds" / "2" / "checkpoints" / "lora_rl" / "looper_adapter.json").read_text())["round"]
        == 2
    )
    # a rerun has nothing left to do; eval scores the last round
    again = run_looper("train-rl", *cli, cwd=REPO)
    assert again.stdout.count("nothing to do") >= 4
    from looper.config import load_config
    from looper.modeling import stage_model_path
    from looper.runs import RunDir

    config = load_config(cli[0], cli[1:])
    assert stage_model_path(config, RunDir.of(config), "rl") == demo / "rounds" / "2" / "checkpoints" / "lora_rl"
