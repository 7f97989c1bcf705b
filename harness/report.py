"""results/report.html: every eval prompt with the reference's and each method's output side by side,
their scores, and filters such as "fixed by spo-seed0" (reference wrong, method right) or "broken by
dpo-seed0" (reference right, method wrong); on TL;DR, won/lost against the reference by the judge.
One static file, no external assets."""

from __future__ import annotations

from html import escape
from pathlib import Path

from common import write_text
from tasks import TASKS

STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1em}table{border-collapse:collapse;width:100%}\n"
    "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
    "pre{white-space:pre-wrap;margin:0;max-height:18em;overflow:auto}\n"
    ".ok{background:#e6f4e6}.bad{background:#fbe9e9}.meta{color:#555;font-size:12px}"
)
SCRIPT = (
    "function f(){const t=document.getElementById('task').value,k=document.getElementById('kind').value;"
    "let n=0;\n"
    "for(const r of document.querySelectorAll('tbody tr')){const s=(t==''||r.dataset.task==t)"
    "&&(k==''||r.dataset.tags.split(' ').includes(k));\n"
    "r.style.display=s?'':'none';n+=s}document.getElementById('n').textContent=n+' prompts'}"
)


def _score(s: dict) -> tuple[str, bool | None]:
    """(score text, correct?) of one sample row."""
    if "correct" in s:
        return f"{'✓' if s['correct'] else '✗'} extracted: {s.get('extracted')}", s["correct"]
    task = TASKS[s["task"]]
    text = f"{task.METRIC_LABEL} {s[task.ITEM_SCORE[0]]:.1f}"
    for base in ("reference", "human"):
        if s.get(f"judge_vs_{base}") is not None:
            text += f" · judge vs {base} {s[f'judge_vs_{base}']:.2f}"
    return text, None


def tags(ref: dict, s: dict, name: str) -> list[str]:
    """Filter tags of a method's sample relative to the reference's sample of the same prompt."""
    if "correct" in s:
        if s["correct"] and not ref["correct"]:
            return [f"fixed:{name}"]
        if ref["correct"] and not s["correct"]:
            return [f"broken:{name}"]
        return []
    v = s.get("judge_vs_reference")
    return [] if v is None or v == 0.5 else [f"won:{name}" if v > 0.5 else f"lost:{name}"]


def _options(pairs) -> str:
    return "".join(f'<option value="{escape(v)}">{escape(t)}</option>' for v, t in pairs)


def render(samples: dict[str, list[dict]]) -> str:
    names = list(samples)
    ref, methods = names[0], names[1:]
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for i, r in enumerate(samples[ref]):
        rows = [samples[n][i] if i < len(samples[n]) else None for n in names]
        tagset = [t for n, s in zip(methods, rows[1:]) if s for t in tags(r, s, n)]
        cells = []
        for s in rows:
            if s is None:
                cells.append("<td>—</td>")
                continue
            text, ok = _score(s)
            cls = {None: "", True: ' class="ok"', False: ' class="bad"'}[ok]
            cells.append(
                f"<td{cls}><pre>{escape(s['output'])}</pre><div class=meta>{escape(text)}</div></td>"
            )
        body.append(
            f'<tr data-task="{escape(r["task"])}" data-tags="{escape(" ".join(tagset))}">'
            f"<td><pre>{escape(r['prompt'])}</pre>"
            f"<div class=meta>{escape(str(r.get('id')))} · gold: "
            f"{escape(str(r.get('gold', ''))[:300])}</div></td>"
            f"{''.join(cells)}</tr>"
        )
    tasks = sorted({r["task"] for r in samples[ref]})
    judged = "/".join(t.TITLE for t in TASKS.values() if t.JUDGED)
    outcomes = [("fixed", "fixed by"), ("broken", "broken by")]
    if judged:
        outcomes += [("won", f"{judged} won vs ref by"), ("lost", f"{judged} lost vs ref by")]
    kinds = [(f"{k}:{m}", f"{label} {m}") for m in methods for k, label in outcomes]
    return (
        f"<!doctype html><meta charset=utf-8><title>Samples</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script><h1>Samples: reference vs methods</h1>"
        "<p>Task <select id=task onchange=f()><option value=''>all</option>"
        f"{_options((t, t) for t in tasks)}</select> Show <select id=kind onchange=f()>"
        f"<option value=''>all prompts</option>{_options(kinds)}</select> <span id=n></span></p>"
        f"<table><thead><tr><th>prompt</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "<script>f()</script>"
    )


def write(results: Path, samples: dict[str, list[dict] | None]) -> Path | None:
    """Write results/report.html from each run's samples.jsonl rows (first run = the reference; runs
    without samples are left out)."""
    samples = {name: rows for name, rows in samples.items() if rows is not None}
    if not samples:
        return None
    path = results / "report.html"
    write_text(path, render(samples))
    return path
