"""GSM8K: loading, prompt, final-answer extraction and numeric scoring (a tasks.base.Task)."""

from __future__ import annotations

import re
from fractions import Fraction

from common import read_jsonl
from tasks.data import resolve

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_CALC = re.compile(r"<<[^>]*>>")

NAME, TITLE = "gsm8k", "GSM8K"
MAX_TOKENS, EVAL_ITEMS, PAIR_ITEMS, PAIR_SAMPLES = 256, 100, 32, None
OPTIONS: dict = {}
METRIC, METRIC_LABEL, ITEM_SCORE, SECTION = "accuracy", "acc %", ("correct", 100.0), "Reasoning"
NOTE = "GSM8K: first {n} test questions, final number vs gold."
FORMAT_LABEL, JUDGED, EXTRAS = "GSM8K len / format %", False, {}
LM_EVAL_TASK = "spo_gsm8k"  # its lm-eval twin in tasks/lm_eval/ (harness.crosscheck), or None


def load(split: str = "test", n: int | None = None, **_options) -> list[dict]:
    return read_jsonl(resolve("gsm8k", f"{split}.jsonl"))[:n]


def prompt(item: dict | str) -> list[dict]:
    """Chat messages for an item (or its question text)."""
    question = item if isinstance(item, str) else item["question"]
    return [
        {
            "role": "user",
            "content": f"{question}\nSolve it step by step and give the final answer after '####'.",
        }
    ]


def gold_answer(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip()


def clean_solution(solution: str) -> str:
    """Gold solution without calculator annotations like <<48/2=24>>."""
    return _CALC.sub("", solution)


def _normalize(number: str) -> str:
    return number.replace("$", "").replace(",", "").strip().rstrip(".")


def extract_answer(text: str) -> str | None:
    """The first number after the last '####', else the last number in the text."""
    if "####" in text:
        after = _NUMBER.findall(text.rsplit("####", 1)[1])
        if after:
            return _normalize(after[0])
    found = _NUMBER.findall(text)
    return _normalize(found[-1]) if found else None


def to_number(s: str | None) -> Fraction | None:
    if s is None:
        return None
    try:
        return Fraction(_normalize(s))
    except (ValueError, ZeroDivisionError):
        return None


def is_correct(output: str, gold: str) -> bool:
    pred = to_number(extract_answer(output))
    return pred is not None and pred == to_number(gold)


def grade(items: list[dict], outputs: list[str]) -> tuple[dict, list[dict], list[bool]]:
    """Accuracy by final-number equivalence; an output is in format when it has '####'."""
    golds = [gold_answer(q["answer"]) for q in items]
    rows = [
        {
            "id": q.get("id", f"gsm8k-{i}"),
            "gold": g,
            "extracted": extract_answer(t),
            "correct": is_correct(t, g),
        }
        for i, (q, g, t) in enumerate(zip(items, golds, outputs))
    ]
    correct = sum(r["correct"] for r in rows)
    return (
        {"accuracy": 100 * correct / len(rows), "correct": correct, "n": len(rows)},
        rows,
        ["####" in t for t in outputs],
    )


def make_pair(row: dict, samples: list[str], **_options) -> dict | None:
    """On-policy pair from graded samples: chosen = a correct sample, else the cleaned gold
    solution; rejected = an incorrect sample. None when every sample is correct."""
    gold = gold_answer(row["answer"])
    correct = [s for s in samples if s.strip() and is_correct(s, gold)]
    wrong = [s for s in samples if s.strip() and not is_correct(s, gold)]
    if not wrong:
        return None
    chosen, source = (correct[0], "sample") if correct else (clean_solution(row["answer"]), "gold")
    return {"prompt": prompt(row), "chosen": chosen, "rejected": wrong[0], "chosen_source": source}
