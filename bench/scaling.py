"""How a DPO training step's cost grows with model size, sequence length and pairs per step, measured here on
randomly initialised Llamas of the SmolLM2 shape (vocabulary 49,152, tied embeddings) at four sizes up to the
default model's own (135M).

    python bench/scaling.py [--repeats 3]

A step is what the trainer does per micro-batch: `pair_logps` (prompt once, chosen and rejected, one
padding-free row), the DPO loss against fixed reference log-probs, backward, AdamW. fp32, the machine's
threads. Prints three tables (size, length, pairs) and writes results/bench/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from common import write_text
from harness.runinfo import machine
from trainers.logprobs import pair_logps
from trainers.losses import SeqLogps, dpo

SIZES = {  # hidden, layers, intermediate, heads, kv heads
    "xs": (64, 2, 256, 4, 2),
    "s": (128, 4, 512, 4, 2),
    "m": (256, 8, 1024, 4, 2),
    "135m": (576, 30, 1536, 9, 3),
}


def model_of(size: str) -> LlamaForCausalLM:
    h, n, i, heads, kv = SIZES[size]
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=49152,
            hidden_size=h,
            num_hidden_layers=n,
            intermediate_size=i,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    )


def step_seconds(model, pairs: int, prompt: int, completion: int, repeats: int) -> float:
    """Median seconds of one step on `pairs` pairs of prompt + 2 completions of the given lengths
    (one warm-up)."""
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 49152, (n,), generator=g).tolist()  # noqa: E731
    prompts, chosen, rejected = (
        [ids(prompt) for _ in range(pairs)],
        [ids(completion) for _ in range(pairs)],
        [ids(completion) for _ in range(pairs)],
    )
    ref = SeqLogps(torch.full((pairs,), -100.0), torch.full((pairs,), float(completion)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        pc, pr = pair_logps(model, prompts, chosen, rejected)
        dpo(pc, pr, ref, ref, 0.1)[0].mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/bench/scaling.json"))
    a = ap.parse_args()
    rows = []

    def measure(size: str, pairs: int, prompt: int, completion: int, table: str) -> None:
        model = model_of(size)
        params = sum(p.numel() for p in model.parameters())
        s = step_seconds(model, pairs, prompt, completion, a.repeats)
        tokens = pairs * 2 * (prompt + completion)
        rows.append(
            {
                "table": table,
                "size": size,
                "parameters": params,
                "pairs": pairs,
                "prompt": prompt,
                "completion": completion,
                "seconds": s,
                "tokens_per_second": tokens / s,
                "gflops_6n": 6 * params * tokens / s / 1e9,
            }
        )
        r = rows[-1]
        print(
            f"{table:<7}{size:>6}{params / 1e6:>9.1f}M{pairs:>6}{prompt:>7}{completion:>7}{s:>9.3f}"
            f"{r['tokens_per_second']:>9.0f}{r['gflops_6n']:>9.1f}",
            flush=True,
        )

    print(
        f"{'table':<7}{'size':>6}{'params':>10}{'pairs':>6}{'prompt':>7}{'compl':>7}{'s/step':>9}{'tok/s':>9}{'GFLOP/s':>9}"
    )
    for size in SIZES:
        measure(size, 4, 64, 128, "size")
    for completion in (64, 128, 256, 512):
        measure("m", 4, 64, completion, "length")
    for pairs in (1, 2, 4, 8):
        measure("m", pairs, 64, 128, "pairs")
    write_text(
        a.out,
        json.dumps(
            {
                "meta": {"threads": torch.get_num_threads(), "machine": machine(), "dtype": "float32"},
                "rows": rows,
            },
            indent=2,
        )
        + "\n",
    )


if __name__ == "__main__":
    main()
