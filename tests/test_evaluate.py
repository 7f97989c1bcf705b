import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from harness.evaluate import shift
from harness.generation import Completion
from trainers.logprobs import encode, sequence_logps

HELDOUT = [{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"},
           {"prompt": "plain prompt", "chosen": "yes indeed", "rejected": "no"}]


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with different random weights: a 'policy' that moved away from the reference."""
    torch.manual_seed(1)
    model = LlamaForCausalLM(AutoModelForCausalLM.from_pretrained(tiny_model_dir).config)
    path = tmp_path_factory.mktemp("other") / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


def test_shift_is_zero_for_a_copy_of_the_reference(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    samples = [Completion("ab", [300, 301], True), Completion("cd", [302, 303, 304], False)]
    out = shift(str(copy), tiny_model_dir, HELDOUT, ["p1", "p2"], samples)
    assert (out["dlogp_chosen"], out["dlogp_rejected"], out["kl"]) == (0.0, 0.0, 0.0)
    assert (out["heldout_pairs"], out["kl_samples"], out["kl_finished_share"]) == (2, 2, 0.5)


def test_shift_matches_a_direct_computation(tiny_model_dir, other_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    samples = [Completion("ab", [300, 301], True), Completion("cd", [302, 303, 304], False)]
    out = shift(other_model_dir, tiny_model_dir, HELDOUT, ["p1", "p2"], samples)
    pol, ref = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (other_model_dir, tiny_model_dir))

    def mean_delta(field):
        enc = [encode(tok, p["prompt"], p[field]) for p in HELDOUT]
        with torch.no_grad():
            a, b = (sequence_logps(m, [e[0] for e in enc], [e[1] for e in enc]) for m in (pol, ref))
        return (a.mean - b.mean).mean().item()

    # the finished sample is scored with its end-of-turn token, the cut one without
    prompts = [tok("p1", add_special_tokens=False)["input_ids"], tok("p2", add_special_tokens=False)["input_ids"]]
    completions = [[300, 301, tok.eos_token_id], [302, 303, 304]]
    with torch.no_grad():
        kl = (sequence_logps(pol, prompts, completions).total - sequence_logps(ref, prompts, completions).total).mean().item()
    assert out["dlogp_chosen"] == pytest.approx(mean_delta("chosen"), abs=1e-5)
    assert out["dlogp_rejected"] == pytest.approx(mean_delta("rejected"), abs=1e-5)
    assert out["kl"] == pytest.approx(kl, abs=1e-4) and out["kl"] != 0.0
