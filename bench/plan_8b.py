"""The 8B configs on one GPU, every stage, as a user runs them (issue 15).

    python bench/plan_8b.py --gsm8k /path/to/gsm8k --tokenizer runs/tok --configs 8b,qlora,plan \\
        --out docs/bench/plan_8b_h200.json

For each config (``8b``: configs/r1-distill-llama-8b.yaml, ``qlora``: -qlora.yaml, ``plan``: -plan.yaml), with
``model.name_or_path`` pointed at a random-weight checkpoint of DeepSeek-R1-Distill-Llama-8B's architecture
(bench/common.py) and the amounts of work made small on the command line (steps, questions), these real commands:

1. ``self-data`` (configs with ``sft.data: self`` named by ``--self-data-for``): ``looper pipeline <config> --to sft``
   as configured, on ``--self-questions`` training questions: the base model samples them (the config's temperature,
   top_p and ``max_new_tokens``). A random model answers none correctly, so the stage must stop with its refusal (exit 2,
   nothing trained); step 2 then trains on GSM8K's solutions (``sft.data=gold``), which a random model can use.
2. ``pipeline``: ``looper pipeline <config>``: prepare-data, sft, collect-rollouts, build-preferences, train-rl (DPO),
   eval (base, sft, rl), each stage reading the previous one's outputs from the run folder.
3. ``grpo`` and ``rloo``: ``looper train-rl <config> rl.algorithm=<grpo|rloo>`` in a run folder of its own that starts
   from step 2's data and SFT adapter (hard links), then ``looper eval eval.models=[rl]``, which loads the adapter
   that train-rl saved.

Lengths are the config's unless ``--new-tokens`` (collect-rollouts, sft self data), ``--rl-tokens`` (GRPO / RLOO
completions) or ``--eval-tokens`` say otherwise: a random model never ends an answer, so every sequence runs to the
limit, the worst case for time and memory. Per stage the script records wall time, tokens/s and peak GPU memory
as the stage markers have them (``looper pipeline`` restarts the peak count at each stage); the JSON is rewritten
after every step, so a step that fails or is cut off leaves the others, and rerunning resumes (the stages skip
what is complete; ``--fresh`` starts over).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_args, device_info, link_outputs, random_checkpoint_for, stage_marker, write_results

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "8b": "configs/r1-distill-llama-8b.yaml",
    "qlora": "configs/r1-distill-llama-8b-qlora.yaml",
    "plan": "configs/r1-distill-llama-8b-plan.yaml",
}
PIPELINE_STAGES = ("prepare-data", "sft", "collect-rollouts", "build-preferences", "train-rl", "eval")
# What the online runs start from: the pipeline run's data and SFT stage (paths inside a run folder)
SHARED = [
    "data/*_train.jsonl",
    "data/*_dev.jsonl",
    "data/*_test.jsonl",
    "data/prepare_data.json",
    "checkpoints/lora_sft",
    "stages/prepare-data.json",
    "stages/sft.json",
]
TINY = [
    "model.dtype=float32",
    "model.attn_implementation=eager",
    "model.quantization=none",
    "sft.trainer.use_liger_kernel=false",
    "sft.trainer.max_length=512",
    "rl.dpo.max_length=256",
    "rl.dpo.gradient_accumulation_steps=1",
]


def looper(args: list[str], log: Path) -> dict[str, Any]:
    """One looper command as a user types it (its output appended to ``log``): exit status, wall time, last line."""
    cmd = [sys.executable, "-m", "looper.cli", *args]
    started, offset = time.perf_counter(), log.stat().st_size if log.exists() else 0
    with open(log, "a") as out:
        out.write(f"\n$ looper {' '.join(args)}\n")
        out.flush()
        rc = subprocess.run(
            cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    with open(log, "rb") as f:  # this command's output only: the log holds every earlier one too
        f.seek(offset)
        lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    row = {
        "command": "looper " + " ".join(args),
        "rc": rc,
        "wall_s": round(time.perf_counter() - started, 1),
        "last_line": lines[-1][-300:] if lines else "",
    }
    print(f"== looper {args[0]} ({args[1]}): rc {rc}, {row['wall_s']} s", flush=True)
    return row


def marker(run_dir: Path, stage: str) -> dict[str, Any]:
    return {k: v for k, v in stage_marker(run_dir, stage).items() if k not in ("finished", "output")}


def stage_row(stage: str, wall_s: float | None, found: dict[str, Any]) -> dict[str, Any]:
    peaks = [p for p in found.get("peak_gpu_memory_gib") or [] if p is not None]
    steady = found.get("steady_tokens_per_s")  # training: between logged steps; else over the whole loop / generation
    return {
        "stage": stage,
        "wall_s": wall_s,
        "tokens_per_s": steady or found.get("tokens_per_s"),
        "tokens_per_s_of": ("steps " + found["steady_steps"])
        if steady
        else ("training loop" if "train_runtime_s" in found else "generation" if "generation_s" in found else None),
        "peak_gpu_memory_gib": max(peaks) if peaks else None,
        "tokens": found.get("generated_tokens", found.get("train_tokens")),
        "steps": found.get("steps"),
        "pairs": found.get("pairs"),
        "marker": found,
    }


def self_data_stats(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "data" / "sft_self_samples.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    samples = [s for r in records for s in r["samples"]]
    return {
        "questions": len(records),
        "samples": len(samples),
        "generated_tokens": sum(s["num_tokens"] for s in samples),
        "correct": sum(s["correct"] for s in samples),
        "truncated": sum(s["truncated"] for s in samples),
    }


def run_config(key: str, args: argparse.Namespace, model_dir: Path, runs: Path, log: Path, record: Any) -> None:
    sys.path.insert(0, str(REPO / "src"))
    from looper.config import load_config

    path = CONFIGS[key]
    tiny = TINY if args.shape == "tiny" else []
    probe = load_config(REPO / path, [f"model.name_or_path={model_dir}", *tiny])
    questions = args.questions or max(1, probe.rollouts.batch_size // 8)  # one batch_size of requests (8 arms each)
    limit = args.eval_limit or probe.eval.batch_size
    name = f"plan8b-{key}"
    common = [
        f"runs_dir={runs}",
        "data.source=local",
        f"data.path={args.gsm8k}",
        "data.platinum.source=none",
        f"model.name_or_path={model_dir}",
        *tiny,
        *args.set,
    ]
    overrides = [
        *common,
        "sft.data=gold",
        f"sft.trainer.max_steps={args.sft_steps}",
        "sft.trainer.logging_steps=1",
        f"rollouts.num_questions={questions}",
        "preferences.min_margin=0.0",
        f"rl.dpo.max_steps={args.dpo_steps}",
        "rl.dpo.logging_steps=1",
        "eval.datasets=[gsm8k_test]",
        f"eval.limit={limit}",
        f"eval.max_new_tokens={args.eval_tokens}",
    ]
    if args.new_tokens:
        overrides.append(f"rollouts.max_new_tokens={args.new_tokens}")
    result: dict[str, Any] = {
        "config": path,
        "questions": questions,
        "eval_limit": limit,
        "overrides": overrides,
        "steps": {},
    }
    if args.fresh:
        for old in runs.glob(f"{name}*"):
            shutil.rmtree(old, ignore_errors=True)

    parts = args.parts.split(",")
    if (
        "self-data" in parts
        and probe.sft.data == "self"
        and args.self_questions
        and key in args.self_data_for.split(",")
    ):
        sd = [
            *common,
            f"name={name}-selfdata",
            f"sft.self_data.max_questions={args.self_questions}",
            "sft.trainer.max_steps=1",
        ]
        if args.new_tokens:
            sd.append(f"sft.self_data.max_new_tokens={args.new_tokens}")
        row = looper(["pipeline", path, *sd, "--to", "sft"], log)
        row |= {
            "expected": "exit 2: the random model answers no training question correctly",
            "samples": self_data_stats(runs / f"{name}-selfdata"),
        }
        result["steps"]["self-data"] = row
        record(key, result)

    # without the pipeline part, the online parts still need its data and SFT adapter: the pipeline up to sft
    row = looper(["pipeline", path, f"name={name}", *overrides, *([] if "pipeline" in parts else ["--to", "sft"])], log)
    timings_path = runs / name / "pipeline_timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    ran = PIPELINE_STAGES if "pipeline" in parts else PIPELINE_STAGES[:2]
    row["stages"] = [stage_row(s, timings.get(s), marker(runs / name, s)) for s in ran]
    result["steps"]["pipeline" if "pipeline" in parts else "pipeline --to sft"] = row
    record(key, result)
    if row["rc"] != 0:
        return

    for algorithm in [a for a in ("grpo", "rloo") if a in parts]:
        online = f"{name}-{algorithm}"
        link_outputs(runs / name, runs / online, SHARED)
        extra = [
            f"name={online}",
            *overrides,
            f"rl.algorithm={algorithm}",
            "rl.num_questions=1",
            f"rl.{algorithm}.max_steps={args.online_steps}",
            f"rl.{algorithm}.logging_steps=1",
        ]
        if args.rl_tokens:
            extra.append(f"rl.{algorithm}.max_completion_length={args.rl_tokens}")
        train = looper(["train-rl", path, *extra], log)
        rows = [stage_row("train-rl", train["wall_s"], marker(runs / online, "train-rl"))]
        step = {"train-rl": train}
        if train["rc"] == 0:
            step["eval"] = looper(["eval", path, *extra, "eval.models=[rl]"], log)
            rows.append(stage_row("eval", step["eval"]["wall_s"], marker(runs / online, "eval")))
            summary = runs / online / "eval" / "summary.json"
            step["eval_models"] = sorted(json.loads(summary.read_text())["metrics"]) if summary.exists() else None
        step["stages"] = rows
        result["steps"][algorithm] = step
        record(key, result)


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """Markdown: config, step, stage, wall time, tokens/s, peak GPU memory, what ran."""
    head = ["config", "stage", "wall s", "tokens/s", "peak GPU GiB", "work"]
    rows = []
    for key, res in results.items():
        for step, found in res["steps"].items():
            if step == "self-data":
                s = found["samples"]
                rows.append(
                    [
                        key,
                        "sft (self data, refused as expected)"
                        if found["rc"] == 2
                        else f"sft (self data): exit {found['rc']}",
                        fmt(found["wall_s"], ".1f"),
                        "-",
                        "-",
                        f"{s.get('samples', 0)} samples, {s.get('generated_tokens', 0):,} tokens, {s.get('correct', 0)} correct",
                    ]
                )
                continue
            stages = found.get("stages", [])
            if not any(r["marker"] for r in stages) and found.get("rc", 0) != 0:  # failed before any stage finished
                rows.append([key, f"{step}: exit {found.get('rc')}", "-", "-", "-", found.get("last_line", "")[:80]])
                continue
            for r in stages:
                label = r["stage"] if step.startswith("pipeline") else f"{r['stage']} ({step})"
                if not r["marker"]:
                    label += " (not finished)"
                work = ", ".join(
                    f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                    for k, v in (
                        ("steps", r["steps"]),
                        ("tokens", r["tokens"]),
                        ("pairs", r["pairs"]),
                        ("tokens/s over", r["tokens_per_s_of"]),
                    )
                    if v is not None
                )
                rows.append(
                    [
                        key,
                        label,
                        fmt(r["wall_s"], ".1f"),
                        fmt(r["tokens_per_s"]),
                        fmt(r["peak_gpu_memory_gib"], ".1f"),
                        work,
                    ]
                )
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--configs", default="8b,qlora,plan", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--runs-dir", default="/tmp/looper-bench/plan8b")
    parser.add_argument("--sft-steps", type=int, default=4)
    parser.add_argument("--dpo-steps", type=int, default=2)
    parser.add_argument("--online-steps", type=int, default=2, help="GRPO / RLOO optimizer steps")
    parser.add_argument(
        "--questions", type=int, help="collect-rollouts questions (x 8 arms); default: one batch_size of requests"
    )
    parser.add_argument(
        "--self-questions", type=int, default=8, help="training questions the sft self-data step samples"
    )
    parser.add_argument(
        "--self-data-for", default="8b", help="configs (of those with sft.data: self) that run the self-data step"
    )
    parser.add_argument(
        "--new-tokens", type=int, help="collect-rollouts / self-data max_new_tokens (default: the config's)"
    )
    parser.add_argument("--rl-tokens", type=int, help="GRPO / RLOO max_completion_length (default: the config's)")
    parser.add_argument("--eval-tokens", type=int, default=256)
    parser.add_argument(
        "--eval-limit", type=int, help="test questions per model (default: the config's eval.batch_size)"
    )
    parser.add_argument("--parts", default="self-data,pipeline,grpo,rloo", help="which steps to run (see above)")
    parser.add_argument("--fresh", action="store_true", help="delete this script's earlier run folders first")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more overrides for every looper command (e.g. rl.grpo.use_vllm=true rl.grpo.vllm_mode=colocate)",
    )
    args = parser.parse_args()
    unknown = [k for k in args.configs.split(",") if k not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")

    model_dir = random_checkpoint_for(args)
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "plan_8b.log"
    results: dict[str, Any] = {"device": device_info(), "command": " ".join(sys.argv), "configs": {}}

    def record(key: str, result: dict[str, Any]) -> None:
        results["configs"][key] = result
        results["table"] = table(results["configs"])
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    for key in args.configs.split(","):
        run_config(key, args, model_dir, runs, log, record)
    write_results(args.out, results)
    print("\n" + results["table"])


if __name__ == "__main__":
    main()
