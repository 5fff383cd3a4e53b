"""Preference pairs from Regime W rewards: which of a question's trajectories become chosen and rejected.

Read by the build-preferences stage and by ``looper regime-w report`` (its ablations show how the
pairs change when a reward part is switched off), so it lives here, below both.
"""

from __future__ import annotations

from collections.abc import Sequence

from looper.config import PreferencesConfig


def select_pairs(
    rewards: Sequence[float], correct: Sequence[bool], cfg: PreferencesConfig, truncated: Sequence[bool] | None = None
) -> tuple[list[tuple[int, int]], str]:
    """Indices (chosen, rejected) for one question's trajectories, and why none when empty.

    A trajectory cut off by the token limit (``truncated``) is never chosen: TRL appends the end-of-sequence
    token to a chosen answer, so DPO would teach the policy to stop mid-answer. It can still be rejected.
    Ties in reward go to the earlier trajectory for chosen and the later one for rejected, so the result is
    deterministic.
    """
    n = len(rewards)
    if n < 2:
        return [], "fewer than 2 trajectories"
    cut = list(truncated) if truncated is not None else [False] * n
    order = sorted(range(n), key=lambda i: (-rewards[i], i))
    finished = [i for i in order if not cut[i]]
    if not finished:
        return [], "every trajectory truncated"
    candidates = [(finished[0], order[-1])] if finished[0] != order[-1] else []
    if cfg.max_pairs_per_question > 1:
        good = [i for i in finished if correct[i]]
        bad = [i for i in order if not correct[i]]
        candidates += sorted(((g, b) for g in good for b in bad), key=lambda p: -(rewards[p[0]] - rewards[p[1]]))
    pairs, seen = [], set()
    reason = "reward gap below min_margin" if candidates else "no untruncated trajectory ranks above another"
    for chosen, rejected in candidates:
        if (chosen, rejected) in seen:
            continue
        seen.add((chosen, rejected))
        if rewards[chosen] - rewards[rejected] < cfg.min_margin:
            continue
        if cfg.require_correct_chosen and not (correct[chosen] and not correct[rejected]):
            reason = "no correct-vs-incorrect pair"
            continue
        pairs.append((chosen, rejected))
        if len(pairs) >= cfg.max_pairs_per_question:
            break
    return pairs, ("" if pairs else reason)
