"""Figures: main metrics per method (mean over seeds, ±1 std error bars), the training curves of every
run (batch loss, margin, Δ log-prob of the batch's chosen and rejected) and the probe-set dynamics.

    python -m harness.figures outputs/dpo outputs/spo --out results/figures/dynamics.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import read_jsonl, save_figure
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
DYNAMICS = [  # the probe set: held-out pairs scored during training (--probe-pairs, --probe-every)
    ("probe_dlogp_chosen", "Δ log-prob chosen (token mean, vs reference)"),
    ("probe_dlogp_rejected", "Δ log-prob rejected (token mean, vs reference)"),
    ("probe_dlog_combined", "Δ log(p(chosen) + p(rejected)) vs reference"),
    ("loss", "training loss (batch)"),
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


def dynamics_chart(runs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """The probe-set curves (held-out pairs) of several training runs: the picture of likelihood
    displacement."""
    named = {}
    for label, run in zip(labels or [r.name for r in runs], runs, strict=True):
        named[label] = read_jsonl(run / "metrics.jsonl")
        if not curves(named[label], ["probe_dlogp_chosen"])["probe_dlogp_chosen"][0]:
            raise SystemExit(
                f"{run}/metrics.jsonl has no probe rows: train with --probe-pairs and --probe-every"
            )
    return training_chart(named, out, DYNAMICS)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m harness.figures", description=dynamics_chart.__doc__)
    ap.add_argument("runs", type=Path, nargs="+", help="training output folders (each with metrics.jsonl)")
    ap.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    ap.add_argument("--out", type=Path, default=Path("results/figures/dynamics.png"))
    a = ap.parse_args()
    print(dynamics_chart(a.runs, a.out, a.labels.split(",") if a.labels else None))
