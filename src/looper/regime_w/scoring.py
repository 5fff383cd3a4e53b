"""Regime W scores of one question's arm outputs; each is a pure function with a value in [0, 1].

Formulas (docs/regime_w.md has the derivations and examples). For n outputs with answers a_i
(None = no answer), families f_i and intermediate-quantity sets Q_i:

- ``s_end = max_a |{i : a_i = a}| / n`` over non-missing answers a (missing ones only enlarge n).
- ``s_path = mean_{i<j} J(Q_i, Q_j)`` with Jaccard ``J(A, B) = |A ∩ B| / |A ∪ B|`` and ``J(∅, ∅) = 0``
  (no shown work is no evidence of a shared route).
- ``s_cf = |{(i, j) : f_i = compute, f_j = reflective, a_i = a_j ≠ None}| / (n_compute * n_reflective)``:
  the share of cross-family pairs that agree; 0 when a family is absent (robustness unmeasured).
- ``s_wm = (w_end s_end + w_path s_path + w_cf s_cf) / (w_end + w_path + w_cf)``.

A bare answer (``shows_work``: no number besides the answer itself, e.g. a lone ``#### 42``) does not vote: for s_end,
s_cf and the consensus it counts as no answer. Copying an instruction's example or guessing costs nothing to write, so
without this a group of copies is a confident consensus that the label-free reward pays as if it were correct.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from itertools import combinations
from typing import Any, Protocol

from looper.answers import extract_answer, parse_number
from looper.regime_w.arms import family_of

_ANNOTATION = re.compile(r"<<[^<>]*=\s*([^<>]+?)>>")
# "... a op b = c": the number after an "=" is a step's result when the text just before that "="
# (back to the previous "=" or line break) holds an operator between two numbers. Two linear scans
# instead of one pattern with nested repetition, which backtracked for seconds on long "a * b + c"
# chains (a policy could write those on purpose).
_RESULT = re.compile(r"=\s*(-?\$?\d[\d,]*(?:\.\d+)?%?)")
_OPERATION = re.compile(r"\d[\s%)]*[-+*/x×÷^][\s($]*-?\$?\d")
_LOOKBACK = 200  # characters before an "=" searched for its operation


@dataclass
class ArmOutput:
    """One trajectory: which arm (and family) produced which text, how long, whether it was cut off."""

    arm: str
    family: str
    text: str
    num_tokens: int = 0
    truncated: bool = False
    thought_open: bool = False  # the prompt left a thought open: no answer until the text closes it (answers.py)
    answer: str | None = field(default=None, init=False)  # set by score_question, in the run's answer mode


def as_arm_outputs(arm_outputs: Sequence[Any]) -> list[ArmOutput]:
    """Looper's ArmOutputs (or any object with ``family`` / ``answer``) as they are; the plan's dicts (docs/plan.md §3: ``answer``,
    ``reasoning``, ``full_text``, optional ``arm`` / ``family`` / ``num_tokens`` / ``truncated``) and looper's
    rollout records (``text``, ``thought_open``) as ArmOutputs. A dict's text is its ``full_text`` (or ``text``), else its
    reasoning followed by ``#### answer``; its answer is read from that text by the one checker."""
    outs = []
    for i, o in enumerate(arm_outputs):
        if not isinstance(o, Mapping):
            outs.append(o)
            continue
        text = o.get("full_text") or o.get("text")
        if text is None:
            if o.get("answer") is None and o.get("reasoning") is None:
                raise ValueError(f"arm_outputs[{i}]: needs 'full_text', or 'reasoning' and/or 'answer'")
            text = (o.get("reasoning") or "").strip() + (f"\n#### {o['answer']}" if o.get("answer") is not None else "")
        family = family_of(o.get("arm"), o.get("family"), i, len(arm_outputs))
        outs.append(
            ArmOutput(
                o.get("arm") or f"arm{i}",
                family,
                text,
                int(o.get("num_tokens") or 0),
                bool(o.get("truncated")),
                bool(o.get("thought_open")),
            )
        )
    return outs


class HasFamilyAndAnswer(Protocol):
    family: str
    answer: str | None


@lru_cache(maxsize=1 << 16)
def _quantity(raw: str) -> str | None:
    """Canonical form of a step's result; plain tokens (the common case) skip the general parser."""
    try:
        return str(Fraction(raw.replace(",", "").replace("$", "").rstrip("%").strip()))
    except (ValueError, ZeroDivisionError):
        value = parse_number(raw)
        return None if value is None else str(value)


def intermediate_quantities(reasoning: str) -> frozenset[str]:
    """Numbers produced by calculation steps (``a op b = c`` and ``<<...=c>>``), canonicalised."""
    results = []
    for match in _RESULT.finditer(reasoning):
        left = reasoning[max(0, match.start() - _LOOKBACK) : match.start()]
        left = left.rsplit("\n", 1)[-1].rsplit("=", 1)[-1]
        if _OPERATION.search(left):
            results.append(match.group(1))
    found = {_quantity(raw) for raw in _ANNOTATION.findall(reasoning) + results}
    found.discard(None)
    return frozenset(found)


_ANSWER_MARKS = re.compile(r"####[^\n]*|\\(?:boxed|fbox)\{[^{}]*\}")


def shows_work(text: str) -> bool:
    """Whether a trajectory holds any number besides its answer marks (``#### ...`` lines and ``\\boxed{...}``), in its
    thought or its visible text: ``#### 42`` alone is bare, ``6 * 7 = 42\n#### 42`` is not."""
    return any(ch.isdigit() for ch in _ANSWER_MARKS.sub(" ", text))


def votes(outputs: Sequence[ArmOutput]) -> list[str | None]:
    """The answers that count for agreement (s_end, s_cf, consensus): each output's ``answer``, None where it is bare."""
    return [o.answer if shows_work(o.text) else None for o in outputs]


def consensus_answer(answers: Sequence[str | None], families: Sequence[str] | None = None) -> str | None:
    """The modal answer; ties go to the answer reached by more families, then to the earliest arm."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    fams = families or [""] * len(answers)
    coverage = {a: len({f for f, b in zip(fams, answers) if b == a}) for a in counts}
    first = {}
    for i, a in enumerate(answers):
        if a is not None:
            first.setdefault(a, i)
    return max(counts, key=lambda a: (counts[a], coverage[a], -first[a]))


def s_end_for_question(answers: Sequence[str | None]) -> float:
    """Share of outputs on the modal answer; a missing answer counts as disagreement."""
    if not answers:
        return 0.0
    counts = Counter(a for a in answers if a is not None)
    return max(counts.values()) / len(answers) if counts else 0.0


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def s_path_for_question(reasonings: Sequence[str], quantities: Sequence[frozenset[str]] | None = None) -> float:
    """Mean pairwise Jaccard overlap of the intermediate quantities the outputs compute."""
    sets = list(quantities) if quantities is not None else [intermediate_quantities(r) for r in reasonings]
    pairs = list(combinations(sets, 2))
    return sum(_jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0


def s_cf_for_question(arm_outputs: Sequence[HasFamilyAndAnswer] | Sequence[Mapping[str, Any]]) -> float:
    """Share of (compute, reflective) pairs whose answers agree: does the answer survive a change of regime?
    Takes looper's outputs or the plan's list of dicts (docs/plan.md §3; ``as_arm_outputs``)."""
    pairs = [
        (o.family, extract_answer(o.text, thought_open=o.thought_open) if isinstance(raw, Mapping) else o.answer)
        for raw, o in zip(arm_outputs, as_arm_outputs(arm_outputs))
    ]
    compute = [a for f, a in pairs if f == "compute"]
    reflective = [a for f, a in pairs if f == "reflective"]
    if not compute or not reflective:
        return 0.0
    agree = sum(1 for a in compute for b in reflective if a is not None and a == b)
    return agree / (len(compute) * len(reflective))


def s_wm_for_question(
    s_end: float, s_path: float, s_cf: float, w_end: float = 0.4, w_path: float = 0.2, w_cf: float = 0.4
) -> float:
    """Weighted mean of the three agreement scores (weights need not sum to 1; they are normalised)."""
    total = w_end + w_path + w_cf
    if total <= 0 or min(w_end, w_path, w_cf) < 0:
        raise ValueError(f"Regime W weights must be >= 0 with a positive sum, got {w_end}, {w_path}, {w_cf}")
    return (w_end * s_end + w_path * s_path + w_cf * s_cf) / total
