"""Build results/leaderboard.md and .json, the figures and the HTML sample report from results/runs/* alone.

    python -m harness.leaderboard [--results results]

Each run folder holds eval.json and samples.jsonl (from harness.evaluate) and, for trained models,
train.json; runs/compare.json (from harness.compare) gives the row order, the command, machine and date.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from harness import figures, report
from harness.stats import mean_ci, paired_diff_ci
from common import exclusive, read_jsonl, run_main, write_json, write_text


def _get(d: dict | None, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


ACCURACY_TASKS = {"gsm8k": "GSM8K", "math": "MATH-500", "arith": "arith"}  # reasoning: accuracy % per task
ITEM_SCORES = {**{t: ("correct", 100.0) for t in ACCURACY_TASKS}, "tldr": ("rougeL", 1.0)}  # per-item field and scale


def item_scores(run: Path) -> dict[str, list[float]]:
    """Per-item scores by task from samples.jsonl, in item order (accuracy items as 0/100, ROUGE-L ×100)."""
    out: dict[str, list[float]] = {}
    path = run / "samples.jsonl"
    for s in read_jsonl(path) if path.is_file() else []:
        if s["task"] in ITEM_SCORES:
            field, scale = ITEM_SCORES[s["task"]]
            out.setdefault(s["task"], []).append(scale * float(s[field]))
    return out


def row(name: str, run: Path) -> dict:
    """The flat, stable leaderboard.json row of one run; a metric of a task not evaluated is None."""
    ev = json.loads((run / "eval.json").read_text())
    train = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else None
    scores = item_scores(run)
    r = {"model": name, "backend": ev["backend"]}
    for task, metric in [*((t, "accuracy") for t in ACCURACY_TASKS), ("tldr", "rougeL")]:
        r[f"{task}_{metric}"], r[f"{task}_n"] = _get(ev, task, metric), _get(ev, task, "n")
        r[f"{task}_{metric}_ci95"] = list(mean_ci(scores[task])[1:]) if scores.get(task) else None
        for stat in ("mean_length", "format_rate", "distinct_2"):
            r[f"{task}_{stat}"] = _get(ev, task, "outputs", stat)
    r["arith_level"] = _get(ev, "arith", "level")
    r["tldr_rouge1"], r["tldr_rouge2"] = _get(ev, "tldr", "rouge1"), _get(ev, "tldr", "rouge2")
    for base in ("reference", "human"):
        j = _get(ev, "tldr", "judge", base) or {}
        r[f"judge_vs_{base}"], r[f"judge_vs_{base}_ci95"], r[f"judge_vs_{base}_n"] = j.get("win_rate"), j.get("ci95"), j.get("n")
        r[f"judge_vs_{base}_consistency"] = j.get("position_consistency")
    r["judge"] = _get(ev, "tldr", "judge", "human", "judge")
    shift = ev["shift"]
    for k in ("dlogp_chosen", "dlogp_rejected", "dlog_combined", "both_fell_share", "heldout_pairs", "kl", "kl_samples"):
        r[k] = shift.get(k)
    r["train_seconds"], r["train_steps"] = (train["train_seconds"], train["steps"]) if train else (None, None)
    for k in ("startup_seconds", "load_seconds", "tokens_per_second"):
        r[f"gen_{k}"] = _get(ev, "generation", k)
    return r


def method_of(name: str) -> str:
    """'spo-seed1' → 'spo': the seeds of one method are pooled in the paired comparisons."""
    return re.sub(r"-seed\d+$", "", name)


def paired(runs: Path, order: list[str]) -> list[dict]:
    """Each method (its seeds averaged per item) minus the reference and minus dpo, on the same items:
    mean difference and 95% paired-bootstrap interval per task."""
    groups: dict[str, list[dict]] = {}
    for name in order:
        groups.setdefault(method_of(name), []).append(item_scores(runs / name))
    pooled = {m: {t: [sum(v) / len(v) for v in zip(*(r[t] for r in rs))] for t in ITEM_SCORES if all(t in r for r in rs)}
              for m, rs in groups.items()}
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
                    diffs[task] = {"diff": mean, "ci95": [lo, hi], "n": len(a), "significant": lo > 0 or hi < 0}
            out.append({"method": method, "seeds": len(groups[method]), "vs": base, "tasks": diffs})
    return out


SEED_METRICS = [*((f"{t}_accuracy", f"{label} acc %") for t, label in ACCURACY_TASKS.items()), ("tldr_rougeL", "TL;DR ROUGE-L"),
                ("judge_vs_reference", "TL;DR win % vs ref"), ("dlogp_chosen", "Δ logp chosen /token"), ("kl", "KL to ref")]


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
    return "—" if m["mean"] is None else f"{m['mean']:.3g}" if m["std"] is None else f"{m['mean']:.3g} ± {m['std']:.2g}"


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
    return [("model", lambda r: r["model"]), *((f"{ACCURACY_TASKS[t]} acc % [95% CI]", lambda r, t=t: _ci(r, f"{t}_accuracy")) for t in tasks),
            ("train time", lambda r: "—" if r["train_seconds"] is None else f"{r['train_seconds']:.0f} s ({r['train_steps']} steps)")]


SUMMARY_COLUMNS = [
    ("model", lambda r: r["model"]),
    ("ROUGE-L [95% CI]", lambda r: _ci(r, "tldr_rougeL", ".2f")),
    ("ROUGE-1 / ROUGE-2", lambda r: f"{_num(r['tldr_rouge1'], '.2f')} / {_num(r['tldr_rouge2'], '.2f')}"),
    ("win % vs ref [95% CI]", lambda r: _ci(r, "judge_vs_reference")),
    ("win % vs human [95% CI]", lambda r: _ci(r, "judge_vs_human")),
]


def shift_columns(tasks: list[str]) -> list:
    fmt = {"gsm8k": "GSM8K len / format %", "math": "MATH len / boxed %", "arith": "arith len / format %"}
    return [
        ("model", lambda r: r["model"]),
        ("Δ logp chosen /token", lambda r: _num(r["dlogp_chosen"], "+.4f")),
        ("Δ logp rejected /token", lambda r: _num(r["dlogp_rejected"], "+.4f")),
        ("Δ log(π_c+π_r) /seq", lambda r: _num(r["dlog_combined"], "+.4f")),
        ("both fell %", lambda r: _num(None if r["both_fell_share"] is None else 100 * r["both_fell_share"], ".0f")),
        ("KL to ref", lambda r: _num(r["kl"], "+.4f")),
        *((fmt[t], lambda r, t=t: f"{_num(r[f'{t}_mean_length'], '.0f')} / {_num(r[f'{t}_format_rate'], '.0f')}") for t in tasks if t in fmt),
        *((("TL;DR len / distinct-2", lambda r: f"{_num(r['tldr_mean_length'], '.0f')} / {_num(r['tldr_distinct_2'], '.3f')}"),) if "tldr" in tasks else ()),
    ]


def table(columns: list, rows: list[dict]) -> list[str]:
    return ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(f(r) for _, f in columns) + " |" for r in rows)]


def verdict(seeds: list[dict], diffs: list[dict], tasks: list[str]) -> list[str]:
    """One line per task (the best method and its paired difference to the others) and one on the
    preferred responses' probability: what a reader needs before the tables."""
    names = {**ACCURACY_TASKS, "tldr": "TL;DR ROUGE-L"}
    by = {(p["method"], p["vs"]): p for p in diffs}
    lines = []
    for t in tasks:
        key = f"{t}_accuracy" if t in ACCURACY_TASKS else "tldr_rougeL"
        ranked = sorted((g for g in seeds if g[key]["mean"] is not None), key=lambda g: -g[key]["mean"])
        if not ranked:
            continue
        best = ranked[0]
        if all(g[key]["mean"] == best[key]["mean"] for g in ranked):
            lines.append(f"- **{names[t]}**: all equal ({_mean_std(best[key])})")
            continue
        vs = [f"vs {base} {_diff(by[best['method'], base], t)}" for base in ("reference", "dpo") if (best["method"], base) in by]
        if best["method"] == "dpo" and ("spo", "dpo") in by:
            vs.append(f"spo vs dpo {_diff(by['spo', 'dpo'], t)}")
        lines.append(f"- **{names[t]}**: highest {best['method']} ({_mean_std(best[key])})" + (f"; {', '.join(vs)}" if vs else ""))
    moved = [f"{g['method']} {'rose' if g['dlogp_chosen']['mean'] > 0 else 'fell'} ({g['dlogp_chosen']['mean']:+.4f})"
             for g in seeds if g["method"] != "reference" and g["dlogp_chosen"]["mean"] is not None]
    if moved:
        lines.append("- **preferred responses' probability** (held-out chosen, token-mean log-prob vs the reference): " + ", ".join(moved))
    return lines + (["", "Differences are per-item paired means with a 95% bootstrap interval; * = the interval excludes 0."] if lines else [])


def render(rows: list[dict], meta: dict, diffs: list[dict] | None = None, training_figure: bool = False) -> str:
    seeds, diffs = over_seeds(rows), diffs or []
    reasoning, evaluated = _present(rows, ACCURACY_TASKS), _present(rows, [*ACCURACY_TASKS, "tldr"])
    n = {k: max((r[k] for r in rows if r.get(k) is not None), default=None) for k in (*(f"{t}_n" for t in evaluated), "heldout_pairs", "kl_samples")}
    judge = next((r["judge"] for r in rows if r["judge"]), None)
    level = next((r["arith_level"] for r in rows if r.get("arith_level") is not None), None)
    notes = {"gsm8k": f"GSM8K: first {n.get('gsm8k_n')} test questions, final number vs gold.",
             "math": f"MATH-500: first {n.get('math_n')} problems, last \\boxed{{}} (else the stated 'answer is …'), equivalence by math-verify.",
             "arith": f"arith: {n.get('arith_n')} generated test problems at level {level} (tasks/arith.py), final number vs gold."}
    multi = any(g["seeds"] > 1 for g in seeds)
    seed_cols = [(k, h) for k, h in SEED_METRICS if any(g[k]["mean"] is not None for g in seeds)]
    lines = ["# Leaderboard", "", *verdict(seeds, diffs, evaluated), ""]
    if reasoning:
        lines += ["## Reasoning", "", *table(reasoning_columns(reasoning), rows), "",
                  "Greedy decoding; accuracy % with a 95% bootstrap interval over the items. " + " ".join(notes[t] for t in reasoning), ""]
    if "tldr" in evaluated:
        lines += ["## Summarization (TL;DR)", "", *table(SUMMARY_COLUMNS, rows), "",
                  f"Greedy decoding, first {n['tldr_n']} eval posts. ROUGE F×100 against the human summary (95% bootstrap interval over posts). "
                  f"Win rate: judge `{judge}`, both presentation orders, ties ½, bootstrap 95% interval; vs ref = against the reference "
                  "model's summary, vs human = against the human summary.", ""]
    if multi:
        lines += ["## Mean ± std over seeds", "", "| method (seeds) | " + " | ".join(h for _, h in seed_cols) + " |", "|" + "---|" * (len(seed_cols) + 1),
                  *(f"| {g['method']} ({g['seeds']}) | " + " | ".join(_mean_std(g[k]) for k, _ in seed_cols) + " |" for g in seeds), "",
                  "Sample standard deviation over a method's training seeds (same pairs, same evaluation items).", ""]
    heads = {**{t: f"{label} acc Δ" for t, label in ACCURACY_TASKS.items()}, "tldr": "TL;DR ROUGE-L Δ"}
    lines += ["## Paired differences on the same items", "", "| method (seeds) | vs | " + " | ".join(heads[t] for t in evaluated) + " |",
              "|---|---|" + "---|" * len(evaluated),
              *(f"| {p['method']} ({p['seeds']}) | {p['vs']} | " + " | ".join(_diff(p, t) for t in evaluated) + " |" for p in diffs),
              "", "Mean per-item difference (accuracy points, ROUGE-L points), a method's seeds averaged per item, with a 95% paired "
              "bootstrap interval over the items (2000 resamples); * = the interval excludes 0.",
              "", "## Distribution shift from the reference", "", *table(shift_columns(evaluated), rows), "",
              f"Δ logp: mean over {n['heldout_pairs']} held-out pairs of the token-mean log-prob change; Δ log(π_c+π_r): change of the "
              "pair's combined sequence probability; both fell: pairs whose chosen and rejected both lost probability (mass moved elsewhere). "
              f"KL: E_y~π[log π(y|x) − log π_ref(y|x)] per sequence, one temperature-1 sample on each of {n['kl_samples']} eval prompts. "
              "len: mean greedy output tokens; format: share with '####' (GSM8K, arith) or \\boxed{} (MATH).",
              "", "## Figures", "", "![main metrics per method, mean ± std over seeds](figures/metrics.png)", "",
              *(["![training curves of every run](figures/training.png)", ""] if training_figure else []),
              "Per-prompt outputs side by side: [report.html](report.html).", ""]
    for key in ("command", "preset", "commit", "machine", "date"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`" if key == "command" else f"- {key}: {meta[key]}")
    if rows and rows[0]["gen_tokens_per_second"] is not None:
        lines.append(f"- generation ({rows[0]['backend']}): engine start-up " + ", ".join(f"{r['model']} {r['gen_startup_seconds']:.1f} s" for r in rows)
                     + "; weight loads into the running engine " + ", ".join(f"{r['model']} {r['gen_load_seconds']:.1f} s" for r in rows)
                     + "; tokens/s " + ", ".join(f"{r['model']} {r['gen_tokens_per_second']:.0f}" for r in rows))
    if "stage_seconds" in meta:
        lines.append("- stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in meta["stage_seconds"].items()))
    if meta.get("kept_from_earlier", {}).get("train") or meta.get("kept_from_earlier", {}).get("eval"):
        kept = meta["kept_from_earlier"]
        lines.append(f"- resumed: training kept for {', '.join(kept['train']) or 'none'}; evaluation kept for {', '.join(kept['eval']) or 'none'}")
    return "\n".join(lines) + "\n"


def write(results: Path) -> str:
    runs = results / "runs"
    meta = json.loads((runs / "compare.json").read_text()) if (runs / "compare.json").is_file() else {}
    found = sorted(p.name for p in runs.iterdir() if (p / "eval.json").is_file())
    # after a compare, only its own runs: older folders may come from other settings
    order = [n for n in meta["order"] if n in found] if "order" in meta else found
    rows = [row(n, runs / n) for n in order]
    diffs = paired(runs, order)
    figures.metrics_chart(over_seeds(rows), results / "figures" / "metrics.png")
    trained = figures.training_chart({n: runs / n for n in order}, results / "figures" / "training.png")
    md = render(rows, meta, diffs, training_figure=trained is not None)
    write_text(results / "leaderboard.md", md)
    write_json(results / "leaderboard.json", {"meta": meta, "rows": rows, "over_seeds": over_seeds(rows), "paired": diffs})
    report.write(results, order)
    return md


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m harness.leaderboard", description="Rebuild the leaderboard and report from results/runs/*.")
    ap.add_argument("--results", type=Path, default=Path("results"))
    results = ap.parse_args().results

    def rebuild() -> None:
        with exclusive(results, by="harness.leaderboard"):
            print(write(results))

    run_main(rebuild)
