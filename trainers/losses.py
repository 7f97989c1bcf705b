"""Preference losses as pure functions of per-sequence log-probs (see ../shared/DESIGN.md).

Inputs are `SeqLogps`: the summed completion log-prob `s(y)` and the completion length `|y|`,
so both the sum and the token mean `a(y) = s(y)/|y|` are available to every loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import option


@dataclass
class SeqLogps:
    """Per-sequence completion log-probs: `total` = s(y), `count` = |y| (both shape [B])."""

    total: torch.Tensor
    count: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def to(self, device) -> SeqLogps:
        return SeqLogps(self.total.to(device), self.count.to(device))


def _rewards(reward_c: torch.Tensor, reward_r: torch.Tensor) -> dict:
    margin = reward_c - reward_r
    return {
        "reward_chosen": reward_c,
        "reward_rejected": reward_r,
        "margin": margin,
        "reward_accuracy": (margin > 0).float(),
    }


def dpo(pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps, beta: float) -> tuple[torch.Tensor, dict]:
    """−log σ(β[(s_θ(y_w)−s_ref(y_w)) − (s_θ(y_l)−s_ref(y_l))]) per pair (Rafailov et al. 2023)."""
    terms = _rewards(beta * (pc.total - rc.total), beta * (pr.total - rr.total))
    return -F.logsigmoid(terms["margin"]), terms


def ipo(pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps, beta: float) -> tuple[torch.Tensor, dict]:
    """((a_θ(y_w)−a_ref(y_w)) − (a_θ(y_l)−a_ref(y_l)) − 1/(2β))² per pair (Azar et al. 2023)."""
    terms = _rewards(pc.mean - rc.mean, pr.mean - rr.mean)
    return (terms["margin"] - 1 / (2 * beta)) ** 2, terms


def simpo(pc: SeqLogps, pr: SeqLogps, beta: float, gamma: float) -> tuple[torch.Tensor, dict]:
    """−log σ(β(a_θ(y_w) − a_θ(y_l)) − γ) per pair; reference-free (Meng et al. 2024)."""
    terms = _rewards(beta * pc.mean, beta * pr.mean)
    return -F.logsigmoid(terms["margin"] - gamma), terms


def dpop(
    pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps, beta: float, lambda_p: float
) -> tuple[torch.Tensor, dict]:
    """DPO with −β·λ_p·max(0, s_ref(y_w) − s_θ(y_w)) inside the sigmoid (DPO-Positive, Pal et al. 2024)."""
    _, terms = dpo(pc, pr, rc, rr, beta)
    shortfall = F.relu(rc.total - pc.total)
    terms["dpop_shortfall"] = shortfall
    return -F.logsigmoid(terms["margin"] - beta * lambda_p * shortfall), terms


def rpo(
    pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps, beta: float, alpha: float
) -> tuple[torch.Tensor, dict]:
    """DPO + α·NLL(y_w), the NLL as the token mean −a_θ(y_w) (Pang et al. 2024)."""
    loss, terms = dpo(pc, pr, rc, rr, beta)
    terms["nll_chosen"] = -pc.mean
    return loss + alpha * terms["nll_chosen"], terms


def sft(pc: SeqLogps) -> tuple[torch.Tensor, dict]:
    """−a_θ(y_w): token-mean NLL of the chosen response alone, SPO's lower-level problem L_SFT; the
    rejected response and the reference play no part."""
    return -pc.mean, {"nll_chosen": -pc.mean}


def reference_anchor(rc: SeqLogps, delta: float = 0.0) -> torch.Tensor:
    """v̂ = ℓ_ref(x, y_w) − δ with ℓ = −a(y_w): y_w may never become less likely than under the reference."""
    return -rc.mean - delta


def spo_penalty(pc: SeqLogps, v_hat: torch.Tensor) -> torch.Tensor:
    """max(0, ℓ_θ(x,y_w) − v̂), ℓ = −a(y_w): zero inside the safe region; outside it pushes the
    preferred response's absolute probability back up. v̂ comes from an anchor (reference or lookahead)."""
    return F.relu(-pc.mean - v_hat.detach())  # relu, not clamp: clamp passes gradient 1 at exactly 0


LOSSES = ("dpo", "ipo", "simpo", "dpop", "rpo")
# sft takes no plug-in: with no upper-level loss there is nothing for the penalty to stabilise
METHODS = LOSSES + tuple(f"{x}+spo" for x in LOSSES) + ("spo", "sft")


@dataclass
class LossParams:
    beta: float = option(0.1, "β of dpo, ipo, dpop, rpo")
    simpo_beta: float = option(2.0, "β of simpo (its scale differs: token-mean log-probs, no reference)")
    gamma: float = option(1.0, "γ, simpo target margin")
    dpop_lambda: float = option(50.0, "λ_p of dpop")
    rpo_alpha: float = option(1.0, "α of rpo's NLL term")
    spo_lambda: float = option(1.0, "λ, weight of the SPO penalty")
    spo_delta: float = option(0.0, "δ, margin of the reference anchor")


def parse_method(method: str) -> tuple[str, str]:
    """(upper-level loss, plug-in) for a method name; an unknown name raises an error listing the valid
    ones."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    base, _, plug = ("dpo+spo" if method == "spo" else method).partition("+")
    return base, plug


def preference_loss(
    method: str,
    pc: SeqLogps,
    pr: SeqLogps,
    rc: SeqLogps,
    rr: SeqLogps,
    params: LossParams | None = None,
    v_hat: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Mean loss over the batch for `method`, plus per-pair terms to log. For `<loss>+spo`, `v_hat`
    is the anchor (default: the reference anchor with δ)."""
    p = params or LossParams()
    base, plug = parse_method(method)
    per_pair, terms = {
        "sft": lambda: sft(pc),
        "dpo": lambda: dpo(pc, pr, rc, rr, p.beta),
        "ipo": lambda: ipo(pc, pr, rc, rr, p.beta),
        "simpo": lambda: simpo(pc, pr, p.simpo_beta, p.gamma),
        "dpop": lambda: dpop(pc, pr, rc, rr, p.beta, p.dpop_lambda),
        "rpo": lambda: rpo(pc, pr, rc, rr, p.beta, p.rpo_alpha),
    }[base]()
    if plug == "spo":
        penalty = spo_penalty(pc, reference_anchor(rc, p.spo_delta) if v_hat is None else v_hat)
        per_pair = per_pair + p.spo_lambda * penalty
        terms["penalty"] = penalty
        terms["outside_safe_region"] = (penalty > 0).float()
    return per_pair.mean(), terms
