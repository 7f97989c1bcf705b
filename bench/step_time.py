"""Step time of DPO, SPO (reference anchor) and SPO (lookahead anchor) on the default model, same
batch, measured in one run.

    python bench/step_time.py [--pairs outputs/pairs/gsm8k.jsonl] [--pairs-per-step 8] [--repeats 3]

Each method trains from the same initial weights on the same pairs; the first step of each is a
warm-up and is not timed. Prints a table and writes results/bench/step_time.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness import models
from tasks.data import write_jsonl, write_text_atomic
from trainers.pairfile import read_pairs
from trainers.trainer import TrainConfig, Trainer

VARIANTS = [("dpo", "dpo", "reference"), ("spo (reference)", "spo", "reference"), ("spo (lookahead)", "spo", "lookahead")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="outputs/pairs/gsm8k.jsonl", help="pairs JSONL (default: the compare run's GSM8K pairs)")
    ap.add_argument("--pairs-per-step", type=int, default=8)
    ap.add_argument("--micro-pairs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per method, after one warm-up step")
    ap.add_argument("--out", type=Path, default=Path("results/bench/step_time.json"))
    a = ap.parse_args()
    path = models.resolve_model()
    tok = AutoTokenizer.from_pretrained(path)
    rows = read_pairs(a.pairs)[: a.pairs_per_step]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        write_jsonl(pairs, rows)  # one batch; one epoch per step: the same pairs every step
        for label, method, anchor in VARIANTS:
            cfg = TrainConfig(model=path, pairs=str(pairs), output_dir=f"{tmp}/{method}-{anchor}", method=method, spo_anchor=anchor,
                              batch_pairs=a.pairs_per_step, micro_pairs=a.micro_pairs, epochs=a.repeats + 1, ref_cache=tmp, seed=0)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
            trainer = Trainer(cfg, model, tok)
            trainer.train()
            steps = [json.loads(line) for line in open(Path(cfg.output_dir) / "metrics.jsonl")]
            times = [r["step_seconds"] for r in steps[1:]]
            results[label] = {"seconds_per_step": statistics.median(times), "all": times, "loss_first_step": steps[0]["loss"]}
    base = results["dpo"]["seconds_per_step"]
    print(f"\n{'method':<18}{'s/step (median)':>16}{'× dpo':>8}")
    for label, r in results.items():
        print(f"{label:<18}{r['seconds_per_step']:>16.2f}{r['seconds_per_step'] / base:>8.2f}")
    meta = {"pairs_per_step": a.pairs_per_step, "micro_pairs": a.micro_pairs, "bf16": trainer.bf16, "model": models.DEFAULT_MODEL,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    write_text_atomic(a.out, json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
