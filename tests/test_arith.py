import re
from collections import Counter

import pytest

from tasks import arith, gsm8k

STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
STEP_OR_NUMBER = re.compile(r"(\d+)")  # split(): text and numbers alternate


def steps_of(answer: str) -> list[tuple[int, str, int, int]]:
    return [(int(a), op, int(b), int(c)) for a, op, b, c in STEP.findall(answer)]


def test_same_seed_same_rows_other_seed_other_rows():
    for level in arith.LEVELS:
        a, b = arith.generate(50, level, "train", seed=0), arith.generate(50, level, "train", seed=0)
        assert a == b
        assert arith.generate(50, level, "train", seed=1) != a
        assert arith.generate(50, level, "test", seed=0) != a
    assert arith.load("test", 20, 2, seed=3) == arith.generate(20, 2, "test", 3)


def test_generation_ignores_global_random_state():
    import random

    random.seed(1)
    a = arith.generate(30, 3)
    random.seed(2)
    assert arith.generate(30, 3) == a


@pytest.mark.parametrize("level", sorted(arith.LEVELS))
def test_train_and_test_share_no_equation(level):
    train, test = arith.generate(2000, level, "train"), arith.generate(2000, level, "test")
    tr, te = {r["equation"] for r in train}, {r["equation"] for r in test}
    # no repeated problem within a split
    assert len({r["question"] for r in train}) == len({r["question"] for r in test}) == 2000
    assert not tr & te  # the same equation never lands in both, in any wording
    assert all(arith.split_of(e) == "test" for e in te) and all(arith.split_of(e) == "train" for e in tr)
    assert {r["level"] for r in train + test} == {level} and len({r["id"] for r in train + test}) == 4000


def test_split_hash_is_stable():
    """A fixed equation lands in a fixed split in every process (sha256, not the salted hash())."""
    assert [arith.split_of(e) for e in ("3+4=7", "2+2=4", "6*7=42", "42/6=7;7+1=8")] == [
        "train",
        "test",
        "train",
        "train",
    ]
    share = sum(arith.split_of(f"{a}+{b}={a + b}") == "test" for a in range(100) for b in range(100)) / 10_000
    assert 0.18 < share < 0.22  # one fifth


@pytest.mark.parametrize("level", sorted(arith.LEVELS))
def test_every_worked_solution_is_right(level):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    for row in arith.generate(500, level, "train", seed=7) + arith.generate(500, level, "test", seed=7):
        steps = steps_of(row["answer"])
        assert len(steps) == arith.LEVELS[level].steps, row
        for a, op, b, c in steps:
            assert ops[op](a, b) == c >= 0, row
            assert op in arith.LEVELS[level].ops
        final = int(arith.gold_answer(row["answer"]))
        assert final == (steps[-1][3] if steps else int(row["equation"]))
        assert row["equation"] == (";".join(f"{a}{op}{b}={c}" for a, op, b, c in steps) or str(final))
        assert row["answer"].splitlines()[-1] == f"#### {final}"
        assert len(row["answer"].splitlines()) == max(1, len(steps)) + 1  # one line per step, then the answer
        for a, _, b, _ in steps[:1]:
            assert str(a) in row["question"] and str(b) in row["question"]  # the first operands are stated
        assert gsm8k.is_correct(row["answer"], arith.gold_answer(row["answer"]))


def test_levels_dial_steps_and_distractors():
    counts = {lv: {len(steps_of(r["answer"])) for r in arith.generate(200, lv)} for lv in arith.LEVELS}
    assert counts == {lv: {arith.LEVELS[lv].steps} for lv in arith.LEVELS}
    assert sorted({lv.steps for lv in arith.LEVELS.values()}) == [0, 1, 2, 3]
    hard = arith.generate(200, 8)
    easy = arith.generate(200, 6)
    sentences = lambda rows: sum(r["question"].count(". ") + 1 for r in rows) / len(rows)  # noqa: E731
    assert sentences(hard) > sentences(easy) + 2  # a third step and two distractor sentences


def test_surface_forms_vary():
    """Many names, items and wordings: no single surface form dominates."""
    rows = arith.generate(300, 6)
    names = Counter(r["question"].split()[0] for r in rows)
    nouns = Counter(r["answer"].split()[-3] for r in rows)
    # the verb of the first step's sentence
    verbs = Counter(r["question"].split(". ")[1].split()[1] for r in rows)
    asks = Counter(
        re.sub(
            r"[A-Z]\w+|\b(?:apples|stickers|dollars|marbles|cookies|cards|shells|stamps|pencils|eggs)\b",
            "_",
            r["question"].rsplit(". ", 1)[-1],
        )
        for r in rows
    )
    for forms, least in ((names, 15), (nouns, 8), (verbs, 10), (asks, 3)):
        assert len(forms) >= least and max(forms.values()) < 0.5 * len(rows), forms


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        arith.generate(5, 1, "dev")
    with pytest.raises(ValueError, match="level"):
        arith.generate(5, 99)
    with pytest.raises(ValueError, match="too few"):
        arith.LEVELS[-1] = arith.Level(0, 2, "", 0)  # one equation, "2": none in the other split
        try:
            arith.generate(50, -1, "train" if arith.split_of("2") == "test" else "test")
        finally:
            del arith.LEVELS[-1]


def test_scoring_on_hand_written_outputs():
    row = {
        "question": "Ava has 1200 stamps. She buys 34 more stamps. How many stamps does Ava have now?",
        "answer": "Ava then has 1200 + 34 = 1234 stamps.\n#### 1234",
    }
    gold = arith.gold_answer(row["answer"])
    assert gold == "1234"
    assert arith.is_correct("1200 + 34 = 1234\n#### 1234", gold)  # with the marker
    assert arith.is_correct("So she has 1200 + 34 = 1234 stamps.", gold)  # last number
    assert arith.is_correct("#### 1,234 stamps", gold)  # commas
    assert arith.extract_answer("#### 1,234 stamps") == "1234"
    assert not arith.is_correct("1200 + 34 = 1244\n#### 1244", gold)  # wrong number
    assert not arith.is_correct("#### 1234\nthen 5 more", "1239") and arith.is_correct(
        "#### 1234\nthen 5 more", gold
    )
    assert (
        not arith.is_correct("She has a lot of stamps.", gold) and arith.extract_answer("no number") is None
    )
    # GSM8K's code, not a copy
    assert arith.is_correct is gsm8k.is_correct and arith.extract_answer is gsm8k.extract_answer
    assert arith.prompt("Q?") == [{"role": "user", "content": "Q?\nAnswer with a single number."}]


ROW = {
    "question": "Ben has 5 cards. He finds 3 more cards. How many cards does Ben have now?",
    "answer": "Ben then has 5 + 3 = 8 cards.\n#### 8",
    "equation": "5+3=8",
}
REPHRASED = "We compute 5 + 3 = 8.\nThe answer is 8.\n#### 8"


def test_make_pair_needs_a_correct_and_an_incorrect_sample():
    pair = arith.make_pair(ROW, ["", "5 + 3 = 9\n#### 9", "5 + 3 = 8\n#### 8", "#### 7"])
    assert pair == {
        "prompt": arith.prompt(ROW["question"]),
        "chosen": "5 + 3 = 8\n#### 8",
        "rejected": "5 + 3 = 9\n#### 9",
        "chosen_source": "sample",
        "style": "on-policy",
        "rephrased": REPHRASED,
    }
    assert arith.make_pair(ROW, ["#### 9", "#### 7", "  "]) is None  # none correct
    assert arith.make_pair(ROW, ["#### 8", "so 8", ""]) is None  # all correct (the empty one is skipped)
    assert arith.make_pair(ROW, []) is None and arith.make_pair(ROW, ["", " "], gold_chosen=True) is None


def test_make_pair_gold_chosen_only_when_no_sample_is_correct():
    gold = arith.make_pair(ROW, ["#### 9", "#### 7"], gold_chosen=True)
    assert (
        gold is not None
        and gold["chosen"] == ROW["answer"]
        and gold["chosen_source"] == "gold"
        and gold["rejected"] == "#### 9"
    )
    assert gsm8k.is_correct(gold["chosen"], "8")
    sample = arith.make_pair(ROW, ["#### 9", "#### 8"], gold_chosen=True)
    assert sample["chosen"] == "#### 8" and sample["chosen_source"] == "sample"
    assert arith.make_pair(ROW, ["#### 8"], gold_chosen=True) is None


def test_gold_style_picks_the_gold_even_beside_a_correct_sample():
    pair = arith.make_pair(ROW, ["5 + 3 = 8\n#### 8", "#### 9"], pair_style="gold")
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"], pair["style"]) == (
        ROW["answer"],
        "#### 9",
        "gold",
        "gold",
    )
    assert arith.make_pair(ROW, ["#### 8", ""], pair_style="gold") is None  # no wrong sample


def test_edit_style_changes_the_step_and_the_final_answer_only():
    pair = arith.make_pair(ROW, ["#### 9", "5 + 3 = 8\n#### 8"], pair_style="edit")
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"], pair["style"]) == (
        "5 + 3 = 8\n#### 8",
        "5 + 3 = 11\n#### 11",
        "sample",
        "edit",
    )
    # no correct sample (gold_chosen or not): the gold solution and its edit
    pair = arith.make_pair(ROW, ["#### 9"], pair_style="edit")
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"]) == (
        ROW["answer"],
        "Ben then has 5 + 3 = 11 cards.\n#### 11",
        "gold",
    )
    chosen, rejected = pair["chosen"].split(), pair["rejected"].split()
    assert len(chosen) == len(rejected)
    assert [(i, c, r) for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r] == [
        (7, "8", "11"),
        (10, "8", "11"),
    ]
    assert gsm8k.is_correct(pair["chosen"], "8") and not gsm8k.is_correct(pair["rejected"], "8")
    assert pair["rephrased"] == REPHRASED


def test_rephrase_writes_every_step_in_other_words():
    assert arith.rephrase("5+3=8") == REPHRASED
    assert arith.rephrase("42/6=7;7*3=21") == (
        "We compute 42 / 6 = 7.\nWe compute 7 * 3 = 21.\nThe answer is 21.\n#### 21"
    )
    assert arith.rephrase("1234") == "The answer is 1234.\n#### 1234"  # level 0: nothing to compute
    # a sample that already reads like rephrase(): the gold solution stands in
    pair = arith.make_pair(ROW, [REPHRASED, "#### 9"])
    assert pair["chosen"] == REPHRASED and pair["rephrased"] == ROW["answer"]


@pytest.mark.parametrize("level", sorted(arith.LEVELS))
def test_every_style_on_generated_rows(level):
    """On every level: the edit is graded wrong and differs from the chosen in at most two numbers; the
    rephrased solution is graded right and is not the chosen text."""
    for row in arith.generate(100, level, "train", seed=3):
        gold = arith.gold_answer(row["answer"])
        samples = ["#### 99999", row["answer"].replace("\n#### ", " so ")]
        for style in ("on-policy", "gold", "edit"):
            pair = arith.make_pair(row, samples, pair_style=style)
            assert gsm8k.is_correct(pair["chosen"], gold) and not gsm8k.is_correct(pair["rejected"], gold)
            assert gsm8k.is_correct(pair["rephrased"], gold) and pair["rephrased"] != pair["chosen"]
            assert pair["style"] == style
        edit = arith.make_pair(row, samples, pair_style="edit")
        chosen, rejected = STEP_OR_NUMBER.split(edit["chosen"]), STEP_OR_NUMBER.split(edit["rejected"])
        changed = [(c, r) for c, r in zip(chosen, rejected) if c != r]
        assert len(chosen) == len(rejected) and 1 <= len(changed) <= 2
        assert {c for c, _ in changed} == {gold} and len({r for _, r in changed}) == 1
        new = int(changed[0][1])
        assert 1 <= abs(new - int(gold)) <= 3
