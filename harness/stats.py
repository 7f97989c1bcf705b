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


def clustered_mean_ci(
    clusters: Sequence[Sequence[float]], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """(mean, lo, hi) of all values, the 95% percentile bootstrap resampling whole clusters: a held-out
    pair with its values under every seed is one draw, not one per seed (they share the pair's
    difficulty). Empty clusters are dropped; a cluster's values need not be as many as another's."""
    kept = [c for c in clusters if len(c)]
    if not kept:
        return math.nan, math.nan, math.nan
    sums = np.array([float(sum(c)) for c in kept])
    counts = np.array([len(c) for c in kept], dtype=np.float64)
    mean = float(sums.sum() / counts.sum())
    if len(kept) == 1:
        return mean, mean, mean
    idx = np.random.default_rng(seed).integers(0, len(kept), size=(n_boot, len(kept)))
    lo, hi = np.percentile(sums[idx].sum(axis=1) / counts[idx].sum(axis=1), [2.5, 97.5])
    return mean, float(lo), float(hi)
