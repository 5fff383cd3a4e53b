"""Small statistics used by evaluation and the Regime W report (exact, dependency-free)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion successes / n (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A right, B wrong) and c (A wrong, B right).

    Under H0 the discordant pairs split Binomial(b + c, 1/2); p = min(1, 2 * P[X <= min(b, c)]).
    """
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_half_cdf(min(b, c), n))


def binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2): the exact tail of a sign test (by symmetry, P(X >= n - k) too)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k) for n samples with c correct."""
    if k > n:
        raise ValueError(f"pass@k needs k <= n samples (k={k}, n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


Z95, Z80 = 1.959964, 0.841621  # standard normal quantiles: two-sided 5% test, 80% power


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-question values in [0, 1] (e.g. each question's share of k sampled answers that are correct) and
    its 95% interval from the normal approximation, mean +- 1.96 sd / sqrt(n), clipped to [0, 1]. When every
    question scores alike (sd = 0: all 0% or all 100%) that interval has no width; then it is the Wilson interval
    of the mean with the n questions as the sample (Wilson 1927), what n questions of one answer each would give."""
    n = len(values)
    if n == 0:
        return (0.0, 0.0, 0.0)
    mean = sum(values) / n
    se = _sd(values, mean) / math.sqrt(n) if n > 1 else 0.0
    if se == 0.0:
        return (mean, *wilson_interval(mean * n, n))
    return (mean, max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se))


def _sd(values: Sequence[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Model B minus model A on the same questions, from per-question scores (0/1 for one greedy answer, the share
    correct for k samples): mean difference, its 95% interval, the two-sided p-value of the paired test (normal
    approximation of the paired t-test, sound from a few dozen questions on), and the smallest difference this
    sample could detect with 80% power at the 5% level, (z_0.975 + z_0.8) x sd(d) / sqrt(n) (the usual
    power formula for a paired mean, e.g. Cohen, Statistical Power Analysis, 1988), from the measured spread."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same questions ({len(a)} vs {len(b)})")
    n = len(a)
    d = [y - x for x, y in zip(a, b)]
    mean = sum(d) / n if n else 0.0
    se = _sd(d, mean) / math.sqrt(n) if n > 1 else 0.0
    p = math.erfc(abs(mean) / se / math.sqrt(2)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {
        "difference": mean,
        "ci95": [mean - Z95 * se, mean + Z95 * se],
        "p_value": p,
        "detectable_80": (Z95 + Z80) * se,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values for a family of tests, in the order given: the i-th smallest p times
    (m - i + 1), each kept at least as large as the one before it and at most 1. Rejecting where the adjusted p is
    below alpha controls the family-wise error rate at alpha (Holm, "A simple sequentially rejective multiple test
    procedure", Scandinavian Journal of Statistics 6, 1979)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _midranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, each tie group given its average rank."""
    ranked = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and values[ranked[j + 1]] == values[ranked[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[ranked[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None if one class is absent."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum = sum(r for r, y in zip(_midranks(scores), labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _structural_components(scores: Sequence[float], labels: Sequence[bool]) -> tuple[list[float], list[float]]:
    """DeLong's placement values: for each positive case, the share of negatives it outscores (ties half), and for
    each negative, the share of positives that outscore it; both from midranks (Sun & Xu 2014)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    within_pos, within_neg = _midranks(pos), _midranks(neg)
    combined = _midranks(list(scores))
    ranks_pos = [r for r, y in zip(combined, labels) if y]
    ranks_neg = [r for r, y in zip(combined, labels) if not y]
    v10 = [(rz - rx) / len(neg) for rz, rx in zip(ranks_pos, within_pos)]
    v01 = [1 - (rz - ry) / len(pos) for rz, ry in zip(ranks_neg, within_neg)]
    return v10, v01


def _covariance(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / (len(x) - 1)


def auroc_difference(a: Sequence[float], b: Sequence[float], labels: Sequence[bool]) -> dict[str, Any] | None:
    """Two scores' AUROCs on the same cases compared, paired: ``difference`` (AUROC of b minus AUROC of a), its 95%
    CI and the two-sided p-value of DeLong's test (DeLong, DeLong & Clarke-Pearson 1988, "Comparing the areas under
    two or more correlated receiver operating characteristic curves", Biometrics 44:837-845), with the placement
    values computed from midranks (Sun & Xu 2014, IEEE Signal Processing Letters 21:1389-1393). None with fewer than
    two cases of either class (no variance to estimate). ValueError if the three sequences differ in length."""
    if not len(a) == len(b) == len(labels):
        raise ValueError(f"auroc_difference: {len(a)}, {len(b)} and {len(labels)} values; one per case expected")
    n_pos = sum(1 for y in labels if y)
    if n_pos < 2 or len(labels) - n_pos < 2:
        return None
    (a10, a01), (b10, b01) = _structural_components(a, labels), _structural_components(b, labels)
    difference = sum(b10) / len(b10) - sum(a10) / len(a10)
    variance = sum(
        (_covariance(x, x) + _covariance(y, y) - 2 * _covariance(x, y)) / len(x) for x, y in ((a10, b10), (a01, b01))
    )
    se = math.sqrt(max(variance, 0.0))
    if se == 0.0:
        return {"difference": difference, "ci95": [difference, difference], "p_value": 1.0 if difference == 0 else 0.0}
    return {
        "difference": difference,
        "ci95": [difference - 1.959964 * se, difference + 1.959964 * se],
        "p_value": math.erfc(abs(difference / se) / math.sqrt(2)),
    }
