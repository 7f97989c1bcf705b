"""CHES: which preference pairs will make DPO lower its preferred response, predicted before training
(Razin et al. 2024, "Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization").

With S⁺ and S⁻ the sums of the last layer's hidden states of the chosen and the rejected response,

    CHES    = ⟨S⁺, S⁻⟩ − ‖S⁺‖²
    LN-CHES = ⟨S⁺, S⁻⟩ / (|y⁺|·|y⁻|) − ‖S⁺‖² / |y⁺|²

A pair whose two responses embed alike (high CHES) is one where DPO's push down on the rejected drags the
chosen down too. The positions summed are the |y| positions whose hidden states predict the response's
tokens: from the last prompt token through the response's second-to-last token. The response's final
position (after its end token) predicts nothing the loss reads, so it is left out, as in the authors'
`ches/ches.py` (their second file keeps it; we follow the one whose positions meet the gradient). |y| counts
the response's tokens, end token included, as everywhere in the harness (trainers.tokens).
"""

from __future__ import annotations

import torch

from trainers.logprobs import _core


def ches(chosen_sums: torch.Tensor, rejected_sums: torch.Tensor) -> torch.Tensor:
    """CHES of each pair from [pairs, hidden] sums: ⟨S⁺, S⁻⟩ − ‖S⁺‖²."""
    return (chosen_sums * rejected_sums).sum(-1) - chosen_sums.pow(2).sum(-1)


def ln_ches(
    chosen_sums: torch.Tensor,
    rejected_sums: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> torch.Tensor:
    """Length-normalised CHES: ⟨S⁺, S⁻⟩/(|y⁺|·|y⁻|) − ‖S⁺‖²/|y⁺|²."""
    cross = (chosen_sums * rejected_sums).sum(-1) / (chosen_lengths * rejected_lengths)
    return cross - chosen_sums.pow(2).sum(-1) / chosen_lengths.pow(2)


def hidden_sums(
    model, prompts: list[list[int]], completions: list[list[int]], batch_size: int = 8
) -> torch.Tensor:
    """[n, hidden] float64 sums of the last layer's hidden states (after the final norm, as
    `output_hidden_states` gives them) at the positions that predict each completion's tokens. fp32, no
    gradients, right-padded batches of similar lengths; the decoder alone runs (no LM head, and no other
    layer's states kept)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
    decoder = _core(model).get_decoder()  # through a peft wrapper too
    device = next(decoder.parameters()).device
    out = torch.zeros(len(prompts), _core(model).config.get_text_config().hidden_size, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            seqs = [prompts[i] + completions[i] for i in rows]
            width = max(map(len, seqs))
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for j, seq in enumerate(seqs):
                ids[j, : len(seq)], mask[j, : len(seq)] = torch.tensor(seq), 1
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            for j, i in enumerate(rows):
                # position t predicts token t + 1: the prompt's last one predicts the first response token
                start = len(prompts[i]) - 1
                out[i] = hidden[j, start : start + len(completions[i])].double().sum(0).cpu()
    model.train(was_training)
    return out


def pair_ches(
    model, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]], batch_size: int = 8
) -> dict[str, list[float]]:
    """CHES and LN-CHES of each pair (token ids as the trainer encodes them: trainers.tokens.encode)."""
    sums_c = hidden_sums(model, prompts, chosen, batch_size)
    sums_r = hidden_sums(model, prompts, rejected, batch_size)
    len_c = torch.tensor([len(c) for c in chosen], dtype=torch.float64)
    len_r = torch.tensor([len(r) for r in rejected], dtype=torch.float64)
    return {
        "ches": ches(sums_c, sums_r).tolist(),
        "ln_ches": ln_ches(sums_c, sums_r, len_c, len_r).tolist(),
    }


def top_fraction(scores: list[float], fraction: float) -> list[int]:
    """The indices of the floor(fraction * n) highest scores, ascending (ties: the earlier pair first): the
    pairs a CHES filter drops."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the fraction to drop must be at least 0 and below 1, got {fraction}")
    # the epsilon keeps 0.29 × 100 at 29 (floating point gives 28.999…)
    count = int(fraction * len(scores) + 1e-9)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:count])
