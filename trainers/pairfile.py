"""Preference pairs from a user's JSONL file, validated row by row.

Accepted rows (the formats TRL and most preference datasets use):
- plain: `{"prompt": str, "chosen": str, "rejected": str}`
- conversational: `"prompt"` (or `"messages"`) a list of `{"role", "content"}` messages, and
  `"chosen"` / `"rejected"` either strings or a list holding one assistant message
- implicit prompt: no `"prompt"`; `"chosen"` and `"rejected"` are whole conversations that share
  every message but the last (an assistant message), and the shared part is the prompt.

Every row comes out as `{"prompt": str | messages, "chosen": str, "rejected": str, ...}` with its
other keys (id, task, ...) kept. A bad row never stops the load silently and never disappears
unreported: with policy `skip` it is counted in the `LoadReport` (file, line, field, reason) and
the load goes on; with `error` the first one raises a ValueError naming file, line and field.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field

MAX_CHARS = 200_000  # per text field: far beyond any max_len, it keeps a stray huge row from being tokenised
REASONS = {
    "encoding": "not UTF-8",
    "json": "invalid JSON",
    "not_object": "not a JSON object",
    "missing": "missing field",
    "type": "wrong type",
    "empty": "empty text",
    "too_long": "too long",
    "duplicate_id": "duplicated id",
    "identical": "chosen == rejected",
    # the last one: the trainer's, kept with cut completions
    "truncated": "truncated to max_len",
}


class BadRow(ValueError):
    def __init__(self, reason: str, field_: str | None, detail: str):
        super().__init__(detail)
        self.reason, self.field = reason, field_


@dataclass
class LoadReport:
    """What a load kept and skipped; `skipped` rows have line, id, field, reason and detail."""

    path: str
    rows: int = 0
    kept: int = 0
    skipped: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # file line of each kept row

    def counts(self) -> dict[str, int]:
        return dict(Counter(s["reason"] for s in self.skipped))

    def summary(self) -> str:
        """One line for the end of loading, e.g.
        `p.jsonl: 12 rows, 9 kept, 3 skipped [missing field: 2, invalid JSON: 1]; first: ...`."""
        cut = sum(s["reason"] == "truncated" for s in self.skipped)
        text = f"{self.path}: {self.rows} rows, {self.kept} kept, {len(self.skipped) - cut} skipped" + (
            f" ({cut} of the kept truncated)" if cut else ""
        )
        if self.skipped:
            text += " [" + ", ".join(f"{REASONS[r]}: {n}" for r, n in self.counts().items()) + "]; first: "
            text += "; ".join(describe(self.path, s) for s in self.skipped[:3])
        return text


def describe(path: str, s: dict) -> str:
    where = f"{path}:{s['line']}" + (f" field {s['field']!r}" if s.get("field") else "")
    return f"{where}: {s['detail']}"


def _text(row: dict, key: str, max_chars: int) -> str:
    v = row[key]
    if isinstance(v, list):  # conversational completion: exactly one assistant message
        msgs = _messages(v, key, max_chars)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise BadRow(
                "type", key, f"expected a string or one assistant message, got {len(msgs)} message(s)"
            )
        v = msgs[0]["content"]
    if not isinstance(v, str):
        raise BadRow("type", key, f"expected a string, got {type(v).__name__}")
    if not v.strip():
        raise BadRow("empty", key, "empty or whitespace only")
    if len(v) > max_chars:
        raise BadRow("too_long", key, f"{len(v)} characters, over the limit of {max_chars}")
    return v


def _messages(v, key: str, max_chars: int) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise BadRow("type" if v else "empty", key, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(v):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise BadRow("type", key, f"message {i} is not a {{role: str, content: str}} object")
        if len(m["content"]) > max_chars:
            raise BadRow(
                "too_long", key, f"message {i}: {len(m['content'])} characters, over the limit of {max_chars}"
            )
    return v


def normalise(row, max_chars: int = MAX_CHARS) -> dict:
    """One validated row in the plain form (prompt: text or messages; chosen, rejected: text), or BadRow."""
    if not isinstance(row, dict):
        raise BadRow("not_object", None, f"expected a JSON object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise BadRow("missing", key, "missing")
    out = dict(row)
    prompt_key = next((k for k in ("prompt", "messages") if k in row), None)
    if prompt_key is None:  # implicit prompt: two conversations differing in their last message
        if not (isinstance(row["chosen"], list) and isinstance(row["rejected"], list)):
            raise BadRow(
                "missing", "prompt", "missing (and chosen/rejected are not conversations that would hold it)"
            )
        c, r = (_messages(row[k], k, max_chars) for k in ("chosen", "rejected"))
        if c[:-1] != r[:-1] or len(c) < 2:
            raise BadRow(
                "missing",
                "prompt",
                "no prompt, and chosen/rejected are not conversations sharing all but their last message",
            )
        out["prompt"], out["chosen"], out["rejected"] = c[:-1], [c[-1]], [r[-1]]
    else:
        p = row[prompt_key]
        out.pop("messages", None)
        out["prompt"] = (
            _messages(p, prompt_key, max_chars) if isinstance(p, list) else _text(row, prompt_key, max_chars)
        )
    out["chosen"], out["rejected"] = _text(out, "chosen", max_chars), _text(out, "rejected", max_chars)
    if out["chosen"].strip() == out["rejected"].strip():
        raise BadRow("identical", "rejected", "chosen and rejected are the same text")
    return out


def load_pairs(path: str, policy: str = "skip", max_chars: int = MAX_CHARS) -> tuple[list[dict], LoadReport]:
    """(valid rows, report). Blank lines are ignored; a later row repeating an earlier row's id is skipped."""
    if policy not in ("skip", "error"):
        raise ValueError(f"unknown policy {policy!r}; valid: skip, error")
    rows, report, seen = [], LoadReport(str(path)), {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            report.rows += 1
            parsed = None
            try:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise BadRow(
                        "encoding", None, f"not UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r})"
                    ) from None
                try:
                    parsed = json.loads(text)
                # JSONDecodeError, an over-long integer, too deep nesting
                except (ValueError, RecursionError) as e:
                    raise BadRow("json", None, f"invalid JSON ({getattr(e, 'msg', str(e)[:80])})") from None
                row = normalise(parsed, max_chars)
                rid = row.get("id")
                if rid is not None:
                    key = json.dumps(rid)
                    if key in seen:
                        raise BadRow("duplicate_id", "id", f"id {rid!r} already used on line {seen[key]}")
                    seen[key] = lineno
            except BadRow as e:
                rid = parsed.get("id") if isinstance(parsed, dict) else None
                s = {
                    "line": lineno,
                    "id": rid if isinstance(rid, (str, int)) else None,
                    "field": e.field,
                    "reason": e.reason,
                    "detail": str(e),
                }
                if policy == "error":
                    raise ValueError(describe(str(path), s)) from None
                report.skipped.append(s)
                continue
            rows.append(row)
            report.lines.append(lineno)
    report.kept = len(rows)
    return rows, report


def read_pairs(path: str, policy: str = "skip") -> list[dict]:
    """`load_pairs`, printing the load's summary on stderr when rows were skipped."""
    rows, report = load_pairs(path, policy)
    if report.skipped:
        print(report.summary(), file=sys.stderr, flush=True)
    return rows
