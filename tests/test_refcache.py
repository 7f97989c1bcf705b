import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness import evaluate as ev
from harness import refcache
from harness.evaluate import EvalConfig, Evaluator, evaluate

HELDOUT = [
    {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"},
    {"prompt": "plain prompt", "chosen": "yes indeed", "rejected": "no"},
]
TRAIN = [{"prompt": "3+3?", "chosen": "6", "rejected": "7"}]


@pytest.fixture
def config(tmp_path, monkeypatch) -> EvalConfig:
    monkeypatch.setenv("SPO_CACHE_DIR", str(tmp_path / "cache"))
    return EvalConfig(
        sizes={"arith": 3, "tldr": 2},
        tasks=("arith", "tldr"),
        kl_prompts=2,
        heldout=HELDOUT,
        train_pairs=TRAIN,
        backend="hf",
        dtype="float32",
        judge="rouge",
        max_tokens=6,
        reuse_reference=True,
    )


def test_a_second_evaluation_of_the_reference_reads_the_first_and_its_policies_match(
    tiny_model_dir, tmp_path, config
):
    """The second call's reference is copied from the cache (no engine started for it), and its policy,
    judged against the cached reference summaries, scores exactly as in the first call."""
    import torch
    from transformers import AutoModelForCausalLM

    policy = tmp_path / "policy"
    shutil.copytree(tiny_model_dir, policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5 * p.std())
    model.save_pretrained(policy)
    first = evaluate([tiny_model_dir, str(policy)], [tmp_path / "r1", tmp_path / "p1"], config)
    second_cfg = replace(config, reference_run=str(tmp_path / "elsewhere"), run_key="another compare")
    second = evaluate([tiny_model_dir, str(policy)], [tmp_path / "r2", tmp_path / "p2"], second_cfg)
    assert first[0]["reference_cache"]["hit"] is False and second[0]["reference_cache"]["hit"] is True
    for name in ("samples.jsonl", "ches.jsonl"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()
    saved = json.loads((tmp_path / "r2" / "eval.json").read_text())
    # the settings are this call's; the measurements the first call's
    assert saved["config"]["run_key"] == "another compare" and saved["arith"] == first[0]["arith"]
    # the engine started for the policy: the cached reference needed none
    assert second[1]["generation"]["startup_seconds"] > 0 and not second[1]["generation"]["engine_reused"]
    assert (
        second[1]["tldr"]["judge"] == first[1]["tldr"]["judge"] and "reference" in first[1]["tldr"]["judge"]
    )
    assert second[1]["shift"] == first[1]["shift"]


def test_every_part_of_the_key_misses_when_it_changes_and_this_calls_paths_do_not(
    tiny_model_dir, tmp_path, config, monkeypatch
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)

    def key(cfg: EvalConfig = config, change=None) -> str:
        evaluator = Evaluator(replace(cfg, reference=str(model)))
        if change:
            change(evaluator)
        return evaluator.reference_key(str(model))

    base = key()
    assert key(replace(config, reference_run="other/run", run_key="x")) == base
    misses = {
        "held-out pairs": key(replace(config, heldout=HELDOUT[:1])),
        "training pairs": key(replace(config, train_pairs=[])),
        "sizes": key(replace(config, sizes={"arith": 2, "tldr": 2})),
        "task options": key(replace(config, options={"arith": {"level": 3}})),
        "KL prompts": key(replace(config, kl_prompts=3)),
        "length cap": key(replace(config, max_tokens=7)),
        "judge": key(replace(config, judge="none")),
        "seed": key(replace(config, seed=1)),
        "backend": key(replace(config, backend="vllm")),
        "dtype": key(replace(config, dtype="bfloat16")),
        "prompt token ids": key(change=lambda e: e.prompts["arith"][0].append(7)),
    }
    stat = (model / "model.safetensors").stat()
    os.utime(model / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    misses["weights"] = key()
    monkeypatch.setattr(ev, "versions", lambda: {"torch": "0"})
    misses["libraries"] = key()
    monkeypatch.setattr(ev, "device_class", lambda: "cuda NVIDIA H100")
    misses["machine class"] = key()
    monkeypatch.setattr(refcache, "code_digest", lambda: "0" * 64)
    misses["code"] = key()
    assert [name for name, k in misses.items() if k == base] == []
    assert len(set(misses.values())) == len(misses)


def test_the_code_digest_covers_every_harness_file_and_nothing_else(tmp_path):
    for rel in ("common.py", "tasks/t.py", "harness/h.py", "trainers/deep/x.py", "bench/b.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("a = 1\n")
    base = refcache.code_digest(tmp_path)
    (tmp_path / "bench/b.py").write_text("a = 2\n")
    assert refcache.code_digest.__wrapped__(tmp_path) == base
    changed = []
    for rel in ("common.py", "tasks/t.py", "harness/h.py", "trainers/deep/x.py"):
        (tmp_path / rel).write_text("a = 2\n")
        changed.append(refcache.code_digest.__wrapped__(tmp_path))
    assert base not in changed and len(set(changed)) == 4


def test_the_cli_reuses_the_default_models_reference_evaluation(default_model_path, tmp_path):
    """On the real default model: the second `harness.evaluate --reuse-reference` copies the first's files
    and says where from."""

    def run(out: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "harness.evaluate", "--model", default_model_path, "--out", str(out)]
        cmd += ["--tasks", "arith", "--arith", "4", "--max-tokens", "24", "--backend", "hf", "--dtype"]
        cmd += ["float32", "--kl-prompts", "0", "--judge", "none", "--reuse-reference"]
        env = {**os.environ, "SPO_CACHE_DIR": str(tmp_path / "cache")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    run(tmp_path / "a")
    second = run(tmp_path / "b")
    key = json.loads((tmp_path / "b" / "eval.json").read_text())["reference_cache"]["key"]
    assert f"evaluation reused from {tmp_path / 'cache' / 'reference-evals' / key}" in second.stderr
    outputs = [[json.loads(x)["output"] for x in open(tmp_path / o / "samples.jsonl")] for o in "ab"]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4 and any(outputs[0])
