"""RL recipes compared on one SFT adapter: which one makes the model better than SFT (issue 13)?

    python bench/rl_recipes.py configs/smollm2-135m-gpu.yaml --runs-dir runs --out recipes.json \
        --set data.source=local data.path=<gsm8k>  [--recipes a_dpo,f_label_free,...]

Each recipe is a run folder ``<runs-dir>/<config name>-<recipe>`` made by ``looper pipeline`` with the
recipe's overrides, after the shared work it reuses has been copied in from the recipe it builds on
(the data splits, the SFT adapter and the base/SFT eval files from the first recipe; rollouts, pairs
or RL rounds where a recipe says so), so every row compares against the same SFT adapter on the same
questions and shared stages run once. Eval covers the dev split (where a recipe is chosen) and the
test split (scored once per recipe and reported whatever it says). A recipe already complete is
skipped by the pipeline's own stage markers, so the script can be rerun after a kill. ``--jobs N`` runs
up to N recipes at once once what they build on is done (a 135M model leaves most of a GPU idle);
list ``sft`` first to train and score the shared adapter alone, so that the recipes start right after it,
and ``sft_samples`` to sample the SFT model 16 times per question of the choosing split (pass@16, maj@16).
``<recipe>@k<N>`` (e.g. ``w_correct@k16``, ``sft@k16``) scores a finished recipe's model again with N sampled
answers per question of the reporting split (avg@N, maj@N, pass@N), in a folder of its own that hard-links the
recipe's adapters. The Regime W comparison (``bench/regime_w_comparison.py``) runs ``rollouts_b`` once and the
``w_*`` arms on those same rollouts.

Output: a JSON file and a markdown table per split: accuracy (strict, flexible) with 95% intervals,
exact McNemar p against SFT, flips, truncation, mean tokens, pairs / examples, wall time of the
recipe's own stages.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import link_outputs

# Every recipe starts from these settings (the GPU config's recipe before this comparison), whatever the config's
# own defaults are now, then applies its overrides.
RESET = [
    "rollouts.samples_per_arm=1",
    "preferences.require_correct_chosen=false",
    "preferences.label_free=false",
    "rl.algorithm=dpo",
    "rl.rounds=1",
]
# name -> (what it is, the recipe it builds on, what it reuses from that one, its overrides). A recipe that builds on
# none reuses the shared SFT adapter (and base / SFT eval files): the first recipe of the list trains it.
B_CORRECT = [
    "rollouts.samples_per_arm=4",
    "preferences.require_correct_chosen=true",
    "preferences.max_pairs_per_question=2",
]
RPO = ["rl.dpo.loss_type=[sigmoid,sft]", "rl.dpo.loss_weights=[1.0,1.0]"]  # DPO + NLL on the chosen (Pang et al. 2024)
RPO_HI = [*B_CORRECT, *RPO, "rl.dpo.learning_rate=2.0e-5", "rl.dpo.num_train_epochs=2"]
H_GRPO = [
    "rl.algorithm=grpo",
    "rl.mix_arms=false",
    "rl.num_questions=1200",
    "rl.grpo.num_generations=16",
    "rl.grpo.temperature=0.7",
    "rl.grpo.generation_batch_size=256",
    "rl.grpo.per_device_train_batch_size=64",
]
CORRECT_ONLY = [
    "regime_w.consensus_weight=0",
    "regime_w.missing_penalty=0",
    "regime_w.truncation_penalty=0",
    "regime_w.length_penalty=0",
]  # the Regime W reward reduced to 1 for a correct answer, else 0
RECIPES: dict[str, tuple[str, str | None, str | None, list[str]]] = {
    "a_dpo": (
        "DPO, best vs worst of 1 sample per arm (the GPU config's recipe before this comparison)",
        None,
        None,
        [],
    ),
    "f_label_free": (
        "(a) without gold: pairs ranked by the s_wm-weighted consensus",
        "a_dpo",
        "rollouts",
        ["preferences.label_free=true"],
    ),
    "b_dpo_correct": ("DPO, correct chosen vs wrong rejected, 4 samples per arm", None, None, B_CORRECT),
    "e_rft": (
        "rejection-sampling fine-tuning on (b)'s correct trajectories",
        "b_dpo_correct",
        "rollouts",
        ["rollouts.samples_per_arm=4", "rl.algorithm=rft"],
    ),
    "c_dpo_rounds": (
        "(b) for 2 rounds, round 2 sampled from round 1's policy",
        "b_dpo_correct",
        "rl",
        [*B_CORRECT, "rl.rounds=2"],
    ),
    "d_grpo": (
        "GRPO, Regime W reward, 600 questions",
        None,
        None,
        [
            "rl.algorithm=grpo",
            "rl.num_questions=600",
            "rl.grpo.generation_batch_size=256",
            "rl.grpo.per_device_train_batch_size=64",
            "rl.grpo.learning_rate=2.0e-5",
        ],
    ),
    "d_grpo_correct": (
        "(d) with correctness alone as the reward, lr 1e-5",
        None,
        None,
        [
            "rl.algorithm=grpo",
            "rl.num_questions=600",
            "rl.grpo.generation_batch_size=256",
            "rl.grpo.per_device_train_batch_size=64",
            "rl.grpo.learning_rate=1.0e-5",
            *CORRECT_ONLY,
        ],
    ),
    "e_rft_strong": (
        "(e) at lr 1e-4 for 2 epochs",
        "b_dpo_correct",
        "rollouts",
        ["rollouts.samples_per_arm=4", "rl.algorithm=rft", "rl.rft.learning_rate=1.0e-4", "rl.rft.num_train_epochs=2"],
    ),
    "g_rpo": (
        "(b) with an NLL term on the chosen answer (DPO + SFT loss, RPO)",
        "b_dpo_correct",
        "rollouts",
        [*B_CORRECT, *RPO],
    ),
    "g_rpo_hi": ("(g) at lr 2e-5 for 2 epochs", "b_dpo_correct", "rollouts", RPO_HI),
    "g_rpo_hi_rounds": (
        "(g at lr 2e-5) for 2 rounds, round 2 sampled from round 1's policy",
        "g_rpo_hi",
        "rl",
        [*RPO_HI, "rl.rounds=2"],
    ),
    "h_grpo": (
        "GRPO as usually run: the SFT prompt only (no arms), 16 samples per question at T 0.7, correctness "
        "reward, lr 2e-5, 1,200 questions",
        None,
        None,
        [*H_GRPO, *CORRECT_ONLY, "rl.grpo.learning_rate=2.0e-5"],
    ),
    "h_grpo_hi": ("(h) at lr 5e-5", None, None, [*H_GRPO, *CORRECT_ONLY, "rl.grpo.learning_rate=5.0e-5"]),
    "h_grpo_w": (
        "(h) with the whole Regime W reward (one arm, so no s_cf)",
        None,
        None,
        [*H_GRPO, "rl.grpo.learning_rate=2.0e-5"],
    ),
    # The Regime W comparison (docs/results.md, "Regime W against correctness alone"): three arms on one set of
    # rollouts (rollouts_b: (b)'s, 4 samples per arm from the SFT policy), the same DPO, pairs made three ways.
    "rollouts_b": (
        "(b)'s rollouts alone (4 samples per arm from the SFT policy), shared by the w_* arms",
        None,
        None,
        B_CORRECT,
    ),
    "w_regime_w": (
        "Regime W arm: (b) on the shared rollouts (correct chosen vs wrong rejected by Regime W reward)",
        "rollouts_b",
        "rollouts",
        B_CORRECT,
    ),
    "w_correct": (
        "correctness-only arm: the same rollouts, pairs ranked by gold correctness alone",
        "rollouts_b",
        "rollouts",
        [*B_CORRECT, "preferences.correctness_only=true"],
    ),
    "w_label_free": (
        "label-free arm: the same rollouts, pairs ranked by the s_wm-weighted consensus (no gold)",
        "rollouts_b",
        "rollouts",
        ["rollouts.samples_per_arm=4", "preferences.max_pairs_per_question=2", "preferences.label_free=true"],
    ),
    "w_random": (
        "random-reward control: the same rollouts, pairs ranked by seeded random rewards (no answer information)",
        "rollouts_b",
        "rollouts",
        ["rollouts.samples_per_arm=4", "preferences.max_pairs_per_question=2", "preferences.random_rewards=true"],
    ),
    # Not recipes: the shared SFT adapter and its eval alone (listed first, the recipes start as soon as it is done),
    # and the SFT model sampled 16 times per dev question (maj@16 / pass@16: how far sharpening could take it).
    "sft": ("the shared SFT adapter and its greedy eval", None, None, []),
    "sft_samples": (
        "the SFT model sampled 16 times per dev question at T 0.7 (pass@16, maj@16)",
        "sft",
        "sft",
        ["eval.samples=16", "eval.models=[sft]", "eval.datasets=[{choose}]"],
    ),  # {choose}: the split recipes are chosen on
}
# Looper commands a recipe runs (each with the recipe's config and overrides); any other recipe runs `looper pipeline`.
COMMANDS = {
    "sft": [["pipeline", "--to", "sft"], ["eval"]],
    "sft_samples": [["eval"]],
    "rollouts_b": [["pipeline", "--to", "collect-rollouts"]],
}
# What each level of reuse copies from the recipe built on (paths inside a run folder; globs allowed)
REUSE = {
    "sft": [
        "data/*_train.jsonl",
        "data/*_dev.jsonl",
        "data/*_test.jsonl",
        "data/prepare_data.json",
        "checkpoints/lora_sft",
        "checkpoints/sft",
        "stages/prepare-data.json",
        "stages/sft.json",
        "eval/base__*",
        "eval/sft__*",
        "logs/sft.jsonl",
    ],
    "rollouts": ["data/rl_rollouts.jsonl", "data/rl_rollouts.meta.json", "stages/collect-rollouts.json"],
    "rl": [
        "data/preferences.jsonl",
        "stages/build-preferences.json",
        "checkpoints/lora_rl",
        "stages/train-rl.json",
        "logs/train-rl.jsonl",
    ],
    "rounds": ["rounds"],  # rounds 2.. of a multi-round recipe: what a re-scoring of its last round needs
}
LEVELS = ("sft", "rollouts", "rl", "rounds")


def spec(recipe: str) -> tuple[str, str | None, str | None, list[str], list[list[str]]]:
    """(what it is, the recipe it builds on, what it reuses from it, its overrides, the looper commands it runs)
    of a recipe in RECIPES or of ``<recipe>@k<N>``: that recipe's model scored with N samples per question of the
    reporting split (``{report}``), in its own folder."""
    problem = unknown_reason(recipe)
    if problem:
        raise KeyError(problem)
    base, at, k = recipe.partition("@k")
    if at:
        what, _, _, overrides = RECIPES[base]
        model = "sft" if base in ("sft", "sft_samples") else "rl"
        return (
            f"{base}'s model, {k} sampled answers per question",
            base,
            "sft" if model == "sft" else "rounds",
            [*overrides, f"eval.samples={k}", f"eval.models=[{model}]", "eval.datasets=[{report}]"],
            [["eval"]],
        )
    what, parent, level, overrides = RECIPES[recipe]
    return what, parent, level, overrides, COMMANDS.get(recipe, [["pipeline"]])


def unknown_reason(recipe: str) -> str | None:
    """Why ``recipe`` names no recipe (None when it names one)."""
    base, at, k = recipe.partition("@k")
    if base not in RECIPES:
        return f"{recipe}: no recipe {base!r}"
    if at and not (k.isdigit() and int(k) >= 2):
        return f"{recipe}: <recipe>@k<N> needs N >= 2 sampled answers"
    return None


def copy_shared(src: Path, dst: Path, level: str) -> None:
    """Hard-link the outputs up to ``level`` of the run ``src`` into ``dst``."""
    link_outputs(src, dst, [pattern for name in LEVELS[: LEVELS.index(level) + 1] for pattern in REUSE[name]])


def source_of(recipe: str, first: str) -> tuple[str | None, str]:
    """The recipe whose outputs ``recipe`` starts from, and up to which level (the first recipe starts from nothing)."""
    _, parent, level, _, _ = spec(recipe)
    if parent is not None:
        return parent, level
    return (None, "sft") if recipe == first else (first, "sft")


def start_recipe(
    config: str,
    runs_dir: Path,
    base_name: str,
    recipe: str,
    first: str,
    sets: list[str],
    datasets: list[str],
    log: Path | None,
) -> tuple[subprocess.Popen, float]:
    """Copy in the shared work and start ``looper pipeline`` for the recipe (its output to ``log``, or to ours);
    the first of ``datasets`` (recipes are chosen on it) fills ``{choose}`` in the recipe's overrides, the last
    (reported) ``{report}``."""
    what, _, _, overrides, commands = spec(recipe)
    name = f"{base_name}-{recipe}"
    source, level = source_of(recipe, first)
    if source is not None:
        copy_shared(runs_dir / f"{base_name}-{source}", runs_dir / name, level)

    def fill(o: str) -> str:
        return o.replace("{choose}", datasets[0]).replace("{report}", datasets[-1])

    # the run folder's name after --set's (which may name the whole comparison, e.g. one seed's)
    args = [*sets, f"runs_dir={runs_dir}", f"name={name}", *RESET, *map(fill, overrides)]
    cmds = [[sys.executable, "-m", "looper.cli", command[0], config, *args, *command[1:]] for command in commands]
    cmd = cmds[0] if len(cmds) == 1 else ["bash", "-c", " && ".join(shlex.join(c) for c in cmds)]
    print(
        f"\n##### {recipe}: {what}\n" + "\n".join(" ".join(c) for c in cmds) + (f"\n(output: {log})" if log else ""),
        flush=True,
    )
    if log is None:
        return subprocess.Popen(cmd), time.perf_counter()
    with open(log, "w") as out:  # the child writes to its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT), time.perf_counter()


def finish_recipe(runs_dir: Path, base_name: str, recipe: str, first: str, rc: int, wall: float) -> dict[str, Any]:
    what, _, _, overrides, _ = spec(recipe)
    source, level = source_of(recipe, first)
    root = runs_dir / f"{base_name}-{recipe}"
    if rc != 0:  # e.g. a diverged training run: recorded, and the recipes that do not build on it still run
        print(f"##### {recipe} failed (exit status {rc}); see its output", flush=True)
        return {"recipe": recipe, "what": what, "failed": rc, "wall_s": round(wall, 1), "overrides": overrides}
    print(f"##### {recipe} done in {wall:.0f} s", flush=True)
    summary_path = root / "eval" / "summary.json"  # none for a recipe that stops before eval (rollouts_b)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"metrics": {}, "comparisons": {}}
    timings_path = root / "pipeline_timings.json"  # none for a recipe that runs eval alone
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    info = {
        "recipe": recipe,
        "what": what,
        "builds_on": source,
        "reuses": level,
        "overrides": overrides,
        "wall_s": round(wall, 1),
        "stage_s": timings,
        "summary": summary,
    }
    for stage, key in (("build-preferences", "pairs"), ("train-rl", "steps")):
        marker = root / "stages" / f"{stage}.json"
        if marker.exists():
            info[key] = json.loads(marker.read_text()).get(key)
            info.setdefault("pair_questions", json.loads(marker.read_text()).get("questions"))
    return info


def run_all(
    config: str,
    runs_dir: Path,
    base_name: str,
    recipes: list[str],
    sets: list[str],
    datasets: list[str],
    jobs: int,
    on_result: Any,
) -> list[dict[str, Any]]:
    """Run the recipes, up to ``jobs`` at once (each waits for the one it builds on); results in the given order.

    With jobs > 1 the recipes share the GPU, so their wall times are longer than alone (a 135M model leaves most of
    an H100/H200 idle; an 8B one does not: use 1 there). Each recipe's output then goes to ``<runs-dir>/<name>.log``.
    """
    first = recipes[0]
    pending, running, done = list(recipes), {}, {}
    while pending or running:
        for recipe in list(pending):
            source, _ = source_of(recipe, first)
            if source in done and done[source].get("failed") is not None:  # main() checked that it is listed first
                print(f"##### {recipe} skipped: it builds on {source}, which failed", flush=True)
                done[recipe] = {"recipe": recipe, "what": spec(recipe)[0], "failed": f"skipped ({source} failed)"}
                pending.remove(recipe)
            elif len(running) < jobs and (source is None or source in done):
                log = runs_dir / f"{base_name}-{recipe}.log" if jobs > 1 else None
                runs_dir.mkdir(parents=True, exist_ok=True)
                running[recipe] = start_recipe(config, runs_dir, base_name, recipe, first, sets, datasets, log)
                pending.remove(recipe)
        if not running:
            continue
        time.sleep(1)
        for recipe, (proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[recipe]
            done[recipe] = finish_recipe(
                runs_dir, base_name, recipe, first, proc.returncode, time.perf_counter() - started
            )
            on_result([done[r] for r in recipes if r in done])
    return [done[r] for r in recipes]


def accuracy_cell(m: dict[str, Any], metric: str, ci: bool = True) -> str:
    """One eval's accuracy in percent: avg@k where it sampled k answers per question (its ``accuracy`` is then the
    first answer's alone), else the one answer's; with the 95% interval unless ``ci`` is false."""
    k = m.get("samples", 1)
    acc = m[metric][f"avg@{k}"] if k > 1 else m[metric]
    return f"{100 * acc['accuracy']:.1f}" + (f" [{100 * acc['ci95'][0]:.1f}, {100 * acc['ci95'][1]:.1f}]" if ci else "")


def table(results: list[dict[str, Any]], dataset: str) -> str:
    head = [
        "recipe",
        "strict % [95% CI] (@kN: avg@N)",
        "flexible %",
        "p vs SFT (strict)",
        "flips w->r / r->w",
        "truncated %",
        "mean tokens",
        "pairs (questions)",
        "own stages s",
    ]
    rows = []
    sft_row = None
    for res in results:
        if res.get("failed") is not None:
            rows.append([res["recipe"], f"failed (exit {res['failed']})", *["-"] * (len(head) - 2)])
            continue
        metrics, comps = res["summary"]["metrics"], res["summary"]["comparisons"].get(dataset, [])
        if sft_row is None and "sft" in metrics and dataset in metrics["sft"]:
            m = metrics["sft"][dataset]
            sft_row = [
                "SFT (shared)",
                accuracy_cell(m, "strict"),
                accuracy_cell(m, "flexible", ci=False),
                "-",
                "-",
                f"{100 * m['truncation_rate']:.1f}",
                f"{m['mean_tokens']:.0f}",
                "-",
                "-",
            ]
        m = metrics.get("rl", {}).get(dataset)
        if m is None:
            continue
        c = next((c for c in comps if c["a"] == "sft" and c["b"] == "rl"), None)
        own = sum(v for k, v in res["stage_s"].items() if k not in ("prepare-data", "sft"))
        pairs = f"{res['pairs']} ({res.get('pair_questions')})" if res.get("pairs") else "-"
        rows.append(
            [
                res["recipe"],
                accuracy_cell(m, "strict"),
                accuracy_cell(m, "flexible", ci=False),
                f"{c['strict']['p_value']:.2g}" if c else "-",
                f"{len(c['strict']['wrong_to_right'])} / {len(c['strict']['right_to_wrong'])}" if c else "-",
                f"{100 * m['truncation_rate']:.1f}",
                f"{m['mean_tokens']:.0f}",
                pairs,
                f"{own:.0f}",
            ]
        )
    rows = ([sft_row] if sft_row else []) + rows
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument(
        "--recipes",
        default=",".join(RECIPES),
        help=f"comma-separated, in order; known: {', '.join(RECIPES)}, and <recipe>@k<N>",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], help="key=value overrides for every recipe (data paths, step limits)"
    )
    parser.add_argument(
        "--datasets", default="gsm8k_dev,gsm8k_test", help="eval datasets: the first chooses, the last reports"
    )
    parser.add_argument("--out", default="rl_recipes.json")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="recipes run at once once what they build on is done (the "
        "first recipe trains the shared SFT adapter alone); wall times then include the sharing",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from looper.config import ConfigError, load_config

    try:
        base_name = load_config(args.config, args.set).name
    except ConfigError as err:
        raise SystemExit(f"rl_recipes.py: {err}") from None
    runs_dir = Path(args.runs_dir)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [problem for r in recipes if (problem := unknown_reason(r))]
    if unknown:
        raise SystemExit(f"unknown recipe(s): {'; '.join(unknown)}. Known: {', '.join(RECIPES)}, and <recipe>@k<N>")
    for i, recipe in enumerate(recipes):
        source, _ = source_of(recipe, recipes[0])
        if source is not None and source not in recipes[:i]:  # run_all starts a recipe once its source is done
            raise SystemExit(f"recipe {recipe} builds on {source}: list {source} before it")
    sets = [*args.set, f"eval.datasets=[{args.datasets}]"]
    out = Path(args.out)

    def save(results: list[dict[str, Any]]) -> None:
        out.write_text(
            json.dumps({"config": args.config, "set": args.set, "jobs": args.jobs, "results": results}, indent=1)
        )

    results = run_all(args.config, runs_dir, base_name, recipes, sets, args.datasets.split(","), args.jobs, save)
    save(results)
    for dataset in args.datasets.split(","):
        print(f"\n{dataset}\n{table(results, dataset)}")


if __name__ == "__main__":
    main()
