"""Build results/leaderboard.md and .json from results/runs/* alone.

    python -m harness.leaderboard [--results results]

Each run folder holds eval.json (from harness.evaluate) and, for trained models, train.json;
runs/compare.json (from harness.compare) gives the row order, the command, machine and date.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.data import write_text_atomic

COLUMNS = [  # (header, key in a row)
    ("model", "model"), ("GSM8K acc % (n)", "gsm8k"), ("TL;DR ROUGE-L (n)", "tldr"),
    ("Δ logp chosen", "dlogp_chosen"), ("Δ logp rejected", "dlogp_rejected"), ("KL to ref", "kl"), ("train time", "train_seconds"),
]


def row(name: str, run: Path) -> dict:
    ev = json.loads((run / "eval.json").read_text())
    train = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else None
    return {
        "model": name,
        "gsm8k_accuracy": ev["gsm8k"]["accuracy"], "gsm8k_n": ev["gsm8k"]["n"],
        "tldr_rougeL": ev["tldr"]["rougeL"], "tldr_rouge1": ev["tldr"]["rouge1"], "tldr_rouge2": ev["tldr"]["rouge2"], "tldr_n": ev["tldr"]["n"],
        "dlogp_chosen": ev["shift"]["dlogp_chosen"], "dlogp_rejected": ev["shift"]["dlogp_rejected"],
        "heldout_pairs": ev["shift"]["heldout_pairs"], "kl": ev["shift"]["kl"], "kl_samples": ev["shift"]["kl_samples"],
        "train_seconds": train["train_seconds"] if train else None, "train_steps": train["steps"] if train else None,
        "backend": ev["backend"],
    }


def cell(r: dict, key: str) -> str:
    if key == "model":
        return r["model"]
    if key == "gsm8k":
        return f"{r['gsm8k_accuracy']:.1f} ({r['gsm8k_n']})"
    if key == "tldr":
        return f"{r['tldr_rougeL']:.2f} ({r['tldr_n']})"
    if key == "train_seconds":
        return "—" if r[key] is None else f"{r[key]:.0f} s ({r['train_steps']} steps)"
    return "—" if r[key] is None else f"{r[key]:+.4f}"


def render(rows: list[dict], meta: dict) -> str:
    lines = ["# Leaderboard", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for _, k in COLUMNS) + " |" for r in rows]
    lines += ["",
              "Δ logp: mean over held-out pairs of the token-mean log-prob change from the reference "
              f"({rows[0]['heldout_pairs'] if rows else 0} pairs). KL: E_y~π[log π(y|x) − log π_ref(y|x)] per sequence, "
              "one temperature-1 sample per eval prompt. GSM8K: greedy, first 100 test questions by default; "
              "TL;DR: greedy, ROUGE-L F×100 against the human summary. Single seed: no intervals yet.", ""]
    for key in ("command", "commit", "machine", "date"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`" if key == "command" else f"- {key}: {meta[key]}")
    if "stage_seconds" in meta:
        lines.append("- stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in meta["stage_seconds"].items()))
    return "\n".join(lines) + "\n"


def write(results: Path) -> str:
    runs = results / "runs"
    meta = json.loads((runs / "compare.json").read_text()) if (runs / "compare.json").is_file() else {}
    found = sorted(p.name for p in runs.iterdir() if (p / "eval.json").is_file())
    # after a compare, only its own runs: older folders may come from other settings
    order = [n for n in meta["order"] if n in found] if "order" in meta else found
    rows = [row(n, runs / n) for n in order]
    md = render(rows, meta)
    write_text_atomic(results / "leaderboard.md", md)
    write_text_atomic(results / "leaderboard.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    return md


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m harness.leaderboard", description="Rebuild the leaderboard from results/runs/*.")
    ap.add_argument("--results", type=Path, default=Path("results"))
    print(write(ap.parse_args().results))
