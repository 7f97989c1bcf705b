"""The log-prob scorer of this checkout against the one of an earlier revision, side by side in one process,
on the pairs `compare` trained on: what a change to `trainers/logprobs.py` (e.g. padding-free rows) does to
real work.

    LD_PRELOAD=$(python -m harness.runinfo) python bench/packing.py --before f021e75 [--bf16] \\
        [--pairs F.jsonl ...]

Pairs: by default every pair file in compare's cache (~/.cache/spo-harness/pairs, written by `make run`),
shuffled with seed 0, as the trainer sees them: mixed tasks, so mixed lengths. Two workloads, each timed for
both scorers in turn (alternating which goes first), `--rounds` times, after a warm-up step of each: training
(fwd+bwd of the DPO loss, 8 pairs per step in micro-batches of 4 sorted by length, as the trainer does;
--steps steps) and scoring without gradients (reference log-probs: `score_pairs`, 4 pairs per batch, in file
order). Also checks that both scorers give the same log-probs. Writes results/bench/packing.json
(packing_bf16.json with --bf16).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import read_jsonl, write_json
from harness import models
from harness.runinfo import machine
from tasks.data import cache_dir
from trainers import logprobs
from trainers.logprobs import autocast
from trainers.tokens import encode

ROOT = Path(__file__).resolve().parents[1]
CACHE = cache_dir() / "pairs"  # where harness.pairs caches them


def scorer_at(rev: str, tmp: str):
    """`trainers/logprobs.py` as it was at `rev`, imported as its own module."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:trainers/logprobs.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tmp) / f"logprobs_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_seconds(scorer, model, pairs: list[tuple], steps: int, bf16: bool) -> float:
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        batch = sorted(pairs[s * 8 : (s + 1) * 8], key=lambda p: sum(map(len, p)))
        for m in range(0, len(batch), 4):
            prompts, chosen, rejected = (list(c) for c in zip(*batch[m : m + 4]))
            with autocast(bf16):
                pc, pr = scorer.pair_logps(model, prompts, chosen, rejected)
                loss = -F.logsigmoid(0.1 * (pc.total - pr.total)).mean()
            loss.backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def score_seconds(scorer, model, pairs: list[tuple], bf16: bool) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    pc, pr = scorer.score_pairs(model, *(list(c) for c in zip(*pairs)), batch_size=4, bf16=bf16)
    return time.perf_counter() - t0, torch.cat([pc.total, pr.total])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--before", required=True, help="git revision whose trainers/logprobs.py is the 'before' scorer"
    )
    ap.add_argument("--pairs", type=Path, nargs="*", help="pair files (default: compare's cache)")
    ap.add_argument("--steps", type=int, default=4, help="training steps of 8 pairs per round")
    ap.add_argument("--score", type=int, default=48, help="pairs scored without gradients per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument(
        "--out", type=Path, help="default: results/bench/packing.json, packing_bf16.json with --bf16"
    )
    a = ap.parse_args()
    a.out = a.out or Path(f"results/bench/packing{'_bf16' if a.bf16 else ''}.json")
    files = a.pairs or sorted(CACHE.glob("*.jsonl"))
    if not files:
        sys.exit(f"no pair files in {CACHE}: run `make run` once (or pass --pairs)")
    path = models.resolve_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    rows = [row for f in files for row in read_jsonl(f)]
    random.Random(0).shuffle(rows)
    pairs = [
        (p, c, r)
        for (p, c), (_, r) in (
            (encode(tok, x["prompt"], x["chosen"]), encode(tok, x["prompt"], x["rejected"])) for x in rows
        )
    ]
    if len(pairs) < max(8 * a.steps, a.score):
        sys.exit(
            f"{len(pairs)} pairs in {', '.join(map(str, files))}: "
            f"need {max(8 * a.steps, a.score)} (lower --steps/--score)"
        )
    lengths = sorted(sum(map(len, p)) for p in pairs)
    with tempfile.TemporaryDirectory() as tmp:
        scorers = {f"before ({a.before})": scorer_at(a.before, tmp), "this checkout": logprobs}
        for scorer in scorers.values():  # warm-up
            train_seconds(scorer, model, pairs, 1, a.bf16)
        times = {name: {"train": [], "score": []} for name in scorers}
        values = {}
        for r in range(a.rounds):
            # each goes first in every other round
            for name, scorer in list(scorers.items())[:: 1 if r % 2 == 0 else -1]:
                times[name]["train"].append(train_seconds(scorer, model, pairs, a.steps, a.bf16))
                seconds, values[name] = score_seconds(scorer, model, pairs[: a.score], a.bf16)
                times[name]["score"].append(seconds)
    (b, bt), (n, nt) = times.items()
    diff = (values[b] - values[n]).abs().max().item()
    print(
        f"\n{len(pairs)} pairs from {len(files)} files, prompt+chosen+rejected tokens min {lengths[0]}, "
        f"median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}; {'bf16' if a.bf16 else 'fp32'}; median of {a.rounds} rounds"
    )
    print(f"{'scorer':<28}{f'train {a.steps} steps s':>22}{f'score {a.score} pairs s':>22}")
    for name, t in times.items():
        print(f"{name:<28}{statistics.median(t['train']):>22.2f}{statistics.median(t['score']):>22.2f}")
    ratio = {k: statistics.median(bt[k]) / statistics.median(nt[k]) for k in ("train", "score")}
    print(
        f"this checkout: {ratio['train']:.2f}× as fast training, {ratio['score']:.2f}× scoring; "
        f"largest log-prob difference {diff:.2e}"
    )
    meta = {
        "before": a.before,
        "files": [str(f) for f in files],
        "pairs": len(pairs),
        "bf16": a.bf16,
        "steps": a.steps,
        "scored": a.score,
        "rounds": a.rounds,
        "threads": torch.get_num_threads(),
        "machine": machine(),
    }
    write_json(
        a.out,
        {"meta": meta, "seconds": times, "speedup": ratio, "max_logp_diff": diff},
        trailing_newline=True,
    )


if __name__ == "__main__":
    main()
