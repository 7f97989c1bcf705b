"""The evaluation stage's generation, as the cpu preset runs it for one policy, against this CPU's bound.

    python bench/eval_generation.py [--settings default,max_num_seqs=128,...] [--modes ...] [--dtype auto]

The work: every task's eval prompts at the preset's sizes and length caps (GSM8K 50 × 256 tokens, MATH-500
50 × 512, arith 300 × 128, TL;DR 50 × 64), 32 temperature-1 KL samples (128) and 16 greedy probe responses
(128; here the first 16 arith prompts stand in for the held-out pairs' prompts). It is generated in each
mode on the same vLLM engine, the prefix cache emptied before each: `per group`, one `generate` call per
group (how evaluation ran before), and `one call` for all groups (`generate_groups`, how it runs now).
Each engine setting (`compile=true`, as evaluation runs in bf16, or `vllm.LLM` arguments over
harness/generation.py's, e.g. `max_num_seqs=128`) runs in its own process; `default` is the eager
engine. The compute bound is 2·N FLOPs per generated token at the bf16 (fp32 where bf16 is not native)
matmul peak measured in this run; the share reported is tokens/s ÷ that bound, and beside it the share with
the prompts' prefill counted as the same work (2·N FLOPs per prompt token). Greedy outputs are compared
with the first setting's first mode (in bf16 a different batch composition may flip a near-tie token).
Prints a table and writes results/bench/eval_generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from training import matmul_peak  # bench/training.py
from transformers import AutoModelForCausalLM

from common import write_text
from harness import models
from harness.runinfo import machine, stage_env
from trainers.logprobs import resolve_dtype

MODES = ("per group", "one call")
ONE = """
import json, sys, time
from harness.evaluate import GREEDY_SAMPLING, KL_SAMPLING, EvalConfig, Evaluator
from harness.generation import VLLMGenerator
if __name__ == "__main__":
    path, dtype, engine, sizes, options, modes = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
    ev = Evaluator(EvalConfig(reference=path, tasks=tuple(sizes), sizes=sizes, options=options, judge="none"))
    groups = ev.task_groups() | {
        "kl samples": (ev.kl_prompts(), KL_SAMPLING),
        "probe greedy": (ev.prompts["arith"][:16], GREEDY_SAMPLING),
    }
    gen = VLLMGenerator(path, dtype, **engine)
    gen.generate(ev.prompts["arith"][:2], GREEDY_SAMPLING)  # warm-up, not timed
    prompt_tokens = sum(len(x) for ps, _ in groups.values() for x in ps)
    out = {"startup_seconds": gen.stats["startup_seconds"], "prompt_tokens": prompt_tokens}
    for mode in modes:
        # each mode prefills its prompts afresh (the cache would hand a later mode an earlier one's prompts)
        gen.llm.reset_prefix_cache()
        gen.stats.update(tokens=0, seconds=0.0)
        if mode == "per group":
            done = [gen.generate(p, s, desc=name) for name, (p, s) in groups.items()]
        else:
            done = gen.generate_groups(list(groups.values()), desc=mode)
        greedy = {n: [c[0].text for c in d] for n, d, (_, s) in zip(groups, done, groups.values())
                  if s.temperature == 0}
        out[mode] = {"tokens": gen.stats["tokens"], "seconds": gen.stats["seconds"], "greedy": greedy}
    print(json.dumps(out))
"""


def run(path: str, dtype: str, engine: dict, sizes: dict, options: dict, modes: list[str]) -> dict:
    args = [path, dtype, *(json.dumps(x) for x in (engine, sizes, options, modes))]
    proc = subprocess.run([sys.executable, "-c", ONE, *args], capture_output=True, text=True, env=stage_env())
    if proc.returncode:
        raise SystemExit(f"{engine or 'default'} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_setting(text: str) -> dict:
    """`default` → {}; `max_num_seqs=128+enforce_eager=False` → those arguments, values as JSON."""
    if text == "default":
        return {}
    pairs = (kv.split("=", 1) for kv in text.split("+"))
    return {k: json.loads(v.lower() if v in ("True", "False") else v) for k, v in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--settings",
        default="default,compile=true,max_num_seqs=128,max_num_seqs=512,max_num_batched_tokens=8192",
        help="comma-separated engine settings, each `default` or `arg=value[+arg=value]`",
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="per group: a generate call per group; one call: generate_groups, one call for all groups",
    )
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    ap.add_argument("--out", type=Path, default=Path("results/bench/eval_generation.json"))
    a = ap.parse_args()
    path, dtype = models.resolve_model(), resolve_dtype(a.dtype)
    # the cpu preset's evaluation (presets/cpu.yaml)
    sizes, options = {"gsm8k": 50, "math": 50, "arith": 300, "tldr": 50}, {"arith": {"level": 2}}
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # the best of three short measurements: one alone read 25 % low once on this shared machine
    peak = max(matmul_peak(getattr(torch, dtype), 2048, seconds=1.0) for _ in range(3))
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
    bound = peak * 1e9 / (2 * n_params)
    modes = a.modes.split(",")
    if not set(modes) <= set(MODES) or not modes:
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    results = {s: run(path, dtype, parse_setting(s), sizes, options, modes) for s in a.settings.split(",")}
    first = next(iter(results.values()))[modes[0]]["greedy"]
    print(
        f"cpu preset evaluation of one policy, {dtype}, SmolLM2-135M-Instruct ({n_params / 1e6:.0f}M); "
        f"matmul peak {peak:.0f} GFLOP/s → bound {bound:.0f} tokens/s"
    )
    print(
        f"{'engine setting':42} {'mode':9} {'start-up s':>10} {'tokens':>7} {'gen s':>7} {'tok/s':>7} "
        f"{'% bound':>7} {'+prompts':>8} {'same greedy':>11}"
    )
    for setting, r in results.items():
        for mode in modes:
            m = r[mode]
            m["tokens_per_second"] = m["tokens"] / m["seconds"]
            m["share_of_bound"] = m["tokens_per_second"] / bound
            # the prompts' prefill is matmul work too: 2·N FLOPs per prompt token
            m["share_of_bound_with_prompts"] = (m["tokens"] + r["prompt_tokens"]) / m["seconds"] / bound
            texts = [(x, y) for g, ys in m.pop("greedy").items() for x, y in zip(first[g], ys)]
            m["same_greedy"] = [sum(x == y for x, y in texts), len(texts)]
            print(
                f"{setting:42} {mode:9} {r['startup_seconds']:10.1f} {m['tokens']:7d} {m['seconds']:7.1f} "
                f"{m['tokens_per_second']:7.1f} {100 * m['share_of_bound']:7.1f} "
                f"{100 * m['share_of_bound_with_prompts']:8.1f} "
                f"{'/'.join(map(str, m['same_greedy'])):>11}"
            )
    report = {
        "dtype": dtype,
        "sizes": sizes,
        "matmul_peak_gflops": peak,
        "parameters": n_params,
        "bound_tokens_per_second": bound,
        "machine": machine(stage_env()),
        "results": results,
    }
    write_text(a.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
