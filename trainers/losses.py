"""Preference losses as pure functions of per-sequence log-probs (see ../shared/DESIGN.md).

Inputs are `SeqLogps`: the summed completion log-prob `s(y)` and the completion length `|y|`,
so both the sum and the token mean `a(y) = s(y)/|y|` are available to every loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def dpo(pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps, beta: float) -> tuple[torch.Tensor, dict]:
    """−log σ(β[(s_θ(y_w)−s_ref(y_w)) − (s_θ(y_l)−s_ref(y_l))]) per pair (Rafailov et al. 2023)."""
    reward_c = beta * (pc.total - rc.total)
    reward_r = beta * (pr.total - rr.total)
    margin = reward_c - reward_r
    return -F.logsigmoid(margin), {"reward_chosen": reward_c, "reward_rejected": reward_r, "margin": margin}


def spo_penalty(pc: SeqLogps, rc: SeqLogps, delta: float = 0.0) -> torch.Tensor:
    """max(0, ℓ_θ(x,y_w) − v̂) with ℓ = −a(y_w) and the reference anchor v̂ = ℓ_ref(x,y_w) − δ.

    Zero while the preferred response is at least as likely (per token) as under the reference
    (plus δ); otherwise it pushes its absolute probability back up.
    """
    return F.relu((-pc.mean) - ((-rc.mean) - delta))  # relu, not clamp: clamp passes gradient 1 at exactly 0


METHODS = ("dpo", "spo", "dpo+spo")


def parse_method(method: str) -> tuple[str, str]:
    """(upper-level loss, plug-in) for a method name; an unknown name raises an error listing the valid ones."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    base, _, plug = ("dpo+spo" if method == "spo" else method).partition("+")
    return base, plug


def preference_loss(
    method: str, pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps,
    beta: float = 0.1, spo_lambda: float = 1.0, spo_delta: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """Mean loss over the batch for `method` ('dpo', 'spo' = 'dpo+spo'), plus per-pair terms to log."""
    _, plug = parse_method(method)
    per_pair, terms = dpo(pc, pr, rc, rr, beta)
    if plug == "spo":
        penalty = spo_penalty(pc, rc, spo_delta)
        per_pair = per_pair + spo_lambda * penalty
        terms["penalty"] = penalty
        terms["outside_safe_region"] = (penalty > 0).float()
    return per_pair.mean(), terms
