import math

import pytest
import torch

from trainers.losses import LossParams, SeqLogps, dpo, preference_loss, reference_anchor, spo_penalty


def S(total, count):
    return SeqLogps(
        torch.tensor(total, dtype=torch.float64, requires_grad=True), torch.tensor(count, dtype=torch.float64)
    )


def test_dpo_hand_computed():
    pc, pr, rc, rr = S([-10.0], [5]), S([-12.0], [4]), S([-11.0], [5]), S([-11.5], [4])
    loss, terms = dpo(pc, pr, rc, rr, beta=0.1)
    margin = 0.1 * ((-10 + 11) - (-12 + 11.5))  # 0.15
    assert terms["margin"].item() == pytest.approx(0.15)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin)), abs=1e-12)  # log(1+e^-0.15)
    assert loss.item() == pytest.approx(0.6209570478, abs=1e-9)


def test_spo_penalty_zero_inside_positive_outside():
    rc = S([-10.0, -10.0, -10.0], [5, 5, 5])
    pc = S([-9.0, -10.0, -12.0], [5, 5, 5])  # mean rose / equal / fell by 0.4 nats per token
    pen = spo_penalty(pc, reference_anchor(rc))
    assert pen.tolist() == pytest.approx([0.0, 0.0, 0.4])
    assert spo_penalty(pc, reference_anchor(rc, delta=0.5)).tolist() == pytest.approx([0.3, 0.5, 0.9])


def test_spo_lambda_zero_equals_dpo_loss_and_gradients():
    torch.manual_seed(0)
    vals = [torch.randn(8, dtype=torch.float64) * 5 - 20 for _ in range(4)]
    counts = torch.randint(3, 30, (8,)).double()

    def grads(method, lam):
        xs = [v.clone().requires_grad_(True) for v in vals]
        loss, _ = preference_loss(method, *(SeqLogps(x, counts) for x in xs), LossParams(spo_lambda=lam))
        loss.backward()
        return loss, [x.grad for x in xs]

    l_dpo, g_dpo = grads("dpo", 1.0)
    l_spo, g_spo = grads("spo", 0.0)
    assert torch.equal(l_dpo, l_spo)
    assert all(torch.equal(a, b) for a, b in zip(g_dpo, g_spo))
    l_spo1, g_spo1 = grads("spo", 1.0)
    assert l_spo1 > l_dpo  # random log-probs put some chosen below the reference


def test_spo_penalty_raises_chosen_logprob():
    pc, pr, rc, rr = S([-12.0], [4]), S([-12.0], [4]), S([-10.0], [4]), S([-12.0], [4])
    loss, terms = preference_loss("spo", pc, pr, rc, rr, LossParams(beta=0.1, spo_lambda=2.0))
    loss.backward()
    assert terms["outside_safe_region"].item() == 1.0
    # margin m = 0.1·(−2 − 0) = −0.2; d/ds_c of DPO = −β σ(−m); of λ·max(0, −s_c/4 − 2.5) = −2/4
    assert pc.total.grad.item() == pytest.approx(-0.1 / (1 + math.exp(-0.2)) - 0.5)


def test_unknown_method_lists_valid():
    with pytest.raises(ValueError, match=r"valid: dpo, ipo, simpo, dpop, rpo, dpo\+spo, .*simpo\+spo"):
        preference_loss("kto", *(S([-1.0], [1]) for _ in range(4)))


def test_spo_on_the_region_boundary_is_plain_dpo():
    """Policy == reference (the first step): the penalty and its gradient are exactly zero."""

    def grad(method):
        pc, pr, rc, rr = (
            S([-10.0, -7.0], [5, 4]),
            S([-12.0, -9.0], [4, 6]),
            S([-10.0, -7.0], [5, 4]),
            S([-12.0, -9.0], [4, 6]),
        )
        loss, terms = preference_loss(method, pc, pr, rc, rr, LossParams(spo_lambda=5.0))
        loss.backward()
        return loss, pc.total.grad, terms

    l_dpo, g_dpo, _ = grad("dpo")
    l_spo, g_spo, terms = grad("spo")
    assert terms["outside_safe_region"].tolist() == [0.0, 0.0]
    assert torch.equal(l_dpo, l_spo) and torch.equal(g_dpo, g_spo)


# one fixed pair: a_θ(y_w) = −2, a_ref(y_w) = −2.2, a_θ(y_l) = −3, a_ref(y_l) = −2.875
PAIR = ([-10.0], [5]), ([-12.0], [4]), ([-11.0], [5]), ([-11.5], [4])


@pytest.mark.parametrize(
    "method, params, expected",
    [
        ("dpo", LossParams(beta=0.1), math.log1p(math.exp(-0.15))),
        ("ipo", LossParams(beta=0.1), (0.325 - 5.0) ** 2),  # (0.2 − (−0.125) − 1/(2·0.1))²
        ("simpo", LossParams(simpo_beta=2.0, gamma=1.0), math.log1p(math.exp(-1.0))),  # −log σ(2·(−2+3) − 1)
        # chosen rose: no shortfall
        ("dpop", LossParams(beta=0.1, dpop_lambda=50.0), math.log1p(math.exp(-0.15))),
        # + NLL = −a_θ(y_w) = 2
        ("rpo", LossParams(beta=0.1, rpo_alpha=1.0), math.log1p(math.exp(-0.15)) + 2.0),
    ],
)
def test_every_loss_on_a_fixed_pair(method, params, expected):
    loss, terms = preference_loss(method, *(S(*x) for x in PAIR), params)
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert terms["reward_accuracy"].item() == 1.0


def test_dpop_penalises_a_fallen_chosen_inside_the_sigmoid():
    pc, pr, rc, rr = S([-12.0], [5]), S([-12.0], [4]), S([-11.0], [5]), S([-11.5], [4])
    loss, terms = preference_loss("dpop", pc, pr, rc, rr, LossParams(beta=0.1, dpop_lambda=50.0))
    # margin 0.1·((−12+11) − (−12+11.5)) = −0.05; shortfall 1 → −log σ(−0.05 − 0.1·50·1)
    assert terms["dpop_shortfall"].item() == 1.0
    assert loss.item() == pytest.approx(5.056388881013102, abs=1e-9)


@pytest.mark.parametrize("base", ["dpo", "ipo", "simpo", "dpop", "rpo"])
def test_every_plus_spo_with_lambda_zero_is_the_base_loss(base):
    torch.manual_seed(1)
    vals = [torch.randn(6, dtype=torch.float64) * 5 - 20 for _ in range(4)]
    counts = torch.randint(3, 30, (6,)).double()

    def run(method):
        xs = [v.clone().requires_grad_(True) for v in vals]
        loss, terms = preference_loss(method, *(SeqLogps(x, counts) for x in xs), LossParams(spo_lambda=0.0))
        loss.backward()
        return loss, [x.grad for x in xs], terms

    l_base, g_base, _ = run(base)
    l_spo, g_spo, terms = run(base + "+spo")
    assert torch.equal(l_base, l_spo)
    # simpo: no reference grads
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(g_base, g_spo))
    assert terms["outside_safe_region"].sum() > 0  # the penalty was there, weighted by 0


def test_spo_uses_a_given_anchor():
    pc = S([-10.0, -10.0], [5, 5])  # ℓ_θ = 2 for both
    v_hat = torch.tensor([2.5, 1.5], dtype=torch.float64)  # lookahead-style anchors: one above, one below ℓ_θ
    assert spo_penalty(pc, v_hat).tolist() == pytest.approx([0.0, 0.5])


def test_sft_loss_is_the_token_mean_nll_of_the_chosen_response_alone():
    pc, pr, rc, rr = (
        S([-10.0, -9.0], [5, 3]),
        S([-4.0, -8.0], [2, 4]),
        S([-1.0, -1.0], [5, 3]),
        S([-2.0, -2.0], [2, 4]),
    )
    loss, terms = preference_loss("sft", pc, pr, rc, rr)
    assert loss.item() == pytest.approx((10 / 5 + 9 / 3) / 2)  # 2.5
    assert terms["nll_chosen"].tolist() == pytest.approx([2.0, 3.0])
    loss.backward()
    # d loss / d s(y_w) = −1/(B·|y_w|); nothing reaches the rejected response
    assert pc.total.grad.tolist() == pytest.approx([-1 / 10, -1 / 6])
    assert pr.total.grad is None


def test_sft_takes_no_plug_in():
    with pytest.raises(ValueError, match="unknown method 'sft\\+spo'"):
        preference_loss("sft+spo", *(S([-1.0], [1]) for _ in range(4)))
