import random
import re
from types import SimpleNamespace

import pytest

from common import ConfigError
from harness import pairs, taskflags
from tasks import arith, base, gsm8k, tldr

ROW = {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=<<3+4=7>>7 apples.\n#### 7"}


def test_gsm8k_pair_prefers_a_correct_sample_and_rejects_an_incorrect_one():
    pair = gsm8k.make_pair(ROW, ["He has 8. #### 8", "3+4 = 7\n#### 7", "#### 7.0"])
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"]) == (
        "3+4 = 7\n#### 7",
        "He has 8. #### 8",
        "sample",
    )
    assert pair["prompt"] == gsm8k.prompt(ROW["question"])


def test_gsm8k_pair_falls_back_to_the_cleaned_gold_solution():
    pair = gsm8k.make_pair(ROW, ["#### 12", "", "I think 6"])
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"]) == (
        "3+4=7 apples.\n#### 7",
        "#### 12",
        "gold",
    )


def test_gsm8k_no_pair_when_every_sample_is_correct_or_empty():
    assert gsm8k.make_pair(ROW, ["#### 7", "  "]) is None


def test_tldr_pair_is_human_summary_over_model_sample():
    row = {"subreddit": "a", "title": "t", "instruction": "post", "gold_response": "human tl;dr"}
    assert tldr.make_pair(row, ["model tl;dr"])["chosen"] == "human tl;dr"
    assert tldr.make_pair(row, ["model tl;dr", "other"])["rejected"] == "model tl;dr"  # the first sample
    assert tldr.make_pair(row, [" human tl;dr "]) is None and tldr.make_pair(row, [""]) is None


def test_gsm8k_pair_rows_carry_their_style_and_a_rephrased_chosen():
    samples = ["He has 8. #### 8", "3+4 = 7\n#### 7", "#### 7.0"]
    pair = gsm8k.make_pair(ROW, samples)
    # the other correct sample, graded right and not the chosen text
    assert (pair["style"], pair["rephrased"]) == ("on-policy", "#### 7.0")
    assert gsm8k.is_correct(pair["rephrased"], "7") and pair["rephrased"] != pair["chosen"]
    # one correct sample: the cleaned gold rephrases it; gold chosen and no correct sample: none
    assert gsm8k.make_pair(ROW, ["3+4 = 7\n#### 7", "#### 8"])["rephrased"] == "3+4=7 apples.\n#### 7"
    assert gsm8k.make_pair(ROW, ["#### 12"])["rephrased"] is None


def test_gsm8k_gold_style_picks_the_gold_even_beside_a_correct_sample():
    pair = gsm8k.make_pair(ROW, ["3+4 = 7\n#### 7", "", "He has 8. #### 8"], pair_style="gold")
    assert (pair["chosen"], pair["rejected"], pair["chosen_source"], pair["style"]) == (
        "3+4=7 apples.\n#### 7",
        "He has 8. #### 8",
        "gold",
        "gold",
    )
    assert pair["rephrased"] == "3+4 = 7\n#### 7"  # the correct sample
    assert gsm8k.make_pair(ROW, ["#### 7", " "], pair_style="gold") is None  # no wrong sample


def test_gsm8k_edit_changes_the_step_and_the_answer_only():
    # no correct sample: the cleaned gold is chosen, and its edit needs no sample at all
    for samples in (["#### 12"], []):
        pair = gsm8k.make_pair(ROW, samples, pair_style="edit")
        assert (pair["chosen"], pair["rejected"], pair["chosen_source"]) == (
            "3+4=7 apples.\n#### 7",
            "3+4=6 apples.\n#### 6",
            "gold",
        )
    pair = gsm8k.make_pair(ROW, ["He has 8. #### 8", "So 3 + 4 = 7 apples.\n#### 7"], pair_style="edit")
    assert pair["chosen"] == "So 3 + 4 = 7 apples.\n#### 7" and pair["chosen_source"] == "sample"
    assert pair["rejected"] == "So 3 + 4 = 6 apples.\n#### 6"
    chosen, rejected = pair["chosen"].split(), pair["rejected"].split()
    assert len(chosen) == len(rejected)
    assert [(i, c, r) for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r] == [
        (5, "7", "6"),
        (8, "7", "6"),
    ]
    assert gsm8k.is_correct(pair["chosen"], "7") and not gsm8k.is_correct(pair["rejected"], "7")
    assert pair["rephrased"] == "3+4=7 apples.\n#### 7"


def _levenshtein(a: str, b: str) -> int:
    """The cell-by-cell DP, to check the bit-parallel one against."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = row
    return prev[-1]


def test_normalized_edit_distance():
    assert base.normalized_edit_distance("kitten", "sitting") == 3 / 7
    assert base.normalized_edit_distance("sitting", "kitten") == 3 / 7
    assert base.normalized_edit_distance("", "") == 0.0 and base.normalized_edit_distance("abc", "abc") == 0.0
    assert base.normalized_edit_distance("abc", "") == 1.0 and base.normalized_edit_distance("", "xy") == 1.0
    assert base.normalized_edit_distance("flaw", "lawn") == 2 / 4
    assert base.normalized_edit_distance("#### 7", "#### 8") == 1 / 6
    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 30)))
        expected = _levenshtein(a, b) / max(len(a), len(b)) if a or b else 0.0
        assert base.normalized_edit_distance(a, b) == expected, (a, b)


A = {
    "question": "Ben has 2 cards. He finds 3 more cards. How many cards does Ben have now?",
    "answer": "Ben then has 2 + 3 = 5 cards.\n#### 5",
    "equation": "2+3=5",
}
B = {
    "question": "Ava finds 7 shells. She drops 3 shells. How many shells does Ava have now?",
    "answer": "Ava then has 7 - 3 = 4 shells.\n#### 4",
    "equation": "7-3=4",
}


def sampled(*texts: str, cut: tuple[str, ...] = ()) -> list[dict]:
    """An item's samples as the pairs stage keeps them; those in `cut` hit the length cap."""
    return [{"text": t, "finished": t not in cut} for t in texts]


def test_pairs_report_describes_every_style_from_the_same_samples():
    # A's correct sample hit the length cap (its text reads as complete: the cap fell after the answer)
    samples = [sampled("2 + 3 = 5\n#### 5", "#### 9", cut=("2 + 3 = 5\n#### 5",)), sampled("#### 5", "")]
    report = pairs.style_report(arith, [A, B], samples, base.resolve_options(arith, {}))
    assert list(report) == ["on-policy", "gold", "edit"]
    # on-policy: A's correct sample over "#### 9" (10 deletions, 5→9: 11 of 16 characters); B: no
    # correct sample, and gold_chosen is off. The chosen is the cut sample.
    assert report["on-policy"] == {
        "pairs": 1,
        "edit_distance": 11 / 16,
        "chosen_source": {"sample": 1, "gold": 0},
        "truncated": {"chosen": 1, "rejected": 0},
    }
    # gold: each gold solution (36 and 37 characters) over a wrong sample of 6 that shares its "#### "
    # and not its digit: 30 + 1 and 31 + 1 edits; gold solutions and the wrong samples are complete
    assert report["gold"] == {
        "pairs": 2,
        "edit_distance": (31 / 36 + 32 / 37) / 2,
        "chosen_source": {"sample": 0, "gold": 2},
        "truncated": {"chosen": 0, "rejected": 0},
    }
    # edit: two single digits changed (5 and 4 move by at most 3, staying one digit), in A's 16-character
    # sample and B's 37-character gold; A's rejected is its cut chosen edited, so cut as well
    assert report["edit"] == {
        "pairs": 2,
        "edit_distance": (2 / 16 + 2 / 37) / 2,
        "chosen_source": {"sample": 1, "gold": 1},
        "truncated": {"chosen": 1, "rejected": 1},
    }
    made = pairs.make_pairs(arith, [A, B], samples, base.resolve_options(arith, {"pair_style": "edit"}))
    assert [p["truncated"] for p in made] == [["chosen", "rejected"], []]
    # gold_chosen reaches the on-policy style
    with_gold = pairs.style_report(arith, [A, B], samples, base.resolve_options(arith, {"gold_chosen": True}))
    assert with_gold["on-policy"]["pairs"] == 2 and with_gold["on-policy"]["chosen_source"]["gold"] == 1
    assert pairs.style_report(arith, [], [], base.resolve_options(arith, {}))["edit"] == {
        "pairs": 0,
        "edit_distance": None,
        "chosen_source": {"sample": 0, "gold": 0},
        "truncated": {"chosen": 0, "rejected": 0},
    }


def test_pairs_report_of_a_task_without_styles():
    row = {"subreddit": "a", "title": "t", "instruction": "post", "gold_response": "human tl;dr"}
    samples = [sampled("model tl;dr", cut=("model tl;dr",)), sampled("human tl;dr")]
    report = pairs.style_report(tldr, [row, row], samples, {})
    # human → model: five substitutions in 11 characters; the second post gives no pair
    assert report == {
        base.DEFAULT_STYLE: {
            "pairs": 1,
            "edit_distance": 5 / 11,
            "chosen_source": {"sample": 0, "gold": 0, "human": 1},
            "truncated": {"chosen": 0, "rejected": 1},
        }
    }


def test_an_unknown_pair_style_is_refused_before_any_work(tmp_path, capsys):
    message = "unknown pair_style 'x' for task arith; valid: on-policy, gold, edit"
    with pytest.raises(ValueError, match=re.escape(message)):
        base.resolve_options(arith, {"pair_style": "x"})
    with pytest.raises(ValueError, match=re.escape(message.replace("arith", "gsm8k"))):
        base.resolve_options(gsm8k, {"pair_style": "x"})
    # a flag: argparse's choices, shown in --help
    with pytest.raises(SystemExit):
        pairs.parse(["--out", str(tmp_path), "--arith-pair-style", "x"])
    assert "invalid choice: 'x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pairs.parse(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert (
        "--arith-pair-style {on-policy,gold,edit}" in shown
        and "--gsm8k-pair-style {on-policy,gold,edit}" in shown
    )
    assert pairs.parse(["--out", str(tmp_path), "--gsm8k-pair-style", "edit"]).options == {
        "gsm8k": {"pair_style": "edit"}
    }
    # a value from a preset (never checked by argparse) or a config file's options
    with pytest.raises(ConfigError, match=re.escape(f"--arith-pair-style: {message}")):
        taskflags.options_given({"arith_pair_style": "x"})
    cfg = SimpleNamespace(sizes={}, options={"arith": {"pair_style": "x"}})
    with pytest.raises(ConfigError, match=re.escape(message)):
        taskflags.fill_task_settings(cfg, {}, {})
    with pytest.raises(ValueError, match="unknown pair_style 'x'"):
        gsm8k.make_pair(ROW, ["#### 8"], pair_style="x")
