"""Eval on a tiny model: per-sample files, summary, report with plots, resume, bad input."""

import json
from pathlib import Path

from conftest import read_jsonl, run_looper

REPO = Path(__file__).resolve().parents[1]


def args(tmp_path, tiny_model_dir, *extra):
    return ["configs/demo.yaml", f"runs_dir={tmp_path}", f"model.name_or_path={tiny_model_dir}", "data.symbolic_train_size=20",
            "data.symbolic_test_size=6", "sft.trainer.max_steps=1", "sft.lora.r=4", "eval.max_new_tokens=8", "eval.batch_size=4",
            *extra]


def test_eval_base_and_sft_with_report(tmp_path, tiny_model_dir):
    a = args(tmp_path, tiny_model_dir, "eval.datasets=[gsm8k_dev,gsm8k_test,gsm_symbolic]", "eval.limit=4")
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("sft", *a, cwd=REPO)
    out = run_looper("eval", *a, cwd=REPO)
    assert "skipping rl" in out.stdout and "strict % [95% CI]" in out.stdout and "McNemar" in out.stdout
    ev = tmp_path / "demo" / "eval"
    for f in ("report.md", "summary.json", "accuracy.png", "flips.png", "base__gsm8k_test.jsonl", "sft__gsm_symbolic.jsonl"):
        assert (ev / f).exists(), f
    rec = read_jsonl(ev / "base__gsm8k_test.jsonl")[0]
    assert set(rec) >= {"id", "question", "gold", "output", "answer_strict", "answer_flexible", "correct_strict",
                        "correct_flexible", "tokens", "truncated"}
    summary = json.loads((ev / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "sft"}
    comp = summary["comparisons"]["gsm8k_test"][0]
    assert comp["a"] == "base" and comp["b"] == "sft" and 0 <= comp["strict"]["p_value"] <= 1
    # a rerun with the same config does nothing; a lost per-sample line is regenerated (resume)
    assert "nothing to do" in run_looper("eval", *a, cwd=REPO).stdout
    (tmp_path / "demo" / "stages" / "eval.json").unlink()
    lines = (ev / "sft__gsm8k_dev.jsonl").read_text().splitlines()
    (ev / "sft__gsm8k_dev.jsonl").write_text("\n".join(lines[:2]) + "\n")
    out = run_looper("eval", *a, cwd=REPO)
    assert "resuming, 2 done, 2 to go" in out.stdout
    assert len(read_jsonl(ev / "sft__gsm8k_dev.jsonl")) == 4


def test_eval_sampling_metrics(tmp_path, tiny_model_dir):
    a = args(tmp_path, tiny_model_dir, "eval.models=[base]", "eval.samples=3", "eval.limit=3")
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("eval", *a, cwd=REPO)
    m = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())["metrics"]["base"]["gsm8k_test"]
    assert "maj@3" in m["strict"] and "pass@3" in m["strict"] and m["samples"] == 3


def test_eval_bad_inputs(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir, "eval.datasets=[mmlu]"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "unknown dataset 'mmlu'" in proc.stderr
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir, "eval.datasets=[platinum]"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "platinum_test.jsonl not found" in proc.stderr
    (tmp_path / "demo" / "data" / "gsm8k_test.jsonl").write_text("")
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "is empty" in proc.stderr


def test_generated_gsm_symbolic_set_follows_eval_limit(tmp_path):
    """A later, larger eval.limit must not silently reuse a smaller set generated earlier."""
    from looper.config import load_config
    from looper.eval.eval_gsm8k import dataset_rows
    from looper.runs import RunDir

    run = RunDir(tmp_path / "demo")
    small = dataset_rows("gsm_symbolic", load_config(REPO / "configs" / "demo.yaml", ["eval.limit=2"]), run)
    large = dataset_rows("gsm_symbolic", load_config(REPO / "configs" / "demo.yaml", ["eval.limit=5"]), run)
    assert len(small) == 2 and len(large) == 5
