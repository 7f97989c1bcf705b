"""Distribution shift of a policy from the reference model: where did the probability mass go?

- On held-out pairs, the probe set (trainers.probes, the same terms the training probes log): Δ
  log-prob (token mean and sum) of chosen, rejected, rephrased chosen, an unrelated response and the
  policy's own greedy response; Δ log of the pair's combined probability; the share of pairs outside
  SPO's safe region. Chosen, rejected, rephrased and unrelated falling while greedy rises = the mass
  moved onto the policy's own mode (the squeezing effect; catastrophic preference shift).
- On eval prompts: the sequence-KL estimate E_{y~π}[log π(y|x) − log π_ref(y|x)] from the policy's
  own temperature-1 samples, scored by the tokens sampled (a sample cut by max_tokens counts its prefix,
  with no end token).
- On the policy's greedy eval outputs: mean length, answer-format rate, distinct-1/2.

Scoring is fp32 and batched; the reference model is loaded once and its held-out scores reused
for every policy.
"""

from __future__ import annotations

import math

import torch

from harness.generation import Completion
from trainers.logprobs import score
from trainers.probes import KINDS, ProbeSet, fixed_responses, nan_mean, probe_terms
from trainers.tokenflow import TERMS, pair_flows, shares
from trainers.tokens import generation_config_of


def _load(path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def _rounded(values: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


# per-pair token detail kept in eval.json (the shares use every held-out pair)
FLOW_PAIRS = 64


class ShiftScorer:
    """Holds the reference model and its log-probs on the held-out probe set (trainers.probes) and on the
    training pairs' chosen responses."""

    def __init__(
        self, reference_path: str, heldout: list[dict], train: list[dict] | None = None, batch_size: int = 16
    ):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(reference_path)
        self.reference, self.batch_size = _load(reference_path), batch_size
        self.heldout = heldout
        self.probe = ProbeSet(self.tok, heldout, generation_config_of(reference_path))
        self.ref_fixed = self.probe.score_fixed(self.reference, batch_size) if heldout else {}
        # the training pairs' chosen responses: each pair's Δ log-prob, for CHES's rank correlation
        self.train = ProbeSet(self.tok, train or [])
        if self.train.n:
            self.ref_train = self.train.score(self.reference, self.train.responses["chosen"], batch_size)

    def measure(
        self,
        policy_path: str,
        kl_prompts: list[list[int]],
        kl_samples: list[Completion],
        greedy: list[Completion] | None = None,
    ) -> dict:
        """Held-out probe shift (`greedy`: the policy's greedy responses to the probe prompts,
        `self.probe.prompts`) and the KL estimate of one policy (samples drawn from that policy for
        `kl_prompts`, token ids), every sample scored by the tokens it sampled."""
        kl_c = [c.scored_ids() for c in kl_samples]
        # scored in the same batches as the reference, so a copy of it gives exact zeros
        policy = _load(policy_path)
        out: dict = {"heldout_pairs": self.probe.n, "kl_samples": len(kl_c)}
        if self.probe.n:
            pol, ref = self.probe.score_fixed(policy, self.batch_size), dict(self.ref_fixed)
            if greedy is not None:
                ids = [c.scored_ids() for c in greedy]
                pol["greedy"] = self.probe.score(policy, ids, self.batch_size)
                ref["greedy"] = self.probe.score(self.reference, ids, self.batch_size)
            out |= summarise(probe_terms(pol, ref))
            out["token_flow"] = self.token_flow(policy)
        else:
            out |= dict.fromkeys(SUMMARY_KEYS)
        if self.train.n:
            train = self.train.score(policy, self.train.responses["chosen"], self.batch_size)
            out["per_pair_train"] = {"dlogp_chosen": _rounded(train.mean - self.ref_train.mean)}
        pol_kl = score(policy, kl_prompts, kl_c, self.batch_size, progress="log-probs (policy)")
        del policy
        ref_kl = score(self.reference, kl_prompts, kl_c, self.batch_size, progress="log-probs (reference)")
        out["kl"] = (pol_kl.total - ref_kl.total).mean().item() if kl_c else None
        out["kl_finished_share"] = sum(c.finished for c in kl_samples) / len(kl_c) if kl_c else None
        return out

    def token_flow(self, policy) -> dict:
        """Where each held-out chosen response's lost mass went, token by token (trainers.tokenflow): the
        shares over all pairs, per pair the terms and those at the first differing position, and for the
        first FLOW_PAIRS pairs the tokens with their Δ log-prob and those that gained most at the steepest
        fall."""
        rc = self.probe.responses
        flows = pair_flows(policy, self.reference, self.probe.prompts, rc["chosen"], rc["rejected"])
        pairs = [
            _pair_view(f, c, r, self.tok.decode)
            for f, c, r in zip(flows[:FLOW_PAIRS], rc["chosen"], rc["rejected"])
        ]
        per_pair = {k: [f[k] for f in flows] for k in (*TERMS, "diverge")}
        return {"shares": shares(flows), "pairs": pairs, **per_pair}


def _pair_view(f: dict, chosen: list[int], rejected: list[int], decode) -> dict:
    """One held-out pair's flow as report.html shows it: its chosen tokens as text with their Δ log-prob, the
    tokens that gained most at its steepest fall, and the two tokens where the responses part."""
    view = {
        "tokens": [decode([t]) for t in chosen],
        "dlogp": [round(v, 4) for v in f["dlogp"]],
        "worst": f["worst"],
        "gainers": [[decode([t]), round(v, 4)] for t, v in f["gainers"]],
        "diverge": f["diverge"],
    }
    if f["diverge"] is not None:
        at = f["diverge"]["position"]
        view["diverge"] |= {"chosen_token": decode([chosen[at]]), "rejected_token": decode([rejected[at]])}
    return view


# eval.json's shift keys from the probe set: per-kind means, shares and per-pair lists
MEAN_KEYS = (*(f"{d}_{k}" for d in ("dlogp", "dsum") for k in KINDS), "dlog_combined")
SUMMARY_KEYS = (
    *MEAN_KEYS,
    "both_fell_share",
    "outside_safe_region_share",
    "rephrased_pairs",
    "per_pair",
)


def summarise(terms: dict[str, torch.Tensor]) -> dict:
    """Means over the held-out pairs that have each response, the shares of pairs whose chosen and
    rejected both fell and whose chosen fell below the reference (outside SPO's safe region, δ = 0),
    and the per-pair Δ token-mean log-probs (for intervals over pairs and seeds)."""
    out = {k: nan_mean(terms[k]) if k in terms else None for k in MEAN_KEYS}
    both = (terms["dlogp_chosen"] < 0) & (terms["dlogp_rejected"] < 0)
    out["both_fell_share"] = both.float().mean().item()
    out["outside_safe_region_share"] = terms["outside_safe_region"].mean().item()
    out["rephrased_pairs"] = int((~torch.isnan(terms["dlogp_rephrased"])).sum())
    out["per_pair"] = {f"dlogp_{k}": _rounded(terms[f"dlogp_{k}"]) for k in KINDS if f"dlogp_{k}" in terms}
    return out


def identity_shift(heldout: list[dict]) -> dict:
    """The reference against itself: zero by definition, nothing to score (None where a pair has no
    rephrased or unrelated response)."""
    n = len(heldout)
    if not n:
        return {"heldout_pairs": 0, "kl_samples": 0, **dict.fromkeys(SUMMARY_KEYS), "kl": 0.0}
    have = {k: [v is not None for v in texts] for k, texts in fixed_responses(heldout).items()}
    have["greedy"] = [True] * n
    per_pair = {f"dlogp_{k}": [0.0 if h else None for h in hs] for k, hs in have.items()}
    means = {f"{d}_{k}": 0.0 if any(hs) else None for d in ("dlogp", "dsum") for k, hs in have.items()}
    return {
        "heldout_pairs": n,
        "kl_samples": 0,
        **means,
        "dlog_combined": 0.0,
        "both_fell_share": 0.0,
        "outside_safe_region_share": 0.0,
        "rephrased_pairs": sum(have["rephrased"]),
        "per_pair": per_pair,
        "kl": 0.0,
        "kl_finished_share": None,
    }


def distinct_n(token_lists: list[list[int]], n: int) -> float | None:
    """Distinct n-grams / all n-grams over a set of outputs (Li et al. 2016): falls when outputs
    collapse onto repeated phrases."""
    grams = [tuple(t[i : i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def output_stats(outputs: list[Completion], formatted: list[bool] | None) -> dict:
    """Length (tokens), share stopped by the model, answer-format rate, distinct-1/2 of greedy outputs."""
    ids = [c.token_ids for c in outputs]
    return {
        "mean_length": sum(map(len, ids)) / len(ids) if ids else None,
        "finished_share": sum(c.finished for c in outputs) / len(outputs) if outputs else None,
        "format_rate": 100 * sum(formatted) / len(formatted) if formatted else None,
        "distinct_1": distinct_n(ids, 1),
        "distinct_2": distinct_n(ids, 2),
    }
