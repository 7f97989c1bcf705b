"""Training throughput on identical work, measured in one run: our DPO vs TRL's `DPOTrainer`, our SPO
(reference and lookahead anchors) vs our DPO, and the achieved FLOP/s against this CPU's matmul peaks.

    LD_PRELOAD=$(python -m harness.runinfo) python bench/training.py [--bf16] [--pairs-per-step 8] \\
        [--micro-pairs 4] [--steps 3] [--skip trl] [--pairs gsm8k|arith]

(LD_PRELOAD: tcmalloc where installed, as compare runs its stages; the JSON's machine line names the
allocator.)

Every trainer gets the same pairs (GSM8K train questions, chosen = the gold solution, rejected = the next
question's gold solution: real text of realistic lengths; with --pairs arith the cpu preset's short edit
pairs, where per-step overheads weigh more), the same model (the default SmolLM2-135M), batch,
max length, precision (fp32 unless --bf16), learning rate and β. Each step sees the same pairs (one epoch per
step), the first step is a warm-up and is not timed; TRL runs with its fastest offered settings here:
precomputed reference log-probs and its fused LM head (padding-free is disabled in TRL 1.x). The last row is
no trainer but the yardstick of the FLOP/s goal: a plain Hugging Face forward and backward of the same
sequences. Work is counted the same way for all: tokens = prompt + chosen + prompt + rejected (with the
end-of-turn token) per pair. Prints a table and writes results/bench/training.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import write_json, write_jsonl
from harness import models
from harness.runinfo import machine
from tasks import arith, gsm8k
from trainers.logprobs import autocast
from trainers.tokens import encode
from trainers.trainer import TrainConfig, Trainer

OURS = [
    ("dpo", "dpo", "reference"),
    ("spo (reference)", "spo", "reference"),
    ("spo (lookahead)", "spo", "lookahead"),
]


# where our trainer runs; TRL is put on the same device
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def matmul_peak(dtype: torch.dtype, n: int, seconds: float = 3.0) -> float:
    """GFLOP/s of repeated n×n matmuls on DEVICE for about `seconds` (after one warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def chat_text(tok, messages: list[dict]) -> str:
    """A chat prompt as text (the peer, TRL, takes prompts as strings)."""
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def bench_pairs(tok, n: int, kind: str) -> list[dict]:
    """gsm8k: chosen = a train question's gold solution, rejected = the next question's (long, unrelated).
    arith: the cpu preset's short edit pairs (chosen = the gold solution, rejected = it with one number and
    the final answer changed; about 60-100 tokens per sequence)."""
    if kind == "arith":
        rows = [
            arith.make_pair(r, [], gold_chosen=True, pair_style="edit") for r in arith.generate(n, 2, "train")
        ]
        return [
            {"prompt": chat_text(tok, r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows
        ]
    rows = gsm8k.load("train")[: n + 1]
    prompts = [chat_text(tok, gsm8k.prompt(r["question"])) for r in rows]
    return [
        {
            "prompt": prompts[i],
            "chosen": gsm8k.clean_solution(rows[i]["answer"]),
            "rejected": gsm8k.clean_solution(rows[i + 1]["answer"]),
        }
        for i in range(n)
    ]


def ours(path: str, tok, pairs_file: Path, tmp: str, method: str, anchor: str, a) -> dict:
    cfg = TrainConfig(
        model=path,
        pairs=str(pairs_file),
        output_dir=f"{tmp}/{method}-{anchor}",
        method=method,
        spo_anchor=anchor,
        batch_pairs=a.pairs_per_step,
        micro_pairs=a.micro_pairs,
        epochs=a.steps + 1,
        ref_cache=tmp,
        seed=0,
        bf16=a.bf16,
        lr=1e-5,
        beta=0.1,
        max_len=a.max_len,
        warmup_ratio=0.0,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    trainer = Trainer(cfg, model, tok)
    trainer.train()
    steps = [json.loads(line) for line in open(Path(cfg.output_dir) / "metrics.jsonl")]
    # cached: the log-probs at θ0, i.e. the first step's policy log-probs
    rc, rr = trainer.reference_logps(trainer.pairs)
    return {
        "step_seconds": [r["step_seconds"] for r in steps[1:]],
        "loss_first_step": steps[0]["loss"],
        "logps_chosen": rc.total.tolist(),
        "logps_rejected": rr.total.tolist(),
        "parameters": sum(p.numel() for p in model.parameters()),
        # every step sees these pairs
        "tokens_per_step": sum(2 * len(x) + len(c) + len(r) for x, c, r in trainer.pairs),
    }


def trl(path: str, tok, rows: list[dict], tmp: str, a) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    args = DPOConfig(
        output_dir=f"{tmp}/trl",
        per_device_train_batch_size=a.micro_pairs,
        gradient_accumulation_steps=a.pairs_per_step // a.micro_pairs,
        num_train_epochs=a.steps + 1,
        learning_rate=1e-5,
        beta=0.1,
        lr_scheduler_type="constant",
        max_length=a.max_len,
        precompute_ref_log_probs=True,
        bf16=bool(a.bf16),
        use_cpu=DEVICE == "cpu",
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_dropout=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[Clock()],
    )
    trainer.train()
    first = next(h for h in trainer.state.log_history if "loss" in h)
    return {
        "step_seconds": [b - e for e, b in zip(ends, ends[1:])],
        "loss_first_step": first["loss"],
        "logps_chosen_mean": first["logps/chosen"],
        "logps_rejected_mean": first["logps/rejected"],
    }


def plain_hf(path: str, tok, rows: list[dict], a) -> dict:
    """The calibration the FLOP/s goal cites: a plain Hugging Face forward and backward (next-token loss,
    full logits, right padding) over the same sequences, prompt+chosen and prompt+rejected, in the same
    micro-batches; no optimizer."""
    seqs = [
        p + c
        for row in rows
        for p, c in (encode(tok, row["prompt"], row["chosen"]), encode(tok, row["prompt"], row["rejected"]))
    ]
    model = (
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        .to(DEVICE)
        .train()
    )
    batches = []
    for s in range(0, len(seqs), 2 * a.micro_pairs):
        part = seqs[s : s + 2 * a.micro_pairs]
        ids = torch.full((len(part), max(map(len, part))), -100)
        for i, q in enumerate(part):
            ids[i, : len(q)] = torch.tensor(q)
        batches.append(ids.to(DEVICE))
    times = []
    for _ in range(a.steps + 1):
        t0 = time.perf_counter()
        for labels in batches:
            with autocast(a.bf16, DEVICE):
                loss = model(input_ids=labels.clamp(min=0), labels=labels).loss
            loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"step_seconds": times[1:], "loss_first_step": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs-per-step", type=int, default=8)
    ap.add_argument("--micro-pairs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per trainer, after one warm-up step")
    ap.add_argument("--max-len", type=int, default=640)
    ap.add_argument(
        "--pairs",
        default="gsm8k",
        choices=("gsm8k", "arith"),
        help="long GSM8K pairs or short arith edit pairs",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast for every trainer (only sensible where bf16 is native)",
    )
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out: trl, lookahead, plain")
    ap.add_argument("--out", type=Path, default=Path("results/bench/training.json"))
    a = ap.parse_args()
    path = models.resolve_model()
    tok = AutoTokenizer.from_pretrained(path)
    rows = bench_pairs(tok, a.pairs_per_step, a.pairs)
    peaks = {
        "fp32": matmul_peak(torch.float32, 2048),
        "bf16": matmul_peak(torch.bfloat16, 2048 if a.bf16 else 512),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.jsonl"
        write_jsonl(pairs_file, rows)
        for label, method, anchor in OURS:
            if anchor == "lookahead" and "lookahead" in a.skip:
                continue
            results[label] = ours(path, tok, pairs_file, tmp, method, anchor, a)
        if "trl" not in a.skip:
            results["trl DPOTrainer"] = trl(path, tok, rows, tmp, a)
        if "plain" not in a.skip:
            results["plain HF fwd+bwd"] = plain_hf(path, tok, rows, a)
    peak, tokens, n_params = (
        peaks["bf16" if a.bf16 else "fp32"],
        results["dpo"]["tokens_per_step"],
        results["dpo"]["parameters"],
    )
    for r in results.values():
        r["seconds_per_step"] = statistics.median(r["step_seconds"])
        r["tokens_per_second"] = tokens / r["seconds_per_step"]
        r["seconds_per_pair"] = r["seconds_per_step"] / a.pairs_per_step
        r["gflops_6n"] = 6 * n_params * r["tokens_per_second"] / 1e9
        r["share_of_peak"] = r["gflops_6n"] / peak
    base = results["dpo"]["seconds_per_step"]
    print(
        f"\n{tokens} tokens per step ({a.pairs_per_step} pairs), N = {n_params / 1e6:.1f}M parameters, "
        f"matmul peak fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s"
    )
    print(
        f"{'trainer':<18}{'s/step':>9}{'s/pair':>8}{'tok/s':>8}{'× our dpo':>11}{'6N GFLOP/s':>12}"
        f"{'% of peak':>11}{'loss step 1':>13}"
    )
    for label, r in results.items():
        print(
            f"{label:<18}{r['seconds_per_step']:>9.2f}{r['seconds_per_pair']:>8.2f}{r['tokens_per_second']:>8.1f}"
            f"{r['seconds_per_step'] / base:>11.2f}{r['gflops_6n']:>12.1f}{100 * r['share_of_peak']:>10.1f}%"
            f"{r['loss_first_step'] or float('nan'):>13.6f}"
        )
    check = {}
    if "trl DPOTrainer" in results:
        t, o = results["trl DPOTrainer"], results["dpo"]
        ours_c, ours_r = statistics.fmean(o["logps_chosen"]), statistics.fmean(o["logps_rejected"])
        check = {
            "speedup_vs_trl": t["seconds_per_step"] / base,
            "logps_chosen_rel_diff": abs(ours_c - t["logps_chosen_mean"]) / abs(t["logps_chosen_mean"]),
            "logps_rejected_rel_diff": abs(ours_r - t["logps_rejected_mean"]) / abs(t["logps_rejected_mean"]),
            "loss_first_step_rel_diff": abs(o["loss_first_step"] - t["loss_first_step"])
            / t["loss_first_step"],
        }
        print(
            f"our dpo vs TRL: {check['speedup_vs_trl']:.2f}× tokens/s; "
            f"first step, mean log-prob chosen {ours_c:.4f} vs "
            f"{t['logps_chosen_mean']:.4f} (rel {check['logps_chosen_rel_diff']:.1e}), "
            f"rejected {ours_r:.4f} vs "
            f"{t['logps_rejected_mean']:.4f} (rel {check['logps_rejected_rel_diff']:.1e}), "
            f"loss rel {check['loss_first_step_rel_diff']:.1e}"
        )
    meta = {
        "note": "gflops_6n = 6·N·tokens/s with the prompt counted twice per pair (as the work is defined); "
        "ours computes it once",
        "device": DEVICE,
        "pairs": a.pairs,
        "pairs_per_step": a.pairs_per_step,
        "micro_pairs": a.micro_pairs,
        "steps_timed": a.steps,
        "tokens_per_step": tokens,
        "bf16": bool(a.bf16),
        "model": models.DEFAULT_MODEL,
        "parameters": n_params,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peaks,
        "machine": machine(),
    }
    write_json(a.out, {"meta": meta, "results": results, "check": check}, trailing_newline=True)


if __name__ == "__main__":
    main()
