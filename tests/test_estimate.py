import pytest

from harness import compare, estimate

AVX2 = estimate.MEASURED["cpu AVX2"]
# the cpu preset as it was when AVX2 was measured
AT_50 = ["--gsm8k-eval", "50", "--math-eval", "50"]


def test_a_runs_work_counts_sampled_tokens_pair_epochs_and_evaluated_tokens():
    assert estimate.work(compare.parse(AT_50)) == estimate.WORK_50 == AVX2.work
    # 3 models × (25 × 256 GSM8K + 25 × 512 MATH + 300 × 128 arith + 50 × 64 TL;DR tokens)
    assert estimate.work(compare.parse([]))["eval"] == 3 * (25 * 256 + 25 * 512 + 300 * 128 + 50 * 64)
    assert estimate.work(compare.parse([])) == estimate.MEASURED["cpu AVX512 avx512_bf16"].work
    # 64 arith items × 4 samples × 128 tokens; 2 trainings × (64 − 16 held out) pairs × 4 epochs
    assert estimate.work(compare.parse([]))["pairs"] == 64 * 4 * 128
    assert estimate.work(compare.parse(["--init", "sft"]))["train"] == 3 * 48 * 4
    # a variant's own epochs; a preset that sets none (smoke): TrainConfig's 1
    assert estimate.work(compare.parse(["--methods", "dpo,spo:epochs=2"]))["train"] == 48 * 4 + 48 * 2
    smoke = compare.parse(["--preset", "smoke", "--seeds", "0,1"])
    assert smoke.epochs is None and estimate.work(smoke)["train"] == 4 * sum(
        max(n - smoke.heldout, 0) for n in smoke.pair_sizes.values() if n > 0
    )


def test_each_stage_scales_with_its_own_work_and_the_weights_size(tmp_path):
    measured = pytest.approx({"pairs": 191, "train": 972, "eval": 1438})
    assert estimate.stages(compare.parse(AT_50), AVX2) == measured
    two_seeds = estimate.stages(compare.parse([*AT_50, "--seeds", "0,1"]), AVX2)
    # twice the trainings; five models evaluated instead of three
    assert two_seeds == pytest.approx({"pairs": 191, "train": 2 * 972, "eval": 1438 * 5 / 3})
    capped = estimate.stages(compare.parse([*AT_50, "--max-tokens", "64", "--arith-pairs", "32"]), AVX2)
    # sampling: 32 items × k=4 × 64 tokens of 64 × 4 × 128; training: 16 pairs of 48; evaluation: caps 64
    assert capped == pytest.approx({"pairs": 191 / 4, "train": 972 / 3, "eval": 1438 * 450 * 64 / 80000})
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    default_bytes = estimate.weights_bytes("smollm2-135m-instruct")
    (half / "model.safetensors").write_bytes(b"\0" * (default_bytes // 2))
    a = compare.parse(AT_50)
    a.model = str(half)
    assert estimate.stages(a, AVX2)["train"] == pytest.approx(972 / 2, rel=1e-6)


def test_the_line_gives_the_estimate_on_a_measured_class_and_says_which_are_measured_elsewhere(monkeypatch):
    a = compare.parse([*AT_50, "--seeds", "0,1"])
    monkeypatch.setattr(estimate, "device_class", lambda: "cpu AVX2")
    text = estimate.line(a)
    total = 191 + 2 * 972 + 1438 * 5 / 3
    warm = 2 * 972 + 1438 * 4 / 3
    assert text.startswith(f"estimate: about {estimate.minutes(total)} on this machine class (cpu AVX2): ")
    assert f"about {estimate.minutes(warm)} with the pairs and the reference's evaluation cached" in text
    monkeypatch.setattr(estimate, "device_class", lambda: "cuda NVIDIA H100")
    text = estimate.line(a)
    assert text.startswith("estimate: none for this machine class (cuda NVIDIA H100); measured on cpu ")
    assert f"cpu AVX2, where the default run took {estimate.minutes(191 + 972 + 1438)}" in text
    assert "has not been timed on this machine class (cuda NVIDIA H100)" in compare.parser().description
    monkeypatch.setattr(estimate, "device_class", lambda: "cpu AVX2")
    assert f"(cpu AVX2) the default run took {estimate.minutes(2601)}" in compare.parser().description
