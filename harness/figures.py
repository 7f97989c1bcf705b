"""Figures: main metrics per method (mean over seeds, ±1 std error bars), the training curves of every
run (batch loss, margin, Δ log-prob of the batch's chosen and rejected) and the probe-set dynamics per
method (mean over seeds, min–max band; harness.leaderboard writes it as results/figures/dynamics.png).

    python -m harness.figures outputs/dpo-seed0 outputs/dpo-seed1 outputs/spo-seed0 --out dynamics.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import read_jsonl, save_figure
from harness.methods import method_of
from tasks import TASKS

# each task's headline metric, in registry order, then the first judged task's win rate vs the reference
_JUDGED = next((t for t in TASKS.values() if t.JUDGED), None)
BARS = [(f"{name}_{t.METRIC}", f"{t.TITLE} {t.METRIC_LABEL}") for name, t in TASKS.items()] + (
    [("judge_vs_reference", f"{_JUDGED.TITLE} win % vs reference")] if _JUDGED else []
)
CURVES = [
    ("loss", "training loss (batch)"),
    ("margin", "reward margin (batch)"),
    ("dlogp_chosen", "Δ log-prob chosen vs ref (batch)"),
    ("dlogp_rejected", "Δ log-prob rejected vs ref (batch)"),
]
# the probe set (held-out pairs scored during training: --probe-pairs, --probe-every): Δ token-mean log-prob
# vs the reference per response kind (trainers.probes), then the share of pairs outside SPO's safe region
PROBES = [
    ("probe_dlogp_chosen", "Δ log-prob chosen /token"),
    ("probe_dlogp_rejected", "Δ log-prob rejected /token"),
    ("probe_dlogp_rephrased", "Δ log-prob rephrased chosen /token"),
    ("probe_dlogp_unrelated", "Δ log-prob unrelated response /token"),
    ("probe_dlogp_greedy", "Δ log-prob own greedy response /token"),
    ("probe_outside_safe_region", "share outside SPO's safe region"),
    ("probe_flow_to_argmax", "chosen tokens' lost mass → argmax (share)"),
    ("probe_flow_to_rejected", "chosen tokens' lost mass → rejected token (share)"),
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_chart(groups: list[dict], out: Path) -> Path:
    """`groups`: leaderboard.over_seeds rows. A metric a method lacks (e.g. the reference's win rate) is
    left out."""
    plt = _pyplot()
    # panels of evaluated metrics
    bars = [(k, t) for k, t in BARS if any(g[k]["mean"] is not None for g in groups)] or BARS[:1]
    fig, axes = plt.subplots(1, len(bars), figsize=(3.6 * len(bars), 3.4), squeeze=False)
    color = {g["method"]: f"C{i}" for i, g in enumerate(groups)}  # one colour per method in every panel
    for ax, (key, title) in zip(axes[0], bars):
        shown = [g for g in groups if g[key]["mean"] is not None]
        ax.bar(
            range(len(shown)),
            [g[key]["mean"] for g in shown],
            yerr=[g[key]["std"] or 0.0 for g in shown],
            capsize=4,
            color=[color[g["method"]] for g in shown],
        )
        ax.set_xticks(
            range(len(shown)), [f"{g['method']} ({g['seeds']})" for g in shown], rotation=20, fontsize=8
        )
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, out)
    plt.close(fig)
    return out


def curves(rows: list[dict], keys: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """key → (steps, values) from a training run's metrics.jsonl rows (rows without the key skipped)."""
    return {k: ([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r]) for k in keys}


def training_chart(
    runs: dict[str, list[dict]], out: Path, panels: list[tuple[str, str]] = CURVES
) -> Path | None:
    """One line per training run (name → its metrics.jsonl rows) in each panel (metrics key, title);
    None when no run has metrics. Δ panels get a dashed line at 0 (no change from the reference)."""
    data = {n: curves(rows, [k for k, _ in panels]) for n, rows in runs.items() if rows}
    if not data:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4))
    for name, series in data.items():
        for ax, (key, title) in zip(axes, panels):
            ax.plot(*series[key], marker="o", markersize=2, label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    for ax, (key, _) in zip(axes, panels):
        if key.startswith("probe_dlog"):
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, out)
    plt.close(fig)
    return out


def seed_band(seeds: list[list[dict]], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean, min, max) of `key` over the seeds' metrics rows at each step some seed logged it."""
    at: dict[int, list[float]] = {}
    for rows in seeds:
        for step, value in zip(*curves(rows, [key])[key]):
            at.setdefault(step, []).append(value)
    steps = sorted(at)
    return (
        steps,
        [sum(at[s]) / len(at[s]) for s in steps],
        [min(at[s]) for s in steps],
        [max(at[s]) for s in steps],
    )


def probe_chart(methods: dict[str, list[list[dict]]], out: Path) -> Path | None:
    """Training dynamics on the probe set: one panel per PROBES key that some run logged, one line per
    method (label → the metrics.jsonl rows of each of its seeds), the mean over seeds with a min–max band.
    None (no figure) when no run logged a probe."""
    panels = [
        (k, t)
        for k, t in PROBES
        if any(curves(rows, [k])[k][0] for seeds in methods.values() for rows in seeds)
    ]
    if not panels:
        return None
    plt = _pyplot()
    # at most three panels a row, so the figure reads at page width
    cols = min(3, len(panels))
    rows_ = -(-len(panels) // cols)
    fig, grid = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.3 * rows_), squeeze=False)
    axes = grid.flatten()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for i, (method, seeds) in enumerate(methods.items()):
        for ax, (key, _) in zip(axes, panels):
            steps, mean, low, high = seed_band(seeds, key)
            if not steps:
                continue
            label = f"{method} ({len(seeds)})"
            ax.plot(steps, mean, marker="o", markersize=2, color=f"C{i}", label=label)
            if len(seeds) > 1:
                ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2, linewidth=0)
    for ax, (key, title) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        if key == "probe_outside_safe_region":  # a share; the flow shares are net and may leave [0, 1]
            ax.set_ylim(-0.02, 1.02)
        else:
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")  # no change from the reference
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, out)
    plt.close(fig)
    return out


def dynamics_chart(runs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """The probe-set curves (held-out pairs) of training output folders, the seeds of one method
    ('dpo-seed0', 'dpo-seed1') pooled: the picture of likelihood displacement."""
    methods: dict[str, list[list[dict]]] = {}
    for label, run in zip(labels or [r.name for r in runs], runs, strict=True):
        methods.setdefault(method_of(label), []).append(read_jsonl(run / "metrics.jsonl"))
    drawn = probe_chart(methods, out)
    if drawn is None:
        raise SystemExit(
            f"no probe rows in {', '.join(str(r / 'metrics.jsonl') for r in runs)}: train with --probe-pairs "
            "and --probe-every"
        )
    return drawn


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m harness.figures", description=dynamics_chart.__doc__)
    ap.add_argument("runs", type=Path, nargs="+", help="training output folders (each with metrics.jsonl)")
    ap.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    ap.add_argument("--out", type=Path, default=Path("results/figures/dynamics.png"))
    a = ap.parse_args()
    print(dynamics_chart(a.runs, a.out, a.labels.split(",") if a.labels else None))
