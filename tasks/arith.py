"""Arith: procedurally generated grade-school word problems in GSM8K format, with a difficulty dial.

GSM8K is too hard for the default 135M model (~1%), so its pairs are almost all "wrong vs gold".
These problems grade difficulty from nothing to compute (level 0) to three steps with distractor
sentences (level 8); harness.calibrate measures a model on each level (results/calibration/arith.md)
to find where its own samples are sometimes right and sometimes wrong: on-policy pairs. Rows are
deterministic in (n, level, split, seed); train and test are split by a hash of the underlying
computation, so no test problem's arithmetic is trained on, whatever its wording. Prompting and
scoring are GSM8K's own (imported); the prompt asks for the number alone (see prompt()).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from tasks import gsm8k
from tasks.base import PAIR_STYLE_OPTION
from tasks.gsm8k import extract_answer, gold_answer, is_correct, pick_pair, split_by_grade

__all__ = [
    "LEVELS",
    "DEFAULT_LEVEL",
    "Level",
    "generate",
    "load",
    "split_of",
    "make_pair",
    "rephrase",
    "pair_report",
    "grade",
    "prompt",
    "gold_answer",
    "extract_answer",
    "is_correct",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Level:
    steps: int  # arithmetic operations in the solution
    max_number: int  # largest starting amount / added or removed amount (× and ÷ use 2..9)
    ops: str  # allowed operations, from "+-*/"
    distractors: int  # sentences with irrelevant numbers


# Level 0 has nothing to compute (the answer is stated): it tells arithmetic errors from invented
# computations. The default 135M model gets two-digit arithmetic mostly wrong, so the easy levels use
# numbers up to 10 or 20; their few equations recur in many wordings (the split is by equation, so a
# test equation is never trained on in any wording). results/calibration/arith.md has each level's accuracy.
LEVELS: dict[int, Level] = {
    0: Level(0, 20000, "", 0),
    1: Level(1, 10, "+-", 0),
    2: Level(1, 10, "+-*/", 0),
    3: Level(1, 20, "+-", 0),
    4: Level(1, 100, "+-", 0),
    5: Level(1, 100, "+-*/", 0),
    6: Level(2, 100, "+-*/", 0),
    7: Level(2, 500, "+-*/", 1),
    8: Level(3, 500, "+-*/", 2),
}
DEFAULT_LEVEL = 2  # the calibrated level: the default model answers 32.0% of 300 test problems

NAME, TITLE = "arith", "arith"
MAX_TOKENS, EVAL_ITEMS, PAIR_ITEMS, PAIR_SAMPLES = 128, 300, 128, None
OPTIONS = {
    "level": (
        DEFAULT_LEVEL,
        "difficulty level (tasks.arith.LEVELS; results/calibration/arith.md), pairs and eval",
    ),
    "gold_chosen": (
        False,
        "on-policy style: gold solution as chosen when no sample is correct (off: then no pair)",
    ),
    "pair_style": PAIR_STYLE_OPTION,
}
METRIC, METRIC_LABEL, ITEM_SCORE, SECTION = "accuracy", "acc %", ("correct", 100.0), "Reasoning"
NOTE = "arith: {n} generated test problems at level {level} (tasks/arith.py), final number vs gold."
FORMAT_LABEL, JUDGED, EXTRAS = "arith len / format %", False, {"level": "level"}
LM_EVAL_TASK = None  # its lm-eval twin in tasks/lm_eval/ (harness.crosscheck), or None

FEMALE = (
    "Ava",
    "Dana",
    "Fatima",
    "Grace",
    "Ines",
    "Kira",
    "Maya",
    "Olga",
    "Priya",
    "Rosa",
    "Uma",
    "Wen",
    "Zoe",
    "Lena",
)
MALE = (
    "Ben",
    "Carlos",
    "Eli",
    "Hiro",
    "Jamal",
    "Liam",
    "Noah",
    "Quinn",
    "Sam",
    "Tariq",
    "Victor",
    "Yusuf",
    "Omar",
    "Tom",
)
# (noun, how someone comes to hold some, gains, losses, a group of several for the "a groups of b" opening)
THEMES = (
    (
        "apples",
        "{N} picks {x} apples.",
        ("{P} picks {b} more apples.", "{F} gives {O} {b} apples."),
        ("{P} eats {b} of the apples.", "{P} gives {b} apples to {F}."),
        "baskets",
    ),
    (
        "stickers",
        "{N} has {x} stickers.",
        ("{P} buys {b} more stickers.", "{F} gives {O} {b} stickers."),
        ("{P} puts {b} stickers on a notebook.", "{P} trades away {b} stickers."),
        "sheets",
    ),
    (
        "dollars",
        "{N} has {x} dollars in a piggy bank.",
        ("{P} earns {b} more dollars.", "{P} gets {b} dollars as a gift."),
        ("{P} spends {b} dollars on lunch.", "{P} pays {b} dollars for a book."),
        "envelopes",
    ),
    (
        "marbles",
        "{N} owns {x} marbles.",
        ("{P} wins {b} marbles in a game.", "{F} hands {O} {b} marbles."),
        ("{P} loses {b} marbles.", "{P} gives {b} marbles to {F}."),
        "jars",
    ),
    (
        "cookies",
        "{N} bakes {x} cookies.",
        ("{P} bakes {b} more cookies.", "{F} brings {O} {b} cookies."),
        ("{P} eats {b} cookies.", "{P} sells {b} cookies at school."),
        "trays",
    ),
    (
        "cards",
        "{N} collects {x} cards.",
        ("{P} buys a pack with {b} cards.", "{P} finds {b} more cards."),
        ("{P} trades {b} cards to {F}.", "{P} throws away {b} damaged cards."),
        "boxes",
    ),
    (
        "shells",
        "{N} finds {x} shells on the beach.",
        ("{P} finds {b} more shells.", "{F} gives {O} {b} shells."),
        ("{P} drops {b} shells on the way home.", "{P} gives {b} shells to {F}."),
        "buckets",
    ),
    (
        "stamps",
        "{N} keeps {x} stamps in an album.",
        ("{P} buys {b} more stamps.", "{F} sends {O} {b} stamps."),
        ("{P} gives {b} stamps to {F}.", "{P} sells {b} stamps."),
        "albums",
    ),
    (
        "pencils",
        "{N} has {x} pencils.",
        ("{P} buys {b} more pencils.", "{F} lends {O} {b} pencils."),
        ("{P} gives {b} pencils to {F}.", "{P} breaks {b} pencils."),
        "packs",
    ),
    (
        "eggs",
        "A farmer named {N} collects {x} eggs.",
        ("{P} collects {b} more eggs.", "{F} brings {O} {b} eggs."),
        ("{P} sells {b} eggs.", "{P} uses {b} eggs for a cake."),
        "cartons",
    ),
)
MULTIPLY = (
    "Later {p} has {b} times as many {noun} as that.",
    "By the end of the month {p} has {b} times as many {noun}.",
)
DIVIDE = (
    "{P} splits the {noun} into {b} equal piles and keeps one pile.",
    "{P} shares them equally among {b} people, {s} included, and keeps {s2} share.",
)
OPEN_MULTIPLY = (
    "{N} has {a} {group} with {b} {noun} in each.",
    "{N} gets {a} {group}, and each holds {b} {noun}.",
)
QUESTION = (
    "How many {noun} does {N} have now?",
    "How many {noun} does {N} end up with?",
    "What is the number of {noun} {N} has at the end?",
)
HAS = ("{F} has {x} {noun}.", "{F} owns {x} {noun}.", "{F} brings {x} {noun}.")
TOGETHER = (
    "How many {noun} do {N} and {F} have together?",
    "How many {noun} do they have in total?",
    "How many {noun} do {N} and {F} have altogether?",
)
DISTRACT = (
    "{F2} has {d} {noun}.",
    "{F} is {d} years old.",
    "The shop is {d} km away.",
    "It is {d} degrees outside.",
    "{F2} had {d} {noun} last year.",
)
PRONOUNS = {FEMALE: ("She", "she", "her", "herself", "her"), MALE: ("He", "he", "him", "himself", "his")}


def prompt(item: dict | str) -> list[dict]:
    """Chat messages for an item (or its question text). Not GSM8K's "solve it step by step": on these
    problems the 135M model then keeps inventing operations after the right value (level 1: 24/150
    correct with GSM8K's prompt, 49/150 with this one)."""
    question = item if isinstance(item, str) else item["question"]
    return [{"role": "user", "content": f"{question}\nAnswer with a single number."}]


def split_of(equation: str) -> str:
    """'test' for one fifth of all equations, by a stable hash (not Python's salted hash())."""
    return "test" if int(hashlib.sha256(equation.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _steps(rng: random.Random, lv: Level) -> tuple[int, list[tuple[str, int, int, int]]]:
    """A start amount and `lv.steps` (op, a, b, result) with non-negative integer results."""
    x = start = rng.randint(2, lv.max_number)
    steps = []
    for _ in range(lv.steps):
        feasible = {
            "+": list(range(1, lv.max_number + 1)),
            "-": list(range(1, x)),
            "*": list(range(2, 10)) if x <= lv.max_number else [],
            "/": [d for d in range(2, 10) if x % d == 0],
        }
        op = rng.choice([o for o in lv.ops if feasible[o]])
        b = rng.choice(feasible[op])
        y = {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]
        steps.append((op, x, b, y))
        x = y
    return start, steps


def _problem(
    rng: random.Random, lv: Level, start: int, steps: list[tuple[str, int, int, int]]
) -> tuple[str, str]:
    """(question, worked solution): wording and names drawn afresh for the given computation."""
    names = rng.choice((FEMALE, MALE))
    name, friend, other = rng.choice(names), *rng.sample([m for m in FEMALE + MALE if m not in names], 2)
    noun, have, gains, losses, group = rng.choice(THEMES)
    pro = PRONOUNS[names]
    fill = dict(
        N=name, F=friend, F2=other, P=pro[0], p=pro[1], O=pro[2], s=pro[3], s2=pro[4], noun=noun, group=group
    )
    # (template, its numbers), formatted after distractors are placed
    body: list[tuple[str, dict]] = [] if steps else [(have, {"x": start})]
    lines = [] if steps else [f"{name} has {start} {noun}."]
    question = rng.choice(QUESTION)
    for i, (op, a, b, y) in enumerate(steps):
        # "a groups of b": the start amount is a count of groups
        if i == 0 and op == "*" and rng.random() < 0.5:
            body.append((rng.choice(OPEN_MULTIPLY), {"a": a, "b": b}))
            lines.append(f"{name} has {a} {group} of {b} {noun}: {a} * {b} = {y} {noun}.")
            continue
        # two people's amounts, put together
        if i == 0 and op == "+" and len(steps) == 1 and rng.random() < 0.5:
            body += [(have, {"x": a}), (rng.choice(HAS), {"x": b})]
            lines.append(f"{name} and {friend} have {a} + {b} = {y} {noun} together.")
            question = rng.choice(TOGETHER)
            continue
        if i == 0:
            body.append((have, {"x": start}))
        body.append((rng.choice({"+": gains, "-": losses, "*": MULTIPLY, "/": DIVIDE}[op]), {"b": b}))
        lines.append(f"{name} then has {a} {op} {b} = {y} {noun}.")
    for _ in range(lv.distractors):  # anywhere after the opening sentence; numbers of a plausible size
        body.insert(
            rng.randint(1, len(body)), (rng.choice(DISTRACT), {"d": rng.randint(2, 90), "distractor": True})
        )
    text = []
    for j, (template, nums) in enumerate(body):
        # a pronoun there could mean the other person
        after_distractor = j > 0 and "distractor" in body[j - 1][1]
        names_only = dict(P=name, p=name, O=name) if after_distractor else {}
        text.append(template.format(**{**fill, **names_only, **nums}))
    return " ".join(text + [question.format(**fill)]), "\n".join(
        lines + [f"#### {steps[-1][3] if steps else start}"]
    )


def generate(n: int, level: int, split: str = "test", seed: int = 0) -> list[dict]:
    """n distinct problems (by wording) of one level from one split; rejection-sampled from an RNG
    seeded by (seed, level, split) alone, so the same call always gives the same rows."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid: {', '.join(map(str, LEVELS))}")
    lv, rng = LEVELS[level], random.Random(f"arith:{seed}:{level}:{split}")
    rows: list[dict] = []
    seen: set[str] = set()
    for _ in range(100 * n + 10_000):
        if len(rows) == n:
            return rows
        start, steps = _steps(rng, lv)
        equation = ";".join(f"{a}{op}{b}={y}" for op, a, b, y in steps) or str(start)
        if split_of(equation) != split:
            continue
        question, answer = _problem(rng, lv, start, steps)
        if question in seen:
            continue
        seen.add(question)
        rows.append(
            {
                "id": f"arith-l{level}-{split}-s{seed}-{len(rows)}",
                "question": question,
                "answer": answer,
                "level": level,
                "equation": equation,
            }
        )
    if len(rows) == n:
        return rows
    raise ValueError(f"level {level} holds too few distinct {split} problems for n={n}")


def load(split: str, n: int, level: int = DEFAULT_LEVEL, seed: int = 0, **_options) -> list[dict]:
    """Alias of generate() with the argument order of the other tasks' load(split)."""
    return generate(n, level, split, seed)


def grade(items: list[dict], outputs: list[str]) -> tuple[dict, list[dict], list[bool]]:
    """GSM8K's grading (final number, '####' format) and the level of the items."""
    metrics, rows, formatted = gsm8k.grade(items, outputs)
    return {**metrics, **({"level": items[0]["level"]} if items else {})}, rows, formatted


def pair_report(items: list[dict], samples: list[list[str]], level: int = DEFAULT_LEVEL, **_options) -> dict:
    """Pairs-report entries: the level, problems whose samples were all / none correct, sample accuracy %."""
    graded = [[is_correct(s, gold_answer(it["answer"])) for s in texts] for it, texts in zip(items, samples)]
    return {
        "level": level,
        "all_correct": sum(all(g) for g in graded),
        "none_correct": sum(not any(g) for g in graded),
        "sample_accuracy": 100 * sum(map(sum, graded)) / max(1, sum(map(len, graded))),
    }


_EQUATION_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def rephrase(equation: str) -> str:
    """The worked solution of an `equation` ("3+4=7;7*2=14", level 0: "7") in other words than generate()'s:
    "We compute 3 + 4 = 7." per step, then "The answer is 7." and "#### 7"."""
    lines, final = [], equation
    for step in equation.split(";") if "=" in equation else []:
        a, op, b, final = _EQUATION_STEP.fullmatch(step).groups()
        lines.append(f"We compute {a} {op} {b} = {final}.")
    return "\n".join(lines + [f"The answer is {final}.", f"#### {final}"])


def make_pair(
    row: dict, samples: list[str], gold_chosen: bool = False, pair_style: str = "on-policy", **_options
) -> dict | None:
    """A pair of the given style (tasks.gsm8k.pick_pair; empty samples skipped). on-policy (the default):
    chosen = a correct sample, rejected = an incorrect one, None unless both exist; with gold_chosen, the
    gold solution stands in for a missing correct sample. `rephrased`: rephrase() of the row's equation
    (the gold solution where that is the chosen text itself)."""
    gold = gold_answer(row["answer"])
    correct, wrong = split_by_grade(samples, gold)
    picked = pick_pair(pair_style, correct, wrong, row["answer"], gold, row["question"], gold_chosen)
    if picked is None:
        return None
    chosen, rejected, source = picked
    rephrased = rephrase(row["equation"])
    if rephrased.strip() == chosen.strip():
        rephrased = row["answer"] if row["answer"].strip() != chosen.strip() else None
    return {
        "prompt": prompt(row),
        "chosen": chosen,
        "rejected": rejected,
        "chosen_source": source,
        "style": pair_style,
        "rephrased": rephrased,
    }
