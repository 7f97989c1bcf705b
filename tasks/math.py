"""MATH-500: loading, prompt, \\boxed{} answer extraction and equivalence scoring with math-verify."""

from __future__ import annotations

import re
import threading
from collections import defaultdict

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from common import read_jsonl
from tasks.data import resolve

TIMEOUT_S = (
    5  # per math-verify parse / comparison; its timeout is signal.alarm, so it only runs on the main thread
)
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE = re.compile(r"\s+([^\s$]+)")  # `\boxed 5`: the argument is the next token
_SAID = re.compile(r"answer(?:\s+is\s*:?|\s*:)[ \t]*", re.IGNORECASE)  # "the answer is X", "Final answer: X"

NAME, TITLE = "math", "MATH-500"
MAX_TOKENS, EVAL_ITEMS, PAIR_ITEMS, PAIR_SAMPLES = 512, 100, 0, None  # no train split: no pairs
OPTIONS: dict = {}
METRIC, METRIC_LABEL, ITEM_SCORE, SECTION = "accuracy", "acc %", ("correct", 100.0), "Reasoning"
NOTE = (
    "MATH-500: first {n} problems, last \\boxed{{}} (else the stated 'answer is …'), "
    "equivalence by math-verify."
)
FORMAT_LABEL, JUDGED, EXTRAS = "MATH len / boxed %", False, {}
LM_EVAL_TASK = "spo_math500"  # its lm-eval twin in tasks/lm_eval/ (harness.crosscheck), or None


def load(split: str = "test", n: int | None = None, **_options) -> list[dict]:
    if split != "test":
        raise ValueError(
            f"MATH-500 has only a 'test' split (got {split!r}); MATH train is not available offline"
        )
    return read_jsonl(resolve("math", "math500_test.jsonl"))[:n]


def prompt(item: dict | str) -> list[dict]:
    """Chat messages for an item (or its problem text)."""
    problem = item if isinstance(item, str) else item["problem"]
    return [
        {
            "role": "user",
            "content": f"{problem}\nSolve it step by step and put the final answer in \\boxed{{}}.",
        }
    ]


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (nested and escaped braces respected), or of
    `\\boxed 5`; None when there is none or the last one is cut off (an unfinished answer is no answer)."""
    found = list(_BOX.finditer(text))
    if not found:
        return None
    start = found[-1].end()
    if not text.startswith("{", start):
        bare = _BARE.match(text, start)
        return bare.group(1) if bare else None
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # \{ and \} are literal braces, not grouping
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _timeout() -> int | None:
    # math-verify's signal-based timeout raises ValueError off the main thread; there it runs without one
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def extract_answer(text: str) -> str | None:
    """The final answer: the last \\boxed{} content, else what follows the last "answer is" / "answer:"
    (to the end of its $...$ or sentence). Nothing else: math-verify's own whole-text extraction
    accepts any matching expression in the text, which scored unboxed ramblings as correct (e.g. gold
    10 against "... = 10 + 3 + 4 = 14 ... the final answer is 28")."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    said = list(_SAID.finditer(text))
    if not said:
        return None
    rest = text[said[-1].end() :].split("\n", 1)[0].strip()
    if rest.startswith("$"):
        end = rest.find("$", 1)
        rest = rest[1:end] if end > 0 else rest[1:]
    else:
        rest = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    return rest.strip().rstrip(".").strip() or None


def is_correct(output: str, gold: str) -> bool:
    """Whether the extracted final answer (extract_answer) is mathematically equivalent to `gold`
    by math-verify. Never raises: a parse error or timeout counts as wrong."""
    answer = extract_answer(output)
    if answer is None:
        return False
    try:
        timeout = _timeout()
        target = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout)
        pred = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)
        return bool(target and pred) and verify(target, pred, timeout_seconds=timeout)
    except (Exception, TimeoutException):
        return False


def grade_item(output: str, gold: str) -> dict:
    """Per-item record for samples: the extracted answer, whether it was boxed (the asked format), the
    verdict."""
    return {
        "extracted": extract_answer(output),
        "boxed": extract_boxed(output) is not None,
        "correct": is_correct(output, gold),
    }


def grade(items: list[dict], outputs: list[str]) -> tuple[dict, list[dict], list[bool]]:
    """Accuracy overall, by subject and by level (aggregate); an output is in format when it is boxed."""
    rows = [
        {
            "id": q["unique_id"],
            "gold": q["answer"],
            "subject": q["subject"],
            "level": q["level"],
            **grade_item(t, q["answer"]),
        }
        for q, t in zip(items, outputs)
    ]
    return aggregate(items, [r["correct"] for r in rows]), rows, [r["boxed"] for r in rows]


def make_pair(item: dict, samples: list[str], **_options) -> dict | None:
    """No pairs: MATH-500 has no train split here (PAIR_ITEMS = 0)."""
    raise ValueError("MATH-500 has no train split to make pairs from")


def aggregate(rows: list[dict], correct: list[bool]) -> dict:
    """Accuracy (%) overall, by subject and by level, from per-item verdicts."""

    def summary(flags: list[bool]) -> dict:
        return {"accuracy": 100 * sum(flags) / max(1, len(flags)), "correct": sum(flags), "n": len(flags)}

    by_subject: dict[str, list[bool]] = defaultdict(list)
    by_level: dict[str, list[bool]] = defaultdict(list)
    for row, ok in zip(rows, correct, strict=True):
        by_subject[row["subject"]].append(ok)
        by_level[str(row["level"])].append(ok)
    return {
        **summary(correct),
        "by_subject": {k: summary(v) for k, v in sorted(by_subject.items())},
        "by_level": {k: summary(v) for k, v in sorted(by_level.items())},
    }


def score(rows: list[dict], outputs: list[str]) -> dict:
    return aggregate(rows, [is_correct(o, r["answer"]) for r, o in zip(rows, outputs, strict=True)])
