"""Build results/leaderboard.md and .json, the figures and the HTML sample report from results/runs/* alone.

    python -m harness.leaderboard [--results results]

Each run folder holds eval.json and samples.jsonl (from harness.evaluate) and, for trained models,
train.json; runs/compare.json (from harness.compare) gives the row order, the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from common import exclusive, read_jsonl, run_main, write_json, write_text
from harness import figures, report
from harness.stats import mean_ci, paired_diff_ci
from tasks import TASKS


def _get(d: dict | None, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


# accuracy tasks share one table per section; the others get a table each (score_columns)
ACCURACY_TASKS = [name for name, t in TASKS.items() if t.METRIC == "accuracy"]
ITEM_SCORES = {name: t.ITEM_SCORE for name, t in TASKS.items()}  # per-item field and scale
# the judge's columns (unprefixed row keys) come from the first judged task
JUDGED = next((name for name, t in TASKS.items() if t.JUDGED), None)
JUDGE_NOTE = (
    " Win rate: judge `{judge}`, both presentation orders, ties ½, bootstrap 95% interval; vs ref = "
    "against the reference model's summary, vs human = against the human summary."
)


def _label(name: str) -> str:
    """'GSM8K acc %', 'TL;DR ROUGE-L': a task's headline metric in tables and figures."""
    return f"{TASKS[name].TITLE} {TASKS[name].METRIC_LABEL}"


def _name(name: str) -> str:
    """The task in the verdict: its title alone for an accuracy task ('GSM8K'), else with the metric."""
    return TASKS[name].TITLE if name in ACCURACY_TASKS else _label(name)


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

    def item_scores(self) -> dict[str, list[float]]:
        """Per-item scores by task, in item order (accuracy items as 0/100, ROUGE-L ×100)."""
        out: dict[str, list[float]] = {}
        for s in self.samples or []:
            if s["task"] in ITEM_SCORES:
                field, scale = ITEM_SCORES[s["task"]]
                out.setdefault(s["task"], []).append(scale * float(s[field]))
        return out


def row(run: Run) -> dict:
    """The flat, stable leaderboard.json row of one run; a metric of a task not evaluated is None."""
    ev, train, scores = run.eval, run.train, run.item_scores()
    r = {"model": run.name, "backend": ev["backend"]}
    for task, t in TASKS.items():
        r[f"{task}_{t.METRIC}"], r[f"{task}_n"] = _get(ev, task, t.METRIC), _get(ev, task, "n")
        r[f"{task}_{t.METRIC}_ci95"] = list(mean_ci(scores[task])[1:]) if scores.get(task) else None
        for stat in ("mean_length", "format_rate", "distinct_2"):
            r[f"{task}_{stat}"] = _get(ev, task, "outputs", stat)
    for task, t in TASKS.items():
        for key in t.EXTRAS:
            r[f"{task}_{key}"] = _get(ev, task, key)
    if JUDGED:
        for base in ("reference", "human"):
            j = _get(ev, JUDGED, "judge", base) or {}
            r[f"judge_vs_{base}"], r[f"judge_vs_{base}_ci95"] = j.get("win_rate"), j.get("ci95")
            r[f"judge_vs_{base}_n"], r[f"judge_vs_{base}_consistency"] = (
                j.get("n"),
                j.get("position_consistency"),
            )
        r["judge"] = _get(ev, JUDGED, "judge", "human", "judge")
    shift = ev["shift"]
    for k in (
        "dlogp_chosen",
        "dlogp_rejected",
        "dlog_combined",
        "both_fell_share",
        "heldout_pairs",
        "kl",
        "kl_samples",
    ):
        r[k] = shift.get(k)
    r["train_seconds"], r["train_steps"] = (train["train_seconds"], train["steps"]) if train else (None, None)
    for k in ("startup_seconds", "load_seconds", "tokens_per_second"):
        r[f"gen_{k}"] = _get(ev, "generation", k)
    return r


def method_of(name: str) -> str:
    """'spo-seed1' → 'spo': the seeds of one method are pooled in the paired comparisons."""
    return re.sub(r"-seed\d+$", "", name)


def paired(runs: list[Run]) -> list[dict]:
    """Each method (its seeds averaged per item) minus the reference and minus dpo, on the same items:
    mean difference and 95% paired-bootstrap interval per task."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(method_of(run.name), []).append(run.item_scores())
    pooled = {
        m: {
            t: [sum(v) / len(v) for v in zip(*(r[t] for r in rs))]
            for t in ITEM_SCORES
            if all(t in r for r in rs)
        }
        for m, rs in groups.items()
    }
    out = []
    for method in (m for m in pooled if m != "reference"):
        for base in ("reference", "dpo"):
            if base == method or base not in pooled:
                continue
            diffs = {}
            for task in ITEM_SCORES:
                a, b = pooled[method].get(task), pooled[base].get(task)
                if a and b and len(a) == len(b):
                    mean, lo, hi = paired_diff_ci(a, b)
                    diffs[task] = {
                        "diff": mean,
                        "ci95": [lo, hi],
                        "n": len(a),
                        "significant": lo > 0 or hi < 0,
                    }
            out.append({"method": method, "seeds": len(groups[method]), "vs": base, "tasks": diffs})
    return out


SEED_METRICS = [
    *((f"{name}_{t.METRIC}", _label(name)) for name, t in TASKS.items()),
    *([("judge_vs_reference", f"{TASKS[JUDGED].TITLE} win % vs ref")] if JUDGED else []),
    ("dlogp_chosen", "Δ logp chosen /token"),
    ("kl", "KL to ref"),
]


def over_seeds(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over each method's seeds (None where a metric is missing)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(method_of(r["model"]), []).append(r)
    out = []
    for method, rs in groups.items():
        stats = {"method": method, "seeds": len(rs)}
        for key, _ in SEED_METRICS:
            v = [r[key] for r in rs if r[key] is not None]
            mean = sum(v) / len(v) if v else None
            std = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else None
            stats[key] = {"mean": mean, "std": std}
        out.append(stats)
    return out


def _mean_std(m: dict) -> str:
    if m["mean"] is None:
        return "—"
    if m["std"] is None:
        return f"{m['mean']:.3g}"
    return f"{m['mean']:.3g} ± {m['std']:.2g}"


def _diff(p: dict, task: str) -> str:
    d = p["tasks"].get(task)
    if d is None:
        return "—"
    lo, hi = d["ci95"]
    return f"{d['diff']:+.1f} [{lo:+.1f}, {hi:+.1f}]" + (" *" if d["significant"] else "")


def _num(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _ci(r: dict, key: str, fmt: str = ".1f") -> str:
    """'value [lo, hi]' with the interval when there is one."""
    if r.get(key) is None:
        return "—"
    ci = r.get(f"{key}_ci95")
    return format(r[key], fmt) + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def _present(rows: list[dict], tasks) -> list[str]:
    return [t for t in tasks if any(r.get(f"{t}_n") is not None for r in rows)]


def reasoning_columns(tasks: list[str]) -> list:
    return [
        ("model", lambda r: r["model"]),
        *((f"{_label(t)} [95% CI]", lambda r, t=t: _ci(r, f"{t}_accuracy")) for t in tasks),
        (
            "train time",
            lambda r: (
                "—"
                if r["train_seconds"] is None
                else f"{r['train_seconds']:.0f} s ({r['train_steps']} steps)"
            ),
        ),
    ]


def score_columns(task: str) -> list:
    """The own table of a task that is not an accuracy task: its metric, its EXTRAS, the judge's win rates."""
    t = TASKS[task]
    extras = [f"{task}_{key}" for key in t.EXTRAS]
    columns = [
        ("model", lambda r: r["model"]),
        (f"{t.METRIC_LABEL} [95% CI]", lambda r: _ci(r, f"{task}_{t.METRIC}", ".2f")),
    ]
    if extras:
        columns.append(
            (" / ".join(t.EXTRAS.values()), lambda r: " / ".join(_num(r[k], ".2f") for k in extras))
        )
    if task == JUDGED:
        columns += [
            ("win % vs ref [95% CI]", lambda r: _ci(r, "judge_vs_reference")),
            ("win % vs human [95% CI]", lambda r: _ci(r, "judge_vs_human")),
        ]
    return columns


def _output_column(task: str) -> tuple:
    """Mean output length and answer-format rate, or distinct-2 for a task without an answer format."""
    label = TASKS[task].FORMAT_LABEL
    if label is None:
        return (
            f"{TASKS[task].TITLE} len / distinct-2",
            lambda r: f"{_num(r[f'{task}_mean_length'], '.0f')} / {_num(r[f'{task}_distinct_2'], '.3f')}",
        )
    return (
        label,
        lambda r: f"{_num(r[f'{task}_mean_length'], '.0f')} / {_num(r[f'{task}_format_rate'], '.0f')}",
    )


def shift_columns(tasks: list[str]) -> list:
    return [
        ("model", lambda r: r["model"]),
        ("Δ logp chosen /token", lambda r: _num(r["dlogp_chosen"], "+.4f")),
        ("Δ logp rejected /token", lambda r: _num(r["dlogp_rejected"], "+.4f")),
        ("Δ log(π_c+π_r) /seq", lambda r: _num(r["dlog_combined"], "+.4f")),
        (
            "both fell %",
            lambda r: _num(None if r["both_fell_share"] is None else 100 * r["both_fell_share"], ".0f"),
        ),
        ("KL to ref", lambda r: _num(r["kl"], "+.4f")),
        *(_output_column(t) for t in tasks),
    ]


def _note(task: str, rows: list[dict], n: dict) -> str:
    """The task's NOTE with its item count and its EXTRAS (the first run's value that is set)."""
    extras = {
        k: next((r[f"{task}_{k}"] for r in rows if r.get(f"{task}_{k}") is not None), None)
        for k in TASKS[task].EXTRAS
    }
    return TASKS[task].NOTE.format(n=n.get(f"{task}_n"), **extras)


def table(columns: list, rows: list[dict]) -> list[str]:
    return [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(f(r) for _, f in columns) + " |" for r in rows),
    ]


def verdict(seeds: list[dict], diffs: list[dict], tasks: list[str]) -> list[str]:
    """One line per task (the best method and its paired difference to the others) and one on the
    preferred responses' probability: what a reader needs before the tables."""
    by = {(p["method"], p["vs"]): p for p in diffs}
    lines = []
    for t in tasks:
        key = f"{t}_{TASKS[t].METRIC}"
        ranked = sorted((g for g in seeds if g[key]["mean"] is not None), key=lambda g: -g[key]["mean"])
        if not ranked:
            continue
        best = ranked[0]
        if all(g[key]["mean"] == best[key]["mean"] for g in ranked):
            lines.append(f"- **{_name(t)}**: all equal ({_mean_std(best[key])})")
            continue
        vs = [
            f"vs {base} {_diff(by[best['method'], base], t)}"
            for base in ("reference", "dpo")
            if (best["method"], base) in by
        ]
        if best["method"] == "dpo" and ("spo", "dpo") in by:
            vs.append(f"spo vs dpo {_diff(by['spo', 'dpo'], t)}")
        lines.append(
            f"- **{_name(t)}**: highest {best['method']} ({_mean_std(best[key])})"
            + (f"; {', '.join(vs)}" if vs else "")
        )
    moved = [
        f"{g['method']} {'rose' if g['dlogp_chosen']['mean'] > 0 else 'fell'} "
        f"({g['dlogp_chosen']['mean']:+.4f})"
        for g in seeds
        if g["method"] != "reference" and g["dlogp_chosen"]["mean"] is not None
    ]
    if moved:
        lines.append(
            "- **preferred responses' probability** (held-out chosen, token-mean log-prob vs the reference): "
            + ", ".join(moved)
        )
    return lines + (
        [
            "",
            "Differences are per-item paired means with a 95% bootstrap interval; "
            "* = the interval excludes 0.",
        ]
        if lines
        else []
    )


def render(
    rows: list[dict], meta: dict, diffs: list[dict] | None = None, training_figure: bool = False
) -> str:
    seeds, diffs = over_seeds(rows), diffs or []
    evaluated = _present(rows, TASKS)
    n = {
        k: max((r[k] for r in rows if r.get(k) is not None), default=None)
        for k in (*(f"{t}_n" for t in evaluated), "heldout_pairs", "kl_samples")
    }
    judge = next((r["judge"] for r in rows if r.get("judge")), None)
    multi = any(g["seeds"] > 1 for g in seeds)
    seed_cols = [(k, h) for k, h in SEED_METRICS if any(g[k]["mean"] is not None for g in seeds)]
    lines = ["# Leaderboard", "", *verdict(seeds, diffs, evaluated), ""]
    # one section per SECTION, in registry order: its accuracy tasks share a table, any other task has its own
    for section in dict.fromkeys(TASKS[t].SECTION for t in evaluated):
        group = [t for t in evaluated if TASKS[t].SECTION == section]
        accuracy = [t for t in group if t in ACCURACY_TASKS]
        lines += [f"## {section}", ""]
        if accuracy:
            lines += [
                *table(reasoning_columns(accuracy), rows),
                "",
                "Greedy decoding; accuracy % with a 95% bootstrap "
                "interval over the items. " + " ".join(_note(t, rows, n) for t in accuracy),
                "",
            ]
        for t in (t for t in group if t not in ACCURACY_TASKS):
            judged = JUDGE_NOTE.format(judge=judge) if t == JUDGED else ""
            lines += [*table(score_columns(t), rows), "", f"Greedy decoding, {_note(t, rows, n)}{judged}", ""]
    if multi:
        lines += [
            "## Mean ± std over seeds",
            "",
            "| method (seeds) | " + " | ".join(h for _, h in seed_cols) + " |",
            "|" + "---|" * (len(seed_cols) + 1),
            *(
                f"| {g['method']} ({g['seeds']}) | "
                + " | ".join(_mean_std(g[k]) for k, _ in seed_cols)
                + " |"
                for g in seeds
            ),
            "",
            "Sample standard deviation over a method's training seeds (same pairs, same evaluation items).",
            "",
        ]
    heads = {t: f"{TASKS[t].TITLE} acc Δ" if t in ACCURACY_TASKS else f"{_label(t)} Δ" for t in evaluated}
    lines += [
        "## Paired differences on the same items",
        "",
        "| method (seeds) | vs | " + " | ".join(heads[t] for t in evaluated) + " |",
        "|---|---|" + "---|" * len(evaluated),
        *(
            f"| {p['method']} ({p['seeds']}) | {p['vs']} | "
            + " | ".join(_diff(p, t) for t in evaluated)
            + " |"
            for p in diffs
        ),
        "",
        "Mean per-item difference (accuracy points, ROUGE-L points), a method's seeds averaged per item, "
        "with a 95% paired bootstrap interval over the items (2000 resamples); * = the interval excludes 0.",
        "",
        "## Distribution shift from the reference",
        "",
        *table(shift_columns(evaluated), rows),
        "",
        f"Δ logp: mean over {n['heldout_pairs']} held-out pairs of the token-mean log-prob change; "
        "Δ log(π_c+π_r): change of the pair's combined sequence probability; both fell: pairs whose chosen "
        "and rejected both lost probability (mass moved elsewhere). "
        "KL: E_y~π[log π(y|x) − log π_ref(y|x)] per sequence, one temperature-1 sample on each of "
        f"{n['kl_samples']} eval prompts. "
        "len: mean greedy output tokens; format: share with '####' (GSM8K, arith) or \\boxed{} (MATH).",
        "",
        "## Figures",
        "",
        "![main metrics per method, mean ± std over seeds](figures/metrics.png)",
        "",
        *(["![training curves of every run](figures/training.png)", ""] if training_figure else []),
        "Per-prompt outputs side by side: [report.html](report.html).",
        "",
    ]
    for key in ("command", "preset", "commit", "machine", "date"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`" if key == "command" else f"- {key}: {meta[key]}")
    if rows and rows[0]["gen_tokens_per_second"] is not None:
        lines.append(
            f"- generation ({rows[0]['backend']}): engine start-up "
            + ", ".join(f"{r['model']} {r['gen_startup_seconds']:.1f} s" for r in rows)
            + "; weight loads into the running engine "
            + ", ".join(f"{r['model']} {r['gen_load_seconds']:.1f} s" for r in rows)
            + "; tokens/s "
            + ", ".join(f"{r['model']} {r['gen_tokens_per_second']:.0f}" for r in rows)
        )
    if "stage_seconds" in meta:
        lines.append(
            "- stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in meta["stage_seconds"].items())
        )
    if meta.get("kept_from_earlier", {}).get("train") or meta.get("kept_from_earlier", {}).get("eval"):
        kept = meta["kept_from_earlier"]
        lines.append(
            f"- resumed: training kept for {', '.join(kept['train']) or 'none'}; "
            f"evaluation kept for {', '.join(kept['eval']) or 'none'}"
        )
    return "\n".join(lines) + "\n"


def write(results: Path) -> str:
    runs = results / "runs"
    meta = json.loads((runs / "compare.json").read_text()) if (runs / "compare.json").is_file() else {}
    found = sorted(p.name for p in runs.iterdir() if (p / "eval.json").is_file())
    # after a compare, only its own runs: older folders may come from other settings
    order = [n for n in meta["order"] if n in found] if "order" in meta else found
    read = [Run.read(runs / n) for n in order]
    rows = [row(r) for r in read]
    diffs = paired(read)
    figures.metrics_chart(over_seeds(rows), results / "figures" / "metrics.png")
    trained = figures.training_chart({r.name: r.metrics for r in read}, results / "figures" / "training.png")
    md = render(rows, meta, diffs, training_figure=trained is not None)
    write_text(results / "leaderboard.md", md)
    write_json(
        results / "leaderboard.json",
        {"meta": meta, "rows": rows, "over_seeds": over_seeds(rows), "paired": diffs},
    )
    report.write(results, {r.name: r.samples for r in read})
    return md


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        prog="python -m harness.leaderboard",
        description="Rebuild the leaderboard and report from results/runs/*.",
    )
    ap.add_argument("--results", type=Path, default=Path("results"))
    results = ap.parse_args().results

    def rebuild() -> None:
        with exclusive(results, by="harness.leaderboard"):
            print(write(results))

    run_main(rebuild)
