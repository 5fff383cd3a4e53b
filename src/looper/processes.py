"""The processes of a run: which one writes the shared files, each one's share of the work (``accelerate launch`` /
``torchrun``, through accelerate), and the seeds that make their sampling replayable."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from looper.errors import InputError
from looper.files import atomic_write_jsonl, read_jsonl


def is_main_process() -> bool:
    """True in a single process, and in the first process of an ``accelerate launch`` / ``torchrun`` job (the one
    that writes the run folder's shared files; the others write only their own shard files)."""
    return int(os.environ.get("RANK", "0")) == 0


def set_seed(seed: int) -> None:
    """The one place the global seed is set (python, numpy, torch, transformers)."""
    import numpy as np
    import torch
    from transformers import set_seed as hf_set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    hf_set_seed(seed)


def derive_seed(seed: int, *parts: Any) -> int:
    """A per-sample seed from (run seed, question id, arm, sample): replayable and batch-independent."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class Shards:
    """Work split across the processes of an ``accelerate launch`` / ``torchrun`` job (one per GPU).

    Each process takes every ``world``-th item (round robin keeps shards balanced after length
    sorting), appends its records to its own shard file (so each shard resumes on its own), and the
    main process merges the shards into the final file in the original order once all are done.
    With one process nothing changes: the shard file is the final file.
    """

    def __init__(self) -> None:
        import torch
        from accelerate import PartialState

        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list[Any]) -> list[Any]:
        return items[self.rank :: self.world]

    def path(self, final: Path, rank: int | None = None) -> Path:
        if self.world == 1:
            return Path(final)
        r = self.rank if rank is None else rank
        return Path(final).with_name(f"{Path(final).stem}.shard{r}-of-{self.world}{Path(final).suffix}")

    def wait(self) -> None:
        self.state.wait_for_everyone()

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in process order (a collective: every process must call it)."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def merge(self, final: Path, order: list[Any], key: str = "id") -> list[dict[str, Any]]:
        """Main process: every shard's records, in ``order`` of their keys, written atomically to ``final``
        (with one process, the file is only put in that order)."""
        by_key: dict[Any, dict[str, Any]] = {}
        for r in range(self.world):
            for record in read_jsonl(self.path(final, r)):
                if record[key] in by_key:
                    raise InputError(
                        f"{final}: {key} {record[key]!r} appears twice; delete the file (and any shards) and redo"
                    )
                by_key[record[key]] = record
        missing = [k for k in order if k not in by_key]
        if missing:
            raise InputError(
                f"{final}: {len(missing)} records missing after merging {self.world} shards (e.g. {missing[0]!r})"
            )
        records = [by_key[k] for k in order]
        atomic_write_jsonl(final, records)
        if self.world > 1:
            for r in range(self.world):
                self.path(final, r).unlink(missing_ok=True)
        return records
