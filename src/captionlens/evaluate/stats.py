"""Uncertainty for evaluation numbers: percentile bootstrap intervals over the scored items.

A rate over a few hundred grounded words moves by several points from one sample of images to the
next; an interval says whether two methods, or a method and its baseline, are told apart at all.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_MAX_DRAWS = 1 << 22   # resampled indices drawn at once: bounds memory for many items


def _clean(values: Any) -> np.ndarray:
    """The values as a flat float array, nan dropped."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return flat[~np.isnan(flat)]


def bootstrap_interval(values: Any, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
                       statistic: Callable[..., Any] = np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over the items in `values`; (nan, nan) for no values.

    nan values are dropped first. Resample r takes the r-th block of n indices drawn by
    `np.random.default_rng(seed).integers(0, n)`, so results depend only on the seed. `statistic` is
    called on a (resamples, n) array with `axis=1`, as numpy reductions accept.
    """
    if n_resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1, got {n_resamples} and {level}")
    items = _clean(values)
    if items.size == 0:
        return float("nan"), float("nan")
    stats = resampled(items.size, lambda draws: statistic(items[draws], axis=1), n_resamples, seed)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def resampled(n: int, of_draws: Callable[[np.ndarray], np.ndarray], n_resamples: int = 1000,
              seed: int = 0) -> np.ndarray:
    """`of_draws` of every bootstrap resample of `n` items, one value each: resample r is the r-th block of
    n indices drawn by `np.random.default_rng(seed).integers(0, n)`, and `of_draws` gets a (rows, n) block
    of them at a time, so memory stays bounded however many items there are."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples, dtype=np.float64)
    step = max(1, _MAX_DRAWS // n)
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        out[start:start + rows] = of_draws(rng.integers(0, n, size=(rows, n)))
    return out


@dataclass(frozen=True)
class Rate:
    """A mean over `n` scored items with its interval [`low`, `high`]; None where nothing was measured."""

    value: float | None
    low: float | None
    high: float | None
    n: int


def rate_with_interval(values: Any, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Rate:
    """Mean of `values` (e.g. 0/1 hits) with its bootstrap interval.

    nan values are dropped and not counted in n; with none left, value, low and high are None.
    """
    items = _clean(values)
    if not items.size:
        return Rate(None, None, None, 0)
    low, high = bootstrap_interval(items, n_resamples=n_resamples, level=level, seed=seed)
    return Rate(float(items.mean()), low, high, int(items.size))
