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
paired differences (``looper.stats.paired_difference``: mean, 95% CI, p, the difference detectable at 80% power; the
four pooled secondaries also Holm-adjusted, ``looper.stats.holm``), greedy flips with exact McNemar p, and Regime W's
own evidence on each seed's rollouts (AUROC of s_wm and of plain majority agreement for a correct consensus, per arm
family, and their paired difference by DeLong's test). A run that stopped part-way is analysed as far as it got (the
comparisons it cannot make are named). ``--from-analysis FILE`` takes the seeds an earlier analysis has in full from
that file and runs / reads only the others, so seeds run in different sessions pool as registered. Output: one JSON
file with every figure and each question's scores, and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import gzip
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
from pooled_flips import flips

from looper.eval.report import dataset_metrics, question_scores
from looper.files import read_jsonl
from looper.regime_w.report import auroc_difference_cell
from looper.stats import holm, mcnemar_exact, paired_difference

ARMS = {"sft": "SFT", "w_regime_w": "Regime W", "w_correct": "correctness only", "w_label_free": "label-free"}
# The pre-registered comparisons, (a, b): b minus a. The first is the primary one.
COMPARISONS = [
    ("w_correct", "w_regime_w"),
    ("sft", "w_regime_w"),
    ("sft", "w_correct"),
    ("sft", "w_label_free"),
    ("w_correct", "w_label_free"),
]
MODEL = {"sft": "sft"}  # the model each arm's eval scores (the RL arms: rl)
# The base model is no arm: its greedy eval would only hold up the shared SFT recipe, which every seed's rollouts wait
# for. Before the run's own --set, so a user's eval.models still wins.
BASE_SETS = ["eval.models=[sft,rl]"]


def recipes(k: int) -> list[str]:
    """Every recipe one seed runs, each after the one it builds on."""
    return [
        "sft",
        "rollouts_b",
        f"sft@k{k}",
        "w_regime_w",
        "w_correct",
        "w_label_free",
        *(f"w_{a}@k{k}" for a in ("regime_w", "correct", "label_free")),
    ]


def run_seeds(args: argparse.Namespace, base_name: str) -> dict[int, float]:
    """Run every seed's recipes (each seed its own ``rl_recipes.py`` process, on GPU ``gpus[i % len(gpus)]``);
    returns each seed's wall time in seconds. A seed that fails is reported and the others go on."""
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    gpus = [g for g in args.gpus.split(",") if g]
    procs = {}
    for i, seed in enumerate(args.seeds):
        name = f"{base_name}-s{seed}"
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("rl_recipes.py")),
            args.config,
            "--runs-dir",
            str(runs_dir),
            "--out",
            str(runs_dir / f"{name}.recipes.json"),
            "--jobs",
            str(args.jobs),
            "--datasets",
            args.dataset,
            "--recipes",
            ",".join(recipes(args.k)),
            "--set",
            *BASE_SETS,
            *args.set,
            f"seed={seed}",
            f"name={name}",
        ]
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


def read_records(path: Path) -> list[dict[str, Any]] | None:
    """A per-question eval file's records by question id, from ``path`` or its gzipped copy (``path.gz``, as kept
    in docs/bench with the generated texts removed); None when neither is there."""
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and gz.exists():
        with gzip.open(gz, "rt", encoding="utf-8") as f:
            return sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["id"])
    # looper's reader splits on newlines only: a generated text may hold U+2028 and other characters that
    # str.splitlines() also takes for line ends
    return sorted(read_jsonl(path), key=lambda r: r["id"]) if path.exists() else None


def read_summary(path: Path, model: str, dataset: str) -> dict[str, Any] | None:
    """An eval summary's metrics for one model and dataset, and the summary itself (None when it is not there)."""
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return {"metrics": summary["metrics"][model][dataset], "summary": summary}


def eval_results(runs_dir: Path, name: str, arm: str, k: int, dataset: str) -> dict[str, dict[str, Any] | None]:
    """An arm's two evals, ``greedy`` (one answer) and ``sampled`` (k answers): each ``{"records": per-question
    records or None, "metrics": the eval stage's metrics}``, read from the per-question file where it is there and
    from the eval summary otherwise; None for an eval with neither (the run did not get that far)."""
    model = MODEL.get(arm, "rl")
    out: dict[str, dict[str, Any] | None] = {}
    for kind, folder in (("greedy", f"{name}-{arm}"), ("sampled", f"{name}-{arm}@k{k}")):
        records = read_records(runs_dir / folder / "eval" / f"{model}__{dataset}.jsonl")
        if records is not None:
            out[kind] = {"records": records, "metrics": dataset_metrics(records)}
        else:
            found = read_summary(runs_dir / folder / "eval" / "summary.json", model, dataset)
            out[kind] = found and {"records": None, **found}
    return out


def arm_figures(evals: dict[str, dict[str, Any] | None], k: int) -> dict[str, Any]:
    """An arm's figures from the eval stage's metrics (``looper.eval.report.dataset_metrics``) of its greedy and its
    k-sample eval, None for an eval that is missing. Sampled truncation is counted over all k samples where the
    per-question file is there, else it is the summary's (the first sample of each question)."""
    figures: dict[str, Any] = {"k": k}
    if evals["greedy"] is not None:
        g = evals["greedy"]["metrics"]
        figures.update(
            n=g["n"],
            greedy_strict=g["strict"]["accuracy"],
            greedy_strict_ci95=g["strict"]["ci95"],
            greedy_truncated=g["truncation_rate"],
        )
    if evals["sampled"] is not None:
        m, records = evals["sampled"]["metrics"], evals["sampled"]["records"]
        truncated = m["truncation_rate"]
        if records is not None:
            per_question = 1 + len(records[0].get("samples") or [])
            truncated = sum(s["truncated"] for r in records for s in [r, *(r.get("samples") or [])]) / (
                len(records) * per_question
            )
        figures.update(
            n=m["n"],
            avg_k_strict=m["strict"][f"avg@{k}"]["accuracy"],
            avg_k_strict_ci95=m["strict"][f"avg@{k}"]["ci95"],
            maj_k_strict=m["strict"][f"maj@{k}"],
            pass_k_strict=m["strict"][f"pass@{k}"],
            sampled_truncated=truncated,
        )
    return figures


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


def greedy_delta(evals: dict[str, Any], sft: dict[str, Any], arm: str, dataset: str) -> dict[str, int] | None:
    """Each question's greedy change against SFT (+1 wrong -> right, -1 right -> wrong), from the per-question
    files or else from the arm's eval summary (its SFT -> RL flips); None when neither can give it."""
    if arm == "sft":
        return {} if sft["greedy"] is not None else None
    mine, theirs = evals["greedy"], sft["greedy"]
    if mine is None:
        return None
    if mine["records"] is not None and theirs is not None and theirs["records"] is not None:
        if [r["id"] for r in mine["records"]] != [r["id"] for r in theirs["records"]]:
            raise SystemExit(f"{arm} scored other questions than SFT")
        return {
            r["id"]: int(r["correct_strict"]) - int(s["correct_strict"])
            for r, s in zip(mine["records"], theirs["records"])
            if r["correct_strict"] != s["correct_strict"]
        }
    if "summary" not in mine:
        return None
    up, down = flips(mine["summary"], "sft", "rl", dataset, "strict")
    return {**{q: 1 for q in up}, **{q: -1 for q in down}}


def read_seed(runs_dir: Path, name: str, k: int, dataset: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One seed's arms, as far as its run got: (figures per arm that has any eval, each question's scores per arm
    (``greedy`` and ``avg_k`` lists where the per-question files are there), each arm's greedy change per question
    against SFT or None). Raises FileNotFoundError when not even SFT's greedy eval is there."""
    evals = {arm: eval_results(runs_dir, name, arm, k, dataset) for arm in ARMS}
    if evals["sft"]["greedy"] is None:
        raise FileNotFoundError(f"{runs_dir / f'{name}-sft'}: no eval (the seed's run failed or has not finished)")
    ids = [r["id"] for r in evals["sft"]["greedy"]["records"] or []]
    scores, deltas = {}, {}
    for arm, e in evals.items():
        deltas[arm] = greedy_delta(e, evals["sft"], arm, dataset)
        row: dict[str, Any] = {}
        if e["greedy"] is not None and e["greedy"]["records"] is not None:
            row["greedy"] = [int(x["correct_strict"]) for x in e["greedy"]["records"]]
        if e["sampled"] is not None and e["sampled"]["records"] is not None:
            if ids and [x["id"] for x in e["sampled"]["records"]] != ids:
                raise SystemExit(f"{name}: {arm} (sampled) scored other questions than SFT")
            row["avg_k"] = [round(v, 4) for v in question_scores(e["sampled"]["records"], "strict")]
        if row:
            scores[arm] = {"ids": ids, **row}
    figures = {
        arm: arm_figures(e, k) for arm, e in evals.items() if e["greedy"] is not None or e["sampled"] is not None
    }
    return figures, scores, deltas


def marker_field(stages: Path, stage: str, key: str) -> Any:
    """A field of a stage marker (None when the stage did not finish)."""
    path = stages / f"{stage}.json"
    return json.loads(path.read_text()).get(key) if path.exists() else None


def compare(arms: dict[str, Any], scores: dict[str, Any], deltas: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """b - a in one seed: avg@k paired over questions where both per-question files are there, else the difference
    of the two means, else None; greedy flips where both arms' changes against SFT are known, else None."""
    avg_k = None
    if "avg_k" in scores.get(a, {}) and "avg_k" in scores.get(b, {}):
        avg_k = paired_difference(scores[a]["avg_k"], scores[b]["avg_k"])
    elif "avg_k_strict" in arms.get(a, {}) and "avg_k_strict" in arms.get(b, {}):
        avg_k = {"difference": arms[b]["avg_k_strict"] - arms[a]["avg_k_strict"]}
    greedy = greedy_flips(deltas[a], deltas[b]) if deltas[a] is not None and deltas[b] is not None else None
    return {"avg_k": avg_k, "greedy": greedy}


def earlier_seeds(
    paths: list[str], seeds: list[int]
) -> dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Seeds taken from earlier analyses (this script's --out files) instead of the runs folder: each seed of
    ``seeds`` that such a file analysed with every arm's per-question scores, as (its figures, its per-question
    scores, each arm's greedy change per question against SFT). The registered design is per seed, so a seed run in
    another session pools with the others as if run beside them; the first file that has a seed gives it.

    Raises:
        ValueError: a file is not JSON, or not an analysis this script wrote.
    """
    found: dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
    for path in paths:
        try:
            analysis = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"--from-analysis {path}: not valid JSON ({err})") from None
        if (
            not isinstance(analysis, dict)
            or not isinstance(analysis.get("per_seed"), dict)
            or not isinstance(analysis.get("question_scores"), dict)
        ):
            raise ValueError(f"--from-analysis {path}: not an analysis of this script (no per_seed / question_scores)")
        for key, res in analysis["per_seed"].items():
            seed, qs = int(key), analysis["question_scores"].get(key)
            complete = bool(qs) and all(arm in qs and {"avg_k", "greedy"} <= set(qs[arm]) for arm in ARMS)
            if seed not in seeds or seed in found or not complete:
                continue
            sft = qs["sft"]["greedy"]
            deltas = {arm: {q: g - s for q, g, s in zip(v["ids"], v["greedy"], sft) if g != s} for arm, v in qs.items()}
            found[seed] = ({**res, "paired": True, "from": str(path)}, qs, deltas)
    return found


def analyze(args: argparse.Namespace, base_name: str) -> dict[str, Any]:
    """Every seed's figures, and the comparisons per seed and pooled, as far as each seed's run got. The avg@k
    tests are paired per question and need both arms' per-question eval files; without them a comparison gives
    the difference of the two means (from the eval summaries), and without an arm's eval nothing. The pooled
    avg@k test (the registered H1 and secondaries) needs every seed's per-question files of both arms."""
    runs_dir = Path(args.runs_dir)
    per_seed, scores, deltas, missing = {}, {}, {}, {}
    earlier = earlier_seeds(getattr(args, "from_analysis", None) or [], args.seeds)
    for seed in args.seeds:
        name = f"{base_name}-s{seed}"
        if seed in earlier:
            per_seed[seed], scores[seed], deltas[seed] = earlier[seed]
            continue
        try:
            arms, scores[seed], deltas[seed] = read_seed(runs_dir, name, args.k, args.dataset)
        except FileNotFoundError as err:  # reported, and the seeds that finished are still read
            print(f"seed {seed} left out: {err}", flush=True)
            missing[seed] = str(err)
            continue
        absent = [
            f"{ARMS[arm]} ({kind})"
            for arm in ARMS
            for kind, key in (("greedy", "greedy_strict"), (f"@k{args.k}", "avg_k_strict"))
            if key not in arms.get(arm, {})
        ]
        if absent:
            print(f"{name}: no eval of {', '.join(absent)}; the comparisons that need them are left out", flush=True)
        stages = {arm: runs_dir / f"{name}-{arm}" / "stages" for arm in ARMS if arm != "sft"}
        per_seed[seed] = {
            "arms": arms,
            "paired": all("avg_k" in scores[seed].get(arm, {}) for arm in ARMS),
            "pairs": {arm: marker_field(m, "build-preferences", "pairs") for arm, m in stages.items()},
            "dpo_steps": {arm: marker_field(m, "train-rl", "steps") for arm, m in stages.items()},
            "comparisons": {f"{b} - {a}": compare(arms, scores[seed], deltas[seed], a, b) for a, b in COMPARISONS},
            "regime_w_auroc": regime_w_evidence(
                runs_dir / f"{name}-rollouts_b" / "data" / "rl_rollouts.jsonl", args.config, [*args.set, f"seed={seed}"]
            ),
        }
    seeds = list(per_seed)
    if not seeds:
        raise SystemExit("no seed finished: nothing to analyze")
    pooled = {}
    for a, b in COMPARISONS:
        key = f"{b} - {a}"
        per = [per_seed[s]["comparisons"][key] for s in seeds]
        greedy = None
        if all(c["greedy"] is not None for c in per):
            # each question's greedy change (+1 wrong -> right, -1 right -> wrong) summed over the seeds
            net = defaultdict(int)
            for s in seeds:
                for q in {*deltas[s][a], *deltas[s][b]}:
                    net[q] += deltas[s][b].get(q, 0) - deltas[s][a].get(q, 0)
            better, worse = sum(v > 0 for v in net.values()), sum(v < 0 for v in net.values())
            greedy = {"better": better, "worse": worse, "p_sign_test": mcnemar_exact(better, worse)}
        paired = all("avg_k" in scores[s].get(arm, {}) for s in seeds for arm in (a, b))
        differences = [c["avg_k"]["difference"] for c in per if c["avg_k"] is not None]
        pooled[key] = {
            # the registered test: paired over questions, every seed's per-question files of both arms needed
            "avg_k": paired_difference(seed_mean(scores, seeds, a), seed_mean(scores, seeds, b)) if paired else None,
            "avg_k_mean_of_seeds": sum(differences) / len(differences) if len(differences) == len(seeds) else None,
            "greedy_per_question": greedy,
        }
    secondaries = [pooled[f"{b} - {a}"]["avg_k"] for a, b in COMPARISONS[1:]]
    if all(secondaries):  # the registered family: Holm over all four pooled secondaries, or none
        for test, p in zip(secondaries, holm([t["p_value"] for t in secondaries])):
            test["p_holm"] = p
    pooled_arms = {
        arm: {
            key: sum(per_seed[s]["arms"][arm][key] for s in seeds) / len(seeds)
            for key in ("avg_k_strict", "greedy_strict")
            if all(key in per_seed[s]["arms"].get(arm, {}) for s in seeds)
        }
        for arm in ARMS
    }
    return {
        "per_seed": per_seed,
        "missing_seeds": missing,
        "pooled": {
            "seeds": seeds,
            "paired_seeds": [s for s in seeds if per_seed[s]["paired"]],
            "arms": pooled_arms,
            "comparisons": pooled,
        },
        "question_scores": {s: scores[s] for s in seeds},
    }


def seed_mean(scores: dict[int, Any], seeds: list[int], arm: str) -> list[float]:
    """Each question's avg@k for ``arm``, averaged over the seeds."""
    per_seed = [scores[s][arm]["avg_k"] for s in seeds]
    return [sum(col) / len(per_seed) for col in zip(*per_seed)]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def auc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def diff_cells(d: dict[str, Any] | None, mean_of_seeds: float | None = None) -> str:
    """A paired difference's cells (difference [CI] | p | detectable), the point difference alone, or why neither."""
    if d is None and mean_of_seeds is not None:
        return f"not computed (mean of the seeds' differences {pct(mean_of_seeds)}) | - | -"
    if d is None:
        return "not computed (an arm's eval is missing) | - | -"
    if "ci95" not in d:
        return f"{pct(d['difference'])} (unpaired: per-question files lost) | - | -"
    holm_p = f" (Holm {d['p_holm']:.3g})" if "p_holm" in d else ""
    return (
        f"{pct(d['difference'])} [{pct(d['ci95'][0])}, {pct(d['ci95'][1])}] | {d['p_value']:.3g}{holm_p} | "
        f"{pct(d['detectable_80'])}"
    )


def cell(m: dict[str, Any], key: str) -> str:
    """A percentage with its 95% interval (``key`` and ``key_ci95``), or '-' for an eval that is missing."""
    if key not in m:
        return "-"
    ci = m.get(f"{key}_ci95")
    return pct(m[key]) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def tables(result: dict[str, Any]) -> str:
    out = [
        "| seed | arm | avg@k strict % [95% CI] | maj@k % | pass@k % | greedy strict % [95% CI] | pairs | DPO steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, res in result["per_seed"].items():
        for arm, m in res["arms"].items():
            out.append(
                f"| {seed} | {ARMS[arm]} | {cell(m, 'avg_k_strict')} | {cell(m, 'maj_k_strict')} | "
                f"{cell(m, 'pass_k_strict')} | {cell(m, 'greedy_strict')} | "
                f"{res['pairs'].get(arm) or '-'} | {res['dpo_steps'].get(arm) or '-'} |"
            )
    out += [
        "",
        (
            "| comparison (b - a) | seed | avg@k difference, points [95% CI] | p | detectable (80% power) | "
            "greedy flips w->r / r->w | McNemar p |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for a, b in COMPARISONS:
        key = f"{b} - {a}"
        for seed, res in result["per_seed"].items():
            c, g = res["comparisons"][key], res["comparisons"][key]["greedy"]
            flips_cells = f"{g['wrong_to_right']} / {g['right_to_wrong']} | {g['p_mcnemar']:.3g}" if g else "- | -"
            out.append(f"| {ARMS[b]} - {ARMS[a]} | {seed} | {diff_cells(c['avg_k'])} | {flips_cells} |")
        c = result["pooled"]["comparisons"][key]
        g = c["greedy_per_question"]
        flips_cells = f"{g['better']} / {g['worse']} questions | {g['p_sign_test']:.3g}" if g else "- | -"
        out.append(
            f"| **{ARMS[b]} - {ARMS[a]}** | **pooled** | {diff_cells(c['avg_k'], c['avg_k_mean_of_seeds'])} | "
            f"{flips_cells} |"
        )
    out += [
        "",
        "| seed | arms | consensus correct | AUROC majority (s_end) | AUROC s_wm | s_wm - majority [95% CI], p (DeLong) |",
        "|---|---|---|---|---|---|",
    ]
    for seed, res in result["per_seed"].items():
        for fam, v in (res["regime_w_auroc"] or {}).items():
            # absent in analyses made before it was added
            test = auroc_difference_cell(v.get("s_wm_minus_majority"), missing="-")
            out.append(
                f"| {seed} | {fam} | {v['consensus_correct']} / {v['questions']} | {auc(v['auroc_majority'])} | "
                f"{auc(v['auroc_s_wm'])} | {test} |"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--seeds", default="1234,1235,1236", help="comma-separated; one SFT adapter per seed")
    parser.add_argument("--k", type=int, default=16, help="sampled answers per question (avg@k, the primary metric)")
    parser.add_argument("--dataset", default="gsm8k_test", help="the reporting split (scored once per arm)")
    parser.add_argument("--jobs", type=int, default=4, help="recipes of one seed run at once")
    parser.add_argument(
        "--gpus",
        default=os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
        help="comma-separated GPU indices; seed i runs on gpus[i %% n] ('' on a machine without one)",
    )
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run (data paths, limits)")
    parser.add_argument("--analyze-only", action="store_true", help="read finished run folders; run nothing")
    parser.add_argument(
        "--from-analysis",
        nargs="*",
        default=[],
        metavar="FILE",
        help="earlier --out files: a seed they analysed with every arm's per-question scores is taken "
        "from them, not from --runs-dir (seeds run in different sessions, pooled as registered)",
    )
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
    for path in args.from_analysis:
        if not Path(path).is_file():
            parser.error(f"--from-analysis {path}: no such file")
    if not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out {args.out}: its folder does not exist")  # found now, not after hours of runs
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # the seeds an earlier analysis gives are not run again
    try:
        to_run = [s for s in args.seeds if s not in earlier_seeds(args.from_analysis, args.seeds)]
    except ValueError as err:
        parser.error(str(err))
    walls = (
        {}
        if args.analyze_only or not to_run
        else run_seeds(argparse.Namespace(**{**vars(args), "seeds": to_run}), base_name)
    )
    result = {
        "config": args.config,
        "set": args.set,
        "seeds": args.seeds,
        "k": args.k,
        "dataset": args.dataset,
        "started": started,
        "seed_wall_s": walls,
        **analyze(args, base_name),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(tables(result))
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
