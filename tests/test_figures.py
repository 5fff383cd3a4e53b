"""Figures in README and docs/ checked against the raw files in docs/bench/ they come from (issue 29, item 6).

Each test reads a table or sentence as a reader sees it and recomputes every number in it from the raw file the
text names. Covered so far: the Regime W comparison (docs/results.md), the four runs of the default recipe and
their pooled reading (README, docs/results.md, the GPU config's header), the Regime W reports' AUROCs, the
comparison's second run (SFT per seed, the same-seed rerun test, the AUROCs) and README's 8B figures.
"""

import gzip
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "docs" / "bench"
COMPARISON = BENCH / "regime_w_comparison_2xh200"
ARM_NAMES = {"SFT": "sft", "Regime W": "w_regime_w", "correctness only": "w_correct", "label-free": "w_label_free"}


def printed(text: str) -> list[str]:
    """Every number in a piece of text, as printed."""
    return re.findall(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?", text)


def numbers(text: str) -> list[float]:
    """Every number in a piece of text, signs and thousands separators read."""
    return [float(n.replace(",", "")) for n in printed(text)]


def shown(text: str, value: float) -> bool:
    """Whether ``text`` (one number as printed) is ``value`` rounded to the decimals it shows."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text.replace(",", "")) - value) <= 0.5 * 10 ** -decimals + 1e-12


def section(doc: Path, heading: str) -> str:
    """The text of a markdown section, from its heading to the next heading of the same or a higher level."""
    text = doc.read_text()
    start = text.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    after = text[start + len(heading):]
    end = re.search(rf"^#{{1,{level}}} ", after, flags=re.MULTILINE)
    return after[: end.start()] if end else after


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows whose first cell matches ``first_cell`` (a regular expression)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if re.fullmatch(first_cell, r[0])]


def pct(x: float, digits: int = 2) -> float:
    return round(100 * x, digits)


@pytest.fixture(scope="module")
def comparison() -> dict:
    return json.loads((COMPARISON / "comparison_from_summaries.json").read_text())


@pytest.fixture(scope="module")
def results_section() -> str:
    return section(REPO / "docs" / "results.md", "### Results, first run (2026-11-30")


def test_regime_w_comparison_arm_table(comparison, results_section):
    rows = table_rows(results_section, r"1234|1235|1236")
    arm_rows = [r for r in rows if r[1] in ARM_NAMES]
    assert len(arm_rows) == 12
    for seed, name, avg, maj, pas, greedy, trunc, pairs, steps in arm_rows:
        res = comparison["per_seed"][seed]
        m = res["arms"][ARM_NAMES[name]]
        assert numbers(avg) == [pct(m["avg_k_strict"]), pct(m["avg_k_strict_ci95"][0]), pct(m["avg_k_strict_ci95"][1])]
        assert numbers(maj) == [pct(m["maj_k_strict"])] and numbers(pas) == [pct(m["pass_k_strict"])]
        assert numbers(greedy) == [pct(m["greedy_strict"]), pct(m["greedy_strict_ci95"][0]), pct(m["greedy_strict_ci95"][1])]
        assert numbers(trunc) == [pct(m["sampled_truncated"], 1), pct(m["greedy_truncated"], 1)]
        arm = ARM_NAMES[name]
        assert numbers(pairs) == ([res["pairs"][arm]] if arm != "sft" else [])
        assert numbers(steps) == ([res["dpo_steps"][arm]] if arm != "sft" else [])


def test_regime_w_comparison_differences_table(comparison, results_section):
    paired = json.loads((COMPARISON / "seed1235_paired.json").read_text())["per_seed"]["1235"]["comparisons"]
    labels = {"Regime W - correctness only": "w_regime_w - w_correct", "Regime W - SFT": "w_regime_w - sft",
              "correctness only - SFT": "w_correct - sft", "label-free - SFT": "w_label_free - sft",
              "label-free - correctness only": "w_label_free - w_correct"}
    rows = table_rows(results_section, r"(\*\*)?(Regime W|correctness only|label-free) - .*")
    assert len(rows) == 5
    for label, s1234, s1235, s1236, flips, pooled in rows:
        key = labels[label.replace("**", "").replace(" (H1)", "")]
        seeds = comparison["per_seed"]
        assert numbers(s1234) == [pct(seeds["1234"]["comparisons"][key]["avg_k"]["difference"])]
        assert numbers(s1236) == [pct(seeds["1236"]["comparisons"][key]["avg_k"]["difference"])]
        d = paired[key]["avg_k"]
        diff, lo, hi, p, detectable = printed(s1235.replace("80%", ""))
        expect = [(diff, 100 * d["difference"]), (lo, 100 * d["ci95"][0]), (hi, 100 * d["ci95"][1]), (p, d["p_value"]),
                  (detectable, 100 * d["detectable_80"]), (diff, 100 * seeds["1235"]["comparisons"][key]["avg_k"]["difference"])]
        assert all(shown(text, value) for text, value in expect), (label, expect)
        assert numbers(flips.replace("/", " ")) == [v for s in ("1234", "1235", "1236") for v in
                                                    (seeds[s]["comparisons"][key]["greedy"]["wrong_to_right"],
                                                     seeds[s]["comparisons"][key]["greedy"]["right_to_wrong"])]
        g = comparison["pooled"]["comparisons"][key]["greedy_per_question"]
        better, worse, p = printed(pooled)
        assert (int(better), int(worse)) == (g["better"], g["worse"]) and shown(p, g["p_sign_test"])
    assert comparison["pooled"]["comparisons"]["w_regime_w - w_correct"]["avg_k"] is None  # H1: not computed, as said


def test_regime_w_comparison_auroc_table(results_section):
    rows = table_rows(results_section, r"1234|1235|1236")
    auroc_rows = [r for r in rows if len(r) == 5]
    assert len(auroc_rows) == 3
    for seed, *cells in auroc_rows:
        report = (COMPARISON / f"regime_w_report_s{seed}.md").read_text()
        family = {}
        for name in ("all arms", "compute arms", "reflective arms"):
            line = next(x for x in report.splitlines() if x.startswith(name))
            family[name] = numbers(line)  # questions, consensus correct, AUROC majority, AUROC s_wm
        expect = [v for name in family for v in family[name][2:4]] + [family[n][1] for n in family]
        assert [v for c in cells for v in numbers(c)] == expect


RUN2 = BENCH / "regime_w_comparison_2xh200_run2"


def _run2_records(seed: str, run: str) -> list[dict]:
    path = RUN2 / "q" / f"smollm2-135m-gpu-s{seed}-{run}__sft__gsm8k_test.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return sorted((json.loads(line) for line in f), key=lambda r: r["id"])


def test_regime_w_comparison_second_run(comparison):
    """The second run's section: SFT per seed against the first run, the seed-1235 rerun test, and the AUROCs."""
    from looper.eval.report import dataset_metrics, question_scores
    from looper.stats import paired_difference

    text = section(REPO / "docs" / "results.md", "### Second run (2026-11-30")
    rows = table_rows(text, r"1234|1235|1236")
    sft_rows, auroc_rows = [r for r in rows if len(r) == 7], [r for r in rows if len(r) == 5]
    assert len(sft_rows) == 3 and len(auroc_rows) == 3
    for seed, avg, maj, pas, greedy, trunc, first in sft_rows:
        sampled, g = _run2_records(seed, "sft@k16"), dataset_metrics(_run2_records(seed, "sft"))
        m = dataset_metrics(sampled)["strict"]
        truncated = sum(s["truncated"] for r in sampled for s in [r, *r["samples"]]) / (16 * len(sampled))
        assert numbers(avg) == [pct(m["avg@16"]["accuracy"]), *(pct(x) for x in m["avg@16"]["ci95"])]
        assert numbers(maj) == [pct(m["maj@16"])] and numbers(pas) == [pct(m["pass@16"])]
        assert numbers(greedy) == [pct(g["strict"]["accuracy"]), *(pct(x) for x in g["strict"]["ci95"])]
        assert numbers(trunc) == [pct(truncated, 1), pct(g["truncation_rate"], 1)]
        arm = comparison["per_seed"][seed]["arms"]["sft"]
        assert numbers(first) == [pct(arm["avg_k_strict"]), pct(arm["greedy_strict"])]
    first_run = json.loads((COMPARISON / "seed1235_paired.json").read_text())["question_scores"]["1235"]["sft"]
    second = _run2_records("1235", "sft@k16")
    assert [r["id"] for r in second] == first_run["ids"]
    d = paired_difference(first_run["avg_k"], question_scores(second, "strict"))
    flat = text.replace("\n", " ")
    assert f"{100 * d['difference']:+.2f} points [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}], p = {d['p_value']:.2f}" in flat
    greedy = [int(r["correct_strict"]) for r in _run2_records("1235", "sft")]
    up = sum(a < b for a, b in zip(first_run["greedy"], greedy))
    down = sum(a > b for a, b in zip(first_run["greedy"], greedy))
    assert f"flip on {up + down} questions ({up} right only in the second run, {down} only in the first)" in flat
    gaps = []
    for seed, *cells in auroc_rows:
        fams = json.loads((RUN2 / f"auroc_s{seed}.json").read_text()).values()
        assert [v for c in cells for v in numbers(c)] == [
            *(round(f[k], 3) for f in fams for k in ("auroc_majority", "auroc_s_wm")), *(f["consensus_correct"] for f in fams)]
        for f, cell in zip(fams, cells):  # the better of the two is the bold one
            assert cell.index("**") == (0 if f["auroc_majority"] > f["auroc_s_wm"] else cell.index("/") + 2)
        gaps += [f["auroc_s_wm"] - f["auroc_majority"] for f in fams]
    better = [x for x in gaps if x > 0]
    assert len(better) == 8 and f"(by {min(better):.3f}-{max(better):.3f}; one row {-min(gaps):.3f} the" in flat
    first = 0
    for seed in ("1234", "1235", "1236"):
        report = (COMPARISON / f"regime_w_report_s{seed}.md").read_text().splitlines()
        for name in ("all arms", "compute arms", "reflective arms"):
            end, wm = numbers(next(x for x in report if x.startswith(name)))[2:4]
            first += wm > end
    both = f"in {first + len(better)} of 18 rows"
    assert both in flat and both in " ".join((REPO / "README.md").read_text().split())
    assert f"flips {up + down} questions" in " ".join((REPO / "README.md").read_text().split())


def test_lm_eval_agreement_at_scale():
    """docs/results.md's H200 agreement table: looper's lm-eval protocol against lm-eval's own run."""
    raw = BENCH / "lm_eval_agreement_smollm2_h200"
    text = section(REPO / "docs" / "results.md", "### At scale on one H200")
    base = json.loads((raw / "agreement_base.json").read_text())["models"]["base"]
    summary = json.loads((raw / "run" / "eval" / "summary.json").read_text())["metrics"]
    (row,), (sft,) = table_rows(text, "base"), table_rows(text, "sft")
    n = base["questions"]
    assert numbers(row[1]) == [n] and numbers(row[4]) == [base["same_prompt"]] and numbers(row[5]) == [base["same_response"]]
    assert numbers(row[6]) == [min(base["same_strict-match_answer"], base["same_flexible-extract_answer"])]
    for cell, name in ((row[2], "strict-match"), (row[3], "flexible-extract")):
        assert numbers(cell) == [base[f"looper_{name}_%"], base[f"lm_eval_{name}_%"]]
    looper_sft = summary["sft"]["gsm8k_test"]
    assert numbers(sft[1]) == [looper_sft["n"]]
    assert numbers(sft[2]) == [pct(looper_sft["strict"]["accuracy"], 1)] and numbers(sft[3]) == [pct(looper_sft["flexible"]["accuracy"], 1)]
    flat = " ".join(text.split())
    b = summary["base"]["gsm8k_test"]
    assert f"{b['strict']['correct']} of them answered right by strict-match and {b['flexible']['correct']} by flexible" in flat


def test_default_recipe_runs_read_together():
    """README, docs/results.md and the GPU config's header: the four runs and their pooled reading."""
    pooled = json.loads((BENCH / "pooled_default_recipe_4runs_test.json").read_text())
    runs = pooled["runs"]
    gains = [round(100 * (r["wrong_to_right"] - r["right_to_wrong"]) / 1319, 1) for r in runs]
    order = sorted(range(4), key=lambda i: -gains[i])  # the text lists the runs largest gain first
    readme = (REPO / "README.md").read_text()
    header = (REPO / "configs" / "smollm2-135m-gpu.yaml").read_text()
    gain_text = ", ".join(f"+{gains[i]}" for i in order[:-1]) + f" and +{gains[order[-1]]} points"
    assert gain_text in readme
    assert ", ".join(f"+{gains[i]}" for i in order) in header
    for text in (readme.replace("\n", " "), header.replace("\n# ", " ")):
        listed = re.search(r"p = ([\d.]+), ([\d.]+),\s+([\d.]+),? (?:and )?([\d.]+)", text)
        assert listed and all(shown(listed.group(k + 1), runs[i]["p_two_sided"]) for k, i in enumerate(order))
    up, down = pooled["pooled_flips"]["wrong_to_right"], pooled["pooled_flips"]["right_to_wrong"]
    p = f"{pooled['pooled_flips']['p_two_sided']:.1g}"
    assert f"{up}\nquestions better and {down} worse, p = {p}" in readme or f"{up} questions better and {down} worse, p = {p}" in readme
    results = section(REPO / "docs" / "results.md", "## The GPU config's default pipeline as one run")
    q = pooled["per_question"]
    assert f"{q['better']} questions better, {q['worse']} worse" in results and f"p = {q['p_two_sided']:.2g}" in results
    assert f"{up} / {down}, p = {pooled['pooled_flips']['p_two_sided']:.2g}" in results
    assert f"{pooled['fisher_one_sided']:.2g}" in results.replace("\n  ", " ")
    assert f"mean +{sum(gains) / 4:.1f} over the four" in results.replace("\n", " ")


def _peak(path: Path, config: str) -> float:
    run = json.loads(path.read_text())["configs"][config]
    return max(float(x) for x in re.findall(r'"peak_gpu_memory_gib": \[([0-9.]+)', json.dumps(run)))


def test_readme_8b_memory_engine_and_scaling_figures():
    readme = " ".join((REPO / "README.md").read_text().split())
    peaks = re.search(r"peak GPU memory ([\d.]+) GiB \(bf16, SFT\), ([\d.]+) GiB \(QLoRA;.*?\), ([\d.]+) GiB \(plan,", readme)
    assert peaks, "README's 8B peak-memory sentence moved"
    for text, (name, config) in zip(peaks.groups(), [("plan_8b_8b_qlora_h200.json", "8b"),
                                                     ("plan_8b_qlora_rloo_h200.json", "qlora"),
                                                     ("plan_8b_plan_h200.json", "plan")]):
        assert shown(text, _peak(BENCH / name, config)), (text, name)
    runs = {r["way"]: r for r in json.loads((BENCH / "generation_hf_vllm_8b_256x2048_h200.json").read_text())["runs"]}
    engines = re.search(r"`hf` ([\d,]+) tokens/s, looper's `vllm` ([\d,]+) \(([\d.]+)x\), vLLM's own `LLM.generate` "
                        r"([\d,]+) \(looper's engine at (\d+)% of it\)", readme)
    assert engines, "README's engine sentence moved"
    hf, vllm, ratio, direct, share = engines.groups()
    assert shown(hf, runs["hf"]["tokens_per_s"]) and shown(vllm, runs["vllm"]["tokens_per_s"])
    assert shown(direct, runs["vllm-direct"]["tokens_per_s"]) and shown(ratio, runs["vllm"]["x_hf"])
    assert shown(share, 100 * runs["vllm"]["x_vllm_direct"])
    parts = json.loads((BENCH / "scaling_2xh200.json").read_text())["parts"]
    scaling = re.search(r"LoRA SFT ([\d.]+)x the tokens/s under DDP .*?collect-rollouts ([\d.]+)x", readme)
    assert scaling and shown(scaling.group(1), parts["sft_lora_ddp"]["speedup"])
    assert shown(scaling.group(2), parts["collect_rollouts"]["speedup"])
