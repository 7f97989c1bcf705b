"""The probe set: where a policy moved the probability mass of held-out pairs (after Ren & Sutherland,
ICLR 2025, "Learning dynamics of LLM finetuning").

For each held-out pair, the log-prob under the policy and under the reference of five responses:
chosen, rejected, a rephrased chosen (the same answer in other words, the pair's `rephrased`; None
where the task has none), an unrelated response (the next pair's chosen) and the policy's own greedy
response. DPO's squeezing effect shows as chosen, rejected, rephrased and unrelated all falling while
the greedy response rises. The training probes (trainers.trainer) and the evaluator (harness.shift)
both go through `probe_terms`, so the two report the same quantities.
"""

from __future__ import annotations

import copy

import torch

from trainers.logprobs import decoding, score_shared
from trainers.losses import SeqLogps
from trainers.pairfile import truncated
from trainers.tokens import (
    completion_ids,
    end_sample,
    generate_kwargs,
    pad_id,
    prompt_ids,
    stop_ids,
    stop_strings,
)

FIXED = ("chosen", "rejected", "rephrased", "unrelated")  # the same text for every policy
KINDS = (*FIXED, "greedy")  # greedy: each policy's own
GREEDY_TOKENS = 128  # cap on a probe's greedy response (training and evaluation alike)


def _sources(pairs: list[dict]) -> dict[str, list[tuple[dict, str] | None]]:
    """Per fixed kind, the (pair, field) each pair's response comes from; the unrelated one is the next
    pair's chosen (cyclically), so none with a single pair."""
    n = len(pairs)
    return {
        "chosen": [(p, "chosen") for p in pairs],
        "rejected": [(p, "rejected") for p in pairs],
        "rephrased": [(p, "rephrased") if p.get("rephrased") else None for p in pairs],
        "unrelated": [(pairs[(i + 1) % n], "chosen") if n > 1 else None for i in range(n)],
    }


def fixed_responses(pairs: list[dict]) -> dict[str, list[str | None]]:
    """The fixed probe responses of each pair (None: the pair has no such response)."""
    return {
        kind: [None if s is None else s[0][s[1]] for s in sources]
        for kind, sources in _sources(pairs).items()
    }


class ProbeSet:
    """Held-out pairs tokenised once: prompt ids and, per fixed kind, completion ids (None: no such
    response for that pair), each ended by the end token unless a length cap cut it; `generation_config`
    (the checkpoint's) adds its end ids to the greedy responses' stop ids."""

    def __init__(self, tok, pairs: list[dict], generation_config=None):
        self.n = len(pairs)
        self.tok, self.stops, self.stop_strings = tok, stop_ids(tok, generation_config), stop_strings(tok)
        self.pad = pad_id(tok, self.stops)
        self.prompts = [prompt_ids(tok, p["prompt"]) for p in pairs]
        self.responses = {
            kind: [
                None if s is None else completion_ids(tok, p["prompt"], s[0][s[1]], truncated(*s))
                for p, s in zip(pairs, sources)
            ]
            for kind, sources in _sources(pairs).items()
        }

    def score(self, model, responses: list[list[int] | None], batch_size: int = 16) -> SeqLogps:
        """Summed log-prob and length of each response (NaN where there is none), fp32, no gradients."""
        # an empty response (none generated) is no response, like None
        return score_shared(model, self.prompts, [r or None for r in responses], batch_size=batch_size)[0]

    def score_fixed(self, model, batch_size: int = 16) -> dict[str, SeqLogps]:
        """The fixed kinds, each prompt encoded once for all four (`score_shared`)."""
        scores = score_shared(model, self.prompts, *(self.responses[k] for k in FIXED), batch_size=batch_size)
        return dict(zip(FIXED, scores, strict=True))

    def greedy(
        self, model, max_new_tokens: int = GREEDY_TOKENS, batch_size: int = 16, bf16: bool = False
    ) -> list[list[int]]:
        """The model's greedy response to each prompt (argmax at every step, whatever its generation_config
        says), with the stop token it sampled where it stopped. `bf16`: decode a bf16 copy of the weights, as
        the trainer's forwards and evaluation's engine run where bf16 is native; decoding a few prompts is
        bound by reading the weights at every step, and bf16 halves those bytes."""
        was_training = model.training
        decoder = copy.deepcopy(model).to(torch.bfloat16) if bf16 else model
        decoder.eval()
        out: list[list[int]] = []
        with torch.no_grad(), decoding(decoder):
            for s in range(0, self.n, batch_size):
                rows = self.prompts[s : s + batch_size]
                width = max(map(len, rows))
                # left padding: every row's first new token is at the same column
                ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
                device = next(decoder.parameters()).device
                gen = decoder.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    **generate_kwargs(self.tok, self.stops, self.pad, max_new_tokens),
                )
                for row in gen[:, width:].tolist():
                    sampled, _, _, stop = end_sample(self.tok, row, self.stops, self.stop_strings)
                    out.append(sampled + [stop] * (stop is not None))
        model.train(was_training)
        return out


def probe_terms(
    policy: dict[str, SeqLogps], reference: dict[str, SeqLogps], delta: float = 0.0
) -> dict[str, torch.Tensor]:
    """Per pair (NaN where a kind has no response): for each kind the policy's token-mean log-prob
    `logp_<kind>` = a_θ(y), its change from the reference `dlogp_<kind>` = a_θ(y) − a_ref(y)
    and the change of the sum `dsum_<kind>` = s_θ(y) − s_ref(y); Δ log(π(y_w)+π(y_l))
    `dlog_combined`; and `outside_safe_region`: 1 where ℓ_θ(y_w) > v̂ = ℓ_ref(y_w) − δ
    (ℓ = −a), i.e. a_θ(y_w) < a_ref(y_w) + δ, where SPO's penalty is active."""
    out = {}
    for kind in policy:
        p, r = policy[kind], reference[kind]
        out[f"logp_{kind}"] = p.mean
        out[f"dlogp_{kind}"] = p.mean - r.mean
        out[f"dsum_{kind}"] = p.total - r.total
    pc, pr, rc, rr = policy["chosen"], policy["rejected"], reference["chosen"], reference["rejected"]
    out["dlog_combined"] = torch.logaddexp(pc.total, pr.total) - torch.logaddexp(rc.total, rr.total)
    out["outside_safe_region"] = (pc.mean < rc.mean + delta).float()
    return out


def nan_mean(values: torch.Tensor) -> float | None:
    """Mean over the pairs that have the response; None when none has."""
    kept = values[~torch.isnan(values)]
    return kept.mean().item() if len(kept) else None
