"""Files every stage reads and writes: atomic writes (a killed stage leaves the old file or the new one, never half
of one), JSONL read with errors naming the file and line, append-only JSONL for resumable stages, metrics logs."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from looper.errors import InputError

log = logging.getLogger("looper")

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private (0600); give it the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def json_type(value: Any) -> str:
    """A parsed JSON value's type in JSON's own terms, for messages: 'array', not Python's 'list'."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_jsonl_lines(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs of a JSONL file; a malformed line or a missing field is an InputError
    naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder, not a JSONL file")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (is this a binary file?)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {json_type(record)}")
            for key in required:
                if key not in record:
                    raise InputError(f"{path}:{lineno}: missing field {key!r}")
            records.append((lineno, record))
    return records


def require_input(path: Path, made_by: str) -> Path:
    """``path`` if it exists, else an InputError saying which stage makes it."""
    if not Path(path).exists():
        raise InputError(f"{path}: not found; run `looper {made_by}` first, with the same config")
    return Path(path)


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The records of a JSONL file, validated as in ``read_jsonl_lines``."""
    return [record for _, record in read_jsonl_lines(path, required)]


class JsonlAppender:
    """Append-only JSONL for long stages: one whole record per line, flushed and fsynced.

    On open, a torn last line (a crash mid-write) is cut off with a warning, so that the file
    always holds complete records; ``done_keys`` lists what is already there for resuming.
    """

    def __init__(self, path: Path, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self._recover()
        self._f = self.path.open("a")

    def _recover(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        pos = 0
        for line in raw.splitlines(keepends=True):
            pos += len(line)
            if not line.endswith(b"\n"):
                break
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_end = pos
        if good_end < len(raw):
            log.warning(
                "%s: dropping a torn record after byte %d (an interrupted run); it will be redone", self.path, good_end
            )
            with self.path.open("r+b") as f:
                f.truncate(good_end)

    @property
    def done_keys(self) -> set[Any]:
        return {r[self.key] for r in self.records}

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MetricsLog:
    """Metrics as JSONL, one flushed line per event."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}, default=str) + "\n")
