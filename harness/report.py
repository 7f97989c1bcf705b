"""results/report.html: every eval prompt with the reference's and each method's output side by side,
their scores, and filters such as "fixed by spo-seed0" (reference wrong, method right) or "broken by
dpo-seed0" (reference right, method wrong); on TL;DR, won/lost against the reference by the judge.
One static file, no external assets.

Layout: a fixed-layout table as wide as the window, a narrow prompt column and one equal column per model
(reference first), so all models fit side by side at laptop width; text wraps anywhere (long LaTeX or
number runs included), each cell starts with score chips (✓/✗ and the extracted answer; ROUGE-L and the
judge's verdicts on TL;DR), and the header row with the model names stays on screen while scrolling."""

from __future__ import annotations

from html import escape
from pathlib import Path

from common import write_text
from tasks import TASKS

STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:0 1em 1em}
h1{font-size:18px;margin:.6em 0 .3em}
.bar{margin:0 0 .6em}
table{table-layout:fixed;width:100%;border-collapse:separate;border-spacing:0}
col.prompt{width:13%}
td,th{border:0 solid #ccc;border-width:0 1px 1px 0;padding:4px 6px;vertical-align:top;text-align:left}
td:first-child,th:first-child{border-left-width:1px}
thead th{position:sticky;top:0;z-index:1;background:#eef1f5;border-top-width:1px;overflow-wrap:anywhere}
.out{white-space:pre-wrap;overflow-wrap:anywhere;max-height:22em;overflow-y:auto}
body.full .out{max-height:none}
td.ok{background:#f3faf3}td.bad{background:#fdf4f4}
.meta{color:#555;font-size:12px;overflow-wrap:anywhere;margin-top:4px}
.chips{margin-bottom:3px}
.chip{display:inline-block;max-width:100%;overflow-wrap:anywhere;font-size:11px;line-height:1.5;
padding:0 6px;margin:0 3px 2px 0;border-radius:8px;background:#e4e7eb;color:#333}
.chip.ok{background:#cdeccd;color:#145214}.chip.bad{background:#f6cfcf;color:#7a1616}
.pair{border-top:1px solid #ccc;padding:4px 0}.tv{margin:2px 0 4px}.tks{white-space:pre-wrap;
overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:12px}.tk.worst{outline:2px solid #222}
"""
# f(): show the rows of the chosen task that carry the chosen tag, and count them
SCRIPT = """
function f(){const t=document.getElementById('task').value,k=document.getElementById('kind').value;let n=0;
for(const r of document.querySelectorAll('tbody tr')){
const s=(t==''||r.dataset.task==t)&&(k==''||r.dataset.tags.split(' ').includes(k));
r.style.display=s?'':'none';n+=s}
document.getElementById('n').textContent=n+' prompts'}
"""
ANSWER_CHARS = 40  # an extracted answer longer than this is cut in its chip (the output shows it whole)


def _chip(text: str, ok: bool | None = None) -> str:
    """A small badge: green when ok, red when not ok, grey when None."""
    cls = {None: "chip", True: "chip ok", False: "chip bad"}[ok]
    return f'<span class="{cls}">{escape(text)}</span>'


def _verdict(value: float) -> tuple[str, bool | None]:
    """Judge preference for this output (1 won, 0 lost, 0.5 tie) as a word; fractions keep their value."""
    if value == 0.5:
        return "tie", None
    word = "won" if value > 0.5 else "lost"
    if value not in (0.0, 1.0):
        word += f" {value:.2f}"
    return word, value > 0.5


def _chips(s: dict) -> tuple[str, bool | None]:
    """(score chips, correct?) of one sample row: ✓/✗ and the extracted answer on accuracy tasks; the item
    score (ROUGE-L) and the judge's verdicts elsewhere."""
    if "correct" in s:
        answer = "no answer" if s.get("extracted") is None else str(s["extracted"])
        if len(answer) > ANSWER_CHARS:
            answer = answer[: ANSWER_CHARS - 1] + "…"
        mark = "✓" if s["correct"] else "✗"
        return _chip(f"{mark} {answer}", bool(s["correct"])), bool(s["correct"])
    task = TASKS[s["task"]]
    chips = [_chip(f"{task.METRIC_LABEL} {s[task.ITEM_SCORE[0]]:.1f}")]
    for base, short in (("reference", "ref"), ("human", "human")):
        if s.get(f"judge_vs_{base}") is not None:
            word, ok = _verdict(s[f"judge_vs_{base}"])
            chips.append(_chip(f"vs {short}: {word}", ok))
    return "".join(chips), None


def tags(ref: dict, s: dict, name: str) -> list[str]:
    """Filter tags of a method's sample relative to the reference's sample of the same prompt."""
    if "correct" in s:
        if s["correct"] and not ref["correct"]:
            return [f"fixed:{name}"]
        if ref["correct"] and not s["correct"]:
            return [f"broken:{name}"]
        return []
    v = s.get("judge_vs_reference")
    if v is None or v == 0.5:
        return []
    return [f"won:{name}" if v > 0.5 else f"lost:{name}"]


def _options(pairs) -> str:
    return "".join(f'<option value="{escape(v)}">{escape(t)}</option>' for v, t in pairs)


def _cell(s: dict | None) -> str:
    """One model's output for one prompt: chips, then the text."""
    if s is None:
        return "<td>—</td>"
    chips, ok = _chips(s)
    cls = {None: "", True: ' class="ok"', False: ' class="bad"'}[ok]
    return f"<td{cls}><div class=chips>{chips}</div><div class=out>{escape(s['output'])}</div></td>"


def _row(r: dict, rows: list[dict | None], methods: list[str]) -> str:
    """The table row of one prompt: `r` is the reference's sample, `rows` every model's (reference first)."""
    tagset = [t for n, s in zip(methods, rows[1:]) if s for t in tags(r, s, n)]
    gold = escape(str(r.get("gold", ""))[:300])
    return (
        f'<tr data-task="{escape(r["task"])}" data-tags="{escape(" ".join(tagset))}">'
        f"<td><div class=out>{escape(r['prompt'])}</div>"
        f"<div class=meta>{escape(str(r.get('id')))} · gold: {gold}</div></td>"
        f"{''.join(_cell(s) for s in rows)}</tr>\n"
    )


def _filters(tasks: list[str], methods: list[str]) -> str:
    """The controls above the table: task, outcome by model, full-length outputs, and the visible count."""
    judged = "/".join(t.TITLE for t in TASKS.values() if t.JUDGED)
    outcomes = [("fixed", "fixed by"), ("broken", "broken by")]
    if judged:
        outcomes += [("won", f"{judged} won vs ref by"), ("lost", f"{judged} lost vs ref by")]
    kinds = [(f"{k}:{m}", f"{label} {m}") for m in methods for k, label in outcomes]
    return (
        "<p class=bar>Task <select id=task onchange=f()><option value=''>all</option>"
        f"{_options((t, t) for t in tasks)}</select> Show <select id=kind onchange=f()>"
        f"<option value=''>all prompts</option>{_options(kinds)}</select> <span id=n></span> · "
        "<label><input type=checkbox onchange=\"document.body.classList.toggle('full',this.checked)\">"
        " full-length outputs</label></p>"
    )


def render(samples: dict[str, list[dict]], tokens: str = "") -> str:
    """The page: `tokens`, the held-out pairs' token view (harness.displacement), above the samples."""
    names = list(samples)
    ref, methods = names[0], names[1:]
    head = "".join(f'<th data-model="{escape(n)}">{escape(n)}</th>' for n in names)
    body = []
    for i, r in enumerate(samples[ref]):
        rows = [samples[n][i] if i < len(samples[n]) else None for n in names]
        body.append(_row(r, rows, methods))
    tasks = sorted({r["task"] for r in samples[ref]})
    return (
        f"<!doctype html><meta charset=utf-8><title>Samples</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script>{tokens}<h1>Samples: reference vs methods</h1>{_filters(tasks, methods)}"
        f"<table><colgroup><col class=prompt><col span={len(names)}></colgroup>"
        f"<thead><tr><th>prompt</th>{head}</tr></thead>\n<tbody>\n{''.join(body)}</tbody></table>"
        "<script>f()</script>\n"
    )


def write(results: Path, samples: dict[str, list[dict] | None], tokens: str = "") -> Path | None:
    """Write results/report.html from each run's samples.jsonl rows (first run = the reference; runs
    without samples are left out) and the token view `tokens`."""
    samples = {name: rows for name, rows in samples.items() if rows is not None}
    if not samples:
        return None
    path = results / "report.html"
    write_text(path, render(samples, tokens))
    return path
