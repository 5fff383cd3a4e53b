"""Rollout records on disk (``data/rl_rollouts.jsonl``, or a file in the same shape given to ``looper regime-w
report``): read them with each record's trajectories checked, so a bad file is one error naming its line rather than
a failure deep inside scoring."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from looper.errors import InputError
from looper.files import json_type, read_jsonl_lines
from looper.regime_w.scoring import as_arm_outputs


def trajectories_problem(trajectories: Any, scored: bool = False) -> str | None:
    """Why a rollout record's ``trajectories`` cannot be read as arm outputs (``as_arm_outputs``), or None: a
    non-empty list of objects whose text fields are strings and whose arm has a known family; with ``scored``,
    each also with the Regime W scores ``looper collect-rollouts`` writes (``parts``, ``reward``)."""
    if not isinstance(trajectories, list) or not trajectories:
        return "'trajectories' must be a non-empty list of objects"
    for i, t in enumerate(trajectories):
        if not isinstance(t, Mapping):
            return f"trajectories[{i}]: expected a JSON object, got {json_type(t)}"
        for key in ("arm", "family", "full_text", "text", "reasoning"):
            if t.get(key) is not None and not isinstance(t[key], str):
                return f"trajectories[{i}].{key}: expected a string, got {json_type(t[key])}"
        if scored and not (
            isinstance(t.get("parts"), Mapping)
            and "correct" in t["parts"]
            and isinstance(t.get("reward"), (int, float))
        ):
            return f"trajectories[{i}]: no Regime W scores ('parts', 'reward'); `looper collect-rollouts` writes them"
    try:
        as_arm_outputs(trajectories)
    except ValueError as err:
        return str(err).replace("arm_outputs[", "trajectories[", 1)
    return None


def read_rollouts(
    path: Path, required: tuple[str, ...] = ("id", "trajectories"), scored: bool = False
) -> list[dict[str, Any]]:
    """The records of a rollouts JSONL file, each record's trajectories checked by ``trajectories_problem``.

    Raises:
        InputError: ``FILE:LINE: problem`` for the first bad record (or line, as ``read_jsonl_lines``), or a file
            with no records.
    """
    records = []
    for lineno, record in read_jsonl_lines(path, required):
        problem = trajectories_problem(record["trajectories"], scored)
        if problem:
            raise InputError(f"{path}:{lineno}: {problem}")
        records.append(record)
    if not records:
        raise InputError(f"{path}: no rollout records")
    return records
