import re

from tasks import gsm8k
from tasks.data import resolve

NUMBERS = re.compile(f"({gsm8k._NUMBER.pattern})")  # split(): text and the grader's numbers alternate


def test_extraction_on_hand_written_outputs():
    assert gsm8k.extract_answer("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert gsm8k.extract_answer("#### $1,234.50 dollars, not 3") == "1234.50"
    assert gsm8k.extract_answer("First 12, then 15, so the answer is 18.") == "18"
    assert gsm8k.extract_answer("no digits here") is None
    assert gsm8k.is_correct("The total is $1,200.0", "1200")
    assert gsm8k.is_correct("#### -5", "-5")
    assert not gsm8k.is_correct("#### 72\nthen 3", "3")


def test_numeric_equivalence_of_answers():
    """Commas, currency, trailing zeros and a sentence-final period do not change the number; sign and value
    do."""
    for pred, gold in [
        ("1,000", "1000"),
        ("$1,000.00", "1000"),
        ("18.0", "18"),
        ("18.", "18"),
        ("0.50", ".5"),
        ("-$3", "-3"),
        ("1,234,567", "1234567"),
    ]:
        assert gsm8k.to_number(pred) == gsm8k.to_number(gold), (pred, gold)
    for pred, gold in [("-3", "3"), ("18.01", "18"), ("1,001", "1000"), ("12", "1.2")]:
        assert gsm8k.to_number(pred) != gsm8k.to_number(gold), (pred, gold)
    assert gsm8k.to_number("abc") is None and gsm8k.to_number(None) is None
    assert gsm8k.is_correct("so she pays $1,000.00.", "1000") and gsm8k.is_correct("#### 18.0", "18")


def test_real_data_gold_and_cleaning():
    path = resolve("gsm8k", "train.jsonl")
    rows = gsm8k.load("train")
    assert len(rows) == 7473 and path.name == "train.jsonl"
    first = rows[0]
    assert gsm8k.gold_answer(first["answer"]) == "72"
    cleaned = gsm8k.clean_solution(first["answer"])
    assert "<<" not in cleaned and gsm8k.is_correct(cleaned, "72")
    assert all(
        gsm8k.is_correct(gsm8k.clean_solution(r["answer"]), gsm8k.gold_answer(r["answer"]))
        for r in rows[:500]
    )


def test_answer_span_is_where_extraction_reads():
    for text, span in [
        ("She has 3 + 4 = 7 apples.\n#### 7", (31, 32)),
        ("#### 12 then 5", (5, 7)),
        ("#### none, so 18.", (14, 16)),  # no number after the marker: the last number
        ("First 12, then 15", (15, 17)),
        ("no digits here", None),
    ]:
        assert gsm8k.answer_span(text) == span, text
        assert gsm8k.extract_answer(text) == (gsm8k._normalize(text[span[0] : span[1]]) if span else None)


def test_number_edit_on_hand_written_texts():
    # the step that computed the answer and the answer; the earlier 7 (in "7 cats") stays
    assert gsm8k.number_edit("7 cats. 3 + 4 = 7 apples.\n#### 7", "7", "q") == (
        "7 cats. 3 + 4 = 6 apples.\n#### 6"
    )
    # each occurrence keeps its own writing: $ sign, thousands commas, decimals
    assert gsm8k.number_edit("She pays $1,200.\n#### 1,200", "1200", "a") == "She pays $1,199.\n#### 1,199"
    assert (
        gsm8k.number_edit("It costs 2.50 dollars, so 2.50.", "2.5", "k") == "It costs 1.50 dollars, so 1.50."
    )
    assert gsm8k.number_edit("Half is 0.5\n#### .5", "0.5", "z") == "Half is 3.5\n#### 3.5"
    # no earlier occurrence: the answer alone
    assert gsm8k.number_edit("3 + 4 makes\n#### 7", "7", "q") == "3 + 4 makes\n#### 6"
    # the same key always draws the same change (a stable hash, not Python's salted one)
    assert gsm8k.number_edit("So 10.\n#### 10", "10", "x") == gsm8k.number_edit("So 10.\n#### 10", "10", "x")
    # never below 0, never the same number
    assert {gsm8k.number_edit("0 left.\n#### 0", "0", str(i)) for i in range(40)} == {
        f"{n} left.\n#### {n}" for n in (1, 2, 3)
    }
    assert {gsm8k.number_edit("1 left.\n#### 1", "1", str(i)) for i in range(40)} == {
        f"{n} left.\n#### {n}" for n in (0, 2, 3, 4)
    }
    # no number, or a final answer other than the one given: no edit
    assert gsm8k.number_edit("no digits here", "7", "k") is None
    assert gsm8k.number_edit("3 + 4 = 8\n#### 8", "7", "k") is None


def test_number_edit_of_real_gold_solutions():
    """Every cleaned gold solution's edit is graded wrong and differs from it in at most two numbers (the
    answer and the step that computed it), each by the same change."""
    for row in gsm8k.load("train", 1000):
        gold, solution = gsm8k.gold_answer(row["answer"]), gsm8k.clean_solution(row["answer"])
        edited = gsm8k.number_edit(solution, gold, row["question"])
        assert edited is not None and not gsm8k.is_correct(edited, gold), row
        pair = gsm8k.make_pair(row, [], pair_style="edit")
        assert (pair["chosen"], pair["rejected"], pair["chosen_source"]) == (solution, edited, "gold")
        before, after = NUMBERS.split(solution), NUMBERS.split(edited)
        assert len(before) == len(after) and before[::2] == after[::2]  # the text between numbers
        changed = {(gsm8k.to_number(b), gsm8k.to_number(a)) for b, a in zip(before, after) if b != a}
        assert len(changed) == 1 and sum(b != a for b, a in zip(before, after)) <= 2, (solution, edited)
        ((old, new),) = changed
        assert old == gsm8k.to_number(gold) and new >= 0 and 1 <= abs(new - old) <= 3


def test_missing_data_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("SPO_DATA_DIR", str(tmp_path))
    try:
        resolve("gsm8k", "nope.jsonl")
    except FileNotFoundError as e:
        assert str(tmp_path) in str(e) and "SPO_DATA_DIR" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")
