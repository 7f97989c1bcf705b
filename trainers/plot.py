"""Training-dynamics curves of several runs on one figure: the picture of likelihood displacement.

    python -m trainers.plot outputs/dpo outputs/spo --out results/figures/dynamics.png

Each run folder holds a metrics.jsonl written with a probe set (--probe-pairs, --probe-every).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

PANELS = [  # (metrics key, title)
    ("probe_dlogp_chosen", "Δ log-prob chosen (token mean, vs reference)"),
    ("probe_dlogp_rejected", "Δ log-prob rejected (token mean, vs reference)"),
    ("probe_dlog_combined", "Δ log(p(chosen) + p(rejected)) vs reference"),
    ("loss", "training loss (batch)"),
]


def curves(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {k: ([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r]) for k, _ in PANELS}


def plot(runs: list[Path], out: Path, labels: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.8))
    for run, label in zip(runs, labels or [r.name for r in runs], strict=True):
        data = curves(run)
        if not data["probe_dlogp_chosen"][0]:
            raise SystemExit(f"{run}/metrics.jsonl has no probe rows: train with --probe-pairs and --probe-every")
        for ax, (key, title) in zip(axes, PANELS):
            ax.plot(*data[key], marker="o", markersize=3, label=label)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    for ax in axes[:3]:
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m trainers.plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="training output folders (each with metrics.jsonl)")
    ap.add_argument("--labels", help="comma-separated legend labels (default: folder names)")
    ap.add_argument("--out", type=Path, default=Path("results/figures/dynamics.png"))
    a = ap.parse_args()
    plot(a.runs, a.out, a.labels.split(",") if a.labels else None)
    print(a.out)
