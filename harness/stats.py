"""Bootstrap confidence intervals: for a mean over items, and for a paired difference between methods."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci(values: Sequence[float], seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and its 95% percentile-bootstrap interval, deterministic for a given seed."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    lo, hi = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    return mean, float(lo), float(hi)


def paired_diff_ci(
    a: Sequence[float], b: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """mean_ci of a_i − b_i: resampling items jointly removes the per-item difficulty both methods share."""
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci needs the same items for both: got {len(a)} and {len(b)} values")
    return mean_ci([x - y for x, y in zip(a, b)], seed=seed, n_boot=n_boot)
