from tasks import gsm8k
from tasks.data import resolve


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


def test_missing_data_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("SPO_DATA_DIR", str(tmp_path))
    try:
        resolve("gsm8k", "nope.jsonl")
    except FileNotFoundError as e:
        assert str(tmp_path) in str(e) and "SPO_DATA_DIR" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")
