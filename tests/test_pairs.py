from tasks import gsm8k, tldr

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
