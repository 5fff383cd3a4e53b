"""Eval on a tiny model: per-sample files, summary, report with plots, resume, bad input."""

import json
import math
import statistics
from pathlib import Path

import pytest

from conftest import read_jsonl, run_looper

REPO = Path(__file__).resolve().parents[1]


def args(tmp_path, tiny_model_dir, *extra):
    return [
        "configs/demo.yaml",
        f"runs_dir={tmp_path}",
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=6",
        "sft.trainer.max_steps=1",
        "sft.lora.r=4",
        "eval.max_new_tokens=8",
        "eval.batch_size=4",
        *extra,
    ]


def test_eval_base_and_sft_with_report(tmp_path, tiny_model_dir):
    from looper.answers import answers_equal, extract_answer
    from looper.eval.eval_gsm8k import score_record
    from looper.generation import GenResult

    a = args(tmp_path, tiny_model_dir, "eval.datasets=[gsm_symbolic_dev,gsm_symbolic_test]", "eval.limit=4")
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("sft", *a, cwd=REPO)
    out = run_looper("eval", *a, cwd=REPO)
    assert "skipping rl" in out.stdout and "strict % [95% CI]" in out.stdout and "McNemar" in out.stdout
    ev = tmp_path / "demo" / "eval"
    for f in (
        "report.md",
        "summary.json",
        "accuracy.png",
        "flips.png",
        "base__gsm_symbolic_test.jsonl",
        "sft__gsm_symbolic_dev.jsonl",
    ):
        assert (ev / f).exists(), f
    # every record holds its question (the dataset's first eval.limit rows, in order) and what its output says:
    # at most eval.max_new_tokens tokens, truncated only at that limit, the answers read from it and checked on gold
    rows = read_jsonl(tmp_path / "demo" / "data" / "gsm_symbolic_test.jsonl")[:4]
    for which in ("base", "sft"):
        records = read_jsonl(ev / f"{which}__gsm_symbolic_test.jsonl")
        assert [(r["id"], r["question"], r["gold"]) for r in records] == [
            (r["id"], r["question"], r["gold"]) for r in rows
        ]
        for r in records:
            assert isinstance(r["output"], str) and isinstance(r["truncated"], bool) and 0 < r["tokens"] <= 8
            assert r["tokens"] == 8 or not r["truncated"]
            for mode in ("strict", "flexible"):
                assert r[f"answer_{mode}"] == extract_answer(r["output"], mode)
                assert r[f"correct_{mode}"] is answers_equal(r[f"answer_{mode}"], r["gold"])
    # a tiny random model answers nothing: the same scoring on outputs whose answers are known
    outputs = [
        GenResult(0, "so \\boxed{57}", 5, False),
        GenResult(1, "#### 57", 3, True),
        GenResult(2, "#### 56", 8, True),
    ]
    known = score_record({"id": "q", "question": "?", "gold": "57"}, outputs)
    assert [
        (
            s["answer_strict"],
            s["correct_strict"],
            s["answer_flexible"],
            s["correct_flexible"],
            s["tokens"],
            s["truncated"],
        )
        for s in [known, *known["samples"]]
    ] == [(None, False, "57", True, 5, False), ("57", True, "57", True, 3, True), ("56", False, "56", False, 8, True)]
    summary = json.loads((ev / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "sft"}
    comp = summary["comparisons"]["gsm_symbolic_test"][0]
    assert comp["a"] == "base" and comp["b"] == "sft" and 0 <= comp["strict"]["p_value"] <= 1
    # a rerun with the same config does nothing; a lost per-sample line is regenerated (resume)
    assert "nothing to do" in run_looper("eval", *a, cwd=REPO).stdout
    (tmp_path / "demo" / "stages" / "eval.json").unlink()
    lines = (ev / "sft__gsm_symbolic_dev.jsonl").read_text().splitlines()
    (ev / "sft__gsm_symbolic_dev.jsonl").write_text("\n".join(lines[:2]) + "\n")
    out = run_looper("eval", *a, cwd=REPO)
    assert "resuming, 2 questions already done, 2 to go" in out.stdout
    assert len(read_jsonl(ev / "sft__gsm_symbolic_dev.jsonl")) == 4
    # narrowing eval.models / eval.datasets reuses the files already made: they depend on neither list
    before = (ev / "base__gsm_symbolic_test.jsonl").read_bytes()
    narrow = args(tmp_path, tiny_model_dir, "eval.datasets=[gsm_symbolic_test]", "eval.limit=4", "eval.models=[base]")
    out = run_looper("eval", *narrow, cwd=REPO)
    assert "starting it over" not in out.stdout and (ev / "base__gsm_symbolic_test.jsonl").read_bytes() == before
    # how vLLM would serve adapters is no setting of the hf engine's answers
    out = run_looper("eval", *narrow, "eval.vllm_adapter=merged", cwd=REPO)
    assert "starting it over" not in out.stdout and (ev / "base__gsm_symbolic_test.jsonl").read_bytes() == before


@pytest.mark.long
def test_eval_sampling_metrics(tmp_path, tiny_model_dir):
    a = args(tmp_path, tiny_model_dir, "eval.models=[base,sft]", "eval.samples=3", "eval.limit=3")
    run_looper("prepare-data", *a, cwd=REPO)
    run_looper("sft", *a, cwd=REPO)
    out = run_looper("eval", *a, cwd=REPO)
    summary = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())
    m = summary["metrics"]["base"]["gsm_symbolic_test"]
    assert m["samples"] == 3 and 0 <= m["strict"]["maj@3"] <= m["strict"]["pass@3"] <= 1
    assert m["strict"]["avg@3"]["accuracy"] == m["strict"]["pass@1"]  # pass@1 estimated by the mean over k
    records = read_jsonl(tmp_path / "demo" / "eval" / "base__gsm_symbolic_test.jsonl")
    shares = [sum(s["correct_strict"] for s in [r, *r["samples"]]) / 3 for r in records]
    assert abs(m["strict"]["avg@3"]["accuracy"] - sum(shares) / 3) < 1e-12
    assert "strict avg@3 (pass@1) % [95% CI]" in out.stdout and "detectable Δ pts (80% power)" in out.stdout
    # the paired comparison over all samples is sft minus base, question by question; a tiny random model answers
    # nothing, so sft's records are made right by hand (1 of 3 samples of question 0, all 3 of question 1) and the
    # report is made again from them
    sft_file = tmp_path / "demo" / "eval" / "sft__gsm_symbolic_test.jsonl"
    sft = read_jsonl(sft_file)
    for rec, right in ((sft[0], [sft[0]]), (sft[1], [sft[1], *sft[1]["samples"]])):
        for s in right:
            s.update(answer_strict=rec["gold"], correct_strict=True)
    sft_file.write_text("".join(json.dumps(r) + "\n" for r in sft))
    (tmp_path / "demo" / "stages" / "eval.json").unlink()
    run_looper("eval", *a, cwd=REPO)
    summary = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())
    scores = {
        m: [
            sum(s["correct_strict"] for s in [r, *r["samples"]]) / 3
            for r in read_jsonl(tmp_path / "demo" / "eval" / f"{m}__gsm_symbolic_test.jsonl")
        ]
        for m in ("base", "sft")
    }
    d = [y - x for x, y in zip(scores["base"], scores["sft"])]
    mean, se = sum(d) / 3, statistics.stdev(d) / math.sqrt(3)
    assert scores["sft"] == [1 / 3, 1.0, 0.0] and se > 0
    paired = summary["comparisons"]["gsm_symbolic_test"][0]["strict"]["paired"]
    avg = {m: summary["metrics"][m]["gsm_symbolic_test"]["strict"]["avg@3"]["accuracy"] for m in ("base", "sft")}
    assert paired["difference"] == pytest.approx(mean) and paired["difference"] == pytest.approx(
        avg["sft"] - avg["base"]
    )
    assert paired["ci95"] == pytest.approx([mean - 1.959964 * se, mean + 1.959964 * se])
    assert paired["detectable_80"] == pytest.approx((1.959964 + 0.841621) * se)
    assert paired["p_value"] == pytest.approx(math.erfc(abs(mean) / se / math.sqrt(2)))


def test_deepseek_protocol_prompts_and_samples_as_deepseek_evaluates(tmp_path, r1_tokenizer_dir):
    """eval.protocol=deepseek: the user turn is the question and DeepSeek's \\boxed{} instruction, no system prompt,
    the R1 template's own rendering; k samples at T=0.6, top_p=0.95."""
    from transformers import AutoTokenizer

    from looper.config import load_config
    from looper.eval.eval_gsm8k import eval_prompt, sampling_of

    tok = AutoTokenizer.from_pretrained(r1_tokenizer_dir)
    config = load_config(REPO / "configs" / "r1-distill-llama-8b.yaml", [f"model.name_or_path={r1_tokenizer_dir}"])
    assert config.eval.protocol == "deepseek" and config.eval.samples >= 2
    prompt = eval_prompt(tok, " What is 6 x 7? ", config)
    assert prompt == (
        "<｜User｜>What is 6 x 7?\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<｜Assistant｜><think>\n"
    )  # the template's BOS is the tokenizer's to add
    assert tok(prompt)["input_ids"][0] == tok.bos_token_id and tok(prompt)["input_ids"].count(tok.bos_token_id) == 1
    assert sampling_of(config.eval) == (0.6, 0.95)
    looper = load_config(REPO / "configs" / "smollm2-135m-gpu.yaml", [])
    assert looper.eval.protocol == "looper" and sampling_of(looper.eval) == (0.0, 1.0)  # greedy kept for small models


@pytest.mark.long
def test_eval_bad_inputs(tmp_path, tiny_model_dir):
    run_looper("prepare-data", *args(tmp_path, tiny_model_dir), cwd=REPO)
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir, "eval.datasets=[mmlu]"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "unknown dataset 'mmlu'" in proc.stderr
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir, "eval.datasets=[gsm8k_platinum]"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "gsm8k_platinum_test.jsonl not found" in proc.stderr
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir, "eval.datasets=[gsm8k_test]"), cwd=REPO, check=False)
    assert proc.returncode != 0 and "gsm8k_test is not part of this run: data.source=gsm_symbolic" in proc.stderr
    (tmp_path / "demo" / "data" / "gsm_symbolic_test.jsonl").write_text("")
    proc = run_looper("eval", *args(tmp_path, tiny_model_dir), cwd=REPO, check=False)
    assert proc.returncode != 0 and "is empty" in proc.stderr


def test_a_gsm8k_run_can_add_the_generated_gsm_symbolic_test_set(tmp_path):
    """In a GSM8K run, gsm_symbolic_test is generated by the same recipe as a gsm_symbolic run's test split."""
    from looper.baseline_sft.prepare_data import load_source
    from looper.config import load_config
    from looper.eval.eval_gsm8k import dataset_rows
    from looper.runs import RunDir

    gsm8k_run = load_config(
        REPO / "configs" / "demo.yaml", ["data.source=local", "data.symbolic_test_size=6", "eval.limit=4"]
    )
    rows = dataset_rows("gsm_symbolic_test", gsm8k_run, RunDir(tmp_path / "demo", gsm8k_run.data.name))
    assert len(rows) == 4 and (tmp_path / "demo" / "data" / "gsm_symbolic_test.jsonl").exists()
    symbolic_run = load_config(
        REPO / "configs" / "demo.yaml", ["data.symbolic_train_size=10", "data.symbolic_test_size=6"]
    )
    _, test = load_source(symbolic_run.data, symbolic_run.seed)
    assert [r["question"] for r in rows] == [r["question"] for r in test][:4]


def test_k_sample_metrics_on_hand_made_records():
    """maj@k, pass@k, pass@1 and avg@k from records whose answers are known: votes by value, no vote without an
    answer, ties to the first value seen; pass@k counts a question with any correct sample."""
    from looper.eval.report import dataset_metrics

    def rec(gold, answers):
        samples = [
            {
                "answer_strict": a,
                "answer_flexible": a,
                "correct_strict": a is not None and float(a) == gold,
                "correct_flexible": a is not None and float(a) == gold,
                "truncated": False,
                "tokens": 10,
            }
            for a in answers
        ]
        return {**samples[0], "gold": str(gold), "samples": samples[1:]}

    records = [
        rec(5, ["7", "5", "5.00"]),  # 5 and 5.00 are one answer with two votes against 7: majority right
        rec(3, ["3", "4", "4"]),  # majority wrong, one sample right
        rec(3, ["1", "2", "3"]),  # a three-way tie goes to the first value seen (1): wrong
        rec(9, [None, None, "9"]),  # the two samples with no answer do not vote: right
        rec(2, ["8", None, "6"]),
    ]  # nothing right
    m = dataset_metrics(records)["strict"]
    assert m["maj@3"] == 2 / 5
    assert m["pass@3"] == 4 / 5
    assert m["avg@3"]["accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 1 / 3 + 0) / 5) == m["pass@1"]
    assert m["correct"] == 1 and m["accuracy"] == 1 / 5  # the first sample of each question


def demo_like_records(right: set[int], n: int = 30) -> list[dict]:
    """n one-answer records of which the questions in ``right`` are answered right (strict and flexible alike)."""
    return [
        {
            "id": f"q{i}",
            "gold": "1",
            "correct_strict": i in right,
            "correct_flexible": i in right,
            "answer_strict": "1" if i in right else None,
            "answer_flexible": "1" if i in right else None,
            "truncated": False,
            "tokens": 100,
        }
        for i in range(n)
    ]


def test_report_plots_show_zero_bars_and_count_whole_questions(tmp_path, monkeypatch):
    """The CPU demo's shape (30 questions; base 1 right, sft and rl none): accuracy.png draws the zero bars (a line
    at 0 and the value written), flips.png has whole-number ticks, none negative; the report says the differences
    are noise, and says so only when they are."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from looper.config import load_config
    from looper.eval.report import write_report

    figures = {}
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, path, **kw: (figures.__setitem__(Path(path).name, fig), save(fig, path, **kw))
    )
    config = load_config(REPO / "configs" / "demo.yaml")
    models = {"base": {3}, "sft": set(), "rl": set()}
    summary = write_report(
        {m: {"gsm_symbolic_test": demo_like_records(r)} for m, r in models.items()}, config, tmp_path
    )
    for ax in figures["accuracy.png"].axes:
        assert sorted(t.get_text() for t in ax.texts) == ["0.0", "0.0", "3.3"]
        zero_lines = [
            seg
            for c in ax.collections
            if isinstance(c, LineCollection)
            for seg in c.get_segments()
            if len(seg) == 2 and seg[0][1] == seg[1][1] == 0
        ]
        assert len(zero_lines) == 2  # sft's and rl's bars of height 0
    (flips,) = figures["flips.png"].axes
    ticks = flips.get_yticks()
    lo, hi = flips.get_ylim()
    shown = [v for v in ticks if lo <= v <= hi]
    assert shown and all(v == round(v) for v in shown), ticks
    assert all(not flips.yaxis.get_major_formatter()(v, 0).startswith(("-", "−")) for v in shown)
    assert summary["reading"].startswith("No two models differ beyond chance") and "n=30" in summary["reading"]
    assert summary["reading"] in (tmp_path / "report.md").read_text()
    # a difference that is there is named
    trained = write_report(
        {
            "base": {"gsm_symbolic_test": demo_like_records(set())},
            "rl": {"gsm_symbolic_test": demo_like_records(set(range(20)))},
        },
        config,
        tmp_path / "b",
    )
    assert trained["reading"].startswith(
        "Beyond chance (strict, Holm-adjusted p < 0.05): base → rl on gsm_symbolic_test (+66.7 pts"
    )
