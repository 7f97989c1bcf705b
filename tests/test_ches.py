"""CHES before training (trainers/ches.py, harness/diagnose.py), the ches_filter training field, and the
leaderboard's rank correlation (harness/stats.py, harness/displacement.py)."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import write_jsonl
from harness import diagnose
from harness.displacement import correlation, readings
from harness.pooled import Run
from harness.stats import spearman_ci
from trainers.ches import ches, hidden_sums, ln_ches, top_fraction
from trainers.tokens import encode
from trainers.trainer import TrainConfig, Trainer, run

PAIRS = [
    {"id": "a", "task": "arith", "style": "edit", "prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
    {
        "id": "b",
        "prompt": [{"role": "user", "content": "Say hi."}],
        "chosen": "Hi there!",
        "rejected": "Bye.",
    },
    {
        "id": "c",
        "prompt": "Name a colour.",
        "chosen": "Blue, like the sky.",
        "rejected": "Blue, like the sea.",
    },
    {"id": "d", "prompt": "Count to three.", "chosen": "1, 2, 3", "rejected": "one two three four"},
]


def test_ches_and_ln_ches_on_hand_made_hidden_states():
    # S⁺ = (1, 2), S⁻ = (3, 0), |y⁺| = 2, |y⁻| = 3: ⟨S⁺, S⁻⟩ = 3, ‖S⁺‖² = 5
    plus, minus = torch.tensor([[1.0, 2.0], [1.0, 0.0]]), torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    assert ches(plus, minus).tolist() == [-2.0, 0.0]
    lengths_plus, lengths_minus = torch.tensor([2.0, 1.0]), torch.tensor([3.0, 4.0])
    # 3/6 − 5/4; 1/4 − 1/1
    assert ln_ches(plus, minus, lengths_plus, lengths_minus).tolist() == [-0.75, -0.75]


def test_hidden_sums_take_the_positions_that_predict_the_response(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts, responses = [[5, 6, 7], [8, 9], [10, 11, 12, 13]], [[20, 21], [22, 23, 24, 25], [26]]
    with torch.no_grad():
        full = [
            model(input_ids=torch.tensor([x + y]), output_hidden_states=True).hidden_states[-1][0]
            for x, y in zip(prompts, responses)
        ]
    # from the last prompt position through the second-to-last response position: |y| positions
    expected = torch.stack(
        [h[len(x) - 1 : len(x) - 1 + len(y)].double().sum(0) for h, x, y in zip(full, prompts, responses)]
    )
    for batch_size in (1, 3):  # alone, and right-padded together
        assert torch.allclose(hidden_sums(model, prompts, responses, batch_size), expected, atol=1e-4)


def test_top_fraction_drops_exactly_the_highest():
    scores = [0.1, 0.5, 0.5, -1.0, 2.0]
    assert top_fraction(scores, 0.4) == [1, 4]  # 2 of 5; of the tied 0.5s the earlier pair
    assert top_fraction(scores, 0.19) == [] and top_fraction(scores, 0.0) == []
    assert len(top_fraction(list(range(100)), 0.29)) == 29  # not 28 (0.29 × 100 = 28.999… in floats)
    with pytest.raises(ValueError, match="below 1"):
        top_fraction(scores, 1.0)


def test_diagnose_writes_beside_the_pairs_and_names_what_to_fix(tiny_model_dir, tmp_path, capsys):
    source = tmp_path / "mine.jsonl"
    write_jsonl(source, PAIRS)
    diagnose.main(["--model", tiny_model_dir, "--pairs", str(source), "--top", "2"])
    rows = [json.loads(line) for line in open(tmp_path / "mine.ches.jsonl")]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"] and all(math.isfinite(r["ln_ches"]) for r in rows)
    assert (rows[0]["task"], rows[0]["style"], rows[1]["task"], rows[1]["style"]) == (
        "arith",
        "edit",
        "custom",
        "default",
    )
    out = capsys.readouterr().out
    assert "| arith | edit | 1 |" in out and "| custom | default | 3 |" in out
    with pytest.raises(SystemExit):
        diagnose.main(["--model", tiny_model_dir, "--pairs", "org/dataset"])
    assert "--out" in capsys.readouterr().err


def test_ches_filter_leaves_out_the_pairs_diagnose_ranks_highest_on_the_default_model(
    default_model_path, tmp_path
):
    """The trainer drops the pairs harness.diagnose ranks highest: the same encoding, the same scores."""
    source = tmp_path / "pairs.jsonl"
    write_jsonl(source, PAIRS)
    tok = AutoTokenizer.from_pretrained(default_model_path)
    model = AutoModelForCausalLM.from_pretrained(default_model_path)
    scored = {r["id"]: r for r in diagnose.ches_rows(model, tok, PAIRS, "train")}
    top = sorted(scored, key=lambda i: -scored[i]["ln_ches"])[:2]
    cfg = TrainConfig(model=default_model_path, pairs=str(source), method="dpo", ches_filter=0.5)
    trainer = Trainer(cfg, model, tok)
    assert sorted(d["id"] for d in trainer.dropped) == sorted(top) and len(trainer.pairs) == 2
    assert all(d["ln_ches"] == pytest.approx(scored[d["id"]]["ln_ches"], rel=1e-4) for d in trainer.dropped)
    # the kept pairs are the others, in file order
    kept = [p for p in PAIRS if p["id"] not in top]
    assert [len(c) for _, c, _ in trainer.pairs] == [
        len(encode(tok, p["prompt"], p["chosen"])[1]) for p in kept
    ]


def test_a_ches_filtered_run_lists_what_it_dropped(tiny_model_dir, tmp_path):
    source = tmp_path / "pairs.jsonl"
    write_jsonl(source, PAIRS)
    cfg = TrainConfig(
        model=tiny_model_dir, pairs=str(source), output_dir=str(tmp_path / "run"), method="dpo",
        ches_filter=0.25, batch_pairs=3, micro_pairs=3, bf16=False,
    )  # fmt: skip
    summary = run(cfg)
    dropped = [json.loads(line) for line in open(tmp_path / "run" / "ches_dropped.jsonl")]
    assert [set(d) for d in dropped] == [{"line", "id", "index", "ches", "ln_ches"}]
    assert (summary["pairs_used"], summary["pairs_dropped_by_ches"], summary["steps"]) == (3, 1, 1)
    with pytest.raises(ValueError, match="ches_filter must be at least 0 and below 1"):
        run(
            TrainConfig(
                model=tiny_model_dir, pairs=str(source), output_dir=str(tmp_path / "x"), ches_filter=1.0
            )
        )


def test_spearman_ci():
    rho, lo, hi = spearman_ci([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert rho == pytest.approx(0.8207826816681233)  # scipy.stats.spearmanr's documented example (ties)
    assert -1 <= lo <= rho <= hi <= 1
    assert spearman_ci([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    assert math.isnan(spearman_ci([1, 2], [1, 2])[0]) and math.isnan(spearman_ci([1, 1, 1], [1, 2, 3])[0])


def test_correlation_pools_seeds_per_pair_and_says_which_way_it_went():
    def run_with(dlogp):
        return Run("dpo-seed0", {"shift": {"per_pair": {"dlogp_chosen": dlogp}}}, None, None, [])

    ln = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    falling = [0.5, 0.3, 0.2, -0.1, -0.3, -0.4, -0.8, -1.0]
    # the second seed ties two pairs; the seeds' mean keeps the order
    other = [0.7, 0.1, 0.0, -0.3, -0.4, -0.6, -0.6, -1.2]
    c = correlation(ln, [run_with(falling), run_with(other)], "heldout")
    assert c["rho"] == pytest.approx(-1.0) and c["pairs"] == 8
    words = readings({"dpo": {"ches_rho": {"train": None, "heldout": c}}})
    assert words == (
        "**dpo**: on the training pairs not measurable; on the held-out pairs the prediction holds: pairs "
        "with a higher LN-CHES lost more chosen log-prob."
    )
    flat = correlation(ln, [run_with([0.1, -0.1, 0.2, -0.2, 0.1, -0.1, 0.2, -0.2])], "heldout")
    assert "held-out pairs no clear rank correlation" in readings(
        {"spo": {"ches_rho": {"train": flat, "heldout": flat}}}
    )
    # a pair without a value (None) is left out; a list of another length is not paired at all
    assert correlation(ln, [run_with([None, *falling[1:]])], "heldout")["pairs"] == 7
    assert correlation(ln, [run_with(falling[:4])], "heldout") is None
