"""What a compare's runs say together: each method's training seeds pooled, with intervals that cover them.

Read by harness.leaderboard, which renders what these functions return. A method's seeds are its runs
`<method>-seed<N>`; every seed of a method must have been evaluated on the same items (same ids, same order),
else the functions here raise naming the runs. With two or more seeds the intervals are two-stage bootstraps
(seeds, then items: harness.stats.seeded_diff_ci); with one seed they cover the evaluation items only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import read_jsonl
from harness.methods import base_of, method_of
from harness.stats import min_detectable_difference, seeded_diff_ci, seeded_mean_ci
from tasks import TASKS

ITEM_SCORES = {name: t.ITEM_SCORE for name, t in TASKS.items()}  # per-item field and scale
# response kinds scored on every held-out pair (harness.shift): Δ log-prob vs the reference of each;
# trainers.probes.KINDS, spelled out here so that a rebuild does not load torch (a test checks they agree)
KINDS = {
    "chosen": "held-out chosen response",
    "rejected": "rejected response",
    "rephrased": "rephrased chosen response",
    "unrelated": "unrelated response (another pair's chosen)",
    "greedy": "policy's own greedy response",
}


@dataclass
class Run:
    """One run folder, read once: eval.json, samples.jsonl, and for a trained model train.json and
    metrics.jsonl (an absent samples or train file: None; absent metrics: empty)."""

    name: str
    eval: dict
    samples: list[dict] | None
    train: dict | None
    metrics: list[dict]

    @classmethod
    def read(cls, folder: Path) -> Run:
        def optional(name: str, load):
            return load(folder / name) if (folder / name).is_file() else None

        return cls(
            folder.name,
            json.loads((folder / "eval.json").read_text()),
            optional("samples.jsonl", read_jsonl),
            optional("train.json", lambda p: json.loads(p.read_text())),
            optional("metrics.jsonl", read_jsonl) or [],
        )

    def items(self) -> dict[str, tuple[list, list[float]]]:
        """Per task, in item order: the item ids (their position where a sample has none) and the per-item
        scores (accuracy items as 0/100, ROUGE-L ×100)."""
        out: dict[str, tuple[list, list[float]]] = {}
        for s in self.samples or []:
            if s["task"] in ITEM_SCORES:
                field, scale = ITEM_SCORES[s["task"]]
                ids, scores = out.setdefault(s["task"], ([], []))
                ids.append(s.get("id", len(ids)))
                scores.append(scale * float(s[field]))
        return out

    def item_scores(self) -> dict[str, list[float]]:
        return {task: scores for task, (_, scores) in self.items().items()}


def init_method(meta: dict) -> str | None:
    """The method every run started from when it was not the reference (compare.json "init" and
    "init_run", e.g. 'sft' from run 'sft-seed0'); None for the reference, and in files older than --init."""
    if meta.get("init", "reference") == "reference":
        return None
    return method_of(meta["init_run"]) if meta.get("init_run") else meta["init"]


def opponents(method: str, ran, init: str | None = None) -> list[str]:
    """What `method` is compared with on the same items, of the methods that `ran`: the reference, its
    base_of (spo → dpo, simpo+spo → simpo, spo@spo_lambda=10 → spo) and the init method (e.g. sft)."""
    named = dict.fromkeys(m for m in ("reference", base_of(method), init) if m is not None)
    return [m for m in named if m != method and m in ran]


def by_method(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs grouped by method, in order: a method's training seeds."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(method_of(run.name), []).append(run)
    return groups


def _same_items(what: str, method: str, named: list[tuple[str, list]]) -> None:
    """Raise unless every (run, items) of one method lists the same items: zipping them would pair
    unrelated items or silently drop the extra ones."""
    first, items = named[0]
    for name, other in named[1:]:
        if other != items:
            raise ValueError(
                f"the seeds of {method} were evaluated on different {what}: {first} has {len(items)}, "
                f"{name} has {len(other)}{' (other ids)' if len(other) == len(items) else ''}; evaluate "
                "every seed with the same settings (harness.compare with the same sizes and --resume)"
            )


def seed_tables(runs: list[Run]) -> dict[str, dict[str, tuple[list, np.ndarray]]]:
    """Per method and task evaluated by all its seeds: the item ids and the (seeds × items) score table."""
    out: dict[str, dict[str, tuple[list, np.ndarray]]] = {}
    for method, rs in by_method(runs).items():
        items = [r.items() for r in rs]
        out[method] = {}
        for task in (t for t in ITEM_SCORES if all(t in i for i in items)):
            ids = [(r.name, i[task][0]) for r, i in zip(rs, items)]
            _same_items(f"{TASKS[task].TITLE} items", method, ids)
            out[method][task] = (items[0][task][0], np.array([i[task][1] for i in items]))
    return out


def coverage(trained_seeds: list[int]) -> str:
    """What an interval resamples, given the seed counts of its trained sides (the reference, untrained, has
    no training noise to cover): every side's seeds and the items, some sides' seeds, or the items alone."""
    if all(n > 1 for n in trained_seeds):
        return "seeds and items"
    return "items and some seeds" if any(n > 1 for n in trained_seeds) else "items"


def paired(runs: list[Run], init: str | None = None) -> list[dict]:
    """Each method minus each of its opponents on the same items (a method's seeds averaged per item):
    mean difference and 95% interval per task, two-stage (seeds, then items) where a side has several
    seeds. Tasks whose items differ between the two methods are left out."""
    tables, seeds = seed_tables(runs), {m: len(rs) for m, rs in by_method(runs).items()}
    out = []
    for method in (m for m in tables if m != "reference"):
        for base in opponents(method, tables, init):
            diffs = {}
            for task, (ids, a) in tables[method].items():
                if task not in tables[base] or tables[base][task][0] != ids or not ids:
                    continue
                mean, lo, hi = seeded_diff_ci(a, tables[base][task][1])
                diffs[task] = {"diff": mean, "ci95": [lo, hi], "n": len(ids), "significant": lo > 0 or hi < 0}
            out.append(
                {
                    "method": method,
                    "seeds": seeds[method],
                    "vs": base,
                    "vs_seeds": seeds[base],
                    "interval": coverage([seeds[m] for m in (method, base) if m != "reference"]),
                    "tasks": diffs,
                }
            )
    return out


def _pooled_kind(runs: list[Run], kind: str) -> dict | None:
    """Δ token-mean log-prob of one response kind over a method's seeds: the per-pair values pooled, with a
    95% bootstrap resampling the seeds, then the pairs (each with its drawn seeds' values); without
    per-pair values (older eval.json) the mean of the seeds' means and no interval; None when no seed
    measured the kind."""
    values = {r.name: (r.eval["shift"].get("per_pair") or {}).get(f"dlogp_{kind}") for r in runs}
    named = [(name, v) for name, v in values.items() if isinstance(v, list)]
    if named:
        _same_items("held-out pairs", method_of(runs[0].name), [(n, range(len(v))) for n, v in named])
        # one column per held-out pair (same order in every seed's eval); null = no such response
        table = np.array([[np.nan if x is None else x for x in v] for _, v in named], dtype=np.float64)
        mean, lo, hi = seeded_mean_ci(table)
        pairs = int((~np.isnan(table)).any(axis=0).sum())
        if pairs:
            return {
                "mean": mean,
                "ci95": [lo, hi],
                "pairs": pairs,
                "seeds": len(named),
                "interval": coverage([len(named)]),
            }
    means = [v for r in runs if (v := r.eval["shift"].get(f"dlogp_{kind}")) is not None]
    if not means:
        return None
    return {"mean": sum(means) / len(means), "ci95": None, "pairs": None, "seeds": len(means)}


def shift_pooled(runs: list[Run]) -> list[dict]:
    """Per method, its seeds pooled: each KINDS response's Δ log-prob (_pooled_kind) and the mean share
    of held-out pairs outside SPO's safe region (None where not measured)."""
    out = []
    for method, rs in by_method(runs).items():
        shares = [v for r in rs if (v := r.eval["shift"].get("outside_safe_region_share")) is not None]
        out.append(
            {
                "method": method,
                "seeds": len(rs),
                **{kind: _pooled_kind(rs, kind) for kind in KINDS},
                "outside_safe_region_share": sum(shares) / len(shares) if shares else None,
            }
        )
    return out


def sensitivity(runs: list[Run]) -> dict[str, dict]:
    """Per task: its items, the reference's score and the smallest difference from it that a comparison on
    these items would detect (stats.min_detectable_difference; accuracy as a binomial, other scores from
    the reference's per-item spread). The reference is the run named so, else the first run with items."""
    scored = [r for r in runs if r.samples]
    if not scored:
        return {}
    base = next((r for r in scored if method_of(r.name) == "reference"), scored[0])
    out = {}
    for task, scores in base.item_scores().items():
        binary = TASKS[task].METRIC == "accuracy"
        scale = 100.0 if binary else 1.0  # accuracy items are 0/100: a proportion for the binomial
        mdd = min_detectable_difference([s / scale for s in scores], binary)
        out[task] = {
            "n": len(scores),
            "reference": sum(scores) / len(scores),
            "detectable": None if mdd is None else scale * mdd,
        }
    return out
