"""Statistics against known values."""

import math

import pytest

from looper.stats import auroc, mcnemar_exact, pass_at_k, wilson_interval


@pytest.mark.parametrize("b,c,p,why", [
    (0, 0, 1.0, "no discordant pairs: no evidence"),
    (5, 5, 1.0, "balanced discordance"),
    (0, 6, 0.03125, "2 * 0.5**6"),
    (1, 9, 0.021484375, "2 * (1 + 10) / 1024"),
    (10, 0, 0.001953125, "2 * 0.5**10, symmetric in b and c"),
    (3, 12, 0.03515625, "2 * (1 + 15 + 105 + 455) / 32768"),
])
def test_mcnemar_exact(b, c, p, why):
    assert mcnemar_exact(b, c) == pytest.approx(p), why


@pytest.mark.parametrize("n,c,k,expected,why", [
    (10, 0, 1, 0.0, "nothing correct"),
    (10, 10, 5, 1.0, "all correct"),
    (10, 3, 1, 0.3, "pass@1 is the fraction correct"),
    (5, 1, 2, 0.4, "1 - C(4,2)/C(5,2) = 1 - 6/10"),
    (4, 2, 4, 1.0, "n - c < k: a correct one is always drawn"),
    (8, 2, 3, 1 - math.comb(6, 3) / math.comb(8, 3), "Chen et al. estimator"),
])
def test_pass_at_k(n, c, k, expected, why):
    assert pass_at_k(n, c, k) == pytest.approx(expected), why


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_auroc():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # ties count half
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([1, 2], [True, True]) is None
