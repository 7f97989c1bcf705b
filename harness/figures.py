"""Leaderboard figures: main metrics per method (mean over seeds, ±1 std error bars) and the training
curves of every run (batch loss, margin, Δ log-prob of the batch's chosen and rejected)."""
from __future__ import annotations

import json
import os
from pathlib import Path

BARS = [("arith_accuracy", "arith acc %"), ("gsm8k_accuracy", "GSM8K acc %"), ("math_accuracy", "MATH-500 acc %"), ("tldr_rougeL", "TL;DR ROUGE-L"),
        ("judge_vs_reference", "TL;DR win % vs reference")]
CURVES = [("loss", "training loss (batch)"), ("margin", "reward margin (batch)"),
          ("dlogp_chosen", "Δ log-prob chosen vs ref (batch)"), ("dlogp_rejected", "Δ log-prob rejected vs ref (batch)")]


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metrics_chart(groups: list[dict], out: Path) -> Path:
    """`groups`: leaderboard.over_seeds rows. A metric a method lacks (e.g. the reference's win rate) is left out."""
    plt = _pyplot()
    bars = [(k, t) for k, t in BARS if any(g[k]["mean"] is not None for g in groups)] or BARS[:1]  # panels of evaluated metrics
    fig, axes = plt.subplots(1, len(bars), figsize=(3.6 * len(bars), 3.4), squeeze=False)
    color = {g["method"]: f"C{i}" for i, g in enumerate(groups)}  # one colour per method in every panel
    for ax, (key, title) in zip(axes[0], bars):
        shown = [g for g in groups if g[key]["mean"] is not None]
        ax.bar(range(len(shown)), [g[key]["mean"] for g in shown], yerr=[g[key]["std"] or 0.0 for g in shown], capsize=4,
               color=[color[g["method"]] for g in shown])
        ax.set_xticks(range(len(shown)), [f"{g['method']} ({g['seeds']})" for g in shown], rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = _save(fig, out)
    plt.close(fig)
    return out


def training_chart(runs: dict[str, Path], out: Path) -> Path | None:
    """One line per training run (name → folder with metrics.jsonl); None when no run has metrics."""
    data = {n: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines() if line.strip()]
            for n, p in runs.items() if (p / "metrics.jsonl").is_file()}
    if not data:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.8 * len(CURVES), 3.4))
    for name, rows in data.items():
        for ax, (key, title) in zip(axes, CURVES):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", markersize=2, label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = _save(fig, out)
    plt.close(fig)
    return out
