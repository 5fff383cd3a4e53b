"""eval: base vs SFT vs RL on GSM8K dev/test, GSM8K-Platinum and gsm_symbolic, with a readable report.

    looper eval configs/demo.yaml
    python -m looper.eval.eval_gsm8k configs/demo.yaml eval.datasets=[gsm8k_dev,gsm8k_test] eval.limit=200

For each model in ``eval.models`` (``base``; ``sft`` = base + checkpoints/lora_sft; ``rl`` = base +
checkpoints/lora_rl; a missing adapter is skipped with a notice) and each dataset in
``eval.datasets``, answers are generated with the shared engine (greedy unless ``eval.samples > 1``)
and checked by the one answer checker in strict and flexible mode. Per-sample records are appended
to ``eval/<model>__<dataset>.jsonl`` as they finish, so a killed eval continues where it stopped.
``eval/summary.json`` and ``eval/report.md`` (tables, 95% intervals, exact McNemar tests, flipped
questions, PNG plots) are written at the end, and the table is printed.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

from looper.answers import extract_answer, is_correct
from looper.config import RunConfig
from looper.eval.report import write_report
from looper.generation import GenRequest, complete_groups, generate_stream, generation_speed
from looper.modeling import load_stage_model, load_tokenizer, peak_gpu_memory_gib, stage_model_path
from looper.prompts import render_prompt
from looper.runs import (
    InputError,
    JsonlAppender,
    RunDir,
    Shards,
    atomic_write_json,
    atomic_write_jsonl,
    derive_seed,
    finish_stage,
    read_jsonl,
    require_input,
    stage_hash,
    stage_marker,
    start_stage,
)

STAGE = "eval"
# Named for what they hold; the first four are a run's own dev/test splits, depending on data.source.
DATASETS = ("gsm8k_dev", "gsm8k_test", "gsm_symbolic_dev", "gsm_symbolic_test", "gsm8k_platinum")
RENAMED = {"platinum": "gsm8k_platinum", "gsm_symbolic": "gsm_symbolic_test"}
MODELS = ("base", "sft", "rl")


def dataset_path(name: str, config: RunConfig, run: RunDir) -> Path:
    """Where an eval dataset's questions are; a generated gsm_symbolic test set is written on first use."""
    if name not in DATASETS:
        hint = f" (renamed {RENAMED[name]!r})" if name in RENAMED else ""
        raise InputError(f"eval.datasets: unknown dataset {name!r}{hint}; known: {', '.join(DATASETS)}")
    if name == "gsm8k_platinum":
        return run.platinum
    source, split = name.rsplit("_", 1)
    if source == config.data.name:
        return run.split(split)
    if name == "gsm_symbolic_test":  # a GSM8K run can also be scored on generated problems
        from looper.baseline_sft.prepare_data import symbolic_test_records

        path = run.split("test").with_name("gsm_symbolic_test.jsonl")
        atomic_write_jsonl(path, symbolic_test_records(config.data, config.seed))
        return path
    raise InputError(f"eval.datasets: {name} is not part of this run: data.source={config.data.source} makes "
                     f"{config.data.name}_dev and {config.data.name}_test")


def dataset_rows(name: str, config: RunConfig, run: RunDir) -> list[dict[str, Any]]:
    """The evaluation questions of one dataset (first eval.limit)."""
    path = dataset_path(name, config, run)
    if name == "gsm8k_platinum" and not path.exists():
        raise InputError(f"eval dataset {name}: {path} not found; set data.platinum.source and rerun prepare-data")
    require_input(path, "prepare-data")
    rows = read_jsonl(path, required=("id", "question", "gold"))
    rows = rows[: config.eval.limit] if config.eval.limit is not None else rows
    if not rows:
        raise InputError(f"eval dataset {name}: {path} is empty")
    return rows


def _model_fingerprint(config: RunConfig, run: RunDir, which: str) -> str | None:
    path = stage_model_path(config, run, which)
    if path is None:
        return config.model.name_or_path
    info_path = Path(path) / "looper_adapter.json"
    if not info_path.exists():
        return None
    info = json.loads(info_path.read_text())
    return f"{info.get('config_hash')}" + (f":round{info['round']}" if info.get("round", 1) > 1 else "")


def score_record(row: dict[str, Any], outputs: list[Any]) -> dict[str, Any]:
    """Per-sample record: every output with its extracted answers and correctness (strict and flexible)."""
    samples = []
    for out in outputs:
        samples.append({
            "output": out.text, "tokens": out.num_tokens, "truncated": out.truncated,
            "answer_strict": extract_answer(out.text, "strict"), "answer_flexible": extract_answer(out.text, "flexible"),
            "correct_strict": is_correct(out.text, row["gold"], "strict"),
            "correct_flexible": is_correct(out.text, row["gold"], "flexible"),
        })
    first = samples[0]
    record = {"id": row["id"], "question": row["question"], "gold": row["gold"], **first, "samples": samples[1:] or None}
    if "cleaning_status" in row:
        record["cleaning_status"] = row["cleaning_status"]
    return record


def evaluate(model: Any, tokenizer: Any, rows: list[dict[str, Any]], config: RunConfig, out_path: Path, label: str,
             tally: dict[str, float]) -> list[dict]:
    """Generate and score every row not yet in ``out_path`` (resumable); returns all records in row order.

    All remaining requests stream through the engine; a question's record is appended once its last
    sample ends, and the finished file is rewritten in row order. ``tally`` (``{"tokens", "seconds"}``) is
    increased by the tokens generated here and the time it took.
    """
    ev = config.eval
    temperature = 0.0 if ev.samples == 1 else ev.temperature
    with JsonlAppender(out_path) as out:
        done = out.done_keys
        todo = [r for r in rows if r["id"] not in done]
        if done and todo:
            print(f"eval {label}: resuming, {len(done)} done, {len(todo)} to go")
        requests = [GenRequest((r["id"], s), render_prompt(tokenizer, r["question"], config.model.system_prompt,
                                                           config.model.prompt_format),
                               temperature, 1.0, derive_seed(config.seed, r["id"], "eval", s))
                    for r in todo for s in range(ev.samples)]
        by_row = {r["id"]: r for r in todo}
        started = time.perf_counter()
        stream = generate_stream(model, tokenizer, requests, ev.max_new_tokens, ev.batch_size, desc=f"eval {label}",
                                 engine=ev.engine)
        for results in complete_groups(stream, ev.samples):
            out.append(score_record(by_row[results[0].key[0]], results))
            tally["tokens"] += sum(r.num_tokens for r in results)
        tally["seconds"] += time.perf_counter() - started
        by_id = {rec["id"]: rec for rec in out.records}
    ordered = [by_id[r["id"]] for r in rows]
    if todo:
        atomic_write_jsonl(out_path, ordered)
    return ordered


def main(config: RunConfig) -> RunDir:
    run = RunDir.of(config)
    available = [m for m in config.eval.models if m in MODELS and (m == "base" or Path(stage_model_path(config, run, m)).exists())]
    # Unlike training stages, a changed config simply redoes eval: each per-sample file carries the
    # fingerprint of the model and eval settings that made it and is started over when they differ.
    marker = stage_marker(run, STAGE) or {}
    if marker.get("config_hash") == stage_hash(config, STAGE) and (run.eval_dir / "report.md").exists() \
            and set(available) <= set(marker.get("models", [])):
        print(f"eval: {run.eval_dir / 'report.md'} is complete for this config; nothing to do")
        print(json.loads((run.eval_dir / "summary.json").read_text()).get("table", ""))
        return run
    for name in config.eval.models:
        if name not in MODELS:
            raise InputError(f"eval.models: unknown model {name!r}; expected base, sft or rl")
    datasets = {name: dataset_rows(name, config, run) for name in config.eval.datasets}
    tokenizer = load_tokenizer(config.model, padding_side="left")
    shards = Shards()  # one process per GPU under accelerate launch / torchrun; else a single shard
    if shards.is_main:
        run = start_stage(config, STAGE)
    records: dict[str, dict[str, list[dict]]] = {}
    tally = {"tokens": 0, "seconds": 0.0}
    for which in config.eval.models:
        path = stage_model_path(config, run, which)
        if path is not None and not Path(path).exists():
            print(f"eval: skipping {which}: {path} does not exist yet")
            continue
        fingerprint = {"model": _model_fingerprint(config, run, which), "eval": config.section_hash("eval", "model")}
        model = load_stage_model(config, run, which, merge=True)
        records[which] = {}
        for name, rows in datasets.items():
            final = run.eval_dir / f"{which}__{name}.jsonl"
            out_path = shards.path(final)
            meta = out_path.with_suffix(".meta.json")
            if out_path.exists() and (not meta.exists() or json.loads(meta.read_text()) != fingerprint):
                print(f"eval: {out_path.name} is from another model or eval config; starting it over")
                out_path.unlink()
            atomic_write_json(meta, fingerprint)
            records[which][name] = evaluate(model, tokenizer, shards.mine(rows), config, out_path, f"{which}/{name}", tally)
        del model
        gc.collect()
        shards.wait()
        if shards.world > 1 and shards.is_main:
            for name, rows in datasets.items():
                final = run.eval_dir / f"{which}__{name}.jsonl"
                records[which][name] = shards.merge(final, [r["id"] for r in rows])
                atomic_write_json(final.with_suffix(".meta.json"), fingerprint)
                for r in range(shards.world):
                    shards.path(final, r).with_suffix(".meta.json").unlink(missing_ok=True)
    per_process = shards.gather({"tokens": tally["tokens"], "seconds": round(tally["seconds"], 2),
                                 "peak_gpu_memory_gib": peak_gpu_memory_gib()})
    if not shards.is_main:
        return run
    if not records:
        raise InputError("eval: no model to evaluate")
    summary = write_report(records, config, run.eval_dir)
    finish_stage(run, STAGE, config, models=list(records), **generation_speed(per_process))
    print(summary["table"])
    print(f"\nreport: {run.eval_dir / 'report.md'}")
    if config.note:
        print(f"note: {config.note}")
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "eval")
