"""Train each method from the same init on the same pairs, evaluate all checkpoints and the
reference, and write the leaderboard.

    python -m harness.compare --methods dpo,spo

Stages: pairs (sampled from the reference, cached; own process) → training per method (same seed
and pairs) → one evaluation process for the reference and every checkpoint (one vLLM engine, each
checkpoint's weights loaded into it) → results/leaderboard.md and .json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import leaderboard, models
from harness.evaluate import TASKS
from harness.generation import BACKENDS
from harness.judge import JUDGE_KINDS
from harness.runinfo import commit, machine
from tasks.data import write_jsonl, write_text_atomic
from trainers.losses import parse_method
from trainers.train import field_docs
from trainers.trainer import TrainConfig, read_pairs, run


def stage(name: str, timings: dict, cmd: list[str]) -> None:
    """Run a CLI stage in a fresh process and record its wall time."""
    print(f"\n== {name}", flush=True)
    t = time.time()
    if subprocess.run([sys.executable, "-m", *cmd]).returncode != 0:
        raise SystemExit(f"compare: stage '{name}' failed (command: python -m {' '.join(cmd)}); finished stages are kept")
    timings[name] = round(time.time() - t, 1)


def split_pairs(files: list[Path], heldout: int) -> tuple[list[dict], list[dict]]:
    """The last `heldout` pairs of each task are held out for the shift metrics; the rest train."""
    train, held = [], []
    for f in files:
        rows = read_pairs(str(f))
        if len(rows) <= heldout:
            raise SystemExit(f"{f}: only {len(rows)} pairs, need more than --heldout {heldout}; raise the pair counts")
        train += rows[: len(rows) - heldout]
        held += rows[len(rows) - heldout :]
    return train, held


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="dpo,spo", help="comma-separated methods (dpo, spo = dpo+spo)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="init and reference: HF checkpoint dir or hub id (default: SmolLM2-135M-Instruct, provisioned offline)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pairs and of evaluation sampling (default 0)")
    ap.add_argument("--seeds", help="comma-separated training seeds, one run per method and seed (default: --seed); "
                                    "the leaderboard pools a method's seeds in its paired comparisons")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="generation backend (auto: vLLM if installed, else HF generate)")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"evaluation tasks, from {', '.join(TASKS)} (default all)")
    ap.add_argument("--judge", choices=("none", *JUDGE_KINDS), default="offline", help="TL;DR win-rate judge (default offline: embedding similarity)")
    g = ap.add_argument_group("sizes")
    g.add_argument("--gsm8k-pairs", type=int, default=56, help="GSM8K train questions sampled for pairs (default 56)")
    g.add_argument("--tldr-pairs", type=int, default=24, help="TL;DR training posts sampled for pairs (default 24)")
    g.add_argument("--k", type=int, default=2, help="reference samples per GSM8K question (default 2)")
    g.add_argument("--heldout", type=int, default=8, help="pairs per task held out of training for Δ log-prob (default 8)")
    g.add_argument("--gsm8k-eval", type=int, default=100, help="GSM8K test questions evaluated (default 100)")
    g.add_argument("--math-eval", type=int, default=100, help="MATH-500 problems evaluated (default 100)")
    g.add_argument("--tldr-eval", type=int, default=100, help="TL;DR eval posts evaluated (default 100)")
    g.add_argument("--kl-prompts", type=int, default=32, help="eval prompts sampled for the KL estimate (default 32)")
    t = ap.add_argument_group("training (see python -m trainers.train --help for all fields)")
    docs = field_docs()
    for name in ("lr", "beta", "spo_lambda", "spo_delta", "epochs", "batch_pairs", "micro_pairs"):
        default = getattr(TrainConfig, name)
        t.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=f"{docs[name]} (default {default})")
    t.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32 instead of bf16 autocast")
    o = ap.add_argument_group("output paths")
    o.add_argument("--results", type=Path, default=Path("results"), help="leaderboard and runs/<model>/ eval files (default results/)")
    o.add_argument("--outputs", type=Path, default=Path("outputs"), help="pairs and checkpoints, large, git-ignored (default outputs/)")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()] if a.seeds else [a.seed]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {a.seeds!r}")
    for m in methods:
        try:
            parse_method(m)
        except ValueError as e:
            ap.error(str(e))

    timings: dict[str, float] = {}
    ref = models.resolve_model(a.model)
    pair_dir = a.outputs / "pairs"
    stage("pairs", timings, ["harness.pairs", "--model", a.model, "--gsm8k", str(a.gsm8k_pairs), "--tldr", str(a.tldr_pairs),
                             "--k", str(a.k), "--seed", str(a.seed), "--backend", a.backend, "--out", str(pair_dir)])
    tasks = [t for t, n in (("gsm8k", a.gsm8k_pairs), ("tldr", a.tldr_pairs)) if n > 0]
    train, held = split_pairs([pair_dir / f"{t}.jsonl" for t in tasks], a.heldout)
    write_jsonl(a.outputs / "train_pairs.jsonl", train)
    write_jsonl(a.outputs / "heldout_pairs.jsonl", held)
    print(f"{len(train)} training pairs, {len(held)} held-out pairs", flush=True)

    runs = a.results / "runs"
    runs_todo = [(m, s, f"{m}-seed{s}") for m in methods for s in seeds]
    labels = [label for *_, label in runs_todo]
    for method, seed, label in runs_todo:
        cfg = TrainConfig(model=ref, pairs=str(a.outputs / "train_pairs.jsonl"), output_dir=str(a.outputs / label), method=method,
                          beta=a.beta, spo_lambda=a.spo_lambda, spo_delta=a.spo_delta, lr=a.lr, epochs=a.epochs,
                          batch_pairs=a.batch_pairs, micro_pairs=a.micro_pairs, seed=seed, bf16=a.bf16,
                          ref_cache=str(a.outputs))  # every method reuses the same reference log-probs
        print(f"\n== train {label}", flush=True)
        t0 = time.time()
        summary = run(cfg)
        timings[f"train {label}"] = round(time.time() - t0, 1)
        write_text_atomic(runs / label / "train.json", json.dumps(summary, indent=2))
        write_text_atomic(runs / label / "metrics.jsonl", (a.outputs / label / "metrics.jsonl").read_text())
    checkpoints = [str(a.outputs / label / "checkpoint") for label in labels]
    stage("eval", timings, ["harness.evaluate", "--model", a.model, *checkpoints, "--out", *(str(runs / n) for n in ["reference", *labels]),
                            "--reference", a.model, "--tasks", a.tasks, "--gsm8k", str(a.gsm8k_eval), "--math", str(a.math_eval),
                            "--tldr", str(a.tldr_eval), "--kl-prompts", str(a.kl_prompts), "--heldout", str(a.outputs / "heldout_pairs.jsonl"),
                            "--backend", a.backend, "--seed", str(a.seed), "--judge", a.judge])

    meta = {"command": "python -m harness.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": commit(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "order": ["reference", *labels], "seeds": seeds, "stage_seconds": timings,
            "pairs": {"train": len(train), "heldout": len(held)}}
    write_text_atomic(runs / "compare.json", json.dumps(meta, indent=2))
    md = leaderboard.write(a.results)
    print("\n" + md)


if __name__ == "__main__":
    main()
