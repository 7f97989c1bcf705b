"""Build preference pairs by sampling the reference model on training items, cached on disk.

GSM8K: k samples per train question, graded (tasks.gsm8k.make_pair). arith: k samples per
generated train problem, chosen and rejected both sampled (tasks.arith.make_pair; gold-chosen only
with --arith-gold-chosen). TL;DR: one sample per training post (tasks.tldr.make_pair). Training
items never overlap the evaluation items: GSM8K evaluates on its test split, arith on its test split
(split by a hash of the equation), TL;DR on the first posts (tasks.tldr.split). Tasks with a
`pair_style` option (tasks.base.PAIR_STYLES: on-policy, gold, edit) build the style chosen with
--<task>-pair-style; the report describes every style, made from the same samples.

    python -m harness.pairs --gsm8k 64 --arith 128 --tldr 32 --k 2 --out DIR   # DIR/<task>.jsonl
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from common import (
    ConfigError,
    config_from_args,
    config_parser,
    fingerprint,
    option,
    read_jsonl,
    run_main,
    write_json,
    write_jsonl,
)
from harness import models
from harness.generation import BACKENDS, DTYPES, Generator, Sampling, make_generator
from harness.taskflags import TASK_FIELDS, add_task_flags, check_tasks, fill_task_settings
from tasks import TASKS
from tasks.base import DEFAULT_STYLE, normalized_edit_distance, pair_report, pair_styles, resolve_options
from tasks.data import cache_dir
from trainers.logprobs import resolve_dtype
from trainers.pairfile import TRUNCATABLE, read_pairs, truncated
from trainers.tokens import prompt_ids

# what training and scoring do with a response a length cap cut (the pairs report says it)
TRUNCATED_HANDLING = "kept, scored without an end token (the model never stopped there)"


def sampling_for(task: str, k: int, seed: int, max_tokens: int | None = None) -> Sampling:
    """Temperature-1 sampling of pair samples: the task's PAIR_SAMPLES (else k) per item, up to its
    MAX_TOKENS."""
    t = TASKS[task]
    length = min(t.MAX_TOKENS, max_tokens or t.MAX_TOKENS)
    return Sampling(max_tokens=length, temperature=1.0, n=t.PAIR_SAMPLES or k, seed=seed)


def truncated_fields(pair: dict, cut: set[str]) -> list[str]:
    """The pair's responses that are samples a length cap cut (their texts are in `cut`). An edit-style
    rejected is its chosen with one number changed, so it is cut where its chosen is; a gold solution is
    never cut."""
    fields = [f for f in TRUNCATABLE if pair.get(f) in cut]
    if pair.get("style") == "edit" and "chosen" in fields:
        fields.append("rejected")
    return fields


def make_pairs(task, items: list[dict], samples: list[list[dict]], options: dict) -> list[dict | None]:
    """Each item's pair (or None) from its samples ({text, finished}), with `truncated`: the responses the
    length cap cut (`truncated_fields`)."""
    pairs = []
    for item, sampled in zip(items, samples):
        pair = task.make_pair(item, [s["text"] for s in sampled], **options)
        if pair is not None:
            finished = {s["text"] for s in sampled if s["finished"]}
            pair["truncated"] = truncated_fields(pair, {s["text"] for s in sampled} - finished)
        pairs.append(pair)
    return pairs


def style_report(task, items: list[dict], samples: list[list[dict]], options: dict) -> dict[str, dict]:
    """style → {pairs, edit_distance, chosen_source, truncated} for every pair style of a task
    (tasks.base.pair_styles), all made from the same samples: the number of pairs, the mean normalized edit
    distance between chosen and rejected (None without pairs), the count of chosen responses by source
    ("sample", "gold", and any other a task uses) and of chosen and rejected responses a length cap cut."""
    report = {}
    for style, opts in pair_styles(task, options).items():
        made = [p for p in make_pairs(task, items, samples, opts) if p is not None]
        distances = [normalized_edit_distance(p["chosen"], p["rejected"]) for p in made]
        report[style] = {
            "pairs": len(made),
            "edit_distance": sum(distances) / len(distances) if distances else None,
            "chosen_source": {"sample": 0, "gold": 0} | dict(Counter(p["chosen_source"] for p in made)),
            "truncated": {f: sum(f in p["truncated"] for p in made) for f in ("chosen", "rejected")},
        }
    return report


def build(
    path: str,
    task: str,
    n: int,
    k: int,
    seed: int,
    backend: str,
    generator: Callable[[], Generator],
    max_tokens: int | None = None,
    options: dict | None = None,
    dtype: str = "auto",
) -> tuple[list[dict], dict]:
    """(pairs, report): up to n pairs from the first n training items of a registered task (tasks.TASKS);
    items that give no pair (e.g. every GSM8K sample correct, or no arith sample correct) are counted
    in the report, not padded. `options` are the task's OPTIONS (defaults fill the rest). `generator()`
    is called only when the samples are not cached yet. The samples' cache key covers the model weights,
    the templated prompts, k, seed, backend, precision and sampling settings; pairs are made from them
    each time, so another pair style (or any other option) costs no new sampling."""
    from transformers import AutoTokenizer

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    t = TASKS[task]
    options = resolve_options(t, options)
    items = t.load("train", n, **options)
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [prompt_ids(tok, t.prompt(it)) for it in items]
    sampling = sampling_for(task, k, seed, max_tokens)
    # the prompts' token ids are in the key: the samples are drawn from exactly those
    key = json.dumps(
        [fingerprint(path), task, k, seed, backend, resolve_dtype(dtype), sampling.record(), prompts]
    )
    cached = cache_dir() / "samples" / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
    meta_file = cached.with_suffix(".json")
    if cached.is_file() and meta_file.is_file():
        samples = [r["samples"] for r in read_jsonl(cached)]
        meta = {**json.loads(meta_file.read_text()), "cached": str(cached)}
    else:
        gen = generator()
        samples = [
            [{"text": c.text, "finished": c.finished} for c in s]
            for s in gen.generate(prompts, sampling, desc=f"pairs {task}")
        ]
        meta = {"backend": gen.backend, "dtype": gen.dtype, "generation": gen.stats}
        write_jsonl(cached, [{"samples": sampled} for sampled in samples])
        write_json(meta_file, meta)  # last: marks the samples complete
    rows = []
    for i, (item, pair) in enumerate(zip(items, make_pairs(t, items, samples, options))):
        if pair is not None:
            row_id = item.get("id") or f"{task}-{item.get('instruction_id', i)}"
            rows.append({"id": row_id, "task": task, **pair})
    texts = [[s["text"] for s in sampled] for sampled in samples]
    report = {
        "task": task,
        "items": n,
        "pairs": len(rows),
        "no_pair": n - len(rows),
        **pair_report(t, items, texts, options),
        "chosen_from_gold": sum(r["chosen_source"] == "gold" for r in rows),
        "style": options.get("pair_style", DEFAULT_STYLE),
        "styles": style_report(t, items, samples, options),
        "samples_truncated": sum(not s["finished"] for sampled in samples for s in sampled),
        "truncated": {f: sum(f in r["truncated"] for r in rows) for f in ("chosen", "rejected")},
        "truncated_handling": TRUNCATED_HANDLING,
        **meta,
    }
    return rows, report


@dataclass
class PairsConfig:
    """The pairs stage: flags, YAML/JSON (`--config`) and compare's stage file all come from here."""

    out: str = option(help="folder for <task>.jsonl and report.json")
    model: str = option(
        models.DEFAULT_MODEL, "HF checkpoint dir or hub id: the model whose samples make the pairs"
    )
    sizes: dict[str, int] = option(
        {}, "task → train items sampled (default: each task's PAIR_ITEMS; 0: none)"
    )
    options: dict[str, dict] = option({}, "task → its options (tasks/<task>.py OPTIONS)")
    k: int = option(4, "samples per train item, for tasks that grade several samples")
    seed: int = option(0, "sampling seed")
    backend: str = option("auto", "generation backend (auto: vLLM if installed, else HF)", choices=BACKENDS)
    dtype: str = option("auto", "sampling precision (auto: bf16 where native, else fp32)", choices=DTYPES)
    max_tokens: int | None = option(
        None, "cap on sample length (default: each task's MAX_TOKENS)", metavar="N"
    )


def parse(argv: list[str] | None = None) -> PairsConfig:
    ap = config_parser(PairsConfig, "python -m harness.pairs", __doc__, exclude=TASK_FIELDS)
    add_task_flags(ap, "train items sampled (0: none)", "PAIR_ITEMS")
    a = vars(ap.parse_args(argv))
    try:
        cfg = config_from_args(PairsConfig, a, exclude=TASK_FIELDS)
        fill_task_settings(cfg, a, {t: task.PAIR_ITEMS for t, task in TASKS.items()})
        check_tasks(cfg.sizes)
    except ConfigError as e:
        ap.error(str(e))
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    path = models.resolve_model(cfg.model)
    # one engine, created only if some task's pairs are not cached yet
    generator = cache(lambda: make_generator(path, cfg.backend, cfg.dtype, seed=cfg.seed))
    reports = []
    for task, n in cfg.sizes.items():
        if n > 0:
            rows, report = build(
                path,
                task,
                n,
                cfg.k,
                cfg.seed,
                cfg.backend,
                generator,
                cfg.max_tokens,
                cfg.options.get(task, {}),
                cfg.dtype,
            )
            write_jsonl(Path(cfg.out) / f"{task}.jsonl", rows)
            reports.append(report)
            print(json.dumps(report))
    write_json(Path(cfg.out) / "report.json", reports)


def split_pairs(files: list[Path], heldout: int) -> tuple[list[dict], list[dict]]:
    """The last `heldout` pairs of each task are held out for the shift metrics; the rest train."""
    train, held = [], []
    for f in files:
        rows = read_pairs(str(f), "error")  # written by the pairs stage: a bad row is a bug
        if len(rows) <= heldout:
            raise SystemExit(
                f"{f}: only {len(rows)} pairs, need more than --heldout {heldout}; raise the pair counts"
            )
        train += rows[: len(rows) - heldout]
        held += rows[len(rows) - heldout :]
    return train, held


def pair_key(row: dict) -> str:
    """A pair's identity: its prompt and both responses."""
    return json.dumps([row["prompt"], row["chosen"], row["rejected"]])


def pair_counts(train: list[dict], held: list[dict]) -> dict[str, dict]:
    """task → its training and held-out pair counts, pair style and the chosen and rejected responses a
    length cap cut (the leaderboard names them)."""
    counts: dict[str, dict] = {}
    for split, rows in (("train", train), ("heldout", held)):
        for r in rows:
            fresh = {"train": 0, "heldout": 0, "style": r.get("style", "default")}
            c = counts.setdefault(
                r.get("task", "custom"), fresh | {"truncated": {"chosen": 0, "rejected": 0}}
            )
            c[split] += 1
            for field in c["truncated"]:
                c["truncated"][field] += truncated(r, field)
    return counts


if __name__ == "__main__":
    run_main(main)
