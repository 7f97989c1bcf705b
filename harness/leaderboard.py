"""Build results/leaderboard.md and .json, the figures and the HTML sample report from results/runs/* alone.

    python -m harness.leaderboard [--results results]

Each run folder holds eval.json and samples.jsonl (from harness.evaluate) and, for trained models,
train.json; runs/compare.json (from harness.compare) gives the row order, the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import exclusive, run_main, write_json, write_text
from harness import displacement, figures, report
from harness.methods import method_of
from harness.pooled import KINDS, Run, by_method, coverage, init_method, paired, sensitivity, shift_pooled
from harness.stats import mean_ci
from tasks import TASKS


def _get(d: dict | None, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


# accuracy tasks share one table per section; the others get a table each (score_columns)
ACCURACY_TASKS = [name for name, t in TASKS.items() if t.METRIC == "accuracy"]
# the judge's columns (unprefixed row keys) come from the first judged task
JUDGED = next((name for name, t in TASKS.items() if t.JUDGED), None)
JUDGE_NOTE = (
    " Win rate: judge `{judge}`, both presentation orders, ties ½, bootstrap 95% interval; vs ref = "
    "against the reference model's summary, vs human = against the human summary. LC = length-controlled "
    "win rate (AlpacaEval 2): the judge's preferences fitted by a logistic model with a term in the length "
    "difference, read at equal lengths; len ratio = mean summary length over the baseline's, in words."
)


SHIFT_KEYS = (
    *(f"{d}_{k}" for d in ("dlogp", "dsum") for k in KINDS),
    "dlog_combined",
    "both_fell_share",
    "outside_safe_region_share",
    "heldout_pairs",
    "rephrased_pairs",
    "kl",
    "kl_samples",
)


def _label(name: str) -> str:
    """'GSM8K acc %', 'TL;DR ROUGE-L': a task's headline metric in tables and figures."""
    return f"{TASKS[name].TITLE} {TASKS[name].METRIC_LABEL}"


def _name(name: str) -> str:
    """The task in the verdict: its title alone for an accuracy task ('GSM8K'), else with the metric."""
    return TASKS[name].TITLE if name in ACCURACY_TASKS else _label(name)


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
            r[f"judge_vs_{base}_n"] = j.get("n")
            r[f"judge_vs_{base}_consistency"] = j.get("position_consistency")
            # absent from eval.json files written before the length-controlled win rate: None
            r[f"judge_vs_{base}_lc"], r[f"judge_vs_{base}_lc_ci95"] = j.get("lc_win_rate"), j.get("lc_ci95")
            r[f"judge_vs_{base}_lc_separated"] = j.get("lc_separated", False)
            r[f"judge_vs_{base}_length_ratio"] = j.get("length_ratio")
        r["judge"] = _get(ev, JUDGED, "judge", "human", "judge")
    r |= {k: ev["shift"].get(k) for k in SHIFT_KEYS}
    # lm-eval tasks (--lm-eval-tasks): each one's main metric, its stderr, the metric's name and items
    lm_eval = _get(ev, "lm_eval", "tasks") or {}
    r["lm_eval_tasks"] = list(lm_eval)
    for name, t in lm_eval.items():
        r[f"lm_eval_{name}"], r[f"lm_eval_{name}_stderr"] = t["value"], t["stderr"]
        # the filter, where the task has several (stock gsm8k: strict-match, flexible-extract)
        metric = t["metric"] if t.get("filter", "none") == "none" else f"{t['metric']} ({t['filter']})"
        r[f"lm_eval_{name}_metric"], r[f"lm_eval_{name}_n"] = metric, t["n"]
    r["train_seconds"], r["train_steps"] = (train["train_seconds"], train["steps"]) if train else (None, None)
    for k in ("startup_seconds", "load_seconds", "tokens_per_second"):
        r[f"gen_{k}"] = _get(ev, "generation", k)
    r["evaluation_reused"] = _get(ev, "reference_cache", "hit") is True
    return r


SEED_METRICS = [
    *((f"{name}_{t.METRIC}", _label(name)) for name, t in TASKS.items()),
    *([("judge_vs_reference", f"{TASKS[JUDGED].TITLE} win % vs ref")] if JUDGED else []),
    ("dlogp_chosen", "Δ logp chosen /token"),
    ("dlogp_greedy", "Δ logp greedy /token"),
    ("outside_safe_region_share", "outside safe region share"),
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


def _lc(r: dict, key: str) -> str:
    """The LC win rate, or why there is none: the judge's verdicts are separated by length (stats)."""
    return "not estimable (separated)" if r.get(f"{key}_separated") else _ci(r, key)


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
        for base, short in (("reference", "ref"), ("human", "human")):
            columns += [
                (f"win % vs {short} [95% CI]", lambda r, k=f"judge_vs_{base}": _ci(r, k)),
                (f"LC win % vs {short} [95% CI]", lambda r, k=f"judge_vs_{base}_lc": _lc(r, k)),
                (f"len ratio vs {short}", lambda r, k=f"judge_vs_{base}_length_ratio": _num(r[k], ".2f")),
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


def _percent(share: float | None) -> str:
    return _num(None if share is None else 100 * share, ".0f")


def shift_columns(tasks: list[str]) -> list:
    return [
        ("model", lambda r: r["model"]),
        *((f"Δ logp {k} /token", lambda r, k=k: _num(r[f"dlogp_{k}"], "+.4f")) for k in KINDS),
        ("Δ log(π_c+π_r) /seq", lambda r: _num(r["dlog_combined"], "+.4f")),
        ("both fell %", lambda r: _percent(r["both_fell_share"])),
        ("outside safe region %", lambda r: _percent(r["outside_safe_region_share"])),
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


def lm_eval_section(rows: list[dict]) -> list[str]:
    """The lm-eval tasks' table (main metric ± stderr per model), or nothing when none ran."""
    names = list(dict.fromkeys(n for r in rows for n in r.get("lm_eval_tasks") or []))
    if not names:
        return []

    def cell(r: dict, name: str) -> str:
        value, stderr = r.get(f"lm_eval_{name}"), r.get(f"lm_eval_{name}_stderr")
        if value is None:
            return "—"
        return f"{value:.4g}" + ("" if stderr is None else f" ± {stderr:.2g}")

    first = {n: next(r for r in rows if r.get(f"lm_eval_{n}_metric")) for n in names}
    columns = [
        ("model", lambda r: r["model"]),
        *((f"{n} {first[n][f'lm_eval_{n}_metric']}", lambda r, n=n: cell(r, n)) for n in names),
    ]
    items = ", ".join(f"{n} {first[n][f'lm_eval_{n}_n']}" for n in names)
    return [
        "## lm-eval tasks",
        "",
        *table(columns, rows),
        "",
        f"Scored by lm-evaluation-harness's own evaluator (chat template, greedy), each task's main metric in"
        f" lm-eval's units ± its standard error; items: {items}.",
        "",
    ]


def table(columns: list, rows: list[dict]) -> list[str]:
    return [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(f(r) for _, f in columns) + " |" for r in rows),
    ]


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _moved(d: dict) -> str:
    """'lowered it by 0.0123 per token [-0.0201, -0.0050] (24 pairs × 3 seeds)': raised or lowered when
    the interval lies on one side of 0 (by the mean's sign when there is none), else 'changed it by'."""
    mean, ci = d["mean"], d["ci95"]
    if ci is None and mean == 0:
        return f"left it unchanged (mean of {_seeds(d['seeds'])}; no per-pair values)"
    if ci is None:
        word = "raised" if mean > 0 else "lowered"
        return f"{word} it by {abs(mean):.4f} per token (mean of {_seeds(d['seeds'])}; no per-pair values)"
    lo, hi = ci
    interval = f"[{lo:+.4f}, {hi:+.4f}] ({d['pairs']} pairs × {_seeds(d['seeds'])})"
    if lo > 0:
        return f"raised it by {mean:.4f} per token {interval}"
    if hi < 0:
        return f"lowered it by {-mean:.4f} per token {interval}"
    return f"changed it by {mean:+.4f} per token {interval}"


def _consequence(d: dict) -> str:
    """'+2.0 [+1.0, +3.0] (higher)': a paired difference and which way its interval goes."""
    lo, hi = d["ci95"]
    if lo > 0:
        word = "higher"
    elif hi < 0:
        word = "lower"
    else:
        word = "no clear difference"
    return f"{d['diff']:+.1f} [{lo:+.1f}, {hi:+.1f}] ({word})"


def shift_lines(shifts: list[dict], init: str | None = None) -> list[str]:
    """What training did to the held-out responses' probability, as measured, one line per response kind
    (every method that ran, seeds pooled), then the share of pairs outside SPO's safe region. The reference
    and an init method (the others' reference: zero by definition) are left out."""
    trained = [g for g in shifts if g["method"] not in ("reference", init)]
    lines = []
    for kind, title in KINDS.items():
        moved = [f"{g['method']} {_moved(g[kind])}" for g in trained if g[kind] is not None]
        if moved:
            lines.append(f"- **Δ log-prob, {title}**: " + "; ".join(moved))
    outside = [
        f"{g['method']} {_percent(g['outside_safe_region_share'])}%"
        for g in trained
        if g["outside_safe_region_share"] is not None
    ]
    if outside:
        lines.append(
            "- **outside SPO's safe region** (held-out pairs whose chosen fell below the reference, mean "
            "over seeds): " + ", ".join(outside)
        )
    return lines


def consequence_line(diffs: list[dict], tasks: list[str]) -> list[str]:
    """The paired accuracy difference of each method vs its base (and its init) on each accuracy task,
    whichever way it goes."""
    parts = []
    for p in (p for p in diffs if p["vs"] != "reference"):
        found = [f"{_name(t)} {_consequence(p['tasks'][t])}" for t in tasks if t in p["tasks"]]
        if found:
            parts.append(f"{p['method']} vs {p['vs']}: " + ", ".join(found))
    if not parts:
        return []
    return ["- **accuracy, each method vs its base** (paired per item, seeds averaged): " + "; ".join(parts)]


def reach_line(reach: dict) -> list[str]:
    """Per task, the smallest difference from the reference its evaluation could show (pooled.sensitivity)."""
    parts = [
        f"{_name(t)} {'none' if r['detectable'] is None else format(r['detectable'], '.1f')} "
        f"({r['n']} items, reference {r['reference']:.1f})"
        for t, r in reach.items()
    ]
    if not parts:
        return []
    return [
        "- **smallest difference each task can show** (80% power, two-sided 5%, at the reference's score, "
        "points; unpaired, so an upper bound): " + "; ".join(parts)
    ]


def trained_coverage(seeds: list[dict]) -> str:
    """pooled.coverage of the trained methods' seed counts (over_seeds groups; the reference has none)."""
    return coverage([g["seeds"] for g in seeds if g["method"] != "reference"] or [1])


# what the intervals resample (pooled.coverage): the verdict's note, the Δ log-prob lines' ending and the
# paired table's words
INTERVAL_NOTES = {
    "seeds and items": (
        "Differences are per-item paired means with a 95% two-stage bootstrap interval (a method's training "
        "seeds, then the evaluation items; docs/evaluation.md); * = the interval excludes 0: the difference "
        "survives both sources of noise.",
        ", 95% bootstrap resampling the training seeds, then the pairs.",
        "training seeds, then items",
    ),
    "items and some seeds": (
        "Differences are per-item paired means with a 95% bootstrap interval that resamples the training "
        "seeds of the methods with several, then the evaluation items (docs/evaluation.md), and only the "
        "items for a method trained once; * = the interval excludes 0.",
        ", 95% bootstrap resampling the training seeds where there are several, then the pairs.",
        "training seeds where a method has several, then items",
    ),
    "items": (
        "Intervals cover the evaluation items only, not training randomness: each method trained once "
        "(`--seeds 0,1,2` gives intervals that cover it). Differences are per-item paired means with a 95% "
        "bootstrap interval over the items; * = the interval excludes 0.",
        ", 95% bootstrap resampling the pairs.",
        "the items only (one training seed)",
    ),
}


def interval_note(cover: str, moved: bool, per_pair: bool) -> str:
    """What the verdict's intervals cover (INTERVAL_NOTES), with the Δ log-prob lines' method."""
    note, pooled, _ = INTERVAL_NOTES[cover]
    if moved:
        note += (
            " Δ log-prob: token-mean log-prob change vs the reference on the held-out pairs, a method's "
            "seeds pooled" + (pooled if per_pair else ".")
        )
    return note


def verdict(
    seeds: list[dict],
    diffs: list[dict],
    tasks: list[str],
    shifts: list[dict] | None = None,
    init: str | None = None,
    reach: dict | None = None,
) -> list[str]:
    """One line per task (the best method and its paired differences: to its opponents, and of the methods
    compared with it), what training did to the held-out responses' probability, the accuracy
    consequence vs each base and what each task could show at all: what a reader needs before the tables."""
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
        vs = [f"vs {p['vs']} {_diff(p, t)}" for p in diffs if p["method"] == best["method"]]
        vs += [f"{p['method']} vs {p['vs']} {_diff(p, t)}" for p in diffs if p["vs"] == best["method"]]
        lines.append(
            f"- **{_name(t)}**: highest {best['method']} ({_mean_std(best[key])})"
            + (f"; {', '.join(vs)}" if vs else "")
        )
    moved = shift_lines(shifts or [], init)
    lines += moved + consequence_line(diffs, [t for t in tasks if t in ACCURACY_TASKS])
    if not lines:
        return []
    lines += reach_line({t: r for t, r in (reach or {}).items() if t in tasks})
    per_pair = any((g[k] or {}).get("ci95") for g in shifts or [] for k in KINDS)
    return [*lines, "", interval_note(trained_coverage(seeds), bool(moved), per_pair)]


def _pairs_line(meta: dict) -> str:
    """' Training pairs: …' from compare.json (per task: count and pair style), or '' for older files."""
    by_task = meta.get("pairs", {}).get("by_task")
    if not by_task:
        return ""
    parts = [f"{TASKS[t].TITLE if t in TASKS else t} {c['train']} ({c['style']})" for t, c in by_task.items()]
    held = sum(c["heldout"] for c in by_task.values())
    line = f" Training pairs: {', '.join(parts)}; {held} held out for the Δ log-probs."
    cut = {f: sum(c.get("truncated", {}).get(f, 0) for c in by_task.values()) for f in ("chosen", "rejected")}
    if any(cut.values()):
        line += (
            f" Of the training and held-out pairs, {cut['chosen']} chosen and {cut['rejected']} rejected "
            "responses were cut by the sampling length cap: kept, scored without an end token."
        )
    return line


def render(
    rows: list[dict],
    meta: dict,
    diffs: list[dict] | None = None,
    training_figure: bool = False,
    shifts: list[dict] | None = None,
    dynamics_figure: bool = False,
    reach: dict | None = None,
    moved: list[str] = (),
) -> str:
    seeds, diffs = over_seeds(rows), diffs or []
    evaluated = _present(rows, TASKS)
    n = {
        k: max((r[k] for r in rows if r.get(k) is not None), default=None)
        for k in (*(f"{t}_n" for t in evaluated), "heldout_pairs", "rephrased_pairs", "kl_samples")
    }
    judge = next((r["judge"] for r in rows if r.get("judge")), None)
    multi = any(g["seeds"] > 1 for g in seeds)
    resampled = INTERVAL_NOTES[trained_coverage(seeds)][2]  # what the paired table's intervals resample
    seed_cols = [(k, h) for k, h in SEED_METRICS if any(g[k]["mean"] is not None for g in seeds)]
    init = meta.get("init", "reference")
    # an init other than the reference is a run of its own, whose weights are the methods' reference too
    started = (
        f" (run {meta.get('init_run', init)}'s weights, also the reference)" if init_method(meta) else ""
    )
    lines = [
        "# Leaderboard",
        "",
        f"Every method trained from: **{init}**{started}.{_pairs_line(meta)}",
        "",
        *verdict(seeds, diffs, evaluated, shifts, init_method(meta), reach),
        "",
    ]
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
    lines += lm_eval_section(rows)
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
        f"with a 95% paired bootstrap interval (2000 resamples) over {resampled}; "
        "* = the interval excludes 0.",
        "",
        "## Distribution shift from the reference",
        "",
        *table(shift_columns(evaluated), rows),
        "",
        f"Δ logp: mean over {n['heldout_pairs']} held-out pairs of the token-mean log-prob change of the "
        "chosen, the rejected, a rephrased chosen"
        + (f" ({n['rephrased_pairs']} pairs have one)" if n["rephrased_pairs"] is not None else "")
        + ", an unrelated response (another pair's chosen) and the model's own greedy response; "
        "Δ log(π_c+π_r): change of the pair's combined sequence probability; both fell: pairs whose chosen "
        "and rejected both lost probability (mass moved elsewhere); outside safe region: pairs whose chosen "
        "fell below the reference's (where SPO's penalty acts). "
        "KL: E_y~π[log π(y|x) − log π_ref(y|x)] per sequence, one temperature-1 sample on each of "
        f"{n['kl_samples']} eval prompts. "
        "len: mean greedy output tokens; format: share with '####' (GSM8K, arith) or \\boxed{} (MATH).",
        "",
        *moved,
        "## Figures",
        "",
        "![main metrics per method, mean ± std over seeds](figures/metrics.png)",
        "",
        *(["![training curves of every run](figures/training.png)", ""] if training_figure else []),
        *(
            ["![probe-set dynamics per method, mean and min–max over seeds](figures/dynamics.png)", ""]
            if dynamics_figure
            else []
        ),
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
    if reused := [r["model"] for r in rows if r["evaluation_reused"]]:
        lines.append(
            f"- evaluation reused from an earlier compare, its times as then measured: {', '.join(reused)}"
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
    diffs, shifts = paired(read, init_method(meta)), shift_pooled(read)
    figures.metrics_chart(over_seeds(rows), results / "figures" / "metrics.png")
    trained = figures.training_chart({r.name: r.metrics for r in read}, results / "figures" / "training.png")
    logged = {m: ms for m, rs in by_method(read).items() if (ms := [r.metrics for r in rs if r.metrics])}
    dynamics = figures.probe_chart(logged, results / "figures" / "dynamics.png")
    init = runs / meta.get("init_run", "reference")
    reach, moved = sensitivity(read), displacement.analyse(read, init)
    lines = displacement.section(moved)
    md = render(rows, meta, diffs, trained is not None, shifts, dynamics is not None, reach, lines)
    write_text(results / "leaderboard.md", md)
    write_json(
        results / "leaderboard.json",
        {
            "meta": meta,
            "rows": rows,
            "over_seeds": over_seeds(rows),
            "paired": diffs,
            "shift_pooled": shifts,
            "sensitivity": reach,
            "displacement": moved["methods"],
        },
    )
    report.write(results, {r.name: r.samples for r in read}, displacement.token_view(read, init.name))
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
