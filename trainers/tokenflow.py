"""Token-level mass flow: where the probability a chosen response lost went, position by position.

At each position t of a chosen response y⁺ (prefix x, y⁺_<t), with p and p_ref the policy's and the
reference's next-token distributions and Δ = p − p_ref (Σ_v Δ(v) = 0), the chosen token c lost
`lost = −Δ(c)`, which is exactly what the other tokens gained on balance:

    lost = Δ(a) + Δ(r) + Σ_{v ∉ {c, a, r}} Δ(v)
           to the argmax   to the rejected token   to the rest

with a = argmax p (the policy's own mode: Ren & Sutherland's squeezing effect; no term when a is c or r) and
r the rejected response's token at the first position where the two responses differ (elsewhere the prefixes
differ and no token of the rejected response competes): a rejected token that became the mode counts as the
rejected token. A method's summary sums
the terms over the positions where the chosen token lost mass and divides by the sum of `lost`.
"""

from __future__ import annotations

import torch

from trainers.logprobs import _core

TERMS = ("lost", "to_argmax", "to_rejected", "to_rest")
TOP = 3  # gaining tokens kept at a response's steepest fall


def first_difference(chosen: list[int], rejected: list[int]) -> int | None:
    """The first position where both responses have a token and the tokens differ (None: one response is a
    prefix of the other)."""
    return next((t for t, (c, r) in enumerate(zip(chosen, rejected)) if c != r), None)


def flow(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The flow terms at each position from [T, vocab] log-softmax rows: `chosen` [T] the chosen tokens,
    `rejected` [T] the competing rejected token or −1 (none). Also `dlogp`, the chosen tokens' log-prob
    change, and `argmax`, the policy's mode. Each term is computed on its own tokens, so their sum equals
    `lost` only because both distributions sum to one (the tests check it)."""
    delta = policy_logps.exp() - reference_logps.exp()
    rows = torch.arange(len(chosen))
    argmax = policy_logps.argmax(-1)
    has_r = (rejected >= 0) & (rejected != chosen)
    has_a = (argmax != chosen) & ~(has_r & (argmax == rejected))
    r = rejected.clamp(min=0)
    rest = torch.ones_like(delta, dtype=torch.bool)
    rest[rows, chosen] = False
    rest[rows, argmax] = False
    rest[rows[has_r], r[has_r]] = False
    return {
        "lost": -delta[rows, chosen],
        "to_argmax": torch.where(has_a, delta[rows, argmax], 0.0),
        "to_rejected": torch.where(has_r, delta[rows, r], 0.0),
        "to_rest": (delta * rest).sum(-1),
        "dlogp": policy_logps[rows, chosen] - reference_logps[rows, chosen],
        "argmax": argmax,
    }


def _next_token_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """[len(completion), vocab] fp32 log-softmax at the positions that predict the completion's tokens."""
    device = next(_core(model).parameters()).device
    ids = torch.tensor([prompt + completion], device=device)
    # the last |y| + 1 positions; the final one (after the last token) predicts nothing scored
    logits = model(input_ids=ids, logits_to_keep=len(completion) + 1).logits[0, :-1]
    return logits.float().log_softmax(-1).cpu()


def pair_flows(
    policy, reference, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]]
) -> list[dict]:
    """Per pair: the per-position `dlogp` (list), the flow terms summed over the positions where the chosen
    token lost mass, the first differing position's terms (`diverge`, None without one), and at the
    steepest fall (`worst`: position) the `gainers`, [token id, Δp] of the TOP tokens that gained most.
    One sequence per forward (no padding), no gradients, both models in eval mode."""
    out = []
    modes = [(m, m.training) for m in (policy, reference)]
    for m, _ in modes:
        m.eval()
    with torch.no_grad():
        for x, c, r in zip(prompts, chosen, rejected):
            pol, ref = _next_token_logps(policy, x, c), _next_token_logps(reference, x, c)
            t_diff = first_difference(c, r)
            competing = torch.full((len(c),), -1)
            if t_diff is not None:
                competing[t_diff] = r[t_diff]
            terms = flow(pol, ref, torch.tensor(c), competing)
            fell = terms["lost"] > 0
            worst = int(terms["dlogp"].argmin())
            gain = pol[worst].exp() - ref[worst].exp()
            gain[c[worst]] = float("-inf")
            top = gain.topk(min(TOP, len(gain)))
            out.append(
                {
                    "dlogp": terms["dlogp"].tolist(),
                    **{k: float(terms[k][fell].sum()) for k in TERMS},
                    "diverge": None
                    if t_diff is None
                    else {"position": t_diff, **{k: float(terms[k][t_diff]) for k in TERMS}},
                    "worst": worst,
                    "gainers": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
                }
            )
    for m, training in modes:
        m.train(training)
    return out


def shares(pairs: list[dict]) -> dict[str, float | None]:
    """The share of the chosen tokens' lost mass that went to the argmax, the rejected token and the rest,
    over all pairs' positions where the chosen token lost mass (None: nothing was lost)."""
    lost = sum(p["lost"] for p in pairs)
    if not lost > 0:
        return {k: None for k in TERMS[1:]} | {"lost": lost}
    return {"lost": lost} | {k: sum(p[k] for p in pairs) / lost for k in TERMS[1:]}
