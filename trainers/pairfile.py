"""Preference pairs from a user's file or dataset, validated row by row.

Sources (`load_pairs`): a JSONL file (one pair per line; a UTF-8 byte-order mark at its start is
stripped and noted in the report), a JSON file holding an array of pairs (else it is read as JSONL, as
`datasets`' to_json writes it), a Parquet file, a folder written by `datasets`' save_to_disk, or a
hub dataset id (loaded with `datasets.load_dataset`; the only source that touches the network). A
dataset with several splits gives the one named by `split`.

Accepted rows (the formats TRL and most preference datasets use):
- plain: `{"prompt": str, "chosen": str, "rejected": str}`
- conversational: `"prompt"` (or `"messages"`) a list of `{"role", "content"}` messages, and
  `"chosen"` / `"rejected"` either strings or a list holding one assistant message
- implicit prompt: no `"prompt"`; `"chosen"` and `"rejected"` are whole conversations that share
  every message but the last (an assistant message), and the shared part is the prompt.

Every row comes out as `{"prompt": str | messages, "chosen": str, "rejected": str, ...}` with its
other keys (id, task, ...) kept. An optional `"truncated"` lists the responses ("chosen", "rejected",
"rephrased") that a length cap cut (the pairs stage writes it): those are scored without an end token.
A bad row never stops the load silently and never disappears unreported: with policy `skip` it is counted in
the `LoadReport` (file, line, field, reason) and the load goes on; with `error` the first one raises a
ValueError naming file, line (or row, in a Parquet file or a dataset) and field.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
# the responses a pair's optional `truncated` list may name
TRUNCATABLE = ("chosen", "rejected", "rephrased")
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: Windows editors start a file with it
# a hub dataset id: name or owner/name, no path separators beyond the one
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class BadRow(ValueError):
    def __init__(self, reason: str, field_: str | None, detail: str):
        super().__init__(detail)
        self.reason, self.field = reason, field_


@dataclass
class LoadReport:
    """What a load kept and skipped; `skipped` rows have line, id, field, reason and detail. `line` is the
    file's line in a JSONL file, else the row's number (from 1) in the source (unit "row")."""

    path: str
    rows: int = 0
    kept: int = 0
    skipped: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line (or row) of each kept row
    unit: str = "line"
    bom: bool = False  # a byte-order mark at the file's start was stripped

    def counts(self) -> dict[str, int]:
        return dict(Counter(s["reason"] for s in self.skipped))

    def summary(self) -> str:
        """One line for the end of loading, e.g.
        `p.jsonl: 12 rows, 9 kept, 3 skipped [missing field: 2, invalid JSON: 1]; first: ...`."""
        cut = sum(s["reason"] == "truncated" for s in self.skipped)
        text = f"{self.path}: {self.rows} rows, {self.kept} kept, {len(self.skipped) - cut} skipped" + (
            f" ({cut} of the kept truncated)" if cut else ""
        )
        if self.bom:
            text += " (UTF-8 byte-order mark stripped)"
        if self.skipped:
            text += " [" + ", ".join(f"{REASONS[r]}: {n}" for r, n in self.counts().items()) + "]; first: "
            text += "; ".join(describe(self.path, s, self.unit) for s in self.skipped[:3])
        return text

    def record(self) -> dict:
        """The report as JSON for a run's files: counts by reason, not every skipped row."""
        return {
            "path": self.path,
            "rows": self.rows,
            "kept": self.kept,
            "skipped": self.counts(),
            "bom_stripped": self.bom,
        }


def describe(path: str, s: dict, unit: str = "line") -> str:
    where = f"{path}:{s['line']}" if unit == "line" else f"{path} row {s['line']}"
    where += f" field {s['field']!r}" if s.get("field") else ""
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
    cut = out.get("truncated", [])
    if not (isinstance(cut, list) and set(cut) <= set(TRUNCATABLE)):
        raise BadRow(
            "type", "truncated", f"expected a list of names from {', '.join(TRUNCATABLE)}, got {cut!r}"
        )
    return out


def truncated(pair: dict, field_: str) -> bool:
    """Whether the pair's `field_` response was cut by a length cap (its `truncated` list names it)."""
    return field_ in pair.get("truncated", ())


def _jsonl(path: str, report: LoadReport) -> Iterator[tuple[int, object]]:
    """(line, parsed row or BadRow) of a JSONL file; blank lines are skipped, a leading BOM stripped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(BOM):
                raw, report.bom = raw[len(BOM) :], True
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield (
                    lineno,
                    BadRow("encoding", None, f"not UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r})"),
                )
                continue
            try:
                yield lineno, json.loads(text)
            # JSONDecodeError, an over-long integer, too deep nesting
            except (ValueError, RecursionError) as e:
                yield lineno, BadRow("json", None, f"invalid JSON ({getattr(e, 'msg', str(e)[:80])})")


def _records(path: str, split: str, report: LoadReport) -> list:
    """The rows of a non-JSONL source as Python objects, or None when `path` is a JSONL file."""
    p = Path(path)
    if p.is_dir():
        import datasets

        try:
            data = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{path}: not a folder written by datasets' save_to_disk ({e})") from None
        return _table_rows(_split(data, split, path))
    if p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return _table_rows(pq.read_table(path).to_pylist())
    if p.is_file() and p.suffix == ".json":
        return _json_array(p, report)
    if p.is_file():
        return None
    if not HUB_ID.fullmatch(path) or path.endswith((".jsonl", ".json", ".parquet")):
        raise ValueError(f"{path}: no such file or folder (nor a hub dataset id)")
    import datasets

    try:
        data = datasets.load_dataset(path)
    except Exception as e:  # offline, unknown id, a script dataset: all end the same way
        raise ValueError(f"{path}: not a local file and not loadable as a hub dataset ({e})") from None
    return _table_rows(_split(data, split, path))


def _json_array(p: Path, report: LoadReport) -> list | None:
    """The rows of a .json file holding one array; None when it is JSON lines instead (as `datasets`'
    to_json writes it: parsing the whole text stops at the second value, "Extra data"), or not UTF-8 (then
    read line by line, each bad line reported)."""
    raw = p.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            return None
        raise ValueError(f"{p}: invalid JSON ({e})") from None
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{p}: invalid JSON ({str(e)[:80]})") from None
    # one object on one line: JSON lines with one pair
    if isinstance(data, dict) and b"\n" not in raw.strip():
        return None
    if not isinstance(data, list):
        raise ValueError(
            f"{p}: expected a JSON array of pairs (or one pair per line), got a {type(data).__name__}"
        )
    report.bom = raw.startswith(BOM)
    return data


def _table_rows(rows) -> list[dict]:
    """A table's rows as dicts; a column that is null in a row is left out of it, so a pair without
    `rejected` reads as missing that field, as in a JSON row."""
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def _split(data, split: str, path: str):
    """A Dataset as it is, or the named split of a DatasetDict."""
    if not hasattr(data, "keys"):
        return data
    if split not in data:
        raise ValueError(f"{path}: no split {split!r}; splits: {', '.join(data.keys())}")
    return data[split]


def load_pairs(
    path: str, policy: str = "skip", max_chars: int = MAX_CHARS, split: str = "train"
) -> tuple[list[dict], LoadReport]:
    """(valid rows, report) of any source (module docstring); a later row repeating an earlier row's id is
    skipped. A source that cannot be read at all (missing, not a dataset) is a ValueError."""
    if policy not in ("skip", "error"):
        raise ValueError(f"unknown policy {policy!r}; valid: skip, error")
    path = str(path)
    rows, report, seen = [], LoadReport(path), {}
    records = _records(path, split, report)
    if records is None:
        numbered = _jsonl(path, report)
    else:
        report.unit, numbered = "row", enumerate(records, 1)
    for lineno, parsed in numbered:
        report.rows += 1
        try:
            if isinstance(parsed, BadRow):
                raise parsed
            row = normalise(parsed, max_chars)
            rid = row.get("id")
            if rid is not None:
                key = json.dumps(rid)
                if key in seen:
                    raise BadRow(
                        "duplicate_id", "id", f"id {rid!r} already used on {report.unit} {seen[key]}"
                    )
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
                raise ValueError(describe(path, s, report.unit)) from None
            report.skipped.append(s)
            continue
        rows.append(row)
        report.lines.append(lineno)
    report.kept = len(rows)
    return rows, report


def read_pairs(path: str, policy: str = "skip", split: str = "train") -> list[dict]:
    """`load_pairs`, printing the load's summary on stderr when rows were skipped or a BOM stripped."""
    rows, report = load_pairs(path, policy, split=split)
    if report.skipped or report.bom:
        print(report.summary(), file=sys.stderr, flush=True)
    return rows
