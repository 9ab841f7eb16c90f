"""The statistics every benchmark and study here shares, so all report them alike.

* pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
  Models Trained on Code", and its mean over problems;
* intervals over problems: :func:`bootstrap_ci` (percentile bootstrap of a mean),
  :func:`paired_bootstrap_diff` (the same for a difference on the same problems) and
  :func:`wilson_ci` (a proportion, no resampling);
* :func:`mcnemar_exact`: are two methods' per-problem 0/1 outcomes on the same
  problems different (the exact binomial test on the problems where they disagree)?

The bootstrap resamples problems, the unit that varies between benchmarks; it is seeded,
so a rerun reports the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn from ``n`` (``c`` correct) passes.

    ``1 - C(n-c, k) / C(n, k)``, computed as a product so large ``n`` does not overflow.

    Raises:
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not allowed; use an integer")
    if not 0 <= c <= n:
        raise ValueError(f"c={c} is not allowed; use 0 <= c <= n (n={n})")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is not allowed; use 1 <= k <= n (n={n})")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of :func:`pass_at_k` over problems given ``(n, c)`` per problem (0.0 if none)."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def report_ks(n: int) -> list[int]:
    """The k reported for ``n`` samples: 1, powers of two below ``n``, and ``n``."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def _values(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers, got "
                         f"{len(arr) if arr.ndim == 1 else arr.shape} values")
    return arr


def _check_options(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} is not allowed; use an integer >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} is not allowed; use 0 < alpha < 1 (0.05: 95%)")


def _percentiles(means: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 10000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem ``values``.

    Args:
        values: one number per problem (0/1 outcomes, a per-problem AUROC, ...).
        n_boot: resamples of the problems, with replacement.
        alpha: 1 - the interval's coverage (0.05: a 95% interval).
        seed: the resampling seed; the same inputs and seed give the same interval.

    Returns:
        ``(low, high)``; degenerate (``low == high``) when every value is the same.

    Raises:
        ValueError: on no values, non-finite ones, ``n_boot < 1`` or ``alpha`` outside (0, 1).
    """
    arr = _values(values, "values")
    _check_options(n_boot, alpha)
    rows = np.random.default_rng(seed).integers(0, arr.size, size=(n_boot, arr.size))
    return _percentiles(arr[rows].mean(axis=1), alpha)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000,
                          alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same problems with its paired percentile interval.

    The problems are resampled together (the same draw for ``a`` and ``b``), so what
    the two methods share per problem cancels out of the interval.

    Returns:
        ``(diff, low, high)``: ``mean(a) - mean(b)`` and its interval.

    Raises:
        ValueError: as :func:`bootstrap_ci`, or when ``a`` and ``b`` differ in length.
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must be paired per problem; got {x.size} and {y.size} values")
    _check_options(n_boot, alpha)
    d = x - y
    rows = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    low, high = _percentiles(d[rows].mean(axis=1), alpha)
    return float(d.mean()), low, high


def mcnemar_exact(a: Sequence[int], b: Sequence[int]) -> float:
    """Two-sided exact McNemar p of paired 0/1 outcomes (1: the problem was solved).

    Only the discordant problems count: ``n01`` solved by ``a`` alone, ``n10`` by ``b``
    alone. Under "no difference" each is a fair coin, so ``p = min(1, 2 P(X <= min))``
    for ``X ~ Binomial(n01 + n10, 1/2)``; 1.0 when they never disagree.

    Raises:
        ValueError: when the lengths differ or an outcome is not 0/1 (or a bool).
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must be paired per problem; got {len(a)} and {len(b)}")
    for name, seq in (("a", a), ("b", b)):
        bad = [v for v in seq if v not in (0, 1)]
        if bad:
            raise ValueError(f"{name} must hold 0/1 outcomes; got {bad[0]!r}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def wilson_ci(successes: int, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (e.g. pass@1 over problems).

    Raises:
        ValueError: unless ``0 <= successes <= n``, ``n >= 1`` and ``0 < alpha < 1``.
    """
    if not (isinstance(n, int) and isinstance(successes, int) and 0 <= successes <= n >= 1):
        raise ValueError(f"successes={successes!r}, n={n!r} are not allowed; use integers "
                         "with 0 <= successes <= n and n >= 1")
    _check_options(1, alpha)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p, zz = successes / n, z * z / n
    center = (p + zz / 2) / (1 + zz)
    half = z / (1 + zz) * math.sqrt(p * (1 - p) / n + zz / (4 * n))
    return max(0.0, center - half), min(1.0, center + half)
