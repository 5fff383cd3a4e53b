"""pipeline: every stage in order on one run folder.

    looper pipeline configs/demo.yaml
    looper pipeline configs/demo.yaml --from collect-rollouts --to eval

prepare-data -> sft -> collect-rollouts -> build-preferences -> train-rl -> eval. A stage whose
outputs are complete for the same config is skipped (and says so); one that was cut off resumes;
outputs made by a different config stop the pipeline with the differing keys named. Stages the RL
algorithm does not read are skipped with a notice: grpo / rloo sample as they train (no
collect-rollouts, no build-preferences); rft trains on rollouts (no build-preferences). At the end: the time each
stage took, a line per stage on what it did (steps, rollouts, how many right by gold, pairs; eval's accuracies with
their intervals and whether any difference is beyond chance), the path of report.md and, last, the run's note.
"""

from __future__ import annotations

import gc
import importlib
import json
import time
from typing import Any

from looper.config import RunConfig
from looper.errors import InputError
from looper.eval.eval_gsm8k import check_protocol
from looper.files import atomic_write_json, read_jsonl
from looper.generation import resolve_engine
from looper.modeling import check_quantization
from looper.regime_w.reward import check_reward_config
from looper.runs import STAGE_MODULES, STAGES, RunDir, stage_marker
from looper.trainers import make_trl_config, trl_config


def fresh_gpu_accounting(after: str | None = None) -> None:
    """Between two stages in one process: free what the last stage's models held and restart the peak count, so that
    each stage's marker records its own peak GPU memory, as a separate ``looper <stage>`` process would. Memory still
    held after a stage (a reference kept past its end) is reported: the next stage would pay for it."""
    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return
    torch.cuda.empty_cache()
    left = torch.cuda.memory_allocated() / 2**30
    if after and left > 0.5:
        print(f"warning: {left:.1f} GiB of GPU memory still allocated after {after}", flush=True)
    torch.cuda.reset_peak_memory_stats()


def unused_stages(config: RunConfig) -> set[str]:
    """Stages whose outputs the configured RL algorithm never reads."""
    return {
        "grpo": {"collect-rollouts", "build-preferences"},
        "rloo": {"collect-rollouts", "build-preferences"},
        "rft": {"build-preferences"},
    }.get(config.rl.algorithm, set())


def stage_results(config: RunConfig, run: RunDir, stages: list[str]) -> list[str]:
    """What each of ``stages`` did, a line each, read back from the run folder (markers, rollouts, pairs, eval's
    summary): a pipeline that ends on a table alone reads as if training helped or hurt, where on a small run
    (the CPU demo) it mostly shows that each stage ran, on what, and that the differences are noise."""
    lines, rollouts_right = [], None
    for stage in stages:
        marker = stage_marker(run, stage) or {}
        if stage == "prepare-data" and "counts" in marker:
            lines.append("prepare-data: " + ", ".join(f"{k} {v}" for k, v in marker["counts"].items()) + " questions")
        elif stage in ("sft", "train-rl") and "steps" in marker:
            what = config.sft.method if stage == "sft" else marker.get("algorithm", config.rl.algorithm).upper()
            loss = marker.get("train_loss")
            lines.append(
                f"{stage}: {marker['steps']} {what} step{'' if marker['steps'] == 1 else 's'}"
                + (f", train loss {loss:.3f}" if loss is not None else "")
            )
        elif stage == "collect-rollouts" and marker and run.rollouts.exists():
            records = read_jsonl(run.rollouts)
            trajs = [t for r in records for t in r["trajectories"]]
            rollouts_right = sum(t["parts"]["correct"] == 1.0 for t in trajs)
            lines.append(
                f"collect-rollouts: {len(trajs)} trajectories ({len(records)} questions x "
                f"{len(trajs) // max(1, len(records))}), {rollouts_right} right by gold, "
                f"{sum(t['truncated'] for t in trajs)} cut at the token limit"
            )
        elif stage == "build-preferences" and marker and run.preferences.exists():
            pairs = read_jsonl(run.preferences)
            clean = sum(p["chosen_correct"] == 1.0 and p["rejected_correct"] != 1.0 for p in pairs)
            why = (
                ""
                if clean
                else ": no rollout was right, so DPO learns Regime W's ranking among wrong answers"
                if rollouts_right == 0
                else ": none pairs a right answer with a wrong one"
            )
            lines.append(
                f"build-preferences: {len(pairs)} chosen/rejected pairs from {marker['questions']} questions, "
                f"chosen right and rejected wrong in {clean}{why}"
            )
        elif stage == "eval" and (run.eval_dir / "summary.json").exists():
            lines += eval_results(config, json.loads((run.eval_dir / "summary.json").read_text()))
    return lines


def eval_results(config: RunConfig, summary: dict[str, Any]) -> list[str]:
    """Eval's headline accuracy per dataset, each model's with its 95% interval, then whether any two differ beyond
    chance (report.reading_line)."""
    mode = "flexible" if config.eval.protocol == "deepseek" else "strict"
    k = config.eval.samples
    by_dataset: dict[str, list[str]] = {}
    for model, by_d in summary["metrics"].items():
        for d, x in by_d.items():
            score = x[mode][f"avg@{k}"] if k > 1 and f"avg@{k}" in x[mode] else x[mode]
            lo, hi = score["ci95"]
            by_dataset.setdefault(f"{d}, n={x['n']}", []).append(
                f"{model} {100 * score['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
            )
    lines = [
        f"eval ({mode}{f' avg@{k}' if k > 1 else ''}, {d}): " + ", ".join(cells) for d, cells in by_dataset.items()
    ]
    return lines + ([summary["reading"]] if summary.get("reading") else [])


def main(config: RunConfig, from_stage: str | None = None, to_stage: str | None = None) -> RunDir:
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(to_stage) if to_stage else len(STAGES) - 1
    if first > last:
        raise InputError(f"--from {from_stage} comes after --to {to_stage}")
    run = RunDir.of(config)
    unused = unused_stages(config)
    chosen = [s for s in STAGES[first : last + 1] if s not in unused]
    if set(chosen) - {"prepare-data", "build-preferences"}:  # a stage that loads the model: can this machine?
        check_quantization(config.model.quantization)
    # Regime W's arms and reward settings, which collect-rollouts, build-preferences and train-rl check first thing
    if {"collect-rollouts", "build-preferences", "train-rl"} & set(chosen):
        check_reward_config(config.regime_w)
    # each TRL config built once for the command, before the first stage runs: on this machine and handed to its
    # stage where the stage runs, else checked for the GPU the run is meant for, as every command checks them
    # (trainers.check_trainer_sections, which leaves both to the pipeline)
    trainer_args = {}
    for kind, stage in (("sft", "sft"), (config.rl.algorithm, "train-rl")):
        if stage in chosen:
            trainer_args[stage] = make_trl_config(kind, config, run.work_dir(stage))
        else:
            trl_config(kind, config, run.work_dir(stage), on_this_machine=False)
    # an engine that cannot run here is refused before the first stage, not after hours of training
    samples = (
        "collect-rollouts" in chosen
        or ("sft" in chosen and config.sft.data == "self")
        or ("train-rl" in chosen and config.rl.num_rounds > 1)
    )
    if samples:
        resolve_engine(config.rollouts.engine, "rollouts.engine")
    if "eval" in chosen:
        check_protocol(config)
        if config.eval.protocol != "lm-eval":  # lm-eval generates with its own model class
            resolve_engine(config.eval.engine, "eval.engine")
    timings = {}
    previous = None
    for stage in STAGES[first : last + 1]:
        if stage in unused:
            print(f"\n=== {stage}: not used by rl.algorithm={config.rl.algorithm}; skipped", flush=True)
            continue
        print(f"\n=== {stage} ===", flush=True)
        fresh_gpu_accounting(after=previous)
        started = time.perf_counter()
        stage_main = importlib.import_module(STAGE_MODULES[stage]).main
        if stage == "eval":
            stage_main(config, show_note=False)  # the note is printed once, last
        elif stage in trainer_args:
            stage_main(config, trainer_args[stage])
        else:
            stage_main(config)
        timings[stage] = round(time.perf_counter() - started, 1)
        print(f"=== {stage} took {timings[stage]} s", flush=True)
        previous = stage
    atomic_write_json(run.root / "pipeline_timings.json", timings)
    print("\n=== pipeline done ===")
    print("time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    for line in stage_results(config, run, list(timings)):
        print(line)
    if "eval" in STAGES[first : last + 1] and (run.eval_dir / "report.md").exists():
        print(f"report: {run.eval_dir / 'report.md'}  (the table is printed above by eval)")
    if config.note:
        print(f"note: {config.note}")
    return run
