"""Bootstrap confidence intervals: for a mean over items, and for a paired difference between methods."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _item_draws(n_items: int, seed: int, n_boot: int) -> np.ndarray:
    """(n_boot, n_items) item indices, drawn with replacement: every interval here draws its items alike."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))


def _seed_weights(n_seeds: int, seed: int, n_boot: int, stream: int) -> np.ndarray:
    """(n_boot, n_seeds): the share of each training seed in each resample's draw of n_seeds seeds with
    replacement (rows sum to 1); `stream` keeps the draws of two methods apart and off the items' draws."""
    if n_seeds == 1:
        return np.ones((n_boot, 1))
    draws = np.random.default_rng([seed, stream]).integers(0, n_seeds, size=(n_boot, n_seeds))
    return (draws[:, :, None] == np.arange(n_seeds)).sum(axis=1) / n_seeds


def mean_ci(values: Sequence[float], seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and its 95% percentile-bootstrap interval, deterministic for a given seed."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    lo, hi = np.percentile(x[_item_draws(x.size, seed, n_boot)].mean(axis=1), [2.5, 97.5])
    return mean, float(lo), float(hi)


def paired_diff_ci(
    a: Sequence[float], b: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """mean_ci of a_i − b_i: resampling items jointly removes the per-item difficulty both methods share."""
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci needs the same items for both: got {len(a)} and {len(b)} values")
    return mean_ci([x - y for x, y in zip(a, b)], seed=seed, n_boot=n_boot)


def seeded_diff_ci(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """(mean, lo, hi) of method a minus method b on the same items, each given as a (training seeds × items)
    table, with a 95% two-stage percentile bootstrap (docs/evaluation.md, "Intervals"): each resample draws
    each method's seeds with replacement and averages them per item, then draws the items, shared by both
    (paired). The interval so covers training randomness as well as the choice of items; with one seed
    each, or seeds that agree exactly, it is paired_diff_ci's interval, from the same draws."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"seeded_diff_ci needs the same items for both: got {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float((a.mean(axis=0) - b.mean(axis=0)).mean())
    if n == 1 and len(a) == len(b) == 1:
        return mean, mean, mean
    # per resample and item: the drawn seeds' mean of a minus that of b
    per_item = _seed_weights(len(a), seed, n_boot, 1) @ a - _seed_weights(len(b), seed, n_boot, 2) @ b
    drawn = np.take_along_axis(per_item, _item_draws(n, seed, n_boot), axis=1)
    lo, hi = np.percentile(drawn.mean(axis=1), [2.5, 97.5])
    return mean, float(lo), float(hi)


def seeded_mean_ci(
    values: Sequence[Sequence[float]], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """(mean, lo, hi) of all values of a (training seeds × items) table whose missing values are NaN (an
    item without the response under a seed), with the two-stage bootstrap of seeded_diff_ci: a resample
    draws the seeds, then whole items (an item with its values under the drawn seeds is one draw: they
    share its difficulty), and takes the ratio of the drawn values' sum to their count. Items without any
    value are dropped. With one seed it resamples items alone."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    present = ~np.isnan(x)
    keep = present.any(axis=0)
    x, present = np.where(present, x, 0.0)[:, keep], present[:, keep].astype(np.float64)
    if x.shape[1] == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.sum() / present.sum())
    if x.shape[1] == 1 and len(x) == 1:
        return mean, mean, mean
    weights, items = _seed_weights(len(x), seed, n_boot, 1), _item_draws(x.shape[1], seed, n_boot)
    sums = np.take_along_axis(weights @ x, items, axis=1).sum(axis=1)
    counts = np.take_along_axis(weights @ present, items, axis=1).sum(axis=1)
    # a resample whose drawn seeds have no value on its drawn items holds no response of this kind at all
    # (not a failed estimate, as a separated LC fit is): it has no mean and is left out
    ratios = np.divide(sums, counts, out=np.full(n_boot, np.nan), where=counts > 0)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5])
    return mean, float(lo), float(hi)


def min_detectable_difference(
    values: Sequence[float], binary: bool, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The smallest true difference in mean score that comparing two models on these n items detects with
    the given power at two-sided level alpha, by the normal approximation, the items' spread taken as the
    reference's (values: its per-item scores). binary: the values are 0/1 and the spread binomial,
    p(1 − p) + q(1 − q) at the reference's rate p and the other model's q = p + δ, δ moving away from the
    nearer bound (p = 0 on 50 items: δ = 13.6 points); else twice the values' sample variance. Unpaired,
    so conservative: the leaderboard's paired intervals also remove the item difficulty the models share.
    None when no difference within a proportion's range is detectable (binary), or the spread cannot be
    estimated (fewer than 2 values, or a continuous score that never varies)."""
    from statistics import NormalDist

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    if not binary:
        sd = float(x.std(ddof=1))
        return z * sd * math.sqrt(2 / x.size) if sd > 0 else None
    p = min(float(x.mean()), 1 - float(x.mean()))

    def shortfall(delta: float) -> float:
        """> 0 while δ is too small: the interval's half-width plus the power margin exceed δ. The spread
        is the observed one (the bootstrap's), not the null's, which is 0 at a rate of 0 or 1."""
        q = p + delta
        return z * math.sqrt((p * (1 - p) + q * (1 - q)) / x.size) - delta

    low, high = 0.0, 1 - p
    if shortfall(high) > 0:
        return None
    for _ in range(60):  # bisection: shortfall falls from ≥ 0 at 0 to ≤ 0 at `high`
        mid = (low + high) / 2
        low, high = (mid, high) if shortfall(mid) > 0 else (low, mid)
    return high


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
    idx = _item_draws(y.size, seed, n_boot)
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


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1…n along the last axis, tied values sharing their mean rank (as Spearman's ρ needs)."""
    n = a.shape[-1]
    order = a.argsort(axis=-1, kind="stable")
    ordered = np.take_along_axis(a, order, -1).reshape(-1, n)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # one group number per run of equal values, distinct across rows
    group = (np.cumsum(starts, axis=1) + (n + 1) * np.arange(len(ordered))[:, None]).ravel()
    positions = np.tile(np.arange(1, n + 1, dtype=np.float64), len(ordered))
    mean_rank = np.bincount(group, weights=positions) / np.maximum(np.bincount(group), 1)
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, mean_rank[group].reshape(a.shape), -1)
    return ranks


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair: the Pearson correlation of their average ranks (NaN: a constant
    row)."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def spearman_ci(
    x: Sequence[float], y: Sequence[float], seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """(ρ, lo, hi): Spearman's rank correlation and its 95% percentile-bootstrap interval over the pairs
    (x_i, y_i), resampled with replacement; NaN with fewer than 3 pairs or a constant side."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size < 3:
        return math.nan, math.nan, math.nan
    rho = float(_spearman_rows(xs[None], ys[None])[0])
    draws = _item_draws(xs.size, seed, n_boot)
    boot = _spearman_rows(xs[draws], ys[draws])
    if math.isnan(rho) or np.isnan(boot).all():
        return rho, math.nan, math.nan
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return rho, float(lo), float(hi)
