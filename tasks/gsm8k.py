"""GSM8K: loading, prompt, final-answer extraction, numeric scoring and the pair styles (a tasks.base.Task).
The pair-style pieces (number_edit, pick_pair) serve arith too."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from fractions import Fraction

from common import read_jsonl
from tasks.base import PAIR_STYLE_OPTION, PAIR_STYLES
from tasks.data import resolve

# A number as the grader reads it. Sign: '-' or the Unicode minus U+2212, except that a minus right after a
# digit, letter or closing bracket is subtraction ("18-5" holds 18 and 5). Then a fraction a/b (no spaces,
# nonzero b, not next to another /digit or followed by a decimal part: "1/2.5" and "1/2/3" split), or a
# decimal with an optional $ whose thousands commas count only in valid groups of three ("1,234,567" is one
# number, "1,2,3" and "1,234,56" are lists), or a bare decimal fraction like $.5.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-\u2212])?"
    r"(?:(?<!/)\d+/0*[1-9]\d*(?!\d|[./]\d)"
    r"|\$?(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.\d+)?"
    r"|\$?\.\d+)"
)
# a stated answer (any case; the number follows): "the answer is", "the final answer is", "Final answer:";
# not someone's answer ("the first friend's answer is 40")
_STATED = re.compile(r"\bthe\s+(?:\w+\s+)?answer\s+is\b|\banswer\s*:", re.IGNORECASE)
# where a stated answer's sentence ends: a line break, or a period before a blank or the end of the text
_SENTENCE_END = re.compile(r"\n|\.(?!\S)")
_MINUS = "\N{MINUS SIGN}"
_CALC = re.compile(r"<<[^>]*>>")

NAME, TITLE = "gsm8k", "GSM8K"
MAX_TOKENS, EVAL_ITEMS, PAIR_ITEMS, PAIR_SAMPLES = 256, 100, 32, None
OPTIONS: dict = {"pair_style": PAIR_STYLE_OPTION}
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
    """A number as written, in the form Fraction() reads: no $ or thousands commas, an ASCII minus sign, no
    sentence-final period."""
    return number.replace("$", "").replace(",", "").replace(_MINUS, "-").strip().rstrip(".")


def _stated_span(text: str) -> tuple[int, int] | None:
    """The number of the last stated answer ("the answer is X", "the final answer is X", "answer: X", any
    case; _STATED) in `text`, or None when no statement has one. It is read in the statement's sentence,
    from the first non-blank character after the statement (so "Answer:\n13" counts) to the end of that line
    or a period before a blank: the first number after the sentence's first '=' (the result of "the answer
    is 24 x 4 = 96"), else the sentence's first number ("the answer is 13 (18-5)" reads 13)."""
    for statement in reversed(list(_STATED.finditer(text))):
        start = len(text) - len(text[statement.end() :].lstrip())
        stop = _SENTENCE_END.search(text, start)
        end = stop.start() if stop else len(text)
        # a computation in the sentence: its result, after the first '='
        equals = text.find("=", start, end)
        found = _NUMBER.search(text, equals + 1, end) if equals >= 0 else None
        found = found or _NUMBER.search(text, start, end)
        if found:
            return found.span()
    return None


def answer_span(text: str) -> tuple[int, int] | None:
    """(start, end) in `text` of the number extract_answer reads, or None. In order: the first number after
    the last '####' (of a list like "#### 3, 5, 7", its first number); else the last stated answer ("the
    answer is X", "answer: X"; _stated_span); else the last number in the text. Numbers are read by _NUMBER:
    "-5" and "\N{MINUS SIGN}5" are negative, "18-5" is 18 and 5, "1/2" is one number, "1,234" is one
    number and "1,2,3" three."""
    if "####" in text:
        after = _NUMBER.search(text, text.rindex("####") + len("####"))
        if after:
            return after.span()
    stated = _stated_span(text)
    if stated:
        return stated
    found = list(_NUMBER.finditer(text))
    return found[-1].span() if found else None


def extract_answer(text: str) -> str | None:
    """The final answer of `text` (the number at answer_span: after the last '####', else the last stated
    answer, else the last number), normalized ("$1,234.50" -> "1234.50", "\N{MINUS SIGN}5" -> "-5", "1/2"
    stays "1/2"), or None when the text has no number."""
    span = answer_span(text)
    return _normalize(text[span[0] : span[1]]) if span else None


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


# the changes number_edit draws from (a stable hash picks one)
_DELTAS = (1, -1, 2, -2, 3, -3)


def _shifted(literal: str, d: int) -> str:
    """The number written `literal` plus d, written the same way: its minus sign (ASCII or U+2212), $ sign,
    thousands commas and decimals; a fraction keeps its denominator ("1/2" + 1 is "3/2")."""
    minus = _MINUS if _MINUS in literal else "-"
    if "/" in literal:
        numerator, denominator = _normalize(literal).split("/")
        shifted = int(numerator) + d * int(denominator)
        return (minus if shifted < 0 else "") + f"{abs(shifted)}/{denominator}"
    value = Decimal(_normalize(literal)) + d
    decimals = len(literal.split(".")[1]) if "." in literal else 0
    digits = format(abs(value), f"{',' if ',' in literal else ''}.{decimals}f")
    return (minus if value < 0 else "") + ("$" if "$" in literal else "") + digits


def number_edit(text: str, answer: str, key: str) -> str | None:
    """`text` with one number changed and the final answer with it (the small-edit rejected response of
    Pal et al. 2024): the final answer a (where extract_answer reads it) and the nearest earlier
    occurrence of the same number (the step that computed it) become a + d, everything else byte-identical.
    d is drawn by a stable hash of `key` from ±1, ±2, ±3 with a + d >= 0 (a negative answer only moves up).
    None when the text has no number or its final answer is not `answer`."""
    span = answer_span(text)
    a = to_number(text[span[0] : span[1]]) if span else None
    if a is None or a != to_number(answer):
        return None
    deltas = [d for d in _DELTAS if a + d >= min(a, 0)]
    d = deltas[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(deltas)]
    spans = [span]
    # an earlier occurrence is written like the answer: a fraction (18/3) is a computation, not a result 6
    fraction = "/" in text[span[0] : span[1]]
    earlier = [
        m.span()
        for m in _NUMBER.finditer(text)
        if m.end() <= span[0] and to_number(m.group()) == a and ("/" in m.group()) == fraction
    ]
    if earlier:
        spans.insert(0, earlier[-1])
    edited, last = [], 0
    for start, end in spans:
        edited += [text[last:start], _shifted(text[start:end], d)]
        last = end
    edited = "".join(edited) + text[last:]
    # the edit must read as the new answer (it always does; a safeguard against odd number layouts)
    return edited if to_number(extract_answer(edited)) == a + d else None


def split_by_grade(samples: list[str], gold: str) -> tuple[list[str], list[str]]:
    """(correct, wrong) non-empty samples, in order."""
    kept = [s for s in samples if s.strip()]
    return [s for s in kept if is_correct(s, gold)], [s for s in kept if not is_correct(s, gold)]


def pick_pair(
    style: str,
    correct: list[str],
    wrong: list[str],
    solution: str,
    gold: str,
    key: str,
    gold_fallback: bool = True,
) -> tuple[str, str, str] | None:
    """(chosen, rejected, chosen_source) of one pair style (tasks.base.PAIR_STYLES) from an item's graded
    non-empty samples, its gold solution text and gold answer, or None. on-policy: a correct sample (else,
    with gold_fallback, the solution) over the first wrong one; gold: the solution over the first wrong
    sample; edit: a correct sample (else the solution) over its number_edit (drawn by `key`)."""
    if style not in PAIR_STYLES:
        raise ValueError(f"unknown pair_style {style!r}; valid: {', '.join(PAIR_STYLES)}")
    if style == "gold":
        return (solution, wrong[0], "gold") if wrong else None
    chosen, source = (correct[0], "sample") if correct else (solution, "gold")
    if style == "edit":
        rejected = number_edit(chosen, gold, key)
        return (chosen, rejected, source) if rejected is not None else None
    if not wrong or not (correct or gold_fallback):
        return None
    return chosen, wrong[0], source


def make_pair(row: dict, samples: list[str], pair_style: str = "on-policy", **_options) -> dict | None:
    """A pair of the given style (pick_pair) from graded samples; the gold solution is the cleaned one.
    on-policy (the default): chosen = a correct sample, else the cleaned gold solution; rejected = an
    incorrect sample, None when every sample is correct. `rephrased`: a correct sample other than chosen,
    else (chosen a sample) the cleaned gold solution, else None."""
    gold, solution = gold_answer(row["answer"]), clean_solution(row["answer"])
    correct, wrong = split_by_grade(samples, gold)
    picked = pick_pair(pair_style, correct, wrong, solution, gold, row["question"])
    if picked is None:
        return None
    chosen, rejected, source = picked
    others = [s for s in correct if s.strip() != chosen.strip()]
    if others:
        rephrased = others[0]
    else:
        rephrased = solution if source == "sample" and solution.strip() != chosen.strip() else None
    return {
        "prompt": prompt(row),
        "chosen": chosen,
        "rejected": rejected,
        "chosen_source": source,
        "style": pair_style,
        "rephrased": rephrased,
    }
