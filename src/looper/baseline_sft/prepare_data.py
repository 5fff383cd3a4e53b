"""prepare-data: GSM8K train split 80/20 into train/dev, plus test (and GSM8K-Platinum when asked).

    looper prepare-data configs/demo.yaml
    python -m looper.baseline_sft.prepare_data configs/demo.yaml data.source=local data.path=/path/to/gsm8k

Sources: ``hub`` (``openai/gsm8k``, config ``main``), ``local`` (a folder holding ``train`` and
``test`` JSONL/parquet files, or ``path`` + ``test_path`` files, in GSM8K's schema) and
``gsm_symbolic`` (generated offline by reasoning-gym; GSM8K-style problems whose worked solutions
end in ``#### N``). Every row is validated before anything is written: a malformed line, a missing
field or a solution without a parseable ``#### N`` stops the stage with the file, line and field,
and leaves no output behind. Output rows: ``id, question, answer, gold, source``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from looper.answers import parse_gold
from looper.config import DataConfig, PlatinumConfig, RunConfig
from looper.errors import ConfigValueError, InputError
from looper.files import atomic_write_json, atomic_write_jsonl, read_jsonl_lines
from looper.hub import require_hub
from looper.runs import RunDir, Stage

log = logging.getLogger("looper")

STAGE = "prepare-data"
# reasoning-gym appends this instruction to every gsm_symbolic question; GSM8K has none.
_SYMBOLIC_SUFFIX = re.compile(r"\s*Give the result as your final answer\. Do not include units\.\s*$")

Row = tuple[str, dict[str, Any]]  # (where: "file:line", raw record)


def _read_rows(path: Path) -> list[Row]:
    """Raw rows of a JSONL or parquet file, each with where it came from (for error messages)."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{path}: not a readable parquet file ({err})") from None
        return [(f"{path}:row {i + 1}", row) for i, row in enumerate(table.to_pylist())]
    return [(f"{path}:{lineno}", record) for lineno, record in read_jsonl_lines(path)]


def _find_split_file(folder: Path, split: str) -> Path:
    candidates = [
        folder / f"{split}.jsonl",
        folder / f"{split}.parquet",
        *sorted(folder.glob(f"**/{split}-*.parquet")),
        *sorted(folder.glob(f"**/{split}.jsonl")),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: no {split}.jsonl or {split}.parquet (or {split}-*.parquet) in this folder")


def to_records(rows: Iterable[Row], prefix: str, source: str, keep: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Validate raw GSM8K-schema rows and turn them into looper records (id, question, answer, gold)."""
    records = []
    for i, (where, row) in enumerate(rows):
        for key in ("question", "answer"):
            if key not in row:
                raise InputError(f"{where}: missing field {key!r}")
            if not isinstance(row[key], str) or not row[key].strip():
                raise InputError(f"{where}: field {key!r} must be a non-empty string")
        gold = parse_gold(row["answer"])
        if gold is None:
            raise InputError(f"{where}: field 'answer' has no parseable '#### <number>' line")
        record = {
            "id": f"{prefix}-{i:05d}",
            "question": row["question"].strip(),
            "answer": row["answer"].strip(),
            "gold": gold,
            "source": source,
        }
        record.update({k: row[k] for k in keep if k in row})
        records.append(record)
    if not records:
        raise InputError(f"{prefix}: the source holds no rows")
    return records


def load_local(path: Path, split: str) -> list[Row]:
    path = Path(path)
    if path.is_dir():
        path = _find_split_file(path, split)
    rows = _read_rows(path)
    if not rows:
        raise InputError(f"{path}: holds no rows (the {split} split)")
    return rows


def load_hub(hub_id: str, hub_config: str, split: str) -> list[Row]:
    """Rows of a Hub dataset split (network needed; a clear error offline)."""
    require_hub(
        f"dataset {hub_id}",
        "Offline, use data.source=local with data.path=<folder with train/test JSONL> or data.source=gsm_symbolic.",
    )
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, hub_config, split=split)
    except Exception as err:  # the datasets library raises many types for offline/missing repos
        raise InputError(
            f"could not load {hub_id} ({hub_config}, split {split}) from the Hugging Face Hub: {err}. "
            "Offline, use data.source=local with data.path=<folder with train/test JSONL> or data.source=gsm_symbolic."
        ) from None
    return [(f"{hub_id}[{split}] row {i + 1}", row) for i, row in enumerate(ds)]


def generate_symbolic(size: int, seed: int) -> list[Row]:
    """GSM8K-schema rows from reasoning-gym's gsm_symbolic generator (offline, seeded)."""
    import reasoning_gym

    rows = []
    for i, item in enumerate(reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)):
        cot = item["metadata"].get("answer_cot", "").strip()
        if not re.search(r"####\s*\S", cot):
            cot = f"{cot}\n#### {item['answer']}".strip()
        rows.append(
            (
                f"gsm_symbolic(seed={seed}) item {i}",
                {"question": _SYMBOLIC_SUFFIX.sub("", item["question"]), "answer": cot},
            )
        )
    return rows


def symbolic_test_records(data: DataConfig, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The gsm_symbolic test set: data.symbolic_test_size problems generated with seed + 1 (train uses
    seed), less any question in ``exclude`` (the train split's). A gsm_symbolic run's test split, and
    the generated set a GSM8K run's eval can add, are made by this one recipe."""
    rows = [r for r in generate_symbolic(data.symbolic_test_size, seed + 1) if r[1]["question"] not in exclude]
    return to_records(rows, "gsm_symbolic-test", "gsm_symbolic")


def split_train_dev(records: list[dict[str, Any]], dev_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic seeded 80/20 split; train and dev keep the source order."""
    if not 0 < dev_fraction < 1:
        raise ConfigValueError(
            f"data.dev_fraction must be between 0 and 1, got {dev_fraction}", fields=("data.dev_fraction",)
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(records) * dev_fraction))
    dev_idx = set(order[:n_dev])
    train = [r for i, r in enumerate(records) if i not in dev_idx]
    dev = [r for i, r in enumerate(records) if i in dev_idx]
    if not train:
        raise InputError(
            f"the train split holds {len(records)} {'problem' if len(records) == 1 else 'problems'}: "
            f"nothing is left for train after data.dev_fraction={dev_fraction} takes the dev split"
        )
    return train, dev


def load_source(data: DataConfig, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train+dev records, test records) from the configured source, validated."""
    if data.source == "gsm_symbolic":
        train = to_records(generate_symbolic(data.symbolic_train_size, seed), "gsm_symbolic-train", data.source)
        return _cap(train, test=symbolic_test_records(data, seed, exclude={r["question"] for r in train}), data=data)
    if data.source == "hub":
        raw_train = load_hub(data.hub_id, data.hub_config, "train")
        raw_test = load_hub(data.hub_id, data.hub_config, "test")
    else:
        if not data.path:
            raise ConfigValueError(
                "data.path is required when data.source is local", fields=("data.path", "data.source")
            )
        if Path(data.path).is_file() and not data.test_path:
            # the one file would be read as the test split too: every test question trained on
            raise ConfigValueError(
                f"data.path: {data.path} is a file, read as the train split; give the test split as "
                "data.test_path=<file>, or data.path=<folder with train and test files>",
                fields=("data.path", "data.test_path"),
            )
        raw_train = load_local(Path(data.path), "train")
        raw_test = load_local(Path(data.test_path), "test") if data.test_path else load_local(Path(data.path), "test")
    return _cap(
        to_records(raw_train, "gsm8k-train", data.source), to_records(raw_test, "gsm8k-test", data.source), data
    )


def _cap(train: list[dict[str, Any]], test: list[dict[str, Any]], data: DataConfig) -> tuple[list, list]:
    """data.max_train / data.max_test: keep the first N."""
    if data.max_train is not None:
        train = train[: data.max_train]
    if data.max_test is not None:
        test = test[: data.max_test]
    return train, test


def load_platinum(platinum: PlatinumConfig) -> list[dict[str, Any]] | None:
    """GSM8K-Platinum (1,209 test rows) with its cleaning_status kept, or None when not configured. Rows whose
    ``cleaning_status`` is ``rejected`` (questions the Platinum authors found ambiguous or broken; the Hub copy
    already leaves them out, a local copy of the full table may not) are dropped, with a count printed."""
    if platinum.source == "none":
        return None
    if platinum.source == "hub":
        rows = load_hub(platinum.hub_id, platinum.hub_config, "test")
    else:
        if not platinum.path:
            raise ConfigValueError(
                "data.platinum.path is required when data.platinum.source is local",
                fields=("data.platinum.path", "data.platinum.source"),
            )
        rows = load_local(Path(platinum.path), "test")
    rows = list(rows)
    # dropped before numbering, so that ids match the Hub copy's (which has no rejected rows)
    kept = [(where, row) for where, row in rows if str(row.get("cleaning_status", "")).strip().lower() != "rejected"]
    if len(kept) < len(rows):
        dropped = len(rows) - len(kept)
        print(
            f"prepare-data: GSM8K-Platinum: {dropped} {'row' if dropped == 1 else 'rows'} marked cleaning_status=rejected "
            f"dropped, {len(kept)} kept"
        )
    if rows and not kept:
        raise InputError(f"GSM8K-Platinum ({platinum.source}): every row is marked cleaning_status=rejected")
    return to_records(kept, "gsm8k_platinum-test", f"platinum:{platinum.source}", keep=("cleaning_status",))


def main(config: RunConfig) -> RunDir:
    run = RunDir.of(config)
    stage = Stage(config, STAGE, run, output=config.run_dir / "data", needs=(run.train, run.dev, run.test))
    if stage.done():
        return stage.run
    train_all, test = load_source(config.data, config.seed)
    train, dev = split_train_dev(train_all, config.data.dev_fraction, config.seed)
    platinum = load_platinum(config.data.platinum)
    # Everything is validated; only now does the run folder get outputs.
    run = stage.start()
    name = config.data.name
    counts = {
        f"{name}_train": atomic_write_jsonl(run.train, train),
        f"{name}_dev": atomic_write_jsonl(run.dev, dev),
        f"{name}_test": atomic_write_jsonl(run.test, test),
    }
    if platinum is not None:
        counts["gsm8k_platinum"] = atomic_write_jsonl(run.platinum, platinum)
    atomic_write_json(
        run.data_info,
        {
            "source": config.data.source,
            "seed": config.seed,
            "dev_fraction": config.data.dev_fraction,
            "counts": counts,
            "dev_ids": [r["id"] for r in dev],
        },
    )
    stage.finish(counts=counts)
    print(f"prepare-data: {', '.join(f'{k} {v}' for k, v in counts.items())} -> {run.root / 'data'}")
    return run


if __name__ == "__main__":
    from looper.entrypoint import run_stage_command

    run_stage_command(main, __doc__, "prepare-data")
