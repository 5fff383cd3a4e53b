"""``eval.protocol: lm-eval``: lm-evaluation-harness's ``gsm8k`` task, run by lm-eval itself on the run's data.

The task as lm-eval 0.4.x publishes it (``lm_eval/tasks/gsm8k/gsm8k.yaml``): 5-shot ``Question: ...\\nAnswer:``
prompts, the few-shot examples drawn by lm-eval's seeded sampler from GSM8K's train split, greedy decoding up to
lm-eval's 256 tokens, stopped at ``Question:``; scored by exact match after its two filters, ``strict-match``
(``#### N``) and ``flexible-extract`` (the last number in the answer). These are the numbers most GSM8K results
in papers and model cards report, so a looper run can be put beside them.

looper hands lm-eval (``lm_eval.simple_evaluate``) three things and changes nothing else of the task: the
questions of one eval dataset as its test split; the run's train and dev splits in source order (GSM8K's train
split as published, when ``data.max_train`` is unset) as its few-shot pool; and each model as lm-eval's ``hf``
model, an adapter through its ``peft=`` argument. lm-eval's per-question responses, extracted answers and scores
become looper's eval records, so the report's intervals and paired tests cover them. lm-eval's request cache
(``use_cache``) under ``eval/.lm_eval/`` makes a killed eval resume. Needs looper's ``lm-eval`` extra.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from looper.config import RunConfig
from looper.errors import ConfigValueError, InputError
from looper.files import read_jsonl
from looper.modeling import resolve_model_path, stage_weights
from looper.runs import RunDir, stage_hash

LM_EVAL_TASK = "gsm8k"
FILTERS = {"strict": "strict-match", "flexible": "flexible-extract"}
INVALID = "[invalid]"  # what lm-eval's regex filter returns when nothing matches
MAX_GEN_TOKS = 256  # lm-eval's hf model's default generation limit; its gsm8k task sets none


def check_lm_eval_protocol(config: RunConfig) -> None:
    """InputError for settings lm-eval's gsm8k task cannot take, before any model is loaded."""
    ev = config.eval
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise InputError(
            "eval.protocol=lm-eval needs lm-evaluation-harness: install looper's lm-eval extra "
            "(pip install -e '.[lm-eval]' in a clone)"
        ) from None
    if config.data.name != "gsm8k":
        raise ConfigValueError(
            f"eval.protocol=lm-eval is lm-eval's GSM8K task; data.source={config.data.source} is not GSM8K",
            fields=("eval.protocol", "data.source"),
        )
    if ev.samples != 1:
        raise ConfigValueError(
            "eval.protocol=lm-eval is greedy, one answer per question (lm-eval's gsm8k); set eval.samples=1",
            fields=("eval.protocol", "eval.samples"),
        )
    if config.model.quantization != "none":
        raise ConfigValueError(
            f"eval.protocol=lm-eval loads the model in model.dtype; model.quantization={config.model.quantization} "
            "is not passed to lm-eval",
            fields=("eval.protocol", "model.quantization"),
        )


def few_shot_pool(run: RunDir) -> list[dict[str, str]]:
    """The run's train and dev splits merged back into source order (ids ``gsm8k-train-NNNNN`` number the source
    rows), as lm-eval's few-shot pool: question and answer only, as the Hub's rows hold them."""
    rows = read_jsonl(run.train, required=("id", "question", "answer")) + read_jsonl(
        run.dev, required=("id", "question", "answer")
    )
    return [{"question": r["question"], "answer": r["answer"]} for r in sorted(rows, key=lambda r: r["id"])]


@functools.cache
def task_manager() -> Any:
    """lm-eval's index of its tasks, built once per process (it reads every task file: seconds), for the stock
    config and for ``simple_evaluate``, which would otherwise build its own on every call."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def task_config(test_file: Path, pool_file: Path) -> dict[str, Any]:
    """lm-eval's own gsm8k task config with only its data swapped for local JSONL files."""
    cfg = dict(task_manager().task_index[LM_EVAL_TASK].cfg)
    cfg.pop("tag", None)  # the task gets a name of its own; it joins none of lm-eval's groups
    cfg.update(
        task=f"looper_{LM_EVAL_TASK}",
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {cfg["training_split"]: str(pool_file), cfg["test_split"]: str(test_file)}},
    )
    return cfg


def model_args(config: RunConfig, run: RunDir, which: str) -> dict[str, Any]:
    """lm-eval ``hf`` model arguments for model ``which``: the base (or full SFT checkpoint) and its adapter."""
    checkpoint, adapter = stage_weights(config, run, which)
    args: dict[str, Any] = {
        "pretrained": str(checkpoint or resolve_model_path(config.model.name_or_path)),
        "dtype": config.model.dtype,
        "trust_remote_code": config.model.trust_remote_code,
    }
    if config.model.revision and checkpoint is None:
        args["revision"] = config.model.revision
    if adapter is not None:
        args["peft"] = str(adapter)
    return args


# The stage whose settings make each trained model's weights (the base model's: the model section alone).
MADE_BY = {"sft": "sft", "rl": "train-rl"}


def request_cache(config: RunConfig, run: RunDir, which: str, args: dict[str, Any]) -> Path:
    """lm-eval's request cache for model ``which``: one per model and the settings that made its weights. lm-eval
    keys each cached answer by the request itself (prompt with its few-shot examples, generation settings), so a
    longer ``eval.limit``, another dataset or another few-shot pool reuses what was answered and asks only the rest;
    an adapter trained again with other settings gets a cache of its own."""
    made_by = stage_hash(config, MADE_BY[which]) if which in MADE_BY else config.section_hash("model")
    key = hashlib.sha256(json.dumps([args, made_by], sort_keys=True).encode()).hexdigest()[:12]
    return run.eval_dir / ".lm_eval" / f"{which}-{key}"


def to_record(row: dict[str, Any], by_filter: dict[str, dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """looper's eval record of one question from lm-eval's logged samples of its two filters."""
    output = by_filter[FILTERS["strict"]]["resps"][0][0]
    tokens = len(tokenizer(output, add_special_tokens=False)["input_ids"])
    # lm-eval's hash of the whole prompt (the few-shot examples included): what to compare with another lm-eval run
    record = {
        "id": row["id"],
        "question": row["question"],
        "gold": row["gold"],
        "output": output,
        "tokens": tokens,
        "truncated": tokens >= MAX_GEN_TOKS,
        "samples": None,
        "prompt_hash": by_filter[FILTERS["strict"]]["prompt_hash"],
    }
    for mode, name in FILTERS.items():
        answer = by_filter[name]["filtered_resps"][0]
        record[f"answer_{mode}"] = None if answer == INVALID else answer
        record[f"correct_{mode}"] = bool(by_filter[name]["exact_match"])
    if "cleaning_status" in row:
        record["cleaning_status"] = row["cleaning_status"]
    return record


def evaluate_lm_eval(
    config: RunConfig, run: RunDir, which: str, rows: list[dict[str, Any]], tokenizer: Any, label: str
) -> list[dict[str, Any]]:
    """lm-eval's gsm8k on ``rows`` for model ``which``; looper's records in row order. lm-eval caches each answered
    request (``use_cache``, per model fingerprint), so a rerun after a kill answers only what is left."""
    from lm_eval import simple_evaluate

    args = model_args(config, run, which)
    cache = request_cache(config, run, which, args)
    cache.parent.mkdir(parents=True, exist_ok=True)
    print(f"eval {label}: lm-eval's {LM_EVAL_TASK} task, {len(rows)} questions (lm_eval.simple_evaluate)")
    with tempfile.TemporaryDirectory(prefix="looper-lm-eval-") as tmp:
        test_file, pool_file = Path(tmp) / "test.jsonl", Path(tmp) / "train.jsonl"
        test_file.write_text(
            "".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows)
        )
        pool_file.write_text("".join(json.dumps(r) + "\n" for r in few_shot_pool(run)))
        out = simple_evaluate(
            model="hf",
            model_args=args,
            tasks=[task_config(test_file, pool_file)],
            task_manager=task_manager(),
            batch_size=config.eval.batch_size,
            device="cuda" if torch.cuda.is_available() else "cpu",
            use_cache=str(cache),
            log_samples=True,
            bootstrap_iters=0,
        )
    samples = out["samples"][f"looper_{LM_EVAL_TASK}"]
    by_doc: dict[int, dict[str, dict[str, Any]]] = {}
    for sample in samples:
        by_doc.setdefault(sample["doc_id"], {})[sample["filter"]] = sample
    return [to_record(row, by_doc[i], tokenizer) for i, row in enumerate(rows)]
