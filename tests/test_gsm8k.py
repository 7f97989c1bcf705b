import re
from fractions import Fraction

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


def test_unicode_minus_is_a_sign():
    """U+2212 reads like '-', and the span is in the original text (number_edit rewrites it there)."""
    text = "It drops by 12.\n#### \N{MINUS SIGN}5"
    assert gsm8k.extract_answer(text) == "-5" and gsm8k.to_number("\N{MINUS SIGN}5") == -5
    assert gsm8k.is_correct(text, "-5") and not gsm8k.is_correct(text, "5")
    assert gsm8k.answer_span(text) == (21, 23) and text[21:23] == "\N{MINUS SIGN}5"
    assert gsm8k.extract_answer("so it ends at \N{MINUS SIGN}3 degrees") == "-3"
    # the edit keeps the sign as written
    assert gsm8k.number_edit("It falls to \N{MINUS SIGN}5.\n#### \N{MINUS SIGN}5", "-5", "k") == (
        "It falls to \N{MINUS SIGN}2.\n#### \N{MINUS SIGN}2"
    )


def test_a_minus_between_operands_is_subtraction():
    assert gsm8k.extract_answer("13 (18-5)") == "5"
    assert gsm8k.extract_answer("13 (18\N{MINUS SIGN}5)") == "5"
    for text in ("x-5", "(3)-5", "[3]-5", "{3}-5"):
        assert gsm8k.extract_answer(text) == "5", text
    # a minus after a space, a marker or an operator is a sign
    for text in ("3 -5", "####-5", "3 = -5", "#### -$5", "(-5)"):
        assert gsm8k.extract_answer(text) == "-5", text
    assert gsm8k.is_correct("It is 10-15 = -5\n#### -5", "-5") and gsm8k.is_correct("10-15 = -5", "-5")


def test_a_stated_answer_comes_before_the_last_number():
    assert gsm8k.extract_answer("The answer is 13 (18-5)") == "13"
    assert gsm8k.is_correct("The answer is 13 (18-5)", "13")
    assert gsm8k.extract_answer("Final Answer: $1,200. Check: 1,000 + 200") == "1200"
    assert gsm8k.extract_answer("THE ANSWER IS **42**, since 40 + 2") == "42"
    assert gsm8k.extract_answer("The correct answer is 7 (3 + 4), not 8") == "7"
    assert gsm8k.extract_answer("Answer:\n\n-7, from 3 - 10") == "-7"  # blank space after the statement
    # a computation stated as the answer reads as its result; the sentence ends at a period before a blank
    assert gsm8k.extract_answer("So, the answer is 24 x 4 = 96 eggs. Then 3 more") == "96"
    assert gsm8k.extract_answer("The final answer is 20 candles * $200 = $4,000.") == "4000"
    assert (
        gsm8k.extract_answer("Answer: x = 5") == "5"
        and gsm8k.extract_answer("answer is 2.5 + 1 = 3.5.") == "3.5"
    )
    assert gsm8k.extract_answer("The answer is 5. Check: 2 + 3 = 5, 4 = 4") == "5"
    # the last statement with a number counts
    assert gsm8k.extract_answer("the answer is 3? No: the answer is 4 (2+2). Answer: none") == "4"
    # '####' with a number first; a '####' with no number after it falls through to the statement
    assert gsm8k.extract_answer("The answer is 13.\n#### 12 (not 13)") == "12"
    assert gsm8k.extract_answer("The answer is 13 (18-5)\n####") == "13"
    # not a statement: "answered", "answers", "answer isn't", someone's answer; then the last number
    assert gsm8k.extract_answer("The first friend's answer is 80/2 = 40. The sum is 625") == "625"
    assert gsm8k.extract_answer("She answered: 4 of 9") == "9"
    assert gsm8k.extract_answer("The answer isn't 4, it is 6") == "6"
    # a statement with no number on its line does not count
    assert gsm8k.extract_answer("The answer is below.\n3 + 4 = 7") == "7"


def test_a_fraction_is_one_number():
    assert gsm8k.extract_answer("#### 1/2") == "1/2" and gsm8k.to_number("1/2") == Fraction(1, 2)
    assert gsm8k.is_correct("#### 1/2", "0.5") and not gsm8k.is_correct("#### 1/2", "1")
    assert gsm8k.extract_answer("#### -3/4 cup") == "-3/4" and gsm8k.is_correct("#### -3/4 cup", "-0.75")
    assert gsm8k.answer_span("#### 1/2") == (5, 8)
    # computations elsewhere: the last number is still the result
    assert gsm8k.extract_answer("She splits them: 18/3=6") == "6"
    assert gsm8k.extract_answer("Ben then has 18 / 3 = 6 apples.") == "6"
    assert gsm8k.extract_answer("Ben then has 18 / 3 = 6 apples.\n#### 6") == "6"
    assert gsm8k.extract_answer("#### 18/3 = 6") == "18/3" and gsm8k.is_correct("#### 18/3 = 6", "6")
    # not fractions: a zero denominator, a decimal denominator, a chain of slashes
    assert gsm8k.extract_answer("1/0") == "0" and gsm8k.extract_answer("#### 1/0") == "1"
    assert gsm8k.extract_answer("1/2.5") == "2.5" and gsm8k.extract_answer("#### 1/2/3") == "1"
    assert gsm8k.extract_answer("on 12/25/2023") == "2023"
    # an edit of a fraction answer keeps its denominator; 12/2 (=6) is a computation, not the step's result
    assert gsm8k.number_edit("Half of 1 is 1/2.\n#### 1/2", "1/2", "k") == "Half of 1 is 7/2.\n#### 7/2"
    assert gsm8k.number_edit("12/2 = 6 apples\n#### 6", "6", "k") == "12/2 = 8 apples\n#### 8"
    assert gsm8k.number_edit("12/2 apples\n#### 6", "6", "k") == "12/2 apples\n#### 8"


def test_thousands_commas_only_in_groups_of_three():
    for text, answer in [
        ("#### 1,234", "1234"),
        ("#### 1,234,567", "1234567"),
        ("#### $1,234.50", "1234.50"),
        ("#### -1,000", "-1000"),
        ("#### 1,2,3", "1"),  # a list: its first number
        ("#### 3, 5, 7", "3"),
        ("#### 12,34", "12"),
        ("#### 1,234,56", "1"),  # an invalid last group makes the whole run a list
        ("#### 1234,567", "1234"),
        ("#### 1,2345", "1"),
        ("#### 7, then 8", "7"),
        ("So 1,200, then 1,300.", "1300"),
    ]:
        assert gsm8k.extract_answer(text) == answer, text
    assert gsm8k.is_correct("#### 1,2,3", "1") and not gsm8k.is_correct("#### 1,2,3", "123")
    assert gsm8k.is_correct("#### 3, 5, 7", "3") and not gsm8k.is_correct("#### 3, 5, 7", "357")


def test_arith_worked_solutions_with_every_operation_extract():
    from tasks import arith

    text = "Ben has 3 bags of 6 apples: 3 * 6 = 18 apples.\nBen then has 18 / 3 = 6 apples.\n#### 6"
    assert gsm8k.extract_answer(text) == "6" and gsm8k.extract_answer(text.replace("\n#### 6", "")) == "6"
    for level in sorted(arith.LEVELS):
        for row in arith.generate(100, level, "test", seed=5):
            gold = arith.gold_answer(row["answer"])
            assert gsm8k.extract_answer(row["answer"]) == gold, row
            # without the marker: the last number
            assert gsm8k.extract_answer(row["answer"].rsplit("\n####", 1)[0]) == gold, row
            assert gsm8k.extract_answer(arith.rephrase(row["equation"])) == gold, row


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
        ("The answer is 13 (18-5)", (14, 16)),  # a stated answer before the last number
        ("#### 1/2 cup", (5, 8)),
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
