"""eval.protocol=lm-eval against lm-evaluation-harness's own command line on the same questions: the same responses,
answers and scores per question, for the base model and an SFT adapter (tiny model; docs/results.md has the run on
the embedded SmolLM2)."""

import json
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_looper

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from lm_eval_agreement import lm_eval_run  # noqa: E402 - bench/ is not a package: importable once on sys.path

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

LIMIT = 5


def write_source(folder: Path) -> Path:
    """A GSM8K-format copy whose train rows all differ, so a few-shot pool in the wrong order changes the prompts."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [
        {
            "question": f"Ann has {i} pens and gets {i % 7 + 1} more. How many pens?",
            "answer": f"{i} + {i % 7 + 1} = {i + i % 7 + 1}\n#### {i + i % 7 + 1}",
        }
        for i in range(30)
    ]
    test = [
        {
            "question": f"Bo has {3 * i} cups and breaks {i}. How many cups are left?",
            "answer": f"{3 * i} - {i} = {2 * i}\n#### {2 * i:,}",
        }
        for i in range(1, 9)
    ]
    for name, rows in (("train", train), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_lm_eval_protocol_matches_lm_evals_own_run(tmp_path, tiny_model_dir, capsys):
    source = write_source(tmp_path / "gsm8k")
    a = [
        "configs/demo.yaml",
        f"runs_dir={tmp_path / 'runs'}",
        f"model.name_or_path={tiny_model_dir}",
        "data.source=local",
        f"data.path={source}",
        "sft.trainer.max_steps=1",
        "sft.lora.r=4",
        "eval.protocol=lm-eval",
        "eval.models=[base,sft]",
        "eval.datasets=[gsm8k_test]",
        f"eval.limit={LIMIT}",
        "eval.batch_size=4",
        "model.dtype=float32",
    ]
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("sft", *a, cwd=REPO)
    out = run_looper("eval", *a, cwd=REPO)
    assert "lm-eval's gsm8k task" in out.stdout and "strict % [95% CI]" in out.stdout
    run = tmp_path / "runs" / "demo"
    report = (run / "eval" / "report.md").read_text()
    assert "protocol lm-eval" in report and "scored by lm-eval" in report and "looper.answers" not in report
    for which, adapter in (("base", None), ("sft", run / "checkpoints" / "lora_sft")):
        mine = read_jsonl(run / "eval" / f"{which}__gsm8k_test.jsonl")
        # lm-eval's own command line on its gsm8k task, the data pointed at the local copy (the agreement bench's run)
        _, theirs = lm_eval_run(
            source, str(tiny_model_dir), adapter, "float32", 4, LIMIT, tmp_path / f"lm_eval_{which}"
        )
        assert len(mine) == len(theirs) == LIMIT
        for i, rec in enumerate(mine):
            strict, flexible = theirs[i]["strict-match"], theirs[i]["flexible-extract"]
            assert rec["question"] == strict["doc"]["question"]
            assert rec["prompt_hash"] == strict["prompt_hash"]  # the same five examples from the pool, in order
            assert rec["output"] == strict["resps"][0][0]  # the same prompt (few-shot examples included), same answer
            for mode, sample in (("strict", strict), ("flexible", flexible)):
                answer = sample["filtered_resps"][0]
                assert rec[f"answer_{mode}"] == (None if answer == "[invalid]" else answer)
                assert rec[f"correct_{mode}"] == bool(sample["exact_match"])
    # a stopped comparison resumes: lm-eval's finished run with the same settings is read again, not rerun
    _, again = lm_eval_run(source, str(tiny_model_dir), adapter, "float32", 4, LIMIT, tmp_path / "lm_eval_sft")
    assert again == theirs and "read, not rerun" in capsys.readouterr().out


def test_lm_evals_request_cache_is_one_per_model_and_the_settings_that_made_it(tmp_path):
    """A longer eval.limit or another dataset reuses the cached answers (lm-eval keys each by its request); an
    adapter trained with other settings does not."""
    from looper.config import load_config
    from looper.eval.lm_eval_gsm8k import request_cache
    from looper.runs import RunDir

    def cache(which, *extra):
        config = load_config("configs/demo.yaml", [f"runs_dir={tmp_path}", "eval.protocol=lm-eval", *extra])
        return request_cache(config, RunDir.of(config), which, {"pretrained": "m"})

    for which in ("base", "sft", "rl"):
        assert cache(which) == cache(which, "eval.limit=100", "eval.datasets=[gsm_symbolic_test]", "eval.batch_size=2")
    assert cache("sft", "sft.lora.r=4") != cache("sft") and cache("rl", "sft.lora.r=4") != cache("rl")
    assert cache("base", "sft.lora.r=4") == cache("base") and cache("sft", "rl.dpo.beta=0.2") == cache("sft")
    assert cache("base", "model.dtype=bfloat16") != cache("base")


def test_lm_eval_protocol_refuses_what_lm_evals_task_cannot_take(tmp_path, tiny_model_dir):
    a = ["configs/demo.yaml", f"runs_dir={tmp_path}", f"model.name_or_path={tiny_model_dir}", "eval.protocol=lm-eval"]
    proc = run_looper("eval", *a, "eval.samples=4", cwd=REPO, check=False)
    assert proc.returncode == 2 and "data.source=gsm_symbolic is not GSM8K" in proc.stderr
    proc = run_looper("eval", *a, "data.source=local", "data.path=x", "eval.samples=4", cwd=REPO, check=False)
    assert proc.returncode == 2 and "set eval.samples=1" in proc.stderr
