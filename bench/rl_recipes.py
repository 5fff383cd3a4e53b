"""RL recipes compared on one SFT adapter: which one makes the model better than SFT (issue 13)?

    python bench/rl_recipes.py configs/smollm2-135m-gpu.yaml --runs-dir runs --out recipes.json \
        --set data.source=local data.path=<gsm8k>  [--recipes a_dpo,f_label_free,...]

Each recipe is a run folder ``<runs-dir>/<config name>-<recipe>`` made by ``looper pipeline`` with the
recipe's overrides, after the shared work it reuses has been copied in from the recipe it builds on
(the data splits, the SFT adapter and the base/SFT eval files from the first recipe; rollouts, pairs
or RL rounds where a recipe says so), so every row compares against the same SFT adapter on the same
questions and shared stages run once. Eval covers the dev split (where a recipe is chosen) and the
test split (scored once per recipe and reported whatever it says). A recipe already complete is
skipped by the pipeline's own stage markers, so the script can be rerun after a kill.

Output: a JSON file and a markdown table per split: accuracy (strict, flexible) with 95% intervals,
exact McNemar p against SFT, flips, truncation, mean tokens, pairs / examples, wall time of the
recipe's own stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Every recipe starts from these settings (the GPU config's recipe before this comparison), whatever the config's
# own defaults are now, then applies its overrides.
RESET = ["rollouts.samples_per_arm=1", "preferences.require_correct_chosen=false", "preferences.label_free=false",
         "rl.algorithm=dpo", "rl.rounds=1"]
# name -> (what it is, the recipe it builds on, what it reuses from that one, its overrides)
RECIPES: dict[str, tuple[str, str | None, str | None, list[str]]] = {
    "a_dpo": ("DPO, best vs worst of 1 sample per arm (the GPU config's recipe before this comparison)", None, None, []),
    "f_label_free": ("(a) without gold: pairs ranked by the s_wm-weighted consensus", "a_dpo", "rollouts",
                     ["preferences.label_free=true"]),
    "b_dpo_correct": ("DPO, correct chosen vs wrong rejected, 4 samples per arm", "a_dpo", "sft",
                      ["rollouts.samples_per_arm=4", "preferences.require_correct_chosen=true",
                       "preferences.max_pairs_per_question=2"]),
    "e_rft": ("rejection-sampling fine-tuning on (b)'s correct trajectories", "b_dpo_correct", "rollouts",
              ["rollouts.samples_per_arm=4", "rl.algorithm=rft"]),
    "c_dpo_rounds": ("(b) for 2 rounds, round 2 sampled from round 1's policy", "b_dpo_correct", "rl",
                     ["rollouts.samples_per_arm=4", "preferences.require_correct_chosen=true",
                      "preferences.max_pairs_per_question=2", "rl.rounds=2"]),
    "d_grpo": ("GRPO, Regime W reward, looper's generation engine, 600 questions", "a_dpo", "sft",
               ["rl.algorithm=grpo", "rl.num_questions=600", "rl.grpo.generation_batch_size=256",
                "rl.grpo.per_device_train_batch_size=64", "rl.grpo.learning_rate=2.0e-5"]),
    "d_grpo_trl": ("(d) with TRL's own generation (transformers generate), 8 steps: speed only", "a_dpo", "sft",
                   ["rl.algorithm=grpo", "rl.generation=trl", "rl.grpo.max_steps=8", "rl.grpo.generation_batch_size=256",
                    "rl.grpo.per_device_train_batch_size=64", "rl.grpo.learning_rate=2.0e-5"]),
}
# What each level of reuse copies from the recipe built on (paths inside a run folder; globs allowed)
REUSE = {
    "sft": ["data/*_train.jsonl", "data/*_dev.jsonl", "data/*_test.jsonl", "data/prepare_data.json", "checkpoints/lora_sft",
            "checkpoints/sft", "stages/prepare-data.json", "stages/sft.json", "eval/base__*", "eval/sft__*", "logs/sft.jsonl"],
    "rollouts": ["data/rl_rollouts.jsonl", "data/rl_rollouts.meta.json", "stages/collect-rollouts.json"],
    "rl": ["data/preferences.jsonl", "stages/build-preferences.json", "checkpoints/lora_rl", "stages/train-rl.json",
           "logs/train-rl.jsonl"],
}
LEVELS = ("sft", "rollouts", "rl")


def copy_shared(src: Path, dst: Path, level: str) -> None:
    """Copy the outputs up to ``level`` of the run ``src`` into ``dst`` (hard links for files: they are replaced, not
    modified, by the stages)."""
    for name in LEVELS[: LEVELS.index(level) + 1]:
        for pattern in REUSE[name]:
            for path in src.glob(pattern):
                target = dst / path.relative_to(src)
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    shutil.copytree(path, target, copy_function=os.link)
                else:
                    os.link(path, target)


def run_recipe(config: str, runs_dir: Path, base_name: str, recipe: str, sets: list[str]) -> dict[str, Any]:
    what, parent, level, overrides = RECIPES[recipe]
    name = f"{base_name}-{recipe}"
    root = runs_dir / name
    if parent is not None:
        parent_root = runs_dir / f"{base_name}-{parent}"
        if not (parent_root / "stages" / "sft.json").exists():
            raise SystemExit(f"recipe {recipe} builds on {parent}: run that one first ({parent_root} has no SFT)")
        copy_shared(parent_root, root, level)
    cmd = [sys.executable, "-m", "looper.cli", "pipeline", config, f"runs_dir={runs_dir}", f"name={name}", *sets, *RESET,
           *overrides]
    print(f"\n##### {recipe}: {what}\n{' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    wall = time.perf_counter() - started
    if rc != 0:  # e.g. a diverged training run: recorded, and the next recipes still run
        print(f"##### {recipe} failed (exit status {rc}); see its output above", flush=True)
        return {"recipe": recipe, "what": what, "failed": rc, "wall_s": round(wall, 1), "overrides": overrides}
    summary = json.loads((root / "eval" / "summary.json").read_text())
    timings = json.loads((root / "pipeline_timings.json").read_text())
    info = {"recipe": recipe, "what": what, "builds_on": parent, "reuses": level, "overrides": overrides, "wall_s": round(wall, 1),
            "stage_s": timings, "summary": summary}
    for stage, key in (("build-preferences", "pairs"), ("train-rl", "steps")):
        marker = root / "stages" / f"{stage}.json"
        if marker.exists():
            info[key] = json.loads(marker.read_text()).get(key)
            info.setdefault("pair_questions", json.loads(marker.read_text()).get("questions"))
    return info


def table(results: list[dict[str, Any]], dataset: str) -> str:
    head = ["recipe", "strict % [95% CI]", "flexible %", "p vs SFT (strict)", "flips w->r / r->w", "truncated %",
            "mean tokens", "pairs (questions)", "own stages s"]
    rows = []
    sft_row = None
    for res in results:
        if res.get("failed") is not None:
            rows.append([res["recipe"], f"failed (exit {res['failed']})", *["-"] * (len(head) - 2)])
            continue
        metrics, comps = res["summary"]["metrics"], res["summary"]["comparisons"].get(dataset, [])
        if sft_row is None and "sft" in metrics and dataset in metrics["sft"]:
            m = metrics["sft"][dataset]
            sft_row = ["SFT (shared)", f"{100 * m['strict']['accuracy']:.1f} [{100 * m['strict']['ci95'][0]:.1f}, "
                       f"{100 * m['strict']['ci95'][1]:.1f}]", f"{100 * m['flexible']['accuracy']:.1f}", "-", "-",
                       f"{100 * m['truncation_rate']:.1f}", f"{m['mean_tokens']:.0f}", "-", "-"]
        m = metrics.get("rl", {}).get(dataset)
        if m is None:
            continue
        c = next((c for c in comps if c["a"] == "sft" and c["b"] == "rl"), None)
        own = sum(v for k, v in res["stage_s"].items() if k not in ("prepare-data", "sft"))
        pairs = f"{res['pairs']} ({res.get('pair_questions')})" if res.get("pairs") else "-"
        rows.append([res["recipe"], f"{100 * m['strict']['accuracy']:.1f} [{100 * m['strict']['ci95'][0]:.1f}, "
                     f"{100 * m['strict']['ci95'][1]:.1f}]", f"{100 * m['flexible']['accuracy']:.1f}",
                     f"{c['strict']['p_value']:.2g}" if c else "-",
                     f"{len(c['strict']['wrong_to_right'])} / {len(c['strict']['right_to_wrong'])}" if c else "-",
                     f"{100 * m['truncation_rate']:.1f}", f"{m['mean_tokens']:.0f}", pairs, f"{own:.0f}"])
    rows = ([sft_row] if sft_row else []) + rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, in order; known: {', '.join(RECIPES)}")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every recipe (data paths, step limits)")
    parser.add_argument("--datasets", default="gsm8k_dev,gsm8k_test", help="eval datasets: the first chooses, the last reports")
    parser.add_argument("--out", default="rl_recipes.json")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from looper.config import load_config

    base_name = load_config(args.config, args.set).name
    runs_dir = Path(args.runs_dir)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    results = []
    for recipe in recipes:
        results.append(run_recipe(args.config, runs_dir, base_name, recipe, [*args.set, f"eval.datasets=[{args.datasets}]"]))
        Path(args.out).write_text(json.dumps({"config": args.config, "set": args.set, "results": results}, indent=1))
    for dataset in args.datasets.split(","):
        print(f"\n{dataset}\n{table(results, dataset)}")


if __name__ == "__main__":
    main()
