"""pipeline: every stage in order on one run folder.

    looper pipeline configs/demo.yaml
    looper pipeline configs/demo.yaml --from collect-rollouts --to eval

prepare-data -> sft -> collect-rollouts -> build-preferences -> train-rl -> eval. A stage whose
outputs are complete for the same config is skipped (and says so); one that was cut off resumes;
outputs made by a different config stop the pipeline with the differing keys named. Stages the RL
algorithm does not read are skipped with a notice: grpo / rloo sample as they train (no
collect-rollouts, no build-preferences); rft trains on rollouts (no build-preferences). At the end the
evaluation table (printed by eval) and the path of report.md end the output, with the time each stage took and,
last, the run's note.
"""

from __future__ import annotations

import gc
import importlib
import time

from looper.config import RunConfig
from looper.eval.eval_gsm8k import check_protocol
from looper.generation import resolve_engine
from looper.modeling import check_quantization
from looper.regime_w.reward import check_reward_config
from looper.runs import STAGE_MODULES, STAGES, InputError, RunDir, atomic_write_json
from looper.trainers import trl_config


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
    return {"grpo": {"collect-rollouts", "build-preferences"}, "rloo": {"collect-rollouts", "build-preferences"},
            "rft": {"build-preferences"}}.get(config.rl.algorithm, set())


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
    # a trainer value the stage would refuse, before the stages ahead of it run (sft's and train-rl's own first check)
    if "sft" in chosen:
        trl_config("sft", config, run.work_dir("sft"))
    if "train-rl" in chosen:
        trl_config(config.rl.algorithm, config, run.work_dir("train-rl"))
    # an engine that cannot run here is refused before the first stage, not after hours of training
    samples = ("collect-rollouts" in chosen or ("sft" in chosen and config.sft.data == "self")
               or ("train-rl" in chosen and config.rl.num_rounds > 1))
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
        else:
            stage_main(config)
        timings[stage] = round(time.perf_counter() - started, 1)
        print(f"=== {stage} took {timings[stage]} s", flush=True)
        previous = stage
    atomic_write_json(run.root / "pipeline_timings.json", timings)
    print("\n=== pipeline done ===")
    print("time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    if "eval" in STAGES[first : last + 1] and (run.eval_dir / "report.md").exists():
        print(f"report: {run.eval_dir / 'report.md'}  (the table is printed above by eval)")
    if config.note:
        print(f"note: {config.note}")
    return run
