"""Uncertainty of a rate measured on a sample: the 95 % interval every notebook prints beside an
accuracy, an error or a success rate measured on n images.

The interval is Wilson's score interval (Wilson 1927; recommended over the normal "Wald" interval
by Brown, Cai & DasGupta 2001): for k successes in n trials and z = 1.96,

    centre = (k + z^2 / 2) / (n + z^2),   half = z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2).

It stays inside [0, 1] and is not degenerate at k = 0 or k = n (Wald's is [0, 0] there), which is
where robust accuracies under strong attacks and certified errors of weak certificates live.
A live measurement (an attack, a training run) can move by a few images from one CPU family,
thread count or library version to the next; its interval says how much that, and the choice
of sample, can matter. Rates are fractions in [0, 1]; formatted strings are in percent.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

__all__ = ["wilson_interval", "rate_count", "format_rate", "intervals_overlap"]

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def _check(k: int, n: int) -> None:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise TypeError(f"k and n must be whole counts, got k={k!r}, n={n!r}")
    if n <= 0:
        raise ValueError(f"n must be a positive number of trials, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n = {n}, got {k}")


def wilson_interval(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson's score interval for a proportion: k successes of n trials -> (low, high) in [0, 1].

    ``z`` is the normal quantile (1.96 for 95 %). Raises for n <= 0, k outside [0, n] or non-whole
    counts (an accuracy of 0.934 is not a count: use :func:`rate_count` first)."""
    _check(k, n)
    if not z > 0:
        raise ValueError(f"z must be positive, got {z}")
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_count(rate: float, n: int) -> int:
    """The whole count behind a rate measured on n items (e.g. accuracy 0.934 on 500 -> 467).

    Raises when ``rate * n`` is not within 1e-6 of a whole number: the rate was not measured on
    exactly n items."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    k = round(rate * n)
    if abs(rate * n - k) > 1e-6 * max(1, n) or not 0 <= k <= n:
        raise ValueError(f"a rate of {rate!r} is not a count out of n = {n}")
    return int(k)


def format_rate(k: Union[int, float], n: int, digits: int = 1) -> str:
    """"93.4 % [91.0, 95.2]": the rate in percent with its 95 % Wilson interval.

    ``k`` is a count (int) or a rate in [0, 1] (float, converted with :func:`rate_count`)."""
    if isinstance(k, float):
        k = rate_count(k, n)
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.{digits}f} % [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def intervals_overlap(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    """True when the 95 % intervals of two measured rates, each given as (k, n), overlap: the
    sample then does not support saying the two differ (a conservative check)."""
    (la, ha), (lb, hb) = wilson_interval(*a), wilson_interval(*b)
    return la <= hb and lb <= ha
