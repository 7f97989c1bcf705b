"""Displacement, predicted and traced: the leaderboard's CHES section and report.html's token view.

- Predicted: for each method (seeds pooled: a pair's Δ log-prob averaged over them), Spearman's ρ between
  each pair's LN-CHES on the init (runs/<init>/ches.jsonl, harness.diagnose) and the token-mean Δ log-prob
  of its chosen response after training, on the training pairs and on the held-out pairs, with a 95%
  bootstrap interval over the pairs. Razin et al. 2024 predict ρ < 0 for DPO: the more alike a pair's
  responses embed, the more its chosen response falls.
- Traced: on the held-out pairs, the share of the chosen tokens' lost probability that went to the policy's
  argmax token, to the rejected response's token (where the two part) and to the rest (trainers.tokenflow).

Read from run folders alone, without torch, like the rest of the leaderboard.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

import numpy as np

from common import read_jsonl
from harness.diagnose import distribution_lines
from harness.methods import method_of
from harness.pooled import Run, by_method
from harness.stats import spearman_ci

SPLITS = {"train": "training pairs", "heldout": "held-out pairs"}
# trainers.tokenflow.TERMS, spelled out so that a rebuild does not load torch
FLOW_TERMS = ("lost", "to_argmax", "to_rejected", "to_rest")


def _per_pair(run: Run, split: str) -> list[float | None] | None:
    """A run's per-pair Δ token-mean log-prob of the chosen responses of one split (None: not measured)."""
    shift = run.eval.get("shift") or {}
    source = shift.get("per_pair_train" if split == "train" else "per_pair") or {}
    return source.get("dlogp_chosen")


def correlation(ln_ches: list[float], runs: list[Run], split: str) -> dict | None:
    """ρ [lo, hi] between LN-CHES and the seeds' mean Δ log-prob over the pairs measured by every seed."""
    lists = [_per_pair(r, split) for r in runs]
    if not ln_ches or any(v is None or len(v) != len(ln_ches) for v in lists):
        return None
    table = np.array([[math.nan if x is None else x for x in v] for v in lists], dtype=np.float64)
    keep = ~np.isnan(table).any(axis=0) & np.isfinite(np.asarray(ln_ches, dtype=np.float64))
    if keep.sum() < 3:  # too few pairs to rank
        return None
    rho, lo, hi = spearman_ci(np.asarray(ln_ches)[keep], table[:, keep].mean(axis=0))
    return {"rho": rho, "ci95": [lo, hi], "pairs": int(keep.sum())}


def flow_shares(runs: list[Run]) -> dict | None:
    """The method's flow terms summed over its held-out pairs (`lost`: per seed), as shares of the mass
    lost; at the first differing positions, the chosen token's mean loss and the rejected token's share."""
    flows = [(r.eval.get("shift") or {}).get("token_flow") for r in runs]
    if not all(flows):
        return None
    sums = {k: sum(sum(f[k]) for f in flows) for k in FLOW_TERMS}
    # eval.json files before the per-pair list hold the first differing positions in the token view only
    diverge = [d for f in flows for d in f.get("diverge", [p["diverge"] for p in f["pairs"]]) if d]
    lost_there = sum(d["lost"] for d in diverge)
    return {
        "lost": sums["lost"] / len(flows),
        "shares": {k: sums[k] / sums["lost"] if sums["lost"] > 0 else None for k in FLOW_TERMS[1:]},
        "diverge_pairs": len(diverge),
        "diverge_lost": lost_there / len(diverge) if diverge else None,
        "diverge_to_rejected": sum(d["to_rejected"] for d in diverge) / lost_there
        if lost_there > 0
        else None,
    }


def analyse(runs: list[Run], init_run: Path) -> dict:
    """The CHES rows of the init, per method the correlations and the flow shares (init itself left out)."""
    rows = read_jsonl(init_run / "ches.jsonl") if (init_run / "ches.jsonl").is_file() else []
    scores = {s: [r["ln_ches"] for r in rows if r["split"] == s] for s in SPLITS}
    methods = {}
    for method, rs in by_method(runs).items():
        if method in ("reference", method_of(init_run.name)):
            continue
        corr = {s: correlation(scores[s], rs, s) for s in SPLITS}
        methods[method] = {"seeds": len(rs), "ches_rho": corr, "flow": flow_shares(rs)}
    return {"ches_rows": rows, "methods": methods}


def _rho(c: dict | None) -> str:
    if c is None or math.isnan(c["rho"]):
        return "—"
    lo, hi = c["ci95"]
    interval = "" if math.isnan(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{c['rho']:+.2f}{interval} ({c['pairs']})"


def _reading(c: dict | None) -> str:
    """What one correlation says, in words, whichever way it goes."""
    if c is None or math.isnan(c["ci95"][0]):
        return "not measurable"
    lo, hi = c["ci95"]
    if hi < 0:
        return "the prediction holds: pairs with a higher LN-CHES lost more chosen log-prob"
    if lo > 0:
        return "the opposite: pairs with a higher LN-CHES lost less"
    return "no clear rank correlation (the interval includes 0)"


def readings(methods: dict) -> str:
    """'dpo: on the training pairs …; on the held-out pairs …. spo: …'"""
    return " ".join(
        f"**{method}**: "
        + "; ".join(f"on the {SPLITS[s]} {_reading(m['ches_rho'][s])}" for s in SPLITS)
        + "."
        for method, m in methods.items()
    )


def _share(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}"


def section(analysis: dict) -> list[str]:
    """The leaderboard's markdown section (empty without CHES rows or trained methods)."""
    methods = analysis["methods"]
    if not analysis["ches_rows"] or not methods:
        return []
    lines = [
        "## Displacement: predicted before training (CHES) and traced token by token",
        "",
        "| method (seeds) | ρ(LN-CHES, Δ chosen) training pairs | ρ held-out pairs "
        "| chosen-token mass lost /seed | → argmax % | → rejected token % | → rest % "
        "| where the responses part: lost p, → rejected % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, m in methods.items():
        f = m["flow"] or {"lost": None, "shares": {}, "diverge_lost": None, "diverge_to_rejected": None}
        part = (
            "—"
            if f["diverge_lost"] is None
            else f"{f['diverge_lost']:.3g}, {_share(f['diverge_to_rejected'])}"
        )
        lost = "—" if f["lost"] is None else f"{f['lost']:.3g}"
        lines.append(
            f"| {method} ({m['seeds']}) | {_rho(m['ches_rho']['train'])} | {_rho(m['ches_rho']['heldout'])} "
            f"| {lost} | {_share(f['shares'].get('to_argmax'))} | {_share(f['shares'].get('to_rejected'))} "
            f"| {_share(f['shares'].get('to_rest'))} | {part} |"
        )
    return [
        *lines,
        "",
        "Does CHES predict which pairs lose their chosen response? " + readings(methods),
        "",
        "ρ: Spearman rank correlation, with a 95% bootstrap interval over the pairs (their count in "
        "brackets), between each pair's LN-CHES on the init (Razin et al. 2024; harness.diagnose) and its "
        "chosen response's token-mean Δ log-prob after training, averaged over seeds; CHES predicts ρ < 0. "
        "Mass flow, on the held-out chosen responses: the probability their tokens lost, summed over "
        "the positions where a token lost any (a seed's mean), and the share of it that went to the "
        "policy's argmax token (squeezing), to the rejected response's token where the two part, and to "
        "all other tokens (net changes: a share is negative where those tokens lost mass too; "
        "trainers/tokenflow.py); the last column is the chosen token's mean probability "
        "lost at that first differing position and the share the rejected token gained. Per-token view: "
        "report.html.",
        "",
        "LN-CHES of the training and held-out pairs on the init, per task and pair style:",
        "",
        *distribution_lines(analysis["ches_rows"]),
        "",
    ]


def _shade(d: float) -> str:
    """A token's background: red where its log-prob fell, green where it rose, stronger with |Δ| (full
    at 2)."""
    alpha = min(abs(d) / 2, 1)
    return f"rgba(220,40,40,{alpha:.2f})" if d < 0 else f"rgba(40,160,60,{alpha:.2f})"


def token_view(runs: list[Run], init_run: str = "reference") -> str:
    """report.html's per-pair view: one block per held-out pair, one row per trained run, the chosen
    response's tokens shaded by Δ log-prob (hover: the value), the steepest fall outlined with the tokens
    that gained most there, and where the chosen and rejected responses part. The init and the original
    model (`reference`, measured from an SFT init) are left out, as in `analyse`."""
    trained = [r for r in runs if method_of(r.name) not in ("reference", method_of(init_run))]
    flows = {
        r.name: r.eval["shift"]["token_flow"]
        for r in trained
        if (r.eval.get("shift") or {}).get("token_flow")
    }
    if not flows:
        return ""
    blocks = []
    for i in range(max(len(f["pairs"]) for f in flows.values())):
        rows = []
        for name, f in flows.items():
            if i >= len(f["pairs"]):
                continue
            p = f["pairs"][i]
            spans = "".join(
                f'<span class="{"tk worst" if t == p["worst"] else "tk"}" style="background:{_shade(d)}" '
                f'title="Δ log-prob {d:+.3f}">{escape(tok)}</span>'
                for t, (tok, d) in enumerate(zip(p["tokens"], p["dlogp"]))
            )
            gained = ", ".join(f"{escape(repr(g))} {v:+.3g}" for g, v in p["gainers"])
            note = f"steepest fall {p['dlogp'][p['worst']]:+.2f} at {escape(repr(p['tokens'][p['worst']]))}; "
            note += f"gained most there: {gained}"
            if p["diverge"]:
                d = p["diverge"]
                note += (
                    f" · parts from the rejected at {escape(repr(d['chosen_token']))} vs "
                    f"{escape(repr(d['rejected_token']))}: chosen p lost {d['lost']:+.3g}, rejected token "
                    f"gained {d['to_rejected']:+.3g}"
                )
            head = f"<b>{escape(name)}</b> <div class=tks>{spans}</div>"
            rows.append(f"<div class=tv>{head}<div class=meta>{note}</div></div>")
        blocks.append(f"<div class=pair><div class=meta>held-out pair {i + 1}</div>{''.join(rows)}</div>")
    return (
        "<details open><summary><b>Held-out chosen responses, token by token</b>: red = the token's log-prob "
        "fell after training, green = rose (hover for Δ); outlined = steepest fall</summary>"
        f"{''.join(blocks)}</details>"
    )
