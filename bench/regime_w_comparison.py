"""Does Regime W make RL better than a plain correctness reward? The pre-registered comparison of issue 29.

    python bench/regime_w_comparison.py configs/smollm2-135m-gpu.yaml --runs-dir runs --out comparison.json \
        --seeds 1234,1235,1236 --k 16 --set data.source=local data.path=<gsm8k>

The design, hypotheses and test are fixed in docs/results.md ("Regime W against correctness alone"). Per seed (the
one seed of a run: data split, SFT, sampling), ``bench/rl_recipes.py`` trains one SFT adapter, collects one set of
rollouts from it (the GPU config's round 1: 2,000 training questions x 8 arms x 4 samples), and on those same
rollouts trains three DPO arms that differ only in how the pairs are made: ranked by the Regime W reward
(``w_regime_w``), by gold correctness alone (``w_correct``), or by the s_wm-weighted consensus without gold
(``w_label_free``). SFT and the three arms are scored on the reporting split greedily (strict, as before) and with
``--k`` sampled answers per question (``<recipe>@k<N>``: avg@k, the primary metric). Seeds run at once, spread
over ``--gpus`` (a 135M model leaves most of a GPU idle); each seed's recipes run up to ``--jobs`` at once.

Then, from the run folders' per-question eval files (``--analyze-only`` redoes just this), per seed and pooled over
the seeds (each question's score averaged over the seeds, then paired over questions): accuracy with 95% intervals,
paired differences (``looper.stats.paired_difference``: mean, 95% CI, p, the difference detectable at 80% power),
greedy flips with exact McNemar p, and Regime W's own evidence on each seed's rollouts (AUROC of s_wm and of plain
majority agreement for a correct consensus, per arm family, and their paired difference by DeLong's test). Output:
one JSON file with every figure and each question's scores, and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pooled_flips import flips  # noqa: E402
from looper.eval.report import dataset_metrics, question_scores  # noqa: E402
from looper.runs import read_jsonl  # noqa: E402
from looper.regime_w.report import auroc_difference_cell  # noqa: E402
from looper.stats import mcnemar_exact, paired_difference  # noqa: E402

ARMS = {"sft": "SFT", "w_regime_w": "Regime W", "w_correct": "correctness only", "w_label_free": "label-free"}
# The pre-registered comparisons, (a, b): b minus a. The first is the primary one.
COMPARISONS = [("w_correct", "w_regime_w"), ("sft", "w_regime_w"), ("sft", "w_correct"), ("sft", "w_label_free"),
               ("w_correct", "w_label_free")]
MODEL = {"sft": "sft"}  # the model each arm's eval scores (the RL arms: rl)
# The base model is no arm: its greedy eval would only hold up the shared SFT recipe, which every seed's rollouts wait
# for. Before the run's own --set, so a user's eval.models still wins.
BASE_SETS = ["eval.models=[sft,rl]"]


def recipes(k: int) -> list[str]:
    """Every recipe one seed runs, each after the one it builds on."""
    return ["sft", "rollouts_b", f"sft@k{k}", "w_regime_w", "w_correct", "w_label_free",
            *(f"w_{a}@k{k}" for a in ("regime_w", "correct", "label_free"))]


def run_seeds(args: argparse.Namespace, base_name: str) -> dict[int, float]:
    """Run every seed's recipes (each seed its own ``rl_recipes.py`` process, on GPU ``gpus[i % len(gpus)]``);
    returns each seed's wall time in seconds. A seed that fails is reported and the others go on."""
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    gpus = [g for g in args.gpus.split(",") if g]
    procs = {}
    for i, seed in enumerate(args.seeds):
        name = f"{base_name}-s{seed}"
        cmd = [sys.executable, str(Path(__file__).with_name("rl_recipes.py")), args.config, "--runs-dir", str(runs_dir),
               "--out", str(runs_dir / f"{name}.recipes.json"), "--jobs", str(args.jobs), "--datasets", args.dataset,
               "--recipes", ",".join(recipes(args.k)), "--set", *BASE_SETS, *args.set, f"seed={seed}", f"name={name}"]
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {})}
        # the seeds start their base-model evals at the same moment, and vLLM writes its compile cache (one folder
        # per model and settings) without a lock: each seed gets its own
        env.setdefault("VLLM_CACHE_ROOT", str(runs_dir.resolve() / f".vllm-cache-s{seed}"))
        log = runs_dir / f"{name}.log"
        print(f"seed {seed}: {' '.join(cmd)}\n  (output: {log})", flush=True)
        with open(log, "w") as out:
            procs[seed] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), time.perf_counter())
    walls = {}
    for seed, (proc, started) in procs.items():
        rc = proc.wait()
        walls[seed] = round(time.perf_counter() - started, 1)
        print(f"seed {seed}: {'done' if rc == 0 else f'exit status {rc}'} in {walls[seed]:.0f} s", flush=True)
    return walls


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (the seed's run failed or has not finished; see its log)")
    # looper's reader splits on newlines only: a generated text may hold U+2028 and other characters that
    # str.splitlines() also takes for line ends
    return sorted(read_jsonl(path), key=lambda r: r["id"])


def arm_records(runs_dir: Path, name: str, arm: str, k: int, dataset: str) -> dict[str, list[dict[str, Any]]]:
    """An arm's per-question eval records: ``greedy`` (one answer) and ``sampled`` (k answers)."""
    model = MODEL.get(arm, "rl")
    return {"greedy": read_records(runs_dir / f"{name}-{arm}" / "eval" / f"{model}__{dataset}.jsonl"),
            "sampled": read_records(runs_dir / f"{name}-{arm}@k{k}" / "eval" / f"{model}__{dataset}.jsonl")}


def arm_figures(greedy: dict[str, Any], sampled: dict[str, Any], k: int, sampled_truncated: float) -> dict[str, Any]:
    """An arm's figures from the eval stage's metrics (``looper.eval.report.dataset_metrics``) of its greedy and its
    k-sample eval, whether computed here from the per-question files or read from the eval summaries."""
    return {"n": greedy["n"], "greedy_strict": greedy["strict"]["accuracy"], "greedy_strict_ci95": greedy["strict"]["ci95"],
            "greedy_truncated": greedy["truncation_rate"], "k": k, "avg_k_strict": sampled["strict"][f"avg@{k}"]["accuracy"],
            "avg_k_strict_ci95": sampled["strict"][f"avg@{k}"]["ci95"], "maj_k_strict": sampled["strict"][f"maj@{k}"],
            "pass_k_strict": sampled["strict"][f"pass@{k}"], "sampled_truncated": sampled_truncated}


def arm_summary(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``arm_figures`` from the per-question files, truncation counted over all k samples."""
    sampled = records["sampled"]
    k = 1 + len(sampled[0].get("samples") or [])
    truncated = sum(s["truncated"] for r in sampled for s in [r, *(r.get("samples") or [])]) / (len(sampled) * k)
    return arm_figures(dataset_metrics(records["greedy"]), dataset_metrics(sampled), k, truncated)


def summary_metrics(runs_dir: Path, name: str, arm: str, k: int, dataset: str) -> tuple[dict[str, Any], dict[str, int]]:
    """An arm's figures from its two eval summaries alone (the per-question files gone; sampled truncation is then
    the first sample's of each question), and each question's greedy change against SFT (+1 wrong -> right, -1
    right -> wrong) from the summary's flipped question ids."""
    model = MODEL.get(arm, "rl")
    paths = [runs_dir / f"{name}-{arm}{at}" / "eval" / "summary.json" for at in ("", f"@k{k}")]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (the seed's run failed or has not finished; see its log)")
    greedy, sampled = (json.loads(path.read_text()) for path in paths)
    g, m = greedy["metrics"][model][dataset], sampled["metrics"][model][dataset]
    delta: dict[str, int] = {}
    if arm != "sft":
        up, down = flips(greedy, "sft", "rl", dataset, "strict")
        delta = {**{q: 1 for q in up}, **{q: -1 for q in down}}
    return arm_figures(g, m, k, m["truncation_rate"]), delta


def greedy_flips(delta_a: dict[str, int], delta_b: dict[str, int]) -> dict[str, Any]:
    """b against a, both as per-question changes against the same SFT answers: where b is right and a wrong
    (wrong_to_right) and the reverse, with exact McNemar p."""
    change = [delta_b.get(q, 0) - delta_a.get(q, 0) for q in {*delta_a, *delta_b}]
    up, down = sum(v > 0 for v in change), sum(v < 0 for v in change)
    return {"wrong_to_right": up, "right_to_wrong": down, "p_mcnemar": mcnemar_exact(up, down)}


def regime_w_evidence(rollouts: Path, config: str, sets: list[str]) -> dict[str, Any] | None:
    """AUROC of s_wm and of plain majority agreement (s_end) for a correct consensus, per arm family (None
    without the rollouts)."""
    from looper.config import load_config
    from looper.regime_w.report import FAMILIES, family_auroc

    if not rollouts.exists():
        return None
    cfg = load_config(config, sets).regime_w
    records = read_records(rollouts)
    return {name: family_auroc(records, cfg, fam) for name, fam in FAMILIES.items()}


def read_seed(runs_dir: Path, name: str, k: int, dataset: str) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, dict[str, int]]]:
    """One seed's arms: (figures per arm, each question's scores or None when only the eval summaries are left,
    each arm's greedy change per question against SFT)."""
    try:
        recs = {arm: arm_records(runs_dir, name, arm, k, dataset) for arm in ARMS}
    except FileNotFoundError as err:
        print(f"{name}: {err}; reading the eval summaries instead (no paired avg@k test)", flush=True)
        read = {arm: summary_metrics(runs_dir, name, arm, k, dataset) for arm in ARMS}
        return {arm: m for arm, (m, _) in read.items()}, None, {arm: d for arm, (_, d) in read.items()}
    ids = [r["id"] for r in recs["sft"]["greedy"]]
    for arm, r in recs.items():
        for kind, rows in r.items():
            if [x["id"] for x in rows] != ids:
                raise SystemExit(f"{name}: {arm} ({kind}) scored other questions than SFT")
    sft = [x["correct_strict"] for x in recs["sft"]["greedy"]]
    deltas = {arm: {q: int(y["correct_strict"]) - int(x) for q, x, y in zip(ids, sft, r["greedy"]) if y["correct_strict"] != x}
              for arm, r in recs.items()}
    scores = {arm: {"ids": ids, "greedy": [int(x["correct_strict"]) for x in r["greedy"]],
                    "avg_k": [round(v, 4) for v in question_scores(r["sampled"], "strict")]} for arm, r in recs.items()}
    return {arm: arm_summary(r) for arm, r in recs.items()}, scores, deltas


def analyze(args: argparse.Namespace, base_name: str) -> dict[str, Any]:
    """Every seed's figures, and the comparisons per seed and pooled. The avg@k tests are paired per question and
    need the per-question eval files; a seed left with its eval summaries only gives avg@k point differences and
    the greedy flips (from the summaries' question ids)."""
    runs_dir = Path(args.runs_dir)
    per_seed, scores, deltas, missing = {}, {}, {}, {}
    for seed in args.seeds:
        name = f"{base_name}-s{seed}"
        try:
            arms, seed_scores, deltas[seed] = read_seed(runs_dir, name, args.k, args.dataset)
        except FileNotFoundError as err:  # reported, and the seeds that finished are still read
            print(f"seed {seed} left out: {err}", flush=True)
            missing[seed] = str(err)
            continue
        markers = {arm: runs_dir / f"{name}-{arm}" / "stages" for arm in ARMS if arm != "sft"}
        comparisons = {}
        for a, b in COMPARISONS:
            diff = {"difference": arms[b]["avg_k_strict"] - arms[a]["avg_k_strict"]}
            if seed_scores is not None:
                diff = paired_difference(seed_scores[a]["avg_k"], seed_scores[b]["avg_k"])
            comparisons[f"{b} - {a}"] = {"avg_k": diff, "greedy": greedy_flips(deltas[seed][a], deltas[seed][b])}
        per_seed[seed] = {
            "arms": arms, "paired": seed_scores is not None,
            "pairs": {arm: json.loads((m / "build-preferences.json").read_text()).get("pairs") for arm, m in markers.items()},
            "dpo_steps": {arm: json.loads((m / "train-rl.json").read_text()).get("steps") for arm, m in markers.items()},
            "comparisons": comparisons,
            "regime_w_auroc": regime_w_evidence(runs_dir / f"{name}-rollouts_b" / "data" / "rl_rollouts.jsonl",
                                                args.config, [*args.set, f"seed={seed}"]),
        }
        if seed_scores is not None:
            scores[seed] = seed_scores
    seeds = list(per_seed)
    if not seeds:
        raise SystemExit("no seed finished: nothing to analyze")
    pooled = {}
    for a, b in COMPARISONS:
        # each question's greedy change (+1 wrong -> right, -1 right -> wrong) summed over the seeds
        net = defaultdict(int)
        for s in seeds:
            for q in {*deltas[s][a], *deltas[s][b]}:
                net[q] += deltas[s][b].get(q, 0) - deltas[s][a].get(q, 0)
        better, worse = sum(v > 0 for v in net.values()), sum(v < 0 for v in net.values())
        key = f"{b} - {a}"
        pooled[key] = {
            # the registered test: paired over questions, every seed's per-question files needed
            "avg_k": paired_difference(seed_mean(scores, a), seed_mean(scores, b)) if len(scores) == len(seeds) else None,
            "avg_k_mean_of_seeds": sum(per_seed[s]["comparisons"][key]["avg_k"]["difference"] for s in seeds) / len(seeds),
            "greedy_per_question": {"better": better, "worse": worse, "p_sign_test": mcnemar_exact(better, worse)}}
    pooled_arms = {arm: {"avg_k_strict": sum(per_seed[s]["arms"][arm]["avg_k_strict"] for s in seeds) / len(seeds),
                         "greedy_strict": sum(per_seed[s]["arms"][arm]["greedy_strict"] for s in seeds) / len(seeds)}
                   for arm in ARMS}
    return {"per_seed": per_seed, "missing_seeds": missing,
            "pooled": {"seeds": seeds, "paired_seeds": list(scores), "arms": pooled_arms, "comparisons": pooled},
            "question_scores": scores}


def seed_mean(scores: dict[int, Any], arm: str) -> list[float]:
    """Each question's avg@k for ``arm``, averaged over the seeds."""
    per_seed = [scores[s][arm]["avg_k"] for s in scores]
    return [sum(col) / len(per_seed) for col in zip(*per_seed)]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def auc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def diff_cells(d: dict[str, Any] | None, mean_of_seeds: float | None = None) -> str:
    """A paired difference's cells (difference [CI] | p | detectable), or the point difference alone."""
    if d is None:
        return f"not computed (mean of the seeds' differences {pct(mean_of_seeds or 0.0)}) | - | -"
    if "ci95" not in d:
        return f"{pct(d['difference'])} (unpaired: per-question files lost) | - | -"
    return f"{pct(d['difference'])} [{pct(d['ci95'][0])}, {pct(d['ci95'][1])}] | {d['p_value']:.3g} | {pct(d['detectable_80'])}"


def tables(result: dict[str, Any]) -> str:
    out = ["| seed | arm | avg@k strict % [95% CI] | maj@k % | pass@k % | greedy strict % [95% CI] | pairs | DPO steps |",
           "|---|---|---|---|---|---|---|---|"]
    for seed, res in result["per_seed"].items():
        for arm, m in res["arms"].items():
            out.append(f"| {seed} | {ARMS[arm]} | {pct(m['avg_k_strict'])} [{pct(m['avg_k_strict_ci95'][0])}, "
                       f"{pct(m['avg_k_strict_ci95'][1])}] | {pct(m['maj_k_strict'])} | {pct(m['pass_k_strict'])} | "
                       f"{pct(m['greedy_strict'])} [{pct(m['greedy_strict_ci95'][0])}, {pct(m['greedy_strict_ci95'][1])}] | "
                       f"{res['pairs'].get(arm) or '-'} | {res['dpo_steps'].get(arm) or '-'} |")
    out += ["", ("| comparison (b - a) | seed | avg@k difference, points [95% CI] | p | detectable (80% power) | "
                 "greedy flips w->r / r->w | McNemar p |"), "|---|---|---|---|---|---|---|"]
    for a, b in COMPARISONS:
        key = f"{b} - {a}"
        for seed, res in result["per_seed"].items():
            c = res["comparisons"][key]
            out.append(f"| {ARMS[b]} - {ARMS[a]} | {seed} | {diff_cells(c['avg_k'])} | "
                       f"{c['greedy']['wrong_to_right']} / {c['greedy']['right_to_wrong']} | {c['greedy']['p_mcnemar']:.3g} |")
        c = result["pooled"]["comparisons"][key]
        g = c["greedy_per_question"]
        out.append(f"| **{ARMS[b]} - {ARMS[a]}** | **pooled** | {diff_cells(c['avg_k'], c['avg_k_mean_of_seeds'])} | "
                   f"{g['better']} / {g['worse']} questions | {g['p_sign_test']:.3g} |")
    out += ["", "| seed | arms | consensus correct | AUROC majority (s_end) | AUROC s_wm | s_wm - majority [95% CI], p (DeLong) |",
            "|---|---|---|---|---|---|"]
    for seed, res in result["per_seed"].items():
        for fam, v in (res["regime_w_auroc"] or {}).items():
            # absent in analyses made before it was added
            test = auroc_difference_cell(v.get("s_wm_minus_majority"), missing="-")
            out.append(f"| {seed} | {fam} | {v['consensus_correct']} / {v['questions']} | {auc(v['auroc_majority'])} | "
                       f"{auc(v['auroc_s_wm'])} | {test} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--seeds", default="1234,1235,1236", help="comma-separated; one SFT adapter per seed")
    parser.add_argument("--k", type=int, default=16, help="sampled answers per question (avg@k, the primary metric)")
    parser.add_argument("--dataset", default="gsm8k_test", help="the reporting split (scored once per arm)")
    parser.add_argument("--jobs", type=int, default=4, help="recipes of one seed run at once")
    parser.add_argument("--gpus", default=os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
                        help="comma-separated GPU indices; seed i runs on gpus[i %% n] ('' on a machine without one)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run (data paths, limits)")
    parser.add_argument("--analyze-only", action="store_true", help="read finished run folders; run nothing")
    parser.add_argument("--out", default="regime_w_comparison.json")
    args = parser.parse_args()
    if args.k < 2:
        parser.error("--k: at least 2 (avg@k over sampled answers)")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: integers separated by commas, not {args.seeds!r}")
    from looper.config import ConfigError, load_config

    try:
        base_name = load_config(args.config, args.set).name
    except ConfigError as err:
        parser.error(str(err))
    if args.analyze_only and not Path(args.runs_dir).is_dir():
        parser.error(f"--runs-dir {args.runs_dir}: no such folder (--analyze-only reads finished run folders)")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    walls = {} if args.analyze_only else run_seeds(args, base_name)
    result = {"config": args.config, "set": args.set, "seeds": args.seeds, "k": args.k, "dataset": args.dataset,
              "started": started, "seed_wall_s": walls, **analyze(args, base_name)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(tables(result))
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
