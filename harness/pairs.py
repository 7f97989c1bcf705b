"""Build preference pairs by sampling the reference model on training items, cached on disk.

GSM8K: k samples per train question, graded (tasks.gsm8k.make_pair). arith: k samples per
generated train problem, chosen and rejected both sampled (tasks.arith.make_pair; gold-chosen only
with --arith-gold-chosen). TL;DR: one sample per training post (tasks.tldr.make_pair). Training
items never overlap the evaluation items: GSM8K evaluates on its test split, arith on its test split
(split by a hash of the equation), TL;DR on the first posts (tasks.tldr.split).

    python -m harness.pairs --gsm8k 64 --arith 128 --tldr 32 --k 2 --out DIR   # DIR/<task>.jsonl
"""
from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from harness import models
from harness.generation import BACKENDS, DTYPES, Generator, Sampling, chat_prompts, make_generator
from tasks import arith, gsm8k, tldr
from common import fingerprint, read_jsonl, run_main, write_json, write_jsonl
from tasks.data import cache_dir
from trainers.logprobs import resolve_dtype

TASKS = ("gsm8k", "arith", "tldr")
REASONING = ("gsm8k", "arith")  # k graded samples per question


def sampling_for(task: str, k: int, seed: int, max_tokens: int | None = None) -> Sampling:
    length = {"gsm8k": 256, "arith": 128}.get(task, 64)
    return Sampling(max_tokens=min(length, max_tokens or length), temperature=1.0, n=k if task in REASONING else 1, seed=seed)


def build(path: str, task: str, n: int, k: int, seed: int, backend: str, generator: Callable[[], Generator],
          max_tokens: int | None = None, arith_level: int = arith.DEFAULT_LEVEL, gold_chosen: bool = False, dtype: str = "auto") -> tuple[list[dict], dict]:
    """(pairs, report): up to n pairs from the first n training items; items that give no pair
    (e.g. every GSM8K sample correct, or no arith sample correct) are counted in the report, not
    padded. `generator()` is called only when the pairs are not cached yet. The cache key covers
    the model weights, the templated prompts, k, seed, backend, precision, sampling settings and options."""
    from transformers import AutoTokenizer

    if task == "gsm8k":
        items = gsm8k.load("train")[:n]
        convs = [gsm8k.prompt(r["question"]) for r in items]
    elif task == "arith":
        items = arith.load("train", n, arith_level)
        convs = [arith.prompt(r["question"]) for r in items]
    elif task == "tldr":
        items = tldr.split(tldr.load())[1][:n]
        convs = [tldr.prompt(r) for r in items]
    else:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    prompts = chat_prompts(AutoTokenizer.from_pretrained(path), convs)
    sampling = sampling_for(task, k, seed, max_tokens)
    key = json.dumps([fingerprint(path), task, k, seed, backend, resolve_dtype(dtype), sampling.record(), prompts, gold_chosen])
    cached = cache_dir() / "pairs" / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
    report_file = cached.with_suffix(".report.json")
    if cached.is_file() and report_file.is_file():
        return read_jsonl(cached), {**json.loads(report_file.read_text()), "cached": str(cached)}
    gen = generator()
    samples = gen.generate(prompts, sampling, desc=f"pairs {task}")
    rows = []
    for i, (item, s) in enumerate(zip(items, samples)):
        texts = [c.text for c in s]
        pair = (gsm8k.make_pair(item, texts) if task == "gsm8k" else arith.make_pair(item, texts, gold_chosen) if task == "arith"
                else tldr.make_pair(item, texts[0]))
        if pair:
            rows.append({"id": item.get("id") or f"{task}-{item.get('instruction_id', i)}", "task": task, **pair})
    graded = [[arith.is_correct(c.text, arith.gold_answer(it["answer"])) for c in s] for it, s in zip(items, samples)] if task == "arith" else []
    report = {"task": task, "items": n, "pairs": len(rows), "no_pair": n - len(rows),
              **({"level": arith_level, "all_correct": sum(all(g) for g in graded), "none_correct": sum(not any(g) for g in graded),
                  "sample_accuracy": 100 * sum(map(sum, graded)) / max(1, sum(map(len, graded)))} if task == "arith" else {}),
              "chosen_from_gold": sum(r["chosen_source"] == "gold" for r in rows), "backend": gen.backend, "dtype": gen.dtype, "generation": gen.stats}
    write_jsonl(cached, rows)
    write_json(report_file, report)
    return rows, report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.pairs", description="Sample the reference model on training items and write preference pairs (JSONL).")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="HF checkpoint dir or hub id (default: provisioned SmolLM2-135M-Instruct)")
    ap.add_argument("--gsm8k", type=int, default=64, metavar="N", help="GSM8K train questions to sample (default 64; 0 = none)")
    ap.add_argument("--arith", type=int, default=0, metavar="N", help="arith train problems to sample (default 0 = none)")
    ap.add_argument("--arith-level", type=int, default=arith.DEFAULT_LEVEL, help=f"arith difficulty level (tasks.arith.LEVELS; default {arith.DEFAULT_LEVEL})")
    ap.add_argument("--arith-gold-chosen", action="store_true", help="arith: use the gold solution as chosen when no sample is correct (off: such problems give no pair)")
    ap.add_argument("--tldr", type=int, default=32, metavar="N", help="TL;DR training posts to sample (default 32; 0 = none)")
    ap.add_argument("--k", type=int, default=2, help="samples per GSM8K and arith question (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=BACKENDS, default="auto")
    ap.add_argument("--max-tokens", type=int, metavar="N", help="cap on sample length (default: 256 GSM8K, 64 TL;DR)")
    ap.add_argument("--dtype", choices=DTYPES, default="auto", help="sampling precision (default auto: bf16 where native, else fp32)")
    ap.add_argument("--out", type=Path, required=True, help="folder for <task>.jsonl and report.json")
    a = ap.parse_args(argv)
    path = models.resolve_model(a.model)
    generator = cache(lambda: make_generator(path, a.backend, a.dtype, seed=a.seed))  # one engine, only if needed
    reports = []
    for task, n in (("gsm8k", a.gsm8k), ("arith", a.arith), ("tldr", a.tldr)):
        if n > 0:
            rows, report = build(path, task, n, a.k, a.seed, a.backend, generator, a.max_tokens, a.arith_level, a.arith_gold_chosen, a.dtype)
            write_jsonl(a.out / f"{task}.jsonl", rows)
            reports.append(report)
            print(json.dumps(report))
    write_json(a.out / "report.json", reports)


if __name__ == "__main__":
    run_main(main)
