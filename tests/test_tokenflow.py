"""Token-level mass flow (trainers/tokenflow.py): the terms on known distributions, and on two real (tiny)
models the terms at every position add up to what the chosen token lost."""

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.tokenflow import _next_token_logps, first_difference, flow, pair_flows, shares
from trainers.tokens import encode


def test_flow_terms_on_known_distributions():
    # position 0: the chosen token 0 falls 0.5 → 0.2, the argmax 1 gains 0.3 (squeezing); the rejected
    # token 2 competes and keeps its 0.2. Position 1: the chosen token 1 is the argmax and falls 0.6 → 0.5;
    # the rejected token 0 gains 0.05, the rest (token 2) 0.05
    ref = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2]]).log()
    pol = torch.tensor([[0.2, 0.6, 0.2], [0.25, 0.5, 0.25]]).log()
    t = flow(pol, ref, torch.tensor([0, 1]), torch.tensor([2, 0]))
    assert t["lost"].tolist() == pytest.approx([0.3, 0.1])
    assert t["to_argmax"].tolist() == pytest.approx([0.3, 0.0])  # no term where the argmax is the chosen
    assert t["to_rejected"].tolist() == pytest.approx([0.0, 0.05])
    assert t["to_rest"].tolist() == pytest.approx([0.0, 0.05])
    assert t["dlogp"].tolist() == pytest.approx([math.log(0.2 / 0.5), math.log(0.5 / 0.6)])
    # no rejected token (−1): its mass counts in the rest
    assert flow(pol, ref, torch.tensor([0, 1]), torch.tensor([-1, -1]))["to_rest"].tolist() == pytest.approx(
        [0.0, 0.1]
    )
    # the rejected token became the mode: it counts as the rejected token, not as the argmax
    t = flow(torch.tensor([[0.2, 0.2, 0.6]]).log(), ref[:1], torch.tensor([0]), torch.tensor([2]))
    assert [t[k].item() for k in ("lost", "to_argmax", "to_rejected", "to_rest")] == pytest.approx(
        [0.3, 0, 0.4, -0.1]
    )
    pairs = [{"lost": 0.3, "to_argmax": 0.3, "to_rejected": 0.0, "to_rest": 0.0}]
    pairs.append({"lost": 0.1, "to_argmax": 0.0, "to_rejected": 0.05, "to_rest": 0.05})
    assert shares(pairs) == pytest.approx(
        {"lost": 0.4, "to_argmax": 0.75, "to_rejected": 0.125, "to_rest": 0.125}
    )
    assert shares([{"lost": 0.0, "to_argmax": 0.0, "to_rejected": 0.0, "to_rest": 0.0}])["to_argmax"] is None


def test_first_difference():
    assert first_difference([5, 6, 7], [5, 9, 7]) == 1
    assert first_difference([5, 6], [5, 6, 7]) is None  # a prefix: no position where both differ
    assert first_difference([1], [2]) == 0


@pytest.fixture(scope="module")
def two_models(default_model_path):
    """The default model and a copy with every weight nudged (5% of its tensor's spread): a policy that
    moved, some of the chosen tokens losing probability and some gaining."""
    ref = AutoModelForCausalLM.from_pretrained(default_model_path).eval()
    pol = copy.deepcopy(ref)
    torch.manual_seed(3)
    with torch.no_grad():
        for w in pol.parameters():
            w.add_(0.05 * w.std() * torch.randn_like(w))
    return pol, ref, AutoTokenizer.from_pretrained(default_model_path)


def test_flow_terms_add_up_to_the_chosen_tokens_loss_on_the_default_model(two_models):
    pol, ref, tok = two_models
    prompt = [{"role": "user", "content": "What is 3 + 4?"}]
    x, c = encode(tok, prompt, "3 + 4 = 7. The answer is 7.")
    r = encode(tok, prompt, "3 + 4 = 8. The answer is 8.")[1]
    at = first_difference(c, r)
    p, q = _next_token_logps(pol, x, c), _next_token_logps(ref, x, c)
    competing = torch.full((len(c),), -1)
    competing[at] = r[at]
    t = flow(p, q, torch.tensor(c), competing)
    # each term is summed over its own tokens: they add up to the loss only because both rows sum to 1
    total = t["to_argmax"] + t["to_rejected"] + t["to_rest"]
    assert torch.allclose(total, t["lost"], atol=1e-5) and t["lost"].abs().max() > 0.05
    # pair_flows: the per-position Δ log-probs sum to the sequence's, scored independently by one forward
    with torch.no_grad():
        seq = [
            m(input_ids=torch.tensor([x + c])).logits[0, len(x) - 1 : -1].log_softmax(-1) for m in (pol, ref)
        ]
    dsum = (seq[0] - seq[1])[torch.arange(len(c)), torch.tensor(c)].sum().item()
    [f] = pair_flows(pol, ref, [x], [c], [r])
    assert sum(f["dlogp"]) == pytest.approx(dsum, abs=1e-3)
    fell = t["lost"] > 0
    assert f["lost"] == pytest.approx(t["lost"][fell].sum().item(), abs=1e-5) and 0 < fell.sum() < len(c)
    assert tok.decode(c[at]) == "7" and f["diverge"]["position"] == at and len(f["gainers"]) == 3
    assert f["diverge"]["to_rejected"] == pytest.approx(t["to_rejected"][at].item(), abs=1e-6)
    assert f["worst"] == int(torch.tensor(f["dlogp"]).argmin())
