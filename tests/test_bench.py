"""The benchmark scripts run end to end on a tiny shape (CPU); the real figures come from the device."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.long  # part of CI's full run, not of the README's quick test command

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


@pytest.mark.slow
@pytest.mark.skipif(not GSM8K.is_dir(), reason="needs the GSM8K files")
@pytest.mark.parametrize(
    "script,extra,key",
    [
        ("sft_throughput.py", ["--recipes", "plan,fast", "--steps", "5", "--warmup", "1", "--pack", "512"], "recipes"),
        (
            "generation_throughput.py",
            ["--model", "tiny", "--requests", "12", "--batch", "4", "--new-tokens", "8", "--ways", "plain,hf"],
            "runs",
        ),
        ("rl_throughput.py", ["--steps", "3", "--warmup", "1", "--batch", "2"], "layouts"),
    ],
)
def test_bench_script_runs_tiny(tmp_path, real_tokenizer_dir, script, extra, key):
    out = tmp_path / "out.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / script),
        "--gsm8k",
        str(GSM8K),
        "--tokenizer",
        str(real_tokenizer_dir),
        "--model-dir",
        str(tmp_path / "model"),
        "--out",
        str(out),
        *extra,
    ]
    if script != "generation_throughput.py":
        cmd += ["--shape", "tiny", "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())[key]
    rows = results.values() if isinstance(results, dict) else results
    assert rows and all("tokens_per_s" in r and r["tokens_per_s"] > 0 for r in rows), results


def test_rl_recipes_compares_recipes_on_one_sft_adapter(tmp_path, tiny_model_dir):
    """The recipe comparison on a tiny model: later recipes reuse the first one's SFT adapter and rollouts."""
    out, runs = tmp_path / "recipes.json", tmp_path / "runs"
    sets = [
        f"model.name_or_path={tiny_model_dir}",
        "data.symbolic_train_size=20",
        "data.symbolic_test_size=4",
        "sft.trainer.max_steps=2",
        "sft.lora.r=4",
        "rollouts.num_questions=3",
        "rollouts.max_new_tokens=8",
        "preferences.min_margin=0.0",
        "rl.dpo.max_steps=1",
        "eval.max_new_tokens=4",
        "eval.limit=3",
    ]
    cmd = [
        sys.executable,
        str(REPO / "bench" / "rl_recipes.py"),
        "configs/demo.yaml",
        "--runs-dir",
        str(runs),
        "--out",
        str(out),
        "--recipes",
        "a_dpo,f_label_free",
        "--datasets",
        "gsm_symbolic_dev,gsm_symbolic_test",
        "--set",
        *sets,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["recipe"] for r in results] == ["a_dpo", "f_label_free"]
    second = proc.stdout.split("##### f_label_free")[1]
    assert "sft: " in second and "collect-rollouts: " in second and second.count("nothing to do") >= 2
    a, f = (runs / "demo-a_dpo", runs / "demo-f_label_free")
    assert (f / "data" / "rl_rollouts.jsonl").samefile(a / "data" / "rl_rollouts.jsonl")  # reused, not collected again
    assert (f / "checkpoints" / "lora_sft" / "adapter_model.safetensors").samefile(
        a / "checkpoints" / "lora_sft" / "adapter_model.safetensors"
    )
    assert "| f_label_free |" in proc.stdout and "| SFT (shared) |" in proc.stdout

    # "sft" first: the shared adapter and its eval alone, then recipes (two at once) and SFT sampled on the dev split
    cmd = [
        *cmd[: cmd.index("--recipes")],
        "--recipes",
        "sft,sft_samples,a_dpo",
        "--jobs",
        "2",
        *cmd[cmd.index("--datasets") :],
        "eval.models=[sft,rl]",
    ]
    cmd[cmd.index("--runs-dir") + 1] = str(tmp_path / "runs2")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s, samples, a = (tmp_path / "runs2" / f"demo-{r}" for r in ("sft", "sft_samples", "a_dpo"))
    assert not (s / "checkpoints" / "lora_rl").exists() and (s / "eval" / "sft__gsm_symbolic_test.jsonl").exists()
    assert (a / "checkpoints" / "lora_sft" / "adapter_model.safetensors").samefile(
        s / "checkpoints" / "lora_sft" / "adapter_model.safetensors"
    )
    assert (a / "eval" / "sft__gsm_symbolic_test.jsonl").samefile(
        s / "eval" / "sft__gsm_symbolic_test.jsonl"
    )  # SFT scored once
    sampled = json.loads((samples / "eval" / "summary.json").read_text())["metrics"]
    assert (
        list(sampled) == ["sft"]
        and list(sampled["sft"]) == ["gsm_symbolic_dev"]
        and sampled["sft"]["gsm_symbolic_dev"]["samples"] == 16
    )
    assert "| a_dpo |" in proc.stdout and "| SFT (shared) |" in proc.stdout


def test_rl_recipes_refuses_a_recipe_listed_before_the_one_it_builds_on(tmp_path):
    """--jobs schedules a recipe once what it builds on is done, so that one must come first (checked before any work)."""
    cmd = [
        sys.executable,
        str(REPO / "bench" / "rl_recipes.py"),
        "configs/demo.yaml",
        "--runs-dir",
        str(tmp_path),
        "--recipes",
        "g_rpo,b_dpo_correct",
        "--jobs",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "recipe g_rpo builds on b_dpo_correct: list b_dpo_correct before it" in proc.stderr
    assert not any(tmp_path.iterdir())
    # a re-scoring listed without the recipe it re-scores, a bad k, a config that is not there: one line each
    for recipes, message in (
        ("w_correct@k16", "recipe w_correct@k16 builds on w_correct: list w_correct before it"),
        ("w_correct@k1", "w_correct@k1: <recipe>@k<N> needs N >= 2"),
    ):
        proc = subprocess.run([*cmd[:-3], recipes], cwd=REPO, capture_output=True, text=True, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = subprocess.run([*cmd[:2], "nope.yaml"], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not GSM8K.is_dir(), reason="needs the GSM8K files")
def test_plan_8b_runs_every_stage_tiny(tmp_path, real_tokenizer_dir):
    """bench/plan_8b.py on a tiny shape: the self-data refusal, the pipeline, GRPO and RLOO with their evals."""
    out = tmp_path / "out.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "plan_8b.py"),
        "--gsm8k",
        str(GSM8K),
        "--tokenizer",
        str(real_tokenizer_dir),
        "--model-dir",
        str(tmp_path / "model"),
        "--out",
        str(out),
        "--shape",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--configs",
        "8b",
        "--new-tokens",
        "16",
        "--rl-tokens",
        "16",
        "--eval-tokens",
        "8",
        "--eval-limit",
        "4",
        "--questions",
        "2",
        "--self-questions",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(out.read_text())["configs"]["8b"]["steps"]
    assert steps["self-data"]["rc"] == 2 and steps["self-data"]["samples"]["samples"] == 4
    assert steps["pipeline"]["rc"] == 0 and all(r["marker"] for r in steps["pipeline"]["stages"])
    for algorithm in ("grpo", "rloo"):
        assert steps[algorithm]["train-rl"]["rc"] == 0 and steps[algorithm]["eval_models"] == ["rl"]
    assert "| 8b | train-rl (rloo) |" in proc.stdout


def test_pooled_flips_reads_runs_together(tmp_path):
    """Per-question net change, pooled flips and Fisher's combination over runs of one comparison (hand-computed)."""

    def summary(up, down):
        return {
            "comparisons": {
                "gsm8k_test": [{"a": "sft", "b": "rl", "strict": {"wrong_to_right": up, "right_to_wrong": down}}]
            }
        }

    (tmp_path / "one.json").write_text(json.dumps(summary(["q1", "q2", "q3"], ["q4"])))
    (tmp_path / "two.json").write_text(
        json.dumps({"results": [{"recipe": "c", "summary": summary(["q1", "q5"], ["q2"])}]})
    )
    out = tmp_path / "pooled.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "pooled_flips.py"),
        str(tmp_path / "one.json"),
        f"{tmp_path / 'two.json'}:c",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert [(r["wrong_to_right"], r["right_to_wrong"]) for r in res["runs"]] == [(3, 1), (2, 1)]
    # q1 +2, q2 0 (up in one run, down in the other), q3 +1, q4 -1, q5 +1
    assert (res["per_question"]["better"], res["per_question"]["worse"]) == (3, 1)
    assert res["per_question"]["p_two_sided"] == pytest.approx(2 * 5 / 16)
    assert (res["pooled_flips"]["wrong_to_right"], res["pooled_flips"]["right_to_wrong"]) == (5, 2)
    half = -math.log(5 / 16) - math.log(1 / 2)  # one-sided p: P(X >= 3 | 4) = 5/16, P(X >= 2 | 3) = 1/2
    assert res["fisher_one_sided"] == pytest.approx(math.exp(-half) * (1 + half))
    for counts in ({"wrong_to_right": True, "right_to_wrong": False}, {"wrong_to_right": -5, "right_to_wrong": 2}):
        (tmp_path / "bad_counts.json").write_text(json.dumps(counts))
        proc = subprocess.run(
            [*cmd[:2], str(tmp_path / "bad_counts.json")], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert proc.returncode != 0 and "must both be counts" in proc.stderr and "Traceback" not in proc.stderr
    # a run kept as counts only: in the pooled flips and Fisher's combination, not in the per-question sum
    (tmp_path / "three.json").write_text(json.dumps({"wrong_to_right": 4, "right_to_wrong": 0}))
    proc = subprocess.run(
        [*cmd[:-2], str(tmp_path / "three.json"), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert (res["per_question"]["better"], res["per_question"]["worse"]) == (3, 1)
    assert res["per_question"]["runs_left_out"] == [str(tmp_path / "three.json")]
    assert (res["pooled_flips"]["wrong_to_right"], res["pooled_flips"]["right_to_wrong"]) == (9, 2)
    half = -math.log(5 / 16) - math.log(1 / 2) - math.log(1 / 16)
    assert res["fisher_one_sided"] == pytest.approx(math.exp(-half) * (1 + half + half**2 / 2))
    missing = subprocess.run([*cmd[:3], f"{tmp_path / 'two.json'}:nope"], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode != 0 and "no finished recipe 'nope'" in missing.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = subprocess.run([*cmd[:2], str(tmp_path / "bad.json")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "bad.json: cannot read it as JSON" in bad.stderr and "Traceback" not in bad.stderr


def _eval_records(golds: list[str], answers: list[list[str]]) -> list[dict]:
    """Eval records as the eval stage makes them: each question's outputs (with a U+2028 inside, which a model may
    write and ``str.splitlines`` takes for a line end) scored against gold."""
    from collections import namedtuple

    from looper.eval.eval_gsm8k import score_record

    out = namedtuple("Output", "text num_tokens truncated")
    return [
        score_record({"id": f"q{i}", "question": "?", "gold": g}, [out(f"so\u2028#### {a}", 5, False) for a in ans])
        for i, (g, ans) in enumerate(zip(golds, answers))
    ]


def test_regime_w_comparison_pools_the_seeds_per_question(tmp_path):
    """The comparison's reading of finished runs: avg@k per arm, paired differences per seed and pooled (each
    question's score averaged over the seeds), greedy flips, pairs and steps from the stage markers; a seed whose
    per-question files are gone is read from its eval summaries (no paired avg@k test, greedy flips still)."""
    sys.path.insert(0, str(REPO / "bench"))
    from regime_w_comparison import ARMS, analyze, tables

    from looper.config import load_config
    from looper.eval.report import write_report

    golds, ds = ["1", "2", "3", "4"], "gsm_symbolic_test"
    right, wrong = golds, ["9"] * 4
    # per arm: greedy answers, and k = 4 sampled answers per question (share correct per question)
    sampled = {"sft": [0, 1, 0, 0], "w_regime_w": [2, 1, 1, 0], "w_correct": [1, 1, 0, 0], "w_label_free": [0, 0, 0, 0]}
    greedy = {
        "sft": wrong,
        "w_regime_w": right[:2] + wrong[2:],
        "w_correct": right[:1] + wrong[1:],
        "w_label_free": wrong,
    }
    runs = tmp_path / "runs"
    for seed in (1, 2, 4):
        shift = int(seed > 1)  # seeds 2 and 4: one more correct sample on question 3 for the Regime W arm only
        for arm in ARMS:
            model = "sft" if arm == "sft" else "rl"
            counts = [c + (shift if arm == "w_regime_w" and q == 3 else 0) for q, c in enumerate(sampled[arm])]
            # the arm's own run scores SFT too, first (the summary's SFT -> RL flips)
            files = {
                "": {
                    "sft": _eval_records(golds, [[a] for a in greedy["sft"]]),
                    model: _eval_records(golds, [[a] for a in greedy[arm]]),
                },
                "@k4": {model: _eval_records(golds, [[g] * c + ["9"] * (4 - c) for g, c in zip(golds, counts)])},
            }
            for at, recs in files.items():
                folder = runs / f"demo-s{seed}-{arm}{at}" / "eval"
                config = load_config("configs/demo.yaml", [f"eval.samples={4 if at else 1}"])
                write_report({m: {ds: r} for m, r in recs.items()}, config, folder)
                if seed != 4:  # seed 4 keeps only the summaries
                    for m, r in recs.items():
                        (folder / f"{m}__{ds}.jsonl").write_text(
                            "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in r)
                        )
            if arm != "sft":
                stages = runs / f"demo-s{seed}-{arm}" / "stages"
                stages.mkdir(parents=True)
                (stages / "build-preferences.json").write_text(json.dumps({"pairs": 10 + seed}))
                (stages / "train-rl.json").write_text(json.dumps({"steps": 3}))
        traj = [
            {
                "arm": "direct",
                "family": "compute",
                "text": "0 + 1 = 1\n#### 1\u2028",
                "truncated": False,
                "num_tokens": 3,
            }
        ]
        rollouts = runs / f"demo-s{seed}-rollouts_b" / "data" / "rl_rollouts.jsonl"
        rollouts.parent.mkdir(parents=True)
        rollouts.write_text(json.dumps({"id": "t0", "gold": "1", "trajectories": traj}, ensure_ascii=False) + "\n")
    args = type(
        "Args",
        (),
        {"runs_dir": str(runs), "seeds": [1, 2, 3], "k": 4, "dataset": ds, "config": "configs/demo.yaml", "set": []},
    )()
    result = analyze(args, "demo")
    (tmp_path / "first.json").write_text(json.dumps(result))
    assert "3" in str(result["missing_seeds"]) and result["pooled"]["seeds"] == [1, 2]  # seed 3 never ran
    one = result["per_seed"][1]
    assert (
        one["arms"]["w_regime_w"]["avg_k_strict"] == pytest.approx(4 / 16) and one["arms"]["sft"]["greedy_strict"] == 0
    )
    assert one["pairs"]["w_correct"] == 11 and one["dpo_steps"]["w_label_free"] == 3
    primary = one["comparisons"]["w_regime_w - w_correct"]
    assert primary["avg_k"]["difference"] == pytest.approx((1 / 4 + 1 / 4) / 4)  # questions 0 and 2: +1 sample of 4
    assert primary["greedy"] == {"wrong_to_right": 1, "right_to_wrong": 0, "p_mcnemar": 1.0}
    pooled = result["pooled"]["comparisons"]["w_regime_w - w_correct"]
    # seed 2 adds 1/4 on question 3: pooled per-question differences are [1/4, 0, 1/4, 1/8]
    assert pooled["avg_k"]["difference"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 8) / 4)
    assert pooled["greedy_per_question"] == {"better": 1, "worse": 0, "p_sign_test": 1.0}
    assert result["per_seed"][2]["regime_w_auroc"]["all arms"]["questions"] == 1
    # one question: no AUROC and no DeLong test, each said so in the table
    assert "| 2 | all arms | 1 / 1 | n/a | n/a | - |" in tables(result).splitlines()
    assert result["question_scores"][2]["w_regime_w"]["avg_k"] == [0.5, 0.25, 0.25, 0.25]

    # seeds 1 and 4 (summaries only): the same figures where they can be had, no paired avg@k test
    args.seeds = [1, 4]
    result = analyze(args, "demo")
    four = result["per_seed"][4]
    assert not four["paired"] and four["arms"]["w_regime_w"]["avg_k_strict"] == pytest.approx(5 / 16)
    assert four["comparisons"]["w_regime_w - w_correct"]["avg_k"] == {"difference": pytest.approx(5 / 16 - 2 / 16)}
    assert four["comparisons"]["w_regime_w - w_correct"]["greedy"] == primary["greedy"]
    assert four["comparisons"]["w_label_free - sft"]["greedy"]["wrong_to_right"] == 0
    pooled = result["pooled"]["comparisons"]["w_regime_w - w_correct"]
    assert pooled["avg_k"] is None and pooled["avg_k_mean_of_seeds"] == pytest.approx((2 / 16 + 3 / 16) / 2)
    assert pooled["greedy_per_question"]["better"] == 1  # question 1: right under Regime W in both seeds, counted once

    # a seed whose run stopped before one arm's k-sample eval (seed 2 without label-free@k4): the comparisons that
    # arm is not in keep their paired test; those it is in are left out, per seed and pooled, and said so
    shutil.rmtree(runs / "demo-s2-w_label_free@k4")
    args.seeds = [1, 2]
    result = analyze(args, "demo")
    two = result["per_seed"][2]
    assert (
        not two["paired"]
        and "avg_k_strict" not in two["arms"]["w_label_free"]
        and "greedy_strict" in two["arms"]["w_label_free"]
    )
    assert two["comparisons"]["w_regime_w - w_correct"]["avg_k"]["p_value"] is not None
    assert two["comparisons"]["w_label_free - sft"]["avg_k"] is None
    assert two["comparisons"]["w_label_free - sft"]["greedy"]["wrong_to_right"] == 0
    pooled = result["pooled"]["comparisons"]
    assert pooled["w_regime_w - w_correct"]["avg_k"]["difference"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 8) / 4)
    assert pooled["w_label_free - sft"]["avg_k"] is None and pooled["w_label_free - sft"]["avg_k_mean_of_seeds"] is None
    assert pooled["w_label_free - sft"]["greedy_per_question"] is not None
    lines = tables(result).splitlines()
    assert "| 2 | label-free | - | - | - | 0.00 [0.00, 48.99] | 12 | 3 |" in lines, [
        x for x in lines if "| 2 | label" in x
    ]
    assert any(
        x.startswith("| **label-free - SFT** | **pooled** | not computed (an arm's eval is missing)") for x in lines
    )

    # seed 2 taken from the first analysis (as a seed run in another session): its run folders gone, the pooled
    # test is the one computed with every folder there
    for folder in runs.glob("demo-s2-*"):
        shutil.rmtree(folder)
    args.from_analysis = [str(tmp_path / "first.json")]
    result = analyze(args, "demo")
    assert result["per_seed"][2]["from"].endswith("first.json") and result["per_seed"][2]["paired"]
    pooled = result["pooled"]["comparisons"]
    assert pooled["w_regime_w - w_correct"]["avg_k"]["difference"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 8) / 4)
    assert pooled["w_label_free - sft"]["avg_k"] is not None  # seed 2's label-free scores come from the first analysis
    assert pooled["w_regime_w - w_correct"]["greedy_per_question"] == {"better": 1, "worse": 0, "p_sign_test": 1.0}


def test_rl_recipes_sampled_rescoring_builds_on_the_recipe_it_names():
    """``<recipe>@k<N>``: that recipe's adapters (every round) scored with N samples on the reporting split."""
    sys.path.insert(0, str(REPO / "bench"))
    from rl_recipes import source_of, spec, unknown_reason

    _, parent, level, overrides, commands = spec("w_correct@k16")
    assert (parent, level, commands) == ("w_correct", "rounds", [["eval"]])
    assert "preferences.correctness_only=true" in overrides  # the arm's own settings, so its stages check out
    assert overrides[-3:] == ["eval.samples=16", "eval.models=[rl]", "eval.datasets=[{report}]"]
    assert spec("sft@k4")[2] == "sft" and "eval.models=[sft]" in spec("sft@k4")[3]
    assert source_of("w_label_free", "sft") == ("rollouts_b", "rollouts") and source_of("rollouts_b", "sft") == (
        "sft",
        "sft",
    )
    assert "needs N >= 2" in unknown_reason("w_correct@k1") and "needs N >= 2" in unknown_reason("w_correct@kx")
    assert "no recipe 'nope'" in unknown_reason("nope@k16") and unknown_reason("w_correct@k16") is None


def test_rl_recipes_table_gives_a_sampled_eval_its_avg_at_k():
    """A ``@kN`` recipe's row shows avg@N (all N answers), not the first answer's accuracy that its eval summary
    also holds; a greedy eval's row its one answer. On a real eval summary of the seventh comparison run."""
    sys.path.insert(0, str(REPO / "bench"))
    from rl_recipes import accuracy_cell

    runs = REPO / "docs/bench/regime_w_comparison_h200_run7/run_summaries"
    sampled = json.loads((runs / "smollm2-135m-gpu-s1236-w_label_free@k16/eval/summary.json").read_text())
    m = sampled["metrics"]["rl"]["gsm8k_test"]
    assert m["strict"]["accuracy"] < 0.02 < 0.028 < m["strict"]["avg@16"]["accuracy"]  # first answer 1.9%, avg@16 2.9%
    assert accuracy_cell(m, "strict") == "2.9 [2.5, 3.2]" and accuracy_cell(m, "flexible", ci=False) == "2.9"
    greedy = json.loads((runs / "smollm2-135m-gpu-s1236-w_label_free/eval/summary.json").read_text())
    assert accuracy_cell(greedy["metrics"]["rl"]["gsm8k_test"], "strict") == "3.4 [2.6, 4.5]"


@pytest.mark.parametrize(
    "content, expect",
    [("{x", "not valid JSON"), ("[1]", "not an analysis of this script"), ("{}", "not an analysis of this script")],
)
def test_regime_w_comparison_refuses_a_bad_earlier_analysis(tmp_path, content, expect):
    """``--from-analysis`` given a file this script did not write: argparse's one error line, exit 2."""
    bad = tmp_path / "earlier.json"
    bad.write_text(content)
    cmd = [
        sys.executable,
        str(REPO / "bench" / "regime_w_comparison.py"),
        "configs/smollm2-135m-gpu.yaml",
        "--analyze-only",
        "--runs-dir",
        "docs/bench/regime_w_comparison_h200_run7/run_summaries",
        "--seeds",
        "1236",
        "--from-analysis",
        str(bad),
        "--out",
        str(tmp_path / "out.json"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"regime_w_comparison.py: error: --from-analysis {bad}: {expect}")
    )
    assert not (tmp_path / "out.json").exists()


def test_eval_files_scores_files_side_by_side_and_refuses_what_is_not_an_eval_file(tmp_path):
    """bench/eval_files.py: eval's own metrics on per-question files, paired by question id; bad input is one line."""
    rows = [
        {"id": f"q{i}", "correct_strict": False, "correct_flexible": i < k, "truncated": i == 3, "tokens": 10}
        for k in (2,)
        for i in range(4)
    ]
    better = [dict(r, correct_flexible=r["id"] != "q3", truncated=False) for r in rows]
    for name, records in (("a", rows), ("b", better[::-1])):  # order differs: pairing is by id
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "eval_files.py"),
            f"base={tmp_path / 'a.jsonl'}",
            f"rl={tmp_path / 'b.jsonl'}",
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| rl | 0.00 [0.0, 49.0] | 75.00 [30.1, 95.4] | 0.0 | 10 | +25.00 | 1 / 0 | 0 |" in out
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["n"] == 4 and saved["models"]["rl"]["flexible_vs_against"]["wrong_to_right"] == 1
    (tmp_path / "bad.jsonl").write_text('{"id": "q0"}\n')
    for bad, message in (
        (f"x={tmp_path / 'bad.jsonl'}", "bad.jsonl:1: not a looper eval record (no correct_strict"),
        (f"x={tmp_path / 'none.jsonl'}", "none.jsonl: cannot read it as an eval file"),
        ("x", "x: expected LABEL=PATH"),
        (f"--json={tmp_path / 'no' / 'out.json'}", "out.json: its folder"),
    ):
        proc = subprocess.run(
            [sys.executable, str(REPO / "bench" / "eval_files.py"), f"a={tmp_path / 'a.jsonl'}", bad],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_label_free_rounds_reads_each_rounds_rollouts(tmp_path):
    """bench/label_free_rounds.py: per round, agreement with the consensus, the consensus's gold accuracy, the
    samples' accuracy, and a round's dev file when given; hand-made rollouts of two rounds, counted by hand."""
    sys.path.insert(0, str(REPO / "bench"))
    from label_free_rounds import analyse

    def record(qid: str, gold: str, consensus: str, answers: list[str]) -> dict:
        trajectories = [
            {"arm": "direct", "family": "compute", "text": f"#### {a}", "answer": a, "reward": 0.0,
             "parts": {"correct": float(a == gold)}}
            for a in answers
        ]  # fmt: skip
        return {"id": qid, "gold": gold, "scores": {"consensus": consensus}, "trajectories": trajectories}

    run = tmp_path / "run"
    rounds = {
        run / "data": [record("q1", "3", "3", ["3", "3", "4", "5"]), record("q2", "7", "8", ["8", "7", "2", "1"])],
        run / "rounds" / "2" / "data": [record("q1", "3", "4", ["4"] * 4), record("q2", "7", "8", ["8"] * 3 + ["7"])],
    }
    for folder, records in rounds.items():
        folder.mkdir(parents=True)
        (folder / "rl_rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "correct_flexible": c, "correct_strict": False, "truncated": False, "tokens": 9})
            + "\n"
            for i, c in enumerate((1, 1, 0, 1))
        )
    )
    one, two = analyse(run, {2: dev})
    assert (one["round"], one["agreement"], one["majority_accuracy"], one["sample_accuracy"]) == (1, 3 / 8, 0.5, 3 / 8)
    assert (two["round"], two["agreement"], two["majority_accuracy"], two["sample_accuracy"]) == (2, 7 / 8, 0.0, 1 / 8)
    assert "dev_accuracy" not in one and two["dev_accuracy"] == 0.75  # agreement up, the agreed answers worse
