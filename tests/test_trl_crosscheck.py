"""Our dpo and ipo against TRL's DPOTrainer loss code on the same per-token log-probs.

Runs only where `trl` is importable (it is in the `dev` extra); nothing is installed at run time.
TRL ≥ 1.x has no standalone loss function: the loss sits in `DPOTrainer._compute_loss`, after its
model forward, so the test feeds that method a stand-in forward output carrying fixed log-probs.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from trainers.losses import LossParams, SeqLogps, preference_loss

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer", reason="trl not installed")


def trl_loss(loss_type: str, beta: float, per_token: torch.Tensor, mask: torch.Tensor, ref_c, ref_r) -> float:
    """DPOTrainer._compute_loss on a batch [chosen; rejected] whose model output is `per_token`."""
    b, length = mask.shape
    outputs = SimpleNamespace(
        log_probs=per_token * mask[:, 1:],
        entropy=torch.zeros(b, length - 1),
        mean_logits=torch.zeros(b, length - 1),
        is_top1=torch.zeros(b, length - 1, dtype=torch.bool),
    )
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(b, length, dtype=torch.long),
        "attention_mask": mask,
        "completion_mask": mask,
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
    }
    return trl_dpo.DPOTrainer._compute_loss(fake_self, lambda **kw: outputs, inputs, False).item()


@pytest.mark.parametrize("method, loss_type", [("dpo", "sigmoid"), ("ipo", "ipo")])
def test_dpo_and_ipo_match_trl(method, loss_type):
    torch.manual_seed(0)
    pairs, length, beta = 6, 12, 0.1
    lengths = torch.randint(3, length, (2 * pairs,))
    # completion at the end of each row
    mask = (torch.arange(length)[None, :] >= length - lengths[:, None]).long()
    per_token = -torch.rand(2 * pairs, length - 1, dtype=torch.float64) * 3
    sums = (per_token * mask[:, 1:]).sum(1)
    counts = mask[:, 1:].sum(1).double()
    ref = sums + torch.randn(2 * pairs, dtype=torch.float64)
    ours, _ = preference_loss(
        method,
        SeqLogps(sums[:pairs], counts[:pairs]),
        SeqLogps(sums[pairs:], counts[pairs:]),
        SeqLogps(ref[:pairs], counts[:pairs]),
        SeqLogps(ref[pairs:], counts[pairs:]),
        LossParams(beta=beta),
    )
    theirs = trl_loss(loss_type, beta, per_token, mask, ref[:pairs], ref[pairs:])
    assert ours.item() == pytest.approx(theirs, rel=1e-9)
