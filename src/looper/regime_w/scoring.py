"""Regime W scores of one question's arm outputs; each is a pure function with a value in [0, 1].

Formulas (docs/regime_w.md has the derivations and examples). For n outputs with answers a_i
(None = no answer), families f_i and intermediate-quantity sets Q_i:

- ``s_end = max_a |{i : a_i = a}| / n`` over non-missing answers a (missing ones only enlarge n).
- ``s_path = mean_{i<j} J(Q_i, Q_j)`` with Jaccard ``J(A, B) = |A ∩ B| / |A ∪ B|`` and ``J(∅, ∅) = 0``
  (no shown work is no evidence of a shared route).
- ``s_cf = |{(i, j) : f_i = compute, f_j = reflective, a_i = a_j ≠ None}| / (n_compute * n_reflective)``:
  the share of cross-family pairs that agree; 0 when a family is absent (robustness unmeasured).
- ``s_wm = (w_end s_end + w_path s_path + w_cf s_cf) / (w_end + w_path + w_cf)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
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


def family_and_answer(outputs: Sequence[Any]) -> list[tuple[str, str | None]]:
    """(family, canonical answer) of each output: objects with ``family`` / ``answer`` (looper's ArmOutput),
    or the plan's dicts (``answer``, ``reasoning``, ``full_text``, optional ``arm`` / ``family``; looper's
    rollout records, with ``text``, also fit). A dict's answer is read by the one checker: its ``answer``
    field as ``#### answer``, else its text's ``#### N`` line."""
    out = []
    for i, o in enumerate(outputs):
        if not isinstance(o, Mapping):
            out.append((o.family, o.answer))
            continue
        raw = o.get("answer")
        answer = extract_answer(f"#### {raw}") if raw is not None else extract_answer(o.get("full_text") or o.get("text") or "")
        out.append((family_of(o.get("arm"), o.get("family"), i, len(outputs)), answer))
    return out


def s_cf_for_question(arm_outputs: Sequence[HasFamilyAndAnswer] | Sequence[Mapping[str, Any]]) -> float:
    """Share of (compute, reflective) pairs whose answers agree: does the answer survive a change of regime?
    Takes looper's outputs or the plan's list of dicts (``family_and_answer``)."""
    pairs = family_and_answer(arm_outputs)
    compute = [a for f, a in pairs if f == "compute"]
    reflective = [a for f, a in pairs if f == "reflective"]
    if not compute or not reflective:
        return 0.0
    agree = sum(1 for a in compute for b in reflective if a is not None and a == b)
    return agree / (len(compute) * len(reflective))


def s_wm_for_question(s_end: float, s_path: float, s_cf: float, w_end: float = 0.4, w_path: float = 0.2,
                      w_cf: float = 0.4) -> float:
    """Weighted mean of the three agreement scores (weights need not sum to 1; they are normalised)."""
    total = w_end + w_path + w_cf
    if total <= 0 or min(w_end, w_path, w_cf) < 0:
        raise ValueError(f"Regime W weights must be >= 0 with a positive sum, got {w_end}, {w_path}, {w_cf}")
    return (w_end * s_end + w_path * s_path + w_cf * s_cf) / total
