"""Score one checkpoint: GSM8K accuracy, TL;DR ROUGE, and its shift from the reference model.

    python -m harness.evaluate --model outputs/x/checkpoint --heldout pairs.jsonl --out results/runs/x

Shift (against --reference, on held-out pairs and eval prompts):
- Δ log-prob chosen / rejected: mean over pairs of a_θ(y) − a_ref(y) (token-mean log-probs);
- KL: E_{y~π_θ}[log π_θ(y|x) − log π_ref(y|x)], from one sample per prompt at temperature 1
  (sequence-level; a sample cut by max_tokens counts its prefix, no end-of-turn token).
Generation runs in bf16 on the chosen backend; log-prob scoring runs in fp32 with HF.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from harness import models
from harness.generation import BACKENDS, Sampling, chat_prompts, make_generator
from tasks import gsm8k, tldr
from tasks.data import write_jsonl, write_text_atomic
from trainers.trainer import read_pairs

GSM8K_SAMPLING = Sampling(max_tokens=256)
TLDR_SAMPLING = Sampling(max_tokens=64)
KL_SAMPLING = Sampling(max_tokens=128, temperature=1.0)


def shift(policy_path: str, reference_path: str, heldout: list[dict], kl_prompts: list[str], kl_samples, batch_size: int = 16) -> dict:
    """Δ mean log-prob of held-out chosen/rejected and the sequence-KL estimate, policy vs reference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.logprobs import encode, score

    tok = AutoTokenizer.from_pretrained(policy_path)
    chosen = [encode(tok, p["prompt"], p["chosen"]) for p in heldout]
    rejected = [encode(tok, p["prompt"], p["rejected"]) for p in heldout]
    kl_p = [tok(t, add_special_tokens=False)["input_ids"] for t in kl_prompts]
    kl_c = [c.token_ids + [tok.eos_token_id] * c.finished for c in kl_samples]
    prompts = [p for p, _ in chosen + rejected] + kl_p
    completions = [c for _, c in chosen + rejected] + kl_c
    scores = {}
    for name, path in (("policy", policy_path), ("reference", reference_path)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        scores[name] = score(model, prompts, completions, batch_size, progress=f"log-probs ({name})")
        del model
    n = len(heldout)
    d_mean = scores["policy"].mean - scores["reference"].mean
    d_sum = scores["policy"].total - scores["reference"].total
    return {
        "dlogp_chosen": d_mean[:n].mean().item() if n else None,
        "dlogp_rejected": d_mean[n : 2 * n].mean().item() if n else None,
        "heldout_pairs": n,
        "kl": d_sum[2 * n :].mean().item() if kl_c else None,
        "kl_samples": len(kl_c),
        "kl_finished_share": sum(c.finished for c in kl_samples) / max(1, len(kl_c)),
    }


def evaluate(model: str, reference: str = models.DEFAULT_MODEL, gsm8k_n: int = 100, tldr_n: int = 100,
             kl_n: int = 32, heldout: list[dict] | None = None, backend: str = "auto", seed: int = 0) -> tuple[dict, list[dict]]:
    """(metrics, per-item samples) for one checkpoint."""
    from transformers import AutoTokenizer

    path, ref_path = models.resolve_model(model), models.resolve_model(reference)
    tok = AutoTokenizer.from_pretrained(path)
    timings: dict[str, float] = {}
    t = time.time()
    gen = make_generator(path, backend, seed=seed)
    timings["startup"] = time.time() - t
    result: dict = {"model": model, "reference": reference, "backend": gen.backend, "seed": seed}
    samples: list[dict] = []

    t = time.time()
    qs = gsm8k.load("test")[:gsm8k_n]
    outs = gen.generate(chat_prompts(tok, [gsm8k.prompt(q["question"]) for q in qs]), GSM8K_SAMPLING, desc="gsm8k")
    correct = [gsm8k.is_correct(o[0].text, gsm8k.gold_answer(q["answer"])) for q, o in zip(qs, outs)]
    result["gsm8k"] = {"accuracy": 100 * sum(correct) / max(1, len(qs)), "correct": sum(correct), "n": len(qs),
                       "sampling": GSM8K_SAMPLING.record()}
    samples += [{"task": "gsm8k", "i": i, "output": o[0].text, "correct": c} for i, (o, c) in enumerate(zip(outs, correct))]
    timings["gsm8k"] = time.time() - t

    t = time.time()
    posts = tldr.split(tldr.load())[0][:tldr_n]
    outs = gen.generate(chat_prompts(tok, [tldr.prompt(p) for p in posts]), TLDR_SAMPLING, desc="tldr")
    result["tldr"] = {**tldr.rouge([o[0].text for o in outs], [p["gold_response"] for p in posts]), "n": len(posts),
                      "sampling": TLDR_SAMPLING.record()}
    samples += [{"task": "tldr", "id": p["instruction_id"], "output": o[0].text} for p, o in zip(posts, outs)]
    timings["tldr"] = time.time() - t

    t = time.time()
    if path == ref_path:  # the reference against itself: zero by definition, nothing to sample
        result["shift"] = {"dlogp_chosen": 0.0, "dlogp_rejected": 0.0, "heldout_pairs": len(heldout or []), "kl": 0.0, "kl_samples": 0}
    else:
        convs = [gsm8k.prompt(q["question"]) for q in qs[: kl_n // 2]] + [tldr.prompt(p) for p in posts[: kl_n - kl_n // 2]]
        kl_prompts = chat_prompts(tok, convs)
        kl_sampling = replace(KL_SAMPLING, seed=seed)
        kl_samples = [o[0] for o in gen.generate(kl_prompts, kl_sampling, desc="kl samples")]
        result["shift"] = {**shift(path, ref_path, heldout or [], kl_prompts, kl_samples), "kl_sampling": kl_sampling.record()}
    timings["shift"] = time.time() - t
    result["generation"] = gen.stats
    result["seconds"] = timings
    return result, samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.evaluate", description="Evaluate a checkpoint on GSM8K and TL;DR and measure its shift from the reference.")
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="HF checkpoint dir or hub id (default: provisioned SmolLM2-135M-Instruct)")
    ap.add_argument("--reference", default=models.DEFAULT_MODEL, help="reference model for the shift metrics (default: the default model)")
    ap.add_argument("--gsm8k", type=int, default=100, metavar="N", help="GSM8K test questions, from the start (default 100)")
    ap.add_argument("--tldr", type=int, default=100, metavar="N", help="TL;DR eval posts, from the start (default 100)")
    ap.add_argument("--kl-prompts", type=int, default=32, metavar="N", help="eval prompts sampled for the KL estimate (default 32)")
    ap.add_argument("--heldout", type=Path, nargs="*", default=[], help="held-out pair JSONL files for Δ log-prob")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="generation backend (auto: vLLM if installed, else HF)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="folder for eval.json and samples.jsonl")
    a = ap.parse_args(argv)
    if min(a.gsm8k, a.tldr) < 1:
        ap.error("--gsm8k and --tldr need at least 1 item each")
    heldout = [p for f in a.heldout for p in read_pairs(str(f))]
    result, samples = evaluate(a.model, a.reference, a.gsm8k, a.tldr, a.kl_prompts, heldout, a.backend, a.seed)
    write_jsonl(a.out / "samples.jsonl", samples)
    write_text_atomic(a.out / "eval.json", json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("gsm8k", "tldr", "shift")}, default=str))


if __name__ == "__main__":
    main()
