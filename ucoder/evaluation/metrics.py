"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
Models Trained on Code", and its mean over problems."""

from __future__ import annotations

from collections.abc import Sequence


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
