import pytest

from tasks import tldr


def test_rouge_on_hand_written_outputs():
    # ref 4 tokens, pred 3 tokens sharing "the cat sat": R1 P=1, R=3/4 -> F=6/7
    r = tldr.rouge(["the cat sat"], ["the cat sat down"])
    assert r["rouge1"] == pytest.approx(100 * 6 / 7)
    assert r["rouge2"] == pytest.approx(100 * 2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert r["rougeL"] == pytest.approx(100 * 6 / 7)
    assert tldr.rouge(["dogs bark"], ["the cat sat"])["rouge1"] == 0.0


def test_real_posts_split_is_disjoint_and_human_summary_scores_itself_perfectly():
    rows = tldr.load()
    assert len(rows) == 500
    ev, tr = tldr.split(rows)
    assert len(ev) == 200 and len(tr) == 300
    assert not {r["instruction_id"] for r in ev} & {r["instruction_id"] for r in tr}
    refs = [r["gold_response"] for r in ev[:20]]
    assert tldr.rouge(refs, refs)["rougeL"] == pytest.approx(100.0)
    assert "TITLE:" in tldr.prompt(ev[0])[0]["content"]
