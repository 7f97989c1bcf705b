"""The whole compare against the pipeline a user would otherwise run, on the same small work, in one run:

    python bench/pipeline.py [--lm-eval-backends hf,vllm] [--eval-items 10] [--pairs 24] [--model NAME]

ours: `python -m harness.compare --methods dpo,spo` on SETTING (pairs sampled from the reference model, both
trainings, evaluation of the reference and both checkpoints, leaderboard), timed end to end, with its stage
times from compare.json.

peer: the same training pairs (ours' outputs/train_pairs.jsonl, handed over for free: the peer has no pair
sampling stage), TRL's DPOTrainer with its fastest offered settings (precomputed reference log-probs, bf16
where native), once per method with the same epochs, batch, lr and β; SPO has no TRL form, so a second
TRL DPO run stands in for it. Then lm-eval on the reference and both checkpoints over our lm-eval YAMLs
(tasks/lm_eval: the same items, prompts and scoring, ROUGE by rouge-score), each model loaded afresh as
lm-eval does, once per lm-eval backend (default both: `hf` and `vllm`), each its own peer with the same
TRL trainings. Ours evaluates its reference afresh (--no-reuse-reference: the same work as the peer's).
What ours does on top: the pairs, the held-out shift metrics and the leaderboard, report and figures.
Prints the stages side by side and the ratio per backend; writes results/bench/pipeline.json. Run nothing
else meanwhile: both sides share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import read_jsonl, write_json
from harness import models
from harness.crosscheck import run_lm_eval
from harness.runinfo import machine, stage_env
from trainers.logprobs import native_bf16

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["gsm8k", "math", "tldr"]  # the tasks with an lm-eval twin (tasks/lm_eval)


def setting(a) -> list[str]:
    """compare's options for the fixed work: arith edit pairs as in the cpu preset, fewer of them, one epoch,
    `eval_items` items of each task with an lm-eval twin, no judge (lm-eval has none), no probes or KL."""
    held = a.pairs // 4
    return [
        "--model", a.model, "--methods", "dpo,spo", "--tasks", ",".join(TASKS),
        "--arith-pairs", str(a.pairs + held), "--heldout", str(held), "--epochs", "1",
        "--judge", "none", "--probe-every", "0", "--kl-prompts", "0", "--no-reuse-reference",
        "--gsm8k-eval", str(a.eval_items), "--math-eval", str(a.eval_items), "--tldr-eval", str(a.eval_items),
    ]  # fmt: skip


def run_ours(a, work: Path) -> dict:
    cmd = [sys.executable, "-m", "harness.compare", *setting(a)]
    cmd += ["--results", str(work / "results"), "--outputs", str(work / "outputs")]
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, env=stage_env(), check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - start
    meta = json.loads((work / "results" / "runs" / "compare.json").read_text())
    board = json.loads((work / "results" / "leaderboard.json").read_text())
    return {
        "wall_seconds": wall,
        "stages": meta["stage_seconds"],
        "command": " ".join(cmd[1:]),
        "rows": board["rows"],
    }


def trl_train(model_path: str, rows: list[dict], out: Path) -> float:
    """One TRL DPO run over `rows` to `out`, as our trainer runs it (cpu preset: batches of 8 pairs in
    micro-batches of 4, lr 5e-5, β 0.1, warm-up 10 %); seconds from the model load to the saved
    checkpoint."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    start = time.time()
    tok = AutoTokenizer.from_pretrained(model_path)
    args = DPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        learning_rate=5e-5,
        beta=0.1,
        # as our trainer: linear warm-up over 10 % of the steps, at least one (TRL 1.x has no warmup_ratio)
        warmup_steps=max(1, int(0.1 * -(-len(rows) // 8))),
        max_length=640,
        precompute_ref_log_probs=True,
        bf16=native_bf16(),
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_dropout=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    return time.time() - start


def run_peer(a, pairs_file: Path, work: Path) -> dict:
    """TRL's two trainings, then per lm-eval backend the three models' evaluation: {backend: peer}."""
    from transformers import AutoTokenizer

    model_path = models.resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(model_path)
    pairs = list(read_jsonl(pairs_file))
    prompts = [
        tok.apply_chat_template(p["prompt"], add_generation_prompt=True, tokenize=False) for p in pairs
    ]
    rows = [{"prompt": x, "chosen": p["chosen"], "rejected": p["rejected"]} for x, p in zip(prompts, pairs)]
    training = {f"train {m} (TRL DPO)": trl_train(model_path, rows, work / m) for m in ("dpo", "spo")}
    peers = {}
    for backend in a.lm_eval_backends.split(","):
        stages, scores = dict(training), {}
        for name, path in (("reference", model_path), ("dpo", work / "dpo"), ("spo", work / "spo")):
            result = run_lm_eval(str(path), TASKS, a.eval_items, backend=backend)
            stages[f"lm-eval {backend} {name}"] = result["seconds"]
            scores[name] = {t: {k: v for k, v in result[t].items() if k != "samples"} for t in TASKS}
        peers[backend] = {"stages": stages, "wall_seconds": sum(stages.values()), "scores": scores}
    return peers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pairs", type=int, default=24, help="training pairs (a quarter more are sampled to hold out)"
    )
    ap.add_argument("--eval-items", type=int, default=10, help="items of each of GSM8K, MATH-500, TL;DR")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="a provisioned name, folder or hub id")
    ap.add_argument("--lm-eval-backends", default="hf,vllm", help="comma-separated: hf, vllm (default both)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "pipeline.json")
    a = ap.parse_args()
    if bad := set(a.lm_eval_backends.split(",")) - {"hf", "vllm"}:
        ap.error(f"--lm-eval-backends: unknown {', '.join(sorted(bad))}; valid: hf, vllm")
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = run_ours(a, work / "ours")
        peers = run_peer(a, work / "ours" / "outputs" / "train_pairs.jsonl", work / "peer")
    without_pairs = ours["wall_seconds"] - ours["stages"].get("pairs", 0.0)
    ratios = {
        backend: {
            "end_to_end": peer["wall_seconds"] / ours["wall_seconds"],
            "end_to_end_without_our_pairs_stage": peer["wall_seconds"] / without_pairs,
        }
        for backend, peer in peers.items()
    }
    print(f"\nthe same work: {' '.join(setting(a))}")
    for backend, peer in peers.items():
        print(f"\n{'ours: harness.compare':<40}{'s':>8}    {f'peer: TRL + lm-eval {backend}':<36}{'s':>8}")
        left, right = list(ours["stages"].items()), list(peer["stages"].items())
        for i in range(max(len(left), len(right))):
            l_name, l_s = left[i] if i < len(left) else ("", None)
            r_name, r_s = right[i] if i < len(right) else ("", None)
            l_txt = f"{l_s:>8.1f}" if l_s is not None else " " * 8
            r_txt = f"{r_s:>8.1f}" if r_s is not None else ""
            print(f"{l_name:<40}{l_txt}    {r_name:<36}{r_txt}")
        total = f"{'end to end (wall)':<40}{ours['wall_seconds']:>8.1f}    {'sum of stages':<36}"
        print(f"{total}{peer['wall_seconds']:>8.1f}")
        r = ratios[backend]
        print(
            f"peer ({backend}) / ours: {r['end_to_end']:.2f}× end to end, "
            f"{r['end_to_end_without_our_pairs_stage']:.2f}× leaving out our pairs stage"
        )
    meta = {"machine": machine(stage_env()), "lm_eval_backends": list(peers), "setting": setting(a)}
    write_json(a.out, {"meta": meta, "ours": ours, "peers": peers, "ratios": ratios}, trailing_newline=True)


if __name__ == "__main__":
    main()
