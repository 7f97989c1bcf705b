"""The whole path on the real default model at toy sizes: pairs → dpo & spo × 2 seeds → eval → leaderboard."""
import json
import math
import os
import subprocess
import sys


def test_compare_end_to_end_on_the_default_model(tmp_path, default_model_path):
    cache = tmp_path / "cache"  # fresh pair cache; the provisioned model is shared
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "smollm2-135m-instruct").symlink_to(default_model_path)
    cmd = [sys.executable, "-m", "harness.compare", "--methods", "dpo,spo", "--seeds", "0,1", "--gsm8k-pairs", "6", "--tldr-pairs", "4", "--heldout", "2",
           "--gsm8k-eval", "4", "--math-eval", "2", "--tldr-eval", "3", "--kl-prompts", "4", "--batch-pairs", "4", "--micro-pairs", "4",
           "--results", str(tmp_path / "results"), "--outputs", str(tmp_path / "outputs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SPO_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads((tmp_path / "results" / "leaderboard.json").read_text())
    rows = {r["model"]: r for r in board["rows"]}
    names = ["dpo-seed0", "dpo-seed1", "spo-seed0", "spo-seed1"]
    assert list(rows) == ["reference", *names]
    for name in names:
        r = rows[name]
        for key in ("gsm8k_accuracy", "tldr_rougeL", "dlogp_chosen", "dlogp_rejected", "kl", "train_seconds"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (name, key)
        assert (r["gsm8k_n"], r["math_n"], r["tldr_n"], r["heldout_pairs"], r["kl_samples"], r["train_steps"]) == (4, 2, 3, 4, 4, 2)
        assert r["judge_vs_reference_n"] == 3 and 0 <= r["judge_vs_reference"] <= 100 and r["judge"].startswith("embedding")
        assert r["dlogp_chosen"] != 0.0  # the policy moved away from the reference
        assert (tmp_path / "outputs" / name / "checkpoint" / "model.safetensors").is_file()
    assert rows["reference"]["train_seconds"] is None
    assert rows["dpo-seed0"]["dlogp_chosen"] != rows["dpo-seed1"]["dlogp_chosen"]  # another seed, another data order
    paired = {(p["method"], p["vs"]): p for p in board["paired"]}
    assert set(paired) == {("dpo", "reference"), ("spo", "reference"), ("spo", "dpo")} and paired[("spo", "dpo")]["seeds"] == 2
    assert paired[("spo", "reference")]["tasks"]["gsm8k"]["n"] == 4 and paired[("spo", "reference")]["tasks"]["tldr"]["n"] == 3
    ev = json.loads((tmp_path / "results" / "runs" / "spo-seed0" / "eval.json").read_text())
    assert ev["generation"]["startup_seconds"] == 0 and ev["generation"]["load_seconds"] > 0  # one engine for all five models
    assert (tmp_path / "results" / "report.html").stat().st_size > 1000
    md = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "| spo-seed0 |" in md and "- command: `python -m harness.compare --methods dpo,spo" in md and "cores" in md
    # the pairs both methods trained on: sampled now (not from a cache), graded, split
    pairs = [json.loads(line) for line in open(tmp_path / "outputs" / "train_pairs.jsonl")]
    assert len(pairs) == 6 and {p["task"] for p in pairs} == {"gsm8k", "tldr"}
    report = json.loads((tmp_path / "outputs" / "pairs" / "report.json").read_text())
    assert [r["pairs"] for r in report] == [6, 4] and not any("cached" in r for r in report)
    assert len(list((cache / "pairs").glob("*.jsonl"))) == 2
