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


# L2 weight on the length coefficient φ (on the summed log-likelihood): a guard, not a prior. A judge that
# always picks the longer response separates the data perfectly and φ's maximum-likelihood estimate is
# infinite; this keeps it finite while moving a non-separable fit by far less than its interval.
LC_RIDGE = 0.01


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic function


def _fit_length_logit(y: np.ndarray, x: np.ndarray, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """θ of each row's fit of p = σ(θ + φ·x) to targets y in [0, 1] (rows: independent data sets of one
    size), maximising Σ y·log p + (1 − y)·log(1 − p) − LC_RIDGE·φ²/2 by Newton's method, all rows at once,
    each step halved until it does not lower the objective. No row's y may be all 0 or all 1 (no finite θ)."""
    theta, phi = np.zeros(len(y)), np.zeros(len(y))

    def loss(rows: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
        eta = t[:, None] + f[:, None] * x[rows]
        return (np.logaddexp(0.0, eta) - y[rows] * eta).sum(axis=1) + LC_RIDGE * f**2 / 2

    active = np.arange(len(y))
    current = loss(active, theta, phi)
    for _ in range(max_iter):
        xa, ya, t, f = x[active], y[active], theta[active], phi[active]
        p = _sigmoid(t[:, None] + f[:, None] * xa)
        r, w = p - ya, p * (1 - p)
        g_t, g_f = r.sum(axis=1), (r * xa).sum(axis=1) + LC_RIDGE * f
        h_tt, h_tf, h_ff = w.sum(axis=1), (w * xa).sum(axis=1), (w * xa * xa).sum(axis=1) + LC_RIDGE
        det = h_tt * h_ff - h_tf**2
        d_t, d_f = (h_tf * g_f - h_ff * g_t) / det, (h_tf * g_t - h_tt * g_f) / det
        step = np.ones(len(active))
        trial = loss(active, t + d_t, f + d_f)
        for _ in range(50):
            worse = trial > current[active] + 1e-12 * np.abs(current[active])  # beyond rounding
            if not worse.any():
                break
            step[worse] /= 2
            trial[worse] = loss(
                active[worse], t[worse] + step[worse] * d_t[worse], f[worse] + step[worse] * d_f[worse]
            )
        theta[active], phi[active], current[active] = t + step * d_t, f + step * d_f, trial
        moving = np.maximum(np.abs(step * d_t), np.abs(step * d_f)) > tol
        if not moving.any():
            break
        active = active[moving]
    return theta


def _separation(ys: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether the scores are (quasi-)separated by the length term x, so that no finite φ fits
    them best, and whether the separation lies at x = 0 alone (then θ is still estimable, see below).

    A fractional score counts as a win and as a loss at its x. The rows are separated when some threshold c
    has every loss at x ≤ c and every win at x ≥ c (or the mirror image): φ → ∞ then fits all items off
    c perfectly. The thresholds that do so form the gap [largest loss x, smallest win x]."""
    wins, losses = ys > 0, ys < 1

    def gap(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(low, x, -np.inf).max(axis=1), np.where(high, x, np.inf).min(axis=1)

    separated = np.zeros(len(ys), dtype=bool)
    at_zero = np.zeros(len(ys), dtype=bool)
    for low, high in ((losses, wins), (wins, losses)):  # longer wins; shorter wins
        top_of_low, bottom_of_high = gap(low, high)
        side = top_of_low <= bottom_of_high
        separated |= side
        at_zero |= side & (top_of_low == 0) & (bottom_of_high == 0)
    return separated, at_zero


def length_controlled_win_rate(
    scores: Sequence[float],
    out_lengths: Sequence[float],
    base_lengths: Sequence[float],
    seed: int = 0,
    n_boot: int = 1000,
) -> dict:
    """The length-controlled (LC) win rate of AlpacaEval 2 (Dubois et al. 2024, "Length-Controlled
    AlpacaEval: A Simple Way to Debias Automatic Evaluators", arXiv:2404.04475), its 95% percentile-bootstrap
    interval over the items (each resample refit) and the length ratio; deterministic for a given seed.

    scores: per item, the output's preference over the baseline in [0, 1] (both orders averaged, ties ½),
    the fit's target (a fractional target is a valid Bernoulli log-likelihood term). The model, with
    Δᵢ = out_lengthsᵢ − base_lengthsᵢ and σ_len their sample standard deviation (ddof 1, as AlpacaEval's
    pandas `.std()`):

        p(output preferred on item i) = σ(θ + φ · tanh(Δᵢ / σ_len))

    θ, φ by maximum likelihood (φ lightly penalised, LC_RIDGE); the LC win rate is 100·σ(θ), the
    prediction at equal lengths. AlpacaEval's GLM also has a per-instruction difficulty term, fitted across
    many models; with one model and one baseline only θ and the length term remain. When the Δᵢ do not vary
    (σ_len = 0) length cannot be told apart from θ and LC equals the raw win rate; when all scores are equal
    there is nothing to explain and LC equals them.

    When the length term separates the scores (_separation: e.g. every longer output won and every
    shorter one lost, or all wins are longer by 16+ words and all losses by 2 or fewer) the maximum
    likelihood φ is infinite and θ follows it off to ±∞ or is undetermined: LC is not estimable, and
    `lc_separated` says so (LC and its interval None). The one exception is a separation at equal length
    alone: the items off Δ = 0 are fitted exactly and θ is set by the equal-length items, LC = their mean
    score. A resample that is separated elsewhere has no LC either; the interval counts it at 0 for its
    lower end and at 100 for its upper end, so that such resamples widen it rather than vanish.

    Returns {lc_win_rate (%), lc_ci95 ([lo, hi], %), lc_separated, length_ratio (Σ out_lengths /
    Σ base_lengths: the ratio of the mean lengths, None when the baselines are all empty)}; LC None
    without items.
    """
    y = np.asarray(scores, dtype=np.float64)
    delta = np.asarray(out_lengths, dtype=np.float64) - np.asarray(base_lengths, dtype=np.float64)
    base_total = float(np.sum(base_lengths))
    ratio = float(np.sum(out_lengths)) / base_total if base_total else None
    none = {"lc_win_rate": None, "lc_ci95": None, "lc_separated": False, "length_ratio": ratio}
    if y.size == 0:
        return none
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
    # row 0: the items themselves; rows 1…: the bootstrap resamples, each with its own σ_len
    ys, deltas = np.vstack([y, y[idx]]), np.vstack([delta, delta[idx]])
    sd = deltas.std(axis=1, ddof=1, keepdims=True) if y.size > 1 else np.zeros((len(ys), 1))
    x = np.tanh(np.divide(deltas, sd, out=np.zeros_like(deltas), where=sd > 0))
    uniform = ys.min(axis=1) == ys.max(axis=1)
    separated, at_zero = _separation(ys, x)
    separated &= ~uniform
    # the rows whose θ is finite are fitted; a uniform or separated row on ½s (θ = 0 at once), replaced below
    theta = _fit_length_logit(np.where((uniform | separated)[:, None], 0.5, ys), x)
    equal = x == 0
    count = equal.sum(axis=1)
    at_equal = np.divide((ys * equal).sum(axis=1), count, out=np.full(len(ys), np.nan), where=count > 0)
    lc = 100 * np.where(uniform, ys.mean(axis=1), _sigmoid(theta))
    lc = np.where(separated, np.where(at_zero, 100 * at_equal, np.nan), lc)
    if np.isnan(lc[0]):
        return {**none, "lc_separated": bool(separated[0])}
    lo = np.percentile(np.nan_to_num(lc[1:], nan=0.0), 2.5)
    hi = np.percentile(np.nan_to_num(lc[1:], nan=100.0), 97.5)
    return {**none, "lc_win_rate": float(lc[0]), "lc_ci95": [float(lo), float(hi)]}
