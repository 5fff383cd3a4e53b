"""eval: base vs SFT vs RL on GSM8K dev/test, GSM8K-Platinum and gsm_symbolic, with a readable report.

    looper eval configs/demo.yaml
    python -m looper.eval.eval_gsm8k configs/demo.yaml eval.datasets=[gsm8k_dev,gsm8k_test] eval.limit=200

For each model in ``eval.models`` (``base``; ``sft`` = base + checkpoints/lora_sft; ``rl`` = base +
checkpoints/lora_rl; a missing adapter is skipped with a notice) and each dataset in
``eval.datasets``, answers are generated (``looper.generation``: one vLLM engine for the models, or one per model) under
``eval.protocol``: ``looper`` (the run's own prompt, greedy unless ``eval.samples > 1``) or ``deepseek``
(DeepSeek-R1's: its \\boxed{} instruction, k samples at T=0.6, top_p=0.95, pass@1 as their mean), and
checked by the one answer checker in strict and flexible mode; or ``lm-eval`` (lm-evaluation-harness's
``gsm8k`` task, generated and scored by lm-eval itself: ``looper.eval.lm_eval_gsm8k``). Per-sample records are appended
to ``eval/<model>__<dataset>.jsonl`` as they finish, so a killed eval continues where it stopped.
``eval/summary.json`` and ``eval/report.md`` (tables, 95% intervals, exact McNemar tests, flipped
questions, PNG plots) are written at the end, and the table is printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from looper.answers import extract_answer, is_correct
from looper.config import RunConfig
from looper.errors import ConfigValueError, InputError
from looper.eval.lm_eval_gsm8k import check_lm_eval_protocol, evaluate_lm_eval
from looper.eval.report import write_report
from looper.files import atomic_write_json, atomic_write_jsonl, read_jsonl, require_input
from looper.generation import (
    STATED_SAMPLING,
    Engine,
    GenRequest,
    StageEngines,
    generate_records,
    generation_speed,
    resolve_engine,
)
from looper.modeling import load_tokenizer, peak_gpu_memory_gib, stage_model_path
from looper.processes import Shards, derive_seed
from looper.prompts import deepseek_prompt, render_prompt, template_opens_thought
from looper.runs import RunDir, Stage, changed_settings, read_record, record_path, settings_record, stage_marker

STAGE = "eval"
# Named for what they hold; the first four are a run's own dev/test splits, depending on data.source.
DATASETS = ("gsm8k_dev", "gsm8k_test", "gsm_symbolic_dev", "gsm_symbolic_test", "gsm8k_platinum")
RENAMED = {"platinum": "gsm8k_platinum", "gsm_symbolic": "gsm_symbolic_test"}


def dataset_path(name: str, config: RunConfig, run: RunDir) -> Path:
    """Where an eval dataset's questions are; a generated gsm_symbolic test set is written on first use."""
    if name not in DATASETS:
        hint = f" (renamed {RENAMED[name]!r})" if name in RENAMED else ""
        raise ConfigValueError(
            f"eval.datasets: unknown dataset {name!r}{hint}; known: {', '.join(DATASETS)}", fields=("eval.datasets",)
        )
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
    raise ConfigValueError(
        f"eval.datasets: {name} is not part of this run: data.source={config.data.source} makes "
        f"{config.data.name}_dev and {config.data.name}_test",
        fields=("eval.datasets", "data.source"),
    )


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
    info = read_record(Path(path) / "looper_adapter.json")  # a damaged record is one error, as everywhere
    if info is None:
        return None
    return f"{info.get('config_hash')}" + (f":round{info['round']}" if info.get("round", 1) > 1 else "")


def score_record(row: dict[str, Any], outputs: list[Any], thought_open: bool = False) -> dict[str, Any]:
    """Per-sample record: every output with its extracted answers and correctness (strict and flexible);
    ``thought_open``: the prompt left a thought open (an output that never closes it has no answer)."""
    samples = []
    for out in outputs:
        samples.append(
            {
                "output": out.text,
                "tokens": out.num_tokens,
                "truncated": out.truncated,
                "answer_strict": extract_answer(out.text, "strict", thought_open),
                "answer_flexible": extract_answer(out.text, "flexible", thought_open),
                "correct_strict": is_correct(out.text, row["gold"], "strict", thought_open),
                "correct_flexible": is_correct(out.text, row["gold"], "flexible", thought_open),
            }
        )
    first = samples[0]
    record = {
        "id": row["id"],
        "question": row["question"],
        "gold": row["gold"],
        **first,
        "samples": samples[1:] or None,
    }
    if "cleaning_status" in row:
        record["cleaning_status"] = row["cleaning_status"]
    return record


def sampling_of(ev: Any) -> tuple[float, float]:
    """(temperature, top_p) of the protocol: DeepSeek-R1's 0.6 / 0.95; looper's greedy for one sample, else the config's."""
    if ev.protocol == "deepseek":
        return 0.6, 0.95
    return (0.0, 1.0) if ev.samples == 1 else (ev.temperature, ev.top_p)


def eval_prompt(tokenizer: Any, question: str, config: RunConfig) -> str:
    if config.eval.protocol == "deepseek":
        return deepseek_prompt(tokenizer, question, config.model.prompt_format)
    return render_prompt(tokenizer, question, config.model.system_prompt, config.model.prompt_format)


def check_protocol(config: RunConfig) -> None:
    """The eval settings that no run can score, refused before anything is written (the pipeline calls it before its
    first stage). Raises ConfigValueError: no model or dataset, one named twice, or a protocol its settings contradict."""
    ev = config.eval
    if not ev.models:
        raise ConfigValueError("eval.models: empty; name at least one of base, sft, rl", fields=("eval.models",))
    if not ev.datasets:
        raise ConfigValueError(
            f"eval.datasets: empty; name at least one of {', '.join(DATASETS)}", fields=("eval.datasets",)
        )
    for field, names in (("eval.models", ev.models), ("eval.datasets", ev.datasets)):
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise ConfigValueError(f"{field}: {twice!r} is named twice", fields=(field,))
    if ev.protocol == "lm-eval":
        check_lm_eval_protocol(config)
    if ev.protocol == "deepseek" and ev.samples < 2:
        raise ConfigValueError(
            "eval.protocol=deepseek samples several answers per question and averages them (DeepSeek advises "
            "against greedy decoding for R1 models); set eval.samples >= 2 (e.g. 16)",
            fields=("eval.protocol", "eval.samples"),
        )


def evaluate(
    engine: Callable[[], Engine],
    tokenizer: Any,
    rows: list[dict[str, Any]],
    config: RunConfig,
    out_path: Path,
    label: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate and score every row of one dataset not yet in ``out_path`` (resumable: ``generate_records``); the
    finished file is rewritten in row order. Returns its records in row order and the generation tally."""
    ev = config.eval
    temperature, top_p = sampling_of(ev)

    def requests_of(row: dict[str, Any]) -> list[GenRequest]:
        prompt = eval_prompt(tokenizer, row["question"], config)
        return [
            GenRequest(s, prompt, temperature, top_p, derive_seed(config.seed, row["id"], "eval", s))
            for s in range(ev.samples)
        ]

    thought_open = template_opens_thought(tokenizer, config.model.prompt_format)
    tally = generate_records(
        engine,
        out_path,
        rows,
        requests_of,
        lambda row, outs: score_record(row, outs, thought_open),
        ev.max_new_tokens,
        f"eval {label}",
    )
    by_id = {rec["id"]: rec for rec in read_jsonl(out_path)}
    records = [by_id[r["id"]] for r in rows]
    if tally["engine"] is not None:  # records were appended in the order they finished; a file left as it was stays
        atomic_write_jsonl(out_path, records)
    return records, tally


def models_to_score(config: RunConfig, run: RunDir) -> list[str]:
    """The models of ``eval.models`` whose weights exist (base always), saying which are skipped; an InputError
    naming the stage that makes each when none does, before the run folder is touched."""
    available = [m for m in config.eval.models if m == "base" or Path(stage_model_path(config, run, m)).exists()]
    for which in config.eval.models:
        if which not in available and available:
            print(f"eval: skipping {which}: {stage_model_path(config, run, which)} does not exist yet")
    if not available:
        made_by = {"sft": "sft", "rl": "train-rl"}
        raise InputError(
            f"eval.models={config.eval.models}: nothing to evaluate yet: "
            + "; ".join(
                f"{m} ({stage_model_path(config, run, m)}) is made by `looper {made_by[m]}`" for m in config.eval.models
            )
        )
    return available


def file_settings(config: RunConfig, engine: str | None) -> dict[str, Any]:
    """What one model's file for one dataset depends on besides the model's weights: the eval and model settings,
    not which other models or datasets are evaluated beside it (so narrowing eval.models / eval.datasets reuses the
    files already made), nor, with the hf engine, how vLLM would serve an adapter."""
    settings = config.result_sections("eval", "model")
    unused = ("models", "datasets") + (("vllm_adapter",) if engine != "vllm" else ())
    settings["eval"] = {k: v for k, v in settings["eval"].items() if k not in unused}
    return settings


def evaluate_file(
    lazy: Any, tokenizer: Any, rows: list[dict], config: RunConfig, final: Path, made: dict, shards: Shards, label: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One model on one dataset into ``final`` (this process's shard of it): resumed when its settings record
    (``made``: the weights and eval settings) matches, started over when it differs or is missing; records and the
    generation tally (``evaluate``)."""
    out_path = shards.path(final)
    meta = record_path(out_path)
    changed = changed_settings(read_record(meta), made["config"]) if out_path.exists() else []
    if changed != []:  # other settings, or no record of them
        print(
            f"eval: {out_path}: made with other settings ({'; '.join(changed or ['none recorded'])}); starting it over"
        )
        out_path.unlink()
    atomic_write_json(meta, made)
    return evaluate(lazy, tokenizer, shards.mine(rows), config, out_path, label)


def _add_tally(tally: dict[str, Any], used: dict[str, Any]) -> None:
    tally["tokens"] += used["tokens"]
    tally["seconds"] += used["seconds"]
    tally["engine"] = used["engine"] or tally["engine"]
    if used.get("engine_gpu_memory_gib") is not None:  # the largest engine of the stage
        tally["engine_gpu_memory_gib"] = max(tally.get("engine_gpu_memory_gib") or 0.0, used["engine_gpu_memory_gib"])


def main(config: RunConfig, show_note: bool = True) -> RunDir:
    """Score each model of ``eval.models`` on ``eval.datasets``, write the report, print its table and, with
    ``show_note``, the run's note under it (the pipeline prints the note once, at its own end).

    Raises:
        InputError: an eval setting this run cannot score (a dataset unknown or not part of the run, a protocol the
            settings contradict), a missing input, or no model to evaluate.
    """
    check_protocol(config)
    run = RunDir.of(config)
    available = models_to_score(config, run)
    # Unlike training stages, a changed config simply redoes eval: each per-sample file carries the settings
    # record of the weights and eval settings that made it (runs.settings_record) and is started over when they differ.
    stage = Stage(config, STAGE, run, output=run.eval_dir / "report.md")
    marker = stage_marker(run, STAGE)
    if (
        changed_settings(marker, stage.settings) == []
        and stage.output.exists()
        and set(available) <= set(marker.get("models", []))
    ):
        print(f"eval: {stage.output} is complete for this config; nothing to do")
        print(json.loads((run.eval_dir / "summary.json").read_text()).get("table", ""))
        return run
    datasets = {name: dataset_rows(name, config, run) for name in config.eval.datasets}
    weights = {which: _model_fingerprint(config, run, which) for which in available}  # each adapter's record, up front
    lm_eval = config.eval.protocol == "lm-eval"
    engine = None if lm_eval else resolve_engine(config.eval.engine, "eval.engine")
    tokenizer = load_tokenizer(config.model)
    shards = Shards()  # one process per GPU under accelerate launch / torchrun; else a single shard
    if lm_eval and shards.world > 1:
        raise ConfigValueError(
            "eval.protocol=lm-eval runs in one process (lm-eval spreads over GPUs with its own "
            "`accelerate launch -m lm_eval`); run looper eval without accelerate launch",
            fields=("eval.protocol",),
        )
    if shards.is_main:
        run = stage.start()
        # the files are about to change: until stage.finish, no marker may say they are complete (an eval killed
        # after starting a file over would otherwise be "complete" for the settings it had before)
        run.marker(STAGE).unlink(missing_ok=True)
    records: dict[str, dict[str, list[dict]]] = {}
    settings = file_settings(config, engine)
    tally: dict[str, Any] = {"tokens": 0, "seconds": 0.0, "engine": None}
    # vLLM starts once for the models that share weights (adapters served as LoRA: StageEngines)
    with StageEngines(config, run, engine, "eval", config.eval.max_new_tokens, tokenizer, available) as engines:
        for which in available:
            made = settings_record({"weights": weights[which], **settings})
            files = {name: run.eval_dir / f"{which}__{name}.jsonl" for name in datasets}
            records[which] = {}
            for name, rows in datasets.items():
                if lm_eval:  # lm-eval generates and scores itself; its request cache makes a rerun resume
                    records[which][name] = evaluate_lm_eval(config, run, which, rows, tokenizer, f"{which}/{name}")
                    atomic_write_jsonl(files[name], records[which][name])
                    atomic_write_json(record_path(files[name]), made)
                    continue
                lazy = engines.for_model(which)
                label = f"{which}/{name}"
                records[which][name], used = evaluate_file(
                    lazy, tokenizer, rows, config, files[name], made, shards, label
                )
                _add_tally(tally, used)
            shards.wait()
            if shards.world > 1 and shards.is_main:
                for name, rows in datasets.items():
                    records[which][name] = shards.merge(files[name], [r["id"] for r in rows])
                    atomic_write_json(record_path(files[name]), made)
                    for r in range(shards.world):
                        record_path(shards.path(files[name], r)).unlink(missing_ok=True)
    per_process = shards.gather(
        {**tally, "seconds": round(tally["seconds"], 2), "peak_gpu_memory_gib": peak_gpu_memory_gib()}
    )
    if not shards.is_main:
        return run
    summary = write_report(records, config, run.eval_dir)
    temperature, top_p = sampling_of(config.eval)
    stage.finish(
        models=list(records),
        **generation_speed(per_process),
        sampling=None if lm_eval else {"temperature": temperature, "top_p": top_p, **STATED_SAMPLING},
    )
    print(summary["table"])
    print(f"\nreport: {run.eval_dir / 'report.md'}")
    if config.note and show_note:
        print(f"note: {config.note}")
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "eval")
