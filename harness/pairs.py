"""Build preference pairs by sampling the reference model on training items, cached on disk.

GSM8K: k samples per train question, graded (tasks.gsm8k.make_pair). TL;DR: one sample per
training post (tasks.tldr.make_pair). Training items never overlap the evaluation items: GSM8K
evaluates on its test split, TL;DR on the first posts (tasks.tldr.split).

    python -m harness.pairs --gsm8k 64 --tldr 32 --k 2 --out DIR   # DIR/gsm8k.jsonl, DIR/tldr.jsonl
"""
from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from harness import models
from harness.generation import BACKENDS, Generator, Sampling, chat_prompts, make_generator
from tasks import gsm8k, tldr
from tasks.data import cache_dir, read_jsonl, write_jsonl, write_text_atomic
from trainers.trainer import fingerprint

TASKS = ("gsm8k", "tldr")


def sampling_for(task: str, k: int, seed: int, max_tokens: int | None = None) -> Sampling:
    length = 256 if task == "gsm8k" else 64
    return Sampling(max_tokens=min(length, max_tokens or length), temperature=1.0, n=k if task == "gsm8k" else 1, seed=seed)


def build(path: str, task: str, n: int, k: int, seed: int, backend: str, generator: Callable[[], Generator],
          max_tokens: int | None = None) -> tuple[list[dict], dict]:
    """(pairs, report): up to n pairs from the first n training items; items that give no pair
    (e.g. every GSM8K sample correct) are counted in the report, not padded. `generator()` is
    called only when the pairs are not cached yet. The cache key covers the model weights, the
    templated prompts, k, seed, backend and sampling settings."""
    from transformers import AutoTokenizer

    if task == "gsm8k":
        items = gsm8k.load("train")[:n]
        convs = [gsm8k.prompt(r["question"]) for r in items]
    elif task == "tldr":
        items = tldr.split(tldr.load())[1][:n]
        convs = [tldr.prompt(r) for r in items]
    else:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    prompts = chat_prompts(AutoTokenizer.from_pretrained(path), convs)
    sampling = sampling_for(task, k, seed, max_tokens)
    key = json.dumps([fingerprint(path), task, k, seed, backend, sampling.record(), prompts])
    cached = cache_dir() / "pairs" / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
    report_file = cached.with_suffix(".report.json")
    if cached.is_file() and report_file.is_file():
        return read_jsonl(cached), {**json.loads(report_file.read_text()), "cached": str(cached)}
    gen = generator()
    samples = gen.generate(prompts, sampling, desc=f"pairs {task}")
    rows = []
    for i, (item, s) in enumerate(zip(items, samples)):
        texts = [c.text for c in s]
        pair = gsm8k.make_pair(item, texts) if task == "gsm8k" else tldr.make_pair(item, texts[0])
        if pair:
            rows.append({"id": f"{task}-{item.get('instruction_id', i)}", "task": task, **pair})
    report = {"task": task, "items": n, "pairs": len(rows), "no_pair": n - len(rows),
              "chosen_from_gold": sum(r["chosen_source"] == "gold" for r in rows), "backend": gen.backend, "generation": gen.stats}
    write_jsonl(cached, rows)
    write_text_atomic(report_file, json.dumps(report, indent=2))
    return rows, report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.pairs", description="Sample the reference model on training items and write preference pairs (JSONL).")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="HF checkpoint dir or hub id (default: provisioned SmolLM2-135M-Instruct)")
    ap.add_argument("--gsm8k", type=int, default=64, metavar="N", help="GSM8K train questions to sample (default 64; 0 = none)")
    ap.add_argument("--tldr", type=int, default=32, metavar="N", help="TL;DR training posts to sample (default 32; 0 = none)")
    ap.add_argument("--k", type=int, default=2, help="samples per GSM8K question (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=BACKENDS, default="auto")
    ap.add_argument("--max-tokens", type=int, metavar="N", help="cap on sample length (default: 256 GSM8K, 64 TL;DR)")
    ap.add_argument("--out", type=Path, required=True, help="folder for <task>.jsonl and report.json")
    a = ap.parse_args(argv)
    path = models.resolve_model(a.model)
    generator = cache(lambda: make_generator(path, a.backend, seed=a.seed))  # one engine, only if needed
    reports = []
    for task, n in (("gsm8k", a.gsm8k), ("tldr", a.tldr)):
        if n > 0:
            rows, report = build(path, task, n, a.k, a.seed, a.backend, generator, a.max_tokens)
            write_jsonl(a.out / f"{task}.jsonl", rows)
            reports.append(report)
            print(json.dumps(report))
    write_text_atomic(a.out / "report.json", json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
