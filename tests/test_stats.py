"""Statistics against known values."""

import math

import pytest

from looper.stats import (
    auroc,
    auroc_difference,
    mcnemar_exact,
    pass_at_k,
    wilson_interval,
)


@pytest.mark.parametrize(
    "b,c,p,why",
    [
        (0, 0, 1.0, "no discordant pairs: no evidence"),
        (5, 5, 1.0, "balanced discordance"),
        (0, 6, 0.03125, "2 * 0.5**6"),
        (1, 9, 0.021484375, "2 * (1 + 10) / 1024"),
        (10, 0, 0.001953125, "2 * 0.5**10, symmetric in b and c"),
        (3, 12, 0.03515625, "2 * (1 + 15 + 105 + 455) / 32768"),
    ],
)
def test_mcnemar_exact(b, c, p, why):
    assert mcnemar_exact(b, c) == pytest.approx(p), why


@pytest.mark.parametrize(
    "n,c,k,expected,why",
    [
        (10, 0, 1, 0.0, "nothing correct"),
        (10, 10, 5, 1.0, "all correct"),
        (10, 3, 1, 0.3, "pass@1 is the fraction correct"),
        (5, 1, 2, 0.4, "1 - C(4,2)/C(5,2) = 1 - 6/10"),
        (4, 2, 4, 1.0, "n - c < k: a correct one is always drawn"),
        (8, 2, 3, 1 - math.comb(6, 3) / math.comb(8, 3), "Chen et al. estimator"),
    ],
)
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


def test_auroc_difference_known_value():
    """By hand from DeLong et al.'s definitions: a's placements (1, 0.5) for the positives and (0.5, 1) for the
    negatives, b's all 1; AUROCs 0.75 and 1; variance 0.125 / 2 + 0.125 / 2."""
    labels = [True, True, False, False]
    got = auroc_difference([0.9, 0.4, 0.5, 0.1], [0.8, 0.7, 0.6, 0.2], labels)
    se = math.sqrt(0.125)
    assert got["difference"] == pytest.approx(0.25)
    assert got["ci95"] == pytest.approx([0.25 - 1.959964 * se, 0.25 + 1.959964 * se])
    assert got["p_value"] == pytest.approx(math.erfc(0.25 / se / math.sqrt(2)))  # 0.4795
    same = auroc_difference([0.9, 0.4, 0.5, 0.1], [0.9, 0.4, 0.5, 0.1], labels)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    assert auroc_difference([1, 2, 3], [3, 2, 1], [True, False, False]) is None  # one positive: no variance
    with pytest.raises(ValueError, match="one per case"):
        auroc_difference([1, 2], [1], [True, False])


def test_auroc_difference_matches_the_pairwise_definition_and_the_bootstrap():
    """Midrank placements equal the O(m n) pairwise ones (ties included), and the standard error is close to a
    bootstrap's over cases."""
    import random

    rng = random.Random(0)
    labels = [rng.random() < 0.2 for _ in range(300)]
    a = [round(rng.gauss(0.6 if y else 0.0, 1), 1) for y in labels]  # rounded: many ties
    b = [x + round(rng.gauss(0.3 if y else 0.0, 0.7), 1) for x, y in zip(a, labels)]  # correlated with a
    pos = [i for i, y in enumerate(labels) if y]
    neg = [i for i, y in enumerate(labels) if not y]

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    def placements(s):
        return (
            [sum(psi(s[i], s[j]) for j in neg) / len(neg) for i in pos],
            [sum(psi(s[i], s[j]) for i in pos) / len(pos) for j in neg],
        )

    def cov(x, y):
        mx, my = sum(x) / len(x), sum(y) / len(y)
        return sum((u - mx) * (v - my) for u, v in zip(x, y)) / (len(x) - 1)

    (a10, a01), (b10, b01) = placements(a), placements(b)
    var = sum((cov(x, x) + cov(y, y) - 2 * cov(x, y)) / len(x) for x, y in ((a10, b10), (a01, b01)))
    got = auroc_difference(a, b, labels)
    assert got["difference"] == pytest.approx(auroc(b, labels) - auroc(a, labels))
    half = got["ci95"][1] - got["difference"]
    assert half == pytest.approx(1.959964 * math.sqrt(var))
    boots = []
    for _ in range(400):
        idx = [rng.randrange(len(labels)) for _ in labels]
        la = [labels[i] for i in idx]
        boots.append(auroc([b[i] for i in idx], la) - auroc([a[i] for i in idx], la))
    mean = sum(boots) / len(boots)
    boot_se = math.sqrt(sum((x - mean) ** 2 for x in boots) / (len(boots) - 1))
    assert half / 1.959964 == pytest.approx(boot_se, rel=0.2)


def test_paired_difference_and_mean_interval_known_values():
    from looper.stats import mean_interval, paired_difference

    a = [0.0, 0.5, 0.25, 1.0, 0.0, 0.75]
    b = [0.25, 0.5, 0.75, 1.0, 0.25, 0.75]  # differences 0.25, 0, 0.5, 0, 0.25, 0: mean 1/6, sd 0.2041
    got = paired_difference(a, b)
    se = 0.20412414523193154 / 6**0.5
    assert abs(got["difference"] - 1 / 6) < 1e-12
    assert abs(got["ci95"][0] - (1 / 6 - 1.959964 * se)) < 1e-9 and abs(got["ci95"][1] - (1 / 6 + 1.959964 * se)) < 1e-9
    assert abs(got["p_value"] - 0.04546) < 1e-4  # erfc(|z| / sqrt 2) with z = 2.0: two-sided normal p
    assert abs(got["detectable_80"] - 2.801585 * se) < 1e-9
    assert paired_difference([1.0, 0.0], [1.0, 0.0])["p_value"] == 1.0  # no difference at all
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1.0], [1.0, 0.0])
    mean, lo, hi = mean_interval([0.0, 1.0, 1.0, 1.0])
    assert mean == 0.75 and lo >= 0.0 and hi == 1.0  # clipped to [0, 1]
    # every question at 0% (or 100%): the Wilson interval of 0 in 4 (of 100 in 100), not a zero-width one
    assert mean_interval([0.0] * 4) == pytest.approx((0.0, 0.0, 0.4899), abs=1e-4)
    assert mean_interval([1.0] * 100) == pytest.approx((1.0, 0.9630, 1.0), abs=1e-4)


def test_holm_adjusts_step_down_in_the_given_order():
    from looper.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04; the last kept at 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
