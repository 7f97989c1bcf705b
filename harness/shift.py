"""Distribution shift of a policy from the reference model: where did the probability mass go?

- On held-out pairs: Δ token-mean log-prob of chosen and of rejected responses and Δ log of their
  combined probability (trainers.logprobs.pair_shift, the same terms the training probes log).
  Chosen and rejected both falling = mass moved to other, out-of-distribution responses.
- On eval prompts: the sequence-KL estimate E_{y~π}[log π(y|x) − log π_ref(y|x)] from the policy's
  own temperature-1 samples (a sample cut by max_tokens counts its prefix, no end-of-turn token).
- On the policy's greedy eval outputs: mean length, answer-format rate, distinct-1/2.

Scoring is fp32 and batched; the reference model is loaded once and its held-out scores reused
for every policy.
"""

from __future__ import annotations

import torch

from harness.generation import Completion
from trainers.logprobs import encode, pair_shift, score
from trainers.losses import SeqLogps


def _load(path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def _rows(s: SeqLogps, a: int, b: int) -> SeqLogps:
    return SeqLogps(s.total[a:b], s.count[a:b])


class ShiftScorer:
    """Holds the reference model and its log-probs on the held-out pairs."""

    def __init__(self, reference_path: str, heldout: list[dict], batch_size: int = 16):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(reference_path)
        self.reference, self.batch_size = _load(reference_path), batch_size
        enc = [encode(self.tok, p["prompt"], p[f]) for f in ("chosen", "rejected") for p in heldout]
        self.pair_prompts, self.pair_completions = [e[0] for e in enc], [e[1] for e in enc]
        self.n = len(heldout)
        self.ref_pairs = score(
            self.reference,
            self.pair_prompts,
            self.pair_completions,
            batch_size,
            progress="log-probs (reference)",
        )

    def measure(self, policy_path: str, kl_prompts: list[str], kl_samples: list[Completion]) -> dict:
        """Held-out pair shift and the KL estimate of one policy (samples drawn from that policy)."""
        kl_p = [self.tok(t, add_special_tokens=False)["input_ids"] for t in kl_prompts]
        kl_c = [c.token_ids + [self.tok.eos_token_id] * c.finished for c in kl_samples]
        # scored in the same batches as the reference, so a copy of it gives exact zeros
        policy = _load(policy_path)
        pol = score(
            policy, self.pair_prompts, self.pair_completions, self.batch_size, progress="log-probs (policy)"
        )
        pol_kl = score(policy, kl_p, kl_c, self.batch_size, progress="log-probs (policy)")
        del policy
        ref_kl = score(self.reference, kl_p, kl_c, self.batch_size, progress="log-probs (reference)")
        n, out = self.n, {"heldout_pairs": self.n, "kl_samples": len(kl_c)}
        if n:
            terms = pair_shift(
                _rows(pol, 0, n),
                _rows(pol, n, 2 * n),
                _rows(self.ref_pairs, 0, n),
                _rows(self.ref_pairs, n, 2 * n),
            )
            out.update({k: v.mean().item() for k, v in terms.items()})
            out["both_fell_share"] = (
                ((terms["dlogp_chosen"] < 0) & (terms["dlogp_rejected"] < 0)).float().mean().item()
            )
        else:
            out.update(dict.fromkeys(("dlogp_chosen", "dlogp_rejected", "dlog_combined", "both_fell_share")))
        out["kl"] = (pol_kl.total - ref_kl.total).mean().item() if kl_c else None
        out["kl_finished_share"] = sum(c.finished for c in kl_samples) / len(kl_c) if kl_c else None
        return out


def identity_shift(n_heldout: int) -> dict:
    """The reference against itself: zero by definition, nothing to score."""
    return {
        "heldout_pairs": n_heldout,
        "kl_samples": 0,
        "dlogp_chosen": 0.0,
        "dlogp_rejected": 0.0,
        "dlog_combined": 0.0,
        "both_fell_share": 0.0,
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
