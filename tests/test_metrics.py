"""The shared statistics against values computed another way (enumeration, algebra)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ucoder.evaluation.metrics import (
    bootstrap_ci,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_ci,
)


def outcomes(only_a: int, only_b: int, both: int = 5, neither: int = 7):
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return a, b


def enumerated_mcnemar(only_a: int, only_b: int) -> float:
    """P(a split of the discordant pairs at least as lopsided), by listing every split."""
    n, k = only_a + only_b, min(only_a, only_b)
    splits = list(itertools.product((0, 1), repeat=n))
    extreme = sum(1 for s in splits if min(sum(s), n - sum(s)) <= k)
    return min(1.0, extreme / len(splits))


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(*outcomes(10, 2)) == pytest.approx(0.0386, abs=5e-5)
    assert mcnemar_exact(*outcomes(2, 10)) == mcnemar_exact(*outcomes(10, 2))
    for only_a, only_b in ((10, 2), (1, 9), (0, 6), (7, 7), (3, 4), (12, 0)):
        assert mcnemar_exact(*outcomes(only_a, only_b)) == pytest.approx(
            enumerated_mcnemar(only_a, only_b), rel=1e-12)
    assert mcnemar_exact(*outcomes(0, 0)) == 1.0  # never disagree: no evidence at all
    assert mcnemar_exact([True, False], [False, False]) == 1.0  # bools count as 0/1


def test_bootstrap_ci_degenerate_and_seeded():
    assert bootstrap_ci([1] * 30, n_boot=200) == (1.0, 1.0)
    assert bootstrap_ci([0.25] * 7, n_boot=200) == (0.25, 0.25)
    values = [1, 0, 0, 1, 1, 0, 1, 1, 0, 1] * 4
    assert bootstrap_ci(values, n_boot=500, seed=3) == bootstrap_ci(values, n_boot=500, seed=3)
    assert bootstrap_ci(values, n_boot=500, seed=3) != bootstrap_ci(values, n_boot=500, seed=4)
    low, high = bootstrap_ci(values, n_boot=2000)
    assert low < np.mean(values) < high


def test_bootstrap_ci_matches_the_normal_interval_for_a_large_sample():
    values = [1, 0] * 200  # mean 0.5, n 400: normal interval 0.5 +- 1.96 * 0.025
    low, high = bootstrap_ci(values, n_boot=20000)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006)
    assert high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)
    narrow = bootstrap_ci(values, n_boot=20000, alpha=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        sample = (rng.random(100) < 0.3).astype(int)
        low, high = bootstrap_ci(sample, n_boot=1000, seed=trial)
        hits += low <= 0.3 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_bootstrap_diff():
    assert paired_bootstrap_diff([1, 0, 1], [1, 0, 1], n_boot=100) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_diff([1] * 5, [0] * 5, n_boot=100) == (1.0, 1.0, 1.0)
    a, b = outcomes(10, 2, both=30, neither=20)
    diff, low, high = paired_bootstrap_diff(a, b, n_boot=5000)
    assert diff == pytest.approx(8 / 62) and 0 < low < diff < high
    # Pairing: the 50 problems both agree on cancel, so the interval is narrower than
    # that of a difference of two independently resampled means (widths add in squares).
    widths = [hi - lo for lo, hi in (bootstrap_ci(a, n_boot=5000),
                                     bootstrap_ci(b, n_boot=5000, seed=1))]
    assert high - low < 0.8 * math.hypot(*widths)


def test_wilson_ci_solves_the_score_equation():
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    z = 1.959963984540054
    for k, n in ((0, 10), (3, 40), (40, 40), (17, 164)):
        low, high = wilson_ci(k, n)
        p = k / n  # the roots of (p - x)^2 = z^2 x (1 - x) / n
        qa, qb, qc = 1 + z * z / n, -(2 * p + z * z / n), p * p
        root = math.sqrt(qb * qb - 4 * qa * qc)
        assert (low, high) == pytest.approx(((-qb - root) / (2 * qa), (-qb + root) / (2 * qa)))


@pytest.mark.parametrize("call, match", [
    (lambda: bootstrap_ci([]), "values"),
    (lambda: bootstrap_ci([1, float("nan")]), "finite"),
    (lambda: bootstrap_ci([1, 0], n_boot=0), "n_boot=0"),
    (lambda: bootstrap_ci([1, 0], alpha=1.0), "alpha=1.0"),
    (lambda: paired_bootstrap_diff([1, 0], [1]), "paired"),
    (lambda: mcnemar_exact([1, 0], [1]), "paired"),
    (lambda: mcnemar_exact([1, 2], [1, 0]), "0/1"),
    (lambda: wilson_ci(5, 3), "successes=5"),
])
def test_bad_inputs_name_the_option(call, match):
    with pytest.raises(ValueError, match=match):
        call()
