"""How far a finished compare run is from this CPU's compute floor, stage by stage.

    LD_PRELOAD=$(python -m harness.runinfo) python -m bench.floor --results results --outputs outputs

A stage's floor is the matmul work it cannot avoid, in FLOPs, at the matmul peak of the precision it ran in
(measured in this run; evaluation's log-prob scoring runs in fp32). With body = the parameters less the
embedding matrix and head = the LM head's (vocabulary × hidden):
- generation (pairs, evaluation): 2·(body + head) per generated token, 2·body per prompt token (vLLM
  computes logits only at a prompt's last position), each prompt once (a request's samples share it);
- training: 6·body per prompt token and 6·(body + head) per chosen and rejected token, per pair and epoch
  (the prompt is encoded once per pair, the head runs at completion positions only), and a third of that
  for the reference log-probs, once per compare (every method reads the same cached file);
- evaluation's fp32 scoring: the same 2·body / 2·(body + head) per token for each policy's KL samples and
  greedy probe responses under the policy and the reference, and the held-out pairs' fixed responses
  under the policy (the reference's are scored once); the training probes' fixed responses and greedy
  prompts likewise (trainers.probes).
Everything else (process and engine start-up, imports, weight loads, grading, judging, the training probes'
greedy tokens, cached stages) counts zero, so the floor is a lower bound on each stage's time. Prints
measured and floor seconds per stage and writes results/bench/floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.training import matmul_peak
from common import read_jsonl, write_text
from harness import models
from harness.evaluate import EvalConfig, Evaluator
from harness.pairs import PairsConfig
from harness.runinfo import machine, stage_env
from tasks import TASKS
from tasks.base import resolve_options
from trainers.logprobs import encode
from trainers.probes import FIXED, ProbeSet


def sizes(path: str) -> tuple[int, int]:
    """(body, head) parameter counts of a checkpoint, from its config alone."""
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    text = config.get_text_config()
    head = text.vocab_size * text.hidden_size
    return n - head * (1 if text.tie_word_embeddings else 2), head


def pairs_flops(outputs: Path, body: int, head: int, tok) -> tuple[float, str]:
    """(FLOPs, precision) of the pairs stage's sampling: each task's prompts once and the tokens it generated
    in this run (the engine's counts are cumulative over the tasks in their order; a cached task generated
    nothing)."""
    cfg = PairsConfig(**json.loads((outputs / "stages" / "pairs.json").read_text()))
    reports = json.loads((outputs / "pairs" / "report.json").read_text())
    flops, before = 0.0, 0
    for report in reports:
        if "cached" in report:
            continue
        task = TASKS[report["task"]]
        items = task.load(
            "train", cfg.sizes[report["task"]], **resolve_options(task, cfg.options.get(report["task"]))
        )
        prompt_tokens = sum(len(encode(tok, task.prompt(it), "")[0]) for it in items)
        generated = report["generation"]["tokens"] - before
        before = report["generation"]["tokens"]
        flops += 2 * body * prompt_tokens + 2 * (body + head) * generated
    return flops, reports[0]["dtype"]


def fixed_flops(probe: ProbeSet, body: int, head: int) -> float:
    """Scoring the held-out pairs' fixed responses once: each prompt once, then its four responses."""
    responses = sum(len(r) for k in FIXED for r in probe.responses[k] if r)
    return 2 * body * sum(map(len, probe.prompts)) + 2 * (body + head) * responses


def training_seconds(outputs: Path, label: str, body: int, head: int, tok, first: bool, peaks: dict) -> float:
    """A training run's floor: its steps, the reference log-probs when it is the first run to need them, and
    its probes (trainers.probes: the fixed responses scored in fp32, the greedy responses' prompts prefilled
    and scored under the policy and the initial model; the greedy tokens themselves count zero)."""
    cfg = json.loads((outputs / label / "train_config.json").read_text())
    peak = peaks[
        "bfloat16" if json.loads((outputs / label / "train.json").read_text())["bf16"] else "float32"
    ]
    pairs = [
        (encode(tok, r["prompt"], r["chosen"]), encode(tok, r["prompt"], r["rejected"])[1])
        for r in read_jsonl(outputs / "train_pairs.jsonl")
    ]
    prompt = sum(len(p) for (p, _), _ in pairs)
    completion = sum(len(c) + len(r) for (_, c), r in pairs)
    forward = 2 * body * prompt + 2 * (body + head) * completion
    seconds = (3 * forward * cfg["epochs"] + forward * first) / peak
    rows = read_jsonl(outputs / label / "metrics.jsonl")
    probes = sum("probe_dlogp_chosen" in r for r in rows)
    if probes:
        probe = ProbeSet(tok, read_jsonl(Path(cfg["probe_pairs"])))
        prompts = sum(map(len, probe.prompts))
        # the reference's terms once, then per probe the policy's and its greedy responses
        seconds += (probes + 1) * fixed_flops(probe, body, head) / peaks["float32"]
        seconds += probes * (2 * body * prompts / peak + 2 * 2 * body * prompts / peaks["float32"])
    return seconds


def eval_flops(outputs: Path, body: int, head: int, tok) -> tuple[float, str, float]:
    """(generation FLOPs, generation precision, fp32 scoring FLOPs) of the evaluation stage, over the
    models it evaluated."""
    cfg = EvalConfig(**json.loads((outputs / "stages" / "eval.json").read_text()) | {"judge": "none"})
    ev = Evaluator(cfg)

    def tokens(texts: list[str]) -> int:
        return sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)

    task_prompts = sum(tokens(ps) for ps in ev.prompts.values())
    probe = ProbeSet(tok, read_jsonl(Path(cfg.heldout_files[0])))
    # a policy's KL prompts and held-out probe prompts, generated from and scored
    shift_prompts = tokens(ev.kl_prompts()) + sum(map(len, probe.prompts))
    fixed = fixed_flops(probe, body, head)
    generation, scoring = 0.0, fixed  # the reference's fixed responses, once
    for model, out in zip(cfg.model, map(Path, cfg.out)):
        result = json.loads((out / "eval.json").read_text())
        generated = result["generation"]["tokens"]
        if Path(models.resolve_model(model)).resolve() == Path(ev.ref_path).resolve():
            generation += 2 * body * task_prompts + 2 * (body + head) * generated
            continue
        generation += 2 * body * (task_prompts + shift_prompts) + 2 * (body + head) * generated
        # the KL samples and greedy probe responses: what it generated beyond the task outputs
        shift_tokens = generated - tokens([s["output"] for s in read_jsonl(out / "samples.jsonl")])
        scoring += 2 * (2 * body * shift_prompts + 2 * (body + head) * shift_tokens) + fixed
    return generation, result["dtype"], scoring


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
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # the best of three short readings (one alone read 25 % low once on a shared machine)
    peaks = {
        name: max(matmul_peak(getattr(torch, name), 2048, seconds=1.0) for _ in range(3)) * 1e9
        for name in ("float32", "bfloat16")
    }
    floors: dict[str, float] = {}
    if "pairs" in measured:
        flops, dtype = pairs_flops(a.outputs, body, head, tok)
        floors["pairs"] = flops / peaks[dtype]
    training = [s for s in measured if s.startswith("train ")]
    for i, stage in enumerate(training):
        label = stage.removeprefix("train ")
        floors[stage] = training_seconds(a.outputs, label, body, head, tok, i == 0, peaks)
    parts: dict[str, tuple[float, float]] = {}  # the evaluation's two parts: (measured, floor) seconds
    if "eval" in measured:
        generation, dtype, scoring = eval_flops(a.outputs, body, head, tok)
        floors["eval"] = generation / peaks[dtype] + scoring / peaks["float32"]
        outs = json.loads((a.outputs / "stages" / "eval.json").read_text())["out"]
        engine = sum(json.loads((Path(o) / "eval.json").read_text())["generation"]["seconds"] for o in outs)
        parts = {
            "  generation calls": (engine, generation / peaks[dtype]),
            "  the rest (fp32 scoring, start-up, grading, judge)": (
                measured["eval"] - engine,
                scoring / peaks["float32"],
            ),
        }
    rows = {s: row(measured[s], f) for s, f in floors.items()}
    total = [sum(r[k] for r in rows.values()) for k in ("seconds", "floor_seconds")]
    rows |= {k: row(*v) for k, v in parts.items()} | {"all stages": row(*total)}
    print(
        f"matmul peak: bf16 {peaks['bfloat16'] / 1e9:.0f}, fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s; "
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
