"""The whole pipeline on a tiny model, then a rerun that skips every stage, and a config change refused."""

from pathlib import Path

from conftest import run_looper

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_end_to_end_then_skips(tmp_path, tiny_model_dir):
    a = ["configs/demo.yaml", f"runs_dir={tmp_path}", f"model.name_or_path={tiny_model_dir}", "data.symbolic_train_size=20",
         "data.symbolic_test_size=4", "sft.trainer.max_steps=2", "sft.lora.r=4", "rollouts.num_questions=3",
         "rollouts.max_new_tokens=12", "preferences.min_margin=0.0", "rl.dpo.max_steps=1", "eval.limit=3", "eval.max_new_tokens=8"]
    first = run_looper("pipeline", *a, cwd=REPO)
    assert "pipeline done" in first.stdout and "report:" in first.stdout
    assert "| rl " in first.stdout and "| sft " in first.stdout and "| base " in first.stdout
    second = run_looper("pipeline", *a, cwd=REPO)
    assert second.stdout.count("nothing to do") == 6, second.stdout
    changed = run_looper("pipeline", *a[:-1], "eval.max_new_tokens=9", cwd=REPO, check=False)
    assert changed.returncode == 0 and "eval.max_new_tokens" not in changed.stderr  # only eval reruns
    refused = run_looper("pipeline", *a, "sft.trainer.max_steps=3", cwd=REPO, check=False)
    assert refused.returncode != 0 and "sft.trainer.max_steps: 2 -> 3" in refused.stderr
    ranged = run_looper("pipeline", *a[:-1], "eval.max_new_tokens=9", "--from", "train-rl", "--to", "eval", cwd=REPO)
    assert "=== sft ===" not in ranged.stdout and ranged.stdout.count("nothing to do") == 2
