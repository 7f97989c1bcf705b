"""How far a finished compare run is from this CPU's compute floor, stage by stage.

    LD_PRELOAD=$(python -m harness.runinfo) python -m bench.floor --results results --outputs outputs

A stage's floor is the matmul work it cannot avoid, in FLOPs, at the matmul peak of the precision it ran in
(measured in this run; evaluation's log-prob scoring runs in fp32). With body = the parameters less the
embedding matrix and head = the LM head's (vocabulary × hidden), a forward costs 2·body per prompt token and
2·(body + head) per token whose next-token log-prob is needed:
- generation (pairs, evaluation): a forward per prompt token (vLLM computes logits only at a prompt's last
  position) and per generated token; each prompt once (a request's samples share it; the KL samples' prompts
  are task prompts in the same engine call, free where the prefix cache holds them, so they count zero);
- training: per pair and epoch three forwards (the backward is two; a LoRA run's one, no gradient for the
  frozen weights) of the prompt, once, and of the chosen and rejected tokens; a resumed run only for the
  steps it made; the reference log-probs, a forward per epoch, in the run that computed them (train.json
  `reference_logps_computed`; before that field, the first training stage);
- the training probes (trainers.probes): the reference's fixed responses (each start), the policy's at every
  probe but step 0 (the same weights); the greedy responses' prompts prefilled at every probe and scored under
  the policy at every probe and under the initial model but at step 0, their tokens counting zero;
- evaluation's fp32 scoring: the reference's fixed responses once, and per policy its fixed responses, and
  its KL samples and greedy probe responses (prompts and tokens) under the policy and the reference.
Everything else (process and engine start-up, imports, weight loads, grading, judging, attention, cached
stages) counts zero, so the floor is a lower bound on each stage's time. Prints measured and floor seconds
per stage and writes results/bench/floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.training import matmul_peak
from common import write_text
from harness import models
from harness.evaluate import EvalConfig, Evaluator
from harness.pairs import PairsConfig
from harness.runinfo import machine, stage_env
from tasks import TASKS
from tasks.base import resolve_options
from trainers.pairfile import load_pairs, read_pairs
from trainers.probes import FIXED, ProbeSet
from trainers.tokens import encode
from trainers.trainer import encode_pairs


class Peaks(dict):
    """Precision name (float32, bfloat16) → matmul FLOP/s, each measured when first needed: a CPU without
    native bf16 emulates it at about 0.2 GFLOP/s."""

    def __missing__(self, dtype: str) -> float:
        # the best of three short readings (one alone read 25 % low once on a shared machine)
        self[dtype] = max(matmul_peak(getattr(torch, dtype), 2048, seconds=1.0) for _ in range(3)) * 1e9
        return self[dtype]


def sizes(path: str) -> tuple[int, int]:
    """(body, head) parameter counts of a checkpoint, from its config alone."""
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    text = config.get_text_config()
    head = text.vocab_size * text.hidden_size
    return n - head * (1 if text.tie_word_embeddings else 2), head


def forward(body: int, head: int, prompt_tokens: int, predicted_tokens: int) -> int:
    """FLOPs of a forward over prompt tokens (no logits) and tokens whose log-probs are taken."""
    return 2 * body * prompt_tokens + 2 * (body + head) * predicted_tokens


def pairs_seconds(outputs: Path, body: int, head: int, tok, peaks: dict) -> float:
    """The pairs stage's sampling: each task's prompts once and the tokens it generated in this run (the
    engine's counts are cumulative over the tasks in their order; a cached task generated nothing)."""
    cfg = PairsConfig(**json.loads((outputs / "stages" / "pairs.json").read_text()))
    seconds, before = 0.0, 0
    for report in json.loads((outputs / "pairs" / "report.json").read_text()):
        if "cached" in report:
            continue
        task = TASKS[report["task"]]
        options = resolve_options(task, cfg.options.get(report["task"]))
        items = task.load("train", cfg.sizes[report["task"]], **options)
        prompts = sum(len(encode(tok, task.prompt(it), "")[0]) for it in items)
        generated, before = report["generation"]["tokens"] - before, report["generation"]["tokens"]
        seconds += forward(body, head, prompts, generated) / peaks[report["dtype"]]
    return seconds


def fixed_flops(probe: ProbeSet, body: int, head: int) -> int:
    """Scoring the held-out pairs' fixed responses once: each prompt once, then its four responses."""
    responses = sum(len(r) for k in FIXED for r in probe.responses[k] if r)
    return forward(body, head, sum(map(len, probe.prompts)), responses)


def training_seconds(outputs: Path, label: str, body: int, head: int, tok, peaks: dict, first: bool) -> float:
    """A training run: its steps, the reference log-probs if it computed them (`first`: it is the first
    training stage, for runs from before train.json said), and its probes."""
    cfg = json.loads((outputs / label / "train_config.json").read_text())
    done = json.loads((outputs / label / "train.json").read_text())
    peak, start = peaks["bfloat16" if done["bf16"] else "float32"], done["resumed_from"]
    pairs = encode_pairs(tok, cfg["pairs"], cfg["max_len"], cfg["bad_pairs"])[0]
    one = sum(forward(body, head, len(x), len(c) + len(r)) for x, c, r in pairs)
    # a LoRA run computes no gradient for the frozen weights: its backward costs one forward, not two
    passes = (2 if cfg["lora_r"] else 3) * cfg["epochs"] * (done["steps"] - start) / done["steps"]
    # the reference log-probs: one forward per epoch (each in that epoch's micro-batches)
    passes += cfg["epochs"] * done.get("reference_logps_computed", first)
    seconds = passes * one / peak
    if not (cfg["probe_pairs"] and cfg["probe_every"]):
        return seconds
    probe = ProbeSet(tok, load_pairs(cfg["probe_pairs"], "error")[0])
    rows = (json.loads(line) for line in open(outputs / label / "metrics.jsonl"))
    steps = [r["step"] for r in rows if "probe_dlogp_chosen" in r and (r["step"] > start or start == 0)]
    later = sum(step > 0 for step in steps)
    seconds += (1 + later) * fixed_flops(probe, body, head) / peaks["float32"]
    if cfg["probe_greedy"] and not (cfg["fsdp"] or cfg["deepspeed"]):
        prompts = forward(body, head, sum(map(len, probe.prompts)), 0)
        seconds += len(steps) * prompts / peak + (len(steps) + later) * prompts / peaks["float32"]
    return seconds


def eval_seconds(outputs: Path, body: int, head: int, tok, peaks: dict) -> tuple[float, float]:
    """(generation, fp32 scoring) seconds of the evaluation stage, over the models it evaluated."""
    cfg = EvalConfig(**json.loads((outputs / "stages" / "eval.json").read_text()) | {"judge": "none"})
    ev = Evaluator(cfg)

    task_prompts = sum(len(x) for ps in ev.prompts.values() for x in ps)
    probe = ProbeSet(tok, [p for f in cfg.heldout_files for p in read_pairs(f)])
    probe_prompts, kl_prompts = sum(map(len, probe.prompts)), sum(map(len, ev.kl_prompts()))
    generation, scoring = 0.0, fixed_flops(probe, body, head) / peaks["float32"]  # the reference's, once
    for model, out in zip(cfg.model, map(Path, cfg.out)):
        result = json.loads((out / "eval.json").read_text())
        peak, generated = peaks[result["dtype"]], result["generation"]["tokens"]
        if Path(models.resolve_model(model)).resolve() == Path(ev.ref_path).resolve():
            generation += forward(body, head, task_prompts, generated) / peak
            continue
        generation += forward(body, head, task_prompts + probe_prompts, generated) / peak
        # what it generated beyond the task outputs (the engine counts a finished output's end-of-turn
        # token): the KL samples and greedy probe responses, scored under the policy and the reference
        outputs_ = {t: result[t]["outputs"] for t in ev.items}
        task_tokens = sum(
            len(ev.items[t]) * (o["mean_length"] + o["finished_share"]) for t, o in outputs_.items()
        )
        shift = forward(body, head, kl_prompts + probe_prompts, round(generated - task_tokens))
        scoring += (2 * shift + fixed_flops(probe, body, head)) / peaks["float32"]
    return generation, scoring


def row(seconds: float, floor_seconds: float) -> dict:
    return {"seconds": seconds, "floor_seconds": floor_seconds, "share": floor_seconds / max(seconds, 1e-9)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results"), help="the compare's --results")
    ap.add_argument("--outputs", type=Path, default=Path("outputs"), help="the compare's --outputs")
    ap.add_argument("--out", type=Path, default=Path("results/bench/floor.json"))
    a = ap.parse_args(argv)
    meta = json.loads((a.results / "runs" / "compare.json").read_text())
    measured = meta["stage_seconds"]
    path = models.resolve_model(json.loads((a.outputs / "stages" / "eval.json").read_text())["reference"])
    tok, (body, head) = AutoTokenizer.from_pretrained(path), sizes(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    peaks = Peaks()
    try:
        floors: dict[str, float] = {}
        if "pairs" in measured:
            floors["pairs"] = pairs_seconds(a.outputs, body, head, tok, peaks)
        training = [s for s in measured if s.startswith("train ")]
        for i, stage in enumerate(training):
            label = stage.removeprefix("train ")
            floors[stage] = training_seconds(a.outputs, label, body, head, tok, peaks, first=i == 0)
        parts: dict[str, tuple[float, float]] = {}  # the evaluation's two parts: (measured, floor) seconds
        if "eval" in measured:
            generation, scoring = eval_seconds(a.outputs, body, head, tok, peaks)
            floors["eval"] = generation + scoring
            outs = json.loads((a.outputs / "stages" / "eval.json").read_text())["out"]
            engine = sum(
                json.loads((Path(o) / "eval.json").read_text())["generation"]["seconds"] for o in outs
            )
            parts = {
                "  generation calls": (engine, generation),
                "  the rest (fp32 scoring, start-up, grading, judge)": (measured["eval"] - engine, scoring),
            }
    finally:
        torch.set_num_threads(threads)
    rows = {s: row(measured[s], f) for s, f in floors.items()}
    total = [sum(r[k] for r in rows.values()) for k in ("seconds", "floor_seconds")]
    rows |= {k: row(*v) for k, v in parts.items()} | {"all stages": row(*total)}
    peak_text = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in sorted(peaks.items()))
    print(
        f"matmul peak (GFLOP/s): {peak_text}; "
        f"{(body + head) / 1e6:.1f}M parameters in matmuls ({body / 1e6:.1f}M body)"
    )
    print(f"{'stage':52} {'measured s':>10} {'floor s':>8} {'floor/measured':>14}")
    for stage, r in rows.items():
        print(f"{stage:52} {r['seconds']:10.1f} {r['floor_seconds']:8.1f} {100 * r['share']:13.1f}%")
    report = {
        "command": meta["command"],
        "commit": meta["commit"],
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "parameters": {"body": body, "head": head},
        "stages": rows,
        "machine": machine(stage_env()),
    }
    write_text(a.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
