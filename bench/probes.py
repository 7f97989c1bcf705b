"""One training probe (trainers.probes) on the default model, part by part: the four fixed kinds scored
one kind at a time (how probes scored up to de74983) and all four with the prompt encoded once
(`ProbeSet.score_fixed` through `trainers.logprobs.score_shared`), side by side in one process, then the
greedy responses (HF `generate`) decoded from the fp32 weights (up to de74983), from a bf16 copy with SDPA at
every decode step (up to 65c53c3) and from a bf16 copy with each decode step's attention computed directly in
fp32 (`trainers.logprobs.decoding`, the trainer's choice where bf16 is native), in turn, and their scoring
under the policy and a frozen copy.
Scoring is fp32 at the trainer's batch of 4 prompts, as the cpu preset's probes run.

    LD_PRELOAD=$(python -m harness.runinfo) python bench/probes.py [--pairs F.jsonl ...] [--heldout 16]

Held-out pairs: the last --heldout pairs of the given files (default: every file in compare's pair cache),
as many as `make run` probes. Writes results/bench/probes.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import read_jsonl, write_json
from harness import models
from harness.runinfo import machine
from tasks.data import cache_dir
from trainers import probes
from trainers.probes import FIXED, ProbeSet

CACHE = cache_dir() / "pairs"  # where harness.pairs caches them


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def decode_greedy(probe: ProbeSet, model, bf16: bool, direct: bool) -> list[list[int]]:
    """`probe.greedy`, with `decoding` switched off when not `direct` (SDPA at every decode step)."""
    if direct:
        return probe.greedy(model, bf16=bf16)
    with mock.patch.object(probes, "decoding", lambda model: nullcontext()):
        return probe.greedy(model, bf16=bf16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, nargs="*", help="pair files (default: compare's cache)")
    ap.add_argument("--heldout", type=int, default=16, help="probe pairs: the last N of the files")
    ap.add_argument("--batch", type=int, default=4, help="prompts per forward (the trainer's micro_pairs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/bench/probes.json"))
    a = ap.parse_args()
    files = a.pairs or sorted(CACHE.glob("*.jsonl"))
    if not files:
        sys.exit(f"no pair files in {CACHE}: run `make run` once (or pass --pairs)")
    pairs = [row for f in files for row in read_jsonl(f)][-a.heldout :]
    path = models.resolve_model()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    probe = ProbeSet(tok, pairs)
    probe.score_fixed(model, a.batch)  # warm-up
    ways = {
        "one kind at a time": lambda: {k: probe.score(model, probe.responses[k], a.batch) for k in FIXED},
        "prompt once (score_fixed)": lambda: probe.score_fixed(model, a.batch),
    }
    times, values = {name: [] for name in ways}, {}
    for r in range(a.rounds):
        # each goes first in every other round
        for name, fn in list(ways.items())[:: 1 if r % 2 == 0 else -1]:
            seconds, values[name] = timed(fn)
            times[name].append(seconds)
    (before, b), (after, n) = values.items()
    diff = max((b[k].total - n[k].total).abs().nan_to_num().max().item() for k in FIXED)
    # (bf16 copy, each decode step's attention computed directly): the last is how the trainer probes
    decoders = {"fp32 weights": (False, True), "bf16, SDPA": (True, False), "bf16, direct": (True, True)}
    greedy_times, greedy = {name: [] for name in decoders}, {}
    for r in range(a.rounds):
        for name, (bf16, direct) in list(decoders.items())[:: 1 if r % 2 == 0 else -1]:
            seconds, greedy[name] = timed(
                lambda bf16=bf16, direct=direct: decode_greedy(probe, model, bf16, direct)
            )
            greedy_times[name].append(seconds)
    decode = {name: statistics.median(t) for name, t in greedy_times.items()}
    # agreement with the fp32 weights' greedy text (`decoding` leaves it unchanged: tests/test_logprobs.py)
    same = {
        name: sum(x == y for x, y in zip(greedy["fp32 weights"], g, strict=True))
        for name, g in greedy.items()
    }
    greedy = greedy["bf16, direct"]
    frozen = copy.deepcopy(model).eval()
    scoring_s, _ = timed(lambda: (probe.score(model, greedy, a.batch), probe.score(frozen, greedy, a.batch)))
    tokens = {
        "prompt": sum(map(len, probe.prompts)),
        **{k: sum(len(r) for r in probe.responses[k] if r) for k in FIXED},
        "greedy": sum(map(len, greedy)),
    }
    fixed = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{probe.n} probe pairs from {len(files)} files; tokens {tokens}; fp32, batch {a.batch}")
    for name, seconds in fixed.items():
        print(f"fixed kinds, {name:<28}{seconds:>8.2f} s  (median of {a.rounds})")
    print(f"prompt once: {fixed[before] / fixed[after]:.2f}× as fast; max |Δ summed log-prob| {diff:.2e}")
    for name, seconds in decode.items():
        print(f"greedy responses (HF generate), {name:<16}{seconds:>10.2f} s  (median of {a.rounds})")
    for name in decoders:
        speed = decode["fp32 weights"] / decode[name]
        print(f"{name}: {speed:.2f}× the fp32 weights' speed; same text as theirs {same[name]}/{probe.n}")
    print(f"greedy scored, policy and frozen copy{scoring_s:>19.2f} s")
    print(f"one probe step at 65c53c3 (bf16, SDPA){fixed[after] + decode['bf16, SDPA'] + scoring_s:>18.2f} s")
    print(f"one probe step now (bf16, direct){fixed[after] + decode['bf16, direct'] + scoring_s:>23.2f} s")
    write_json(
        a.out,
        {
            "meta": {
                "machine": machine(),
                "files": list(map(str, files)),
                "pairs": probe.n,
                "batch": a.batch,
            },
            "tokens": tokens,
            "fixed_seconds": times,
            "fixed_median_seconds": fixed,
            "speedup": fixed[before] / fixed[after],
            "max_abs_diff": diff,
            "greedy_seconds": greedy_times,
            "greedy_median_seconds": decode,
            "greedy_same_text": same,
            "greedy_scoring_seconds": scoring_s,
        },
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
