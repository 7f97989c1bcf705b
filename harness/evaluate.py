"""Score checkpoints on GSM8K, MATH-500, arith (generated, calibrated word problems) and TL;DR, judge their summaries, and measure their shift
from the reference model.

    python -m harness.evaluate --model PATH --tasks gsm8k,math,tldr --out results/runs/x
    python -m harness.evaluate --model REF A B --out runs/ref runs/a runs/b   # one engine for all three

Several checkpoints of one architecture share one generation engine: each one's weights are
loaded into it in turn (vLLM start-up is paid once). The reference model is evaluated first when
it is among them, so the others' TL;DR summaries are also judged against its summaries.

Per run folder: eval.json (metrics, sampling settings, config, versions, commit) and samples.jsonl
(every prompt, output, extracted answer, score and judge verdict). Generation runs in bf16 on the
chosen backend where the hardware has native bf16, else fp32 (`--dtype float32` for exact backend
comparisons); log-prob scoring runs in fp32.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import judge as judges
from harness import models
from harness.generation import BACKENDS, DTYPES, Completion, Generator, Sampling, chat_prompts, make_generator, same_architecture
from harness.runinfo import commit, versions
from harness.shift import ShiftScorer, identity_shift, output_stats
from tasks import arith, gsm8k, tldr
from tasks import math as mathtask
from tasks.arith import DEFAULT_LEVEL as ARITH_LEVEL  # EvalConfig's field `arith` shadows the module in its body
from common import fingerprint, read_jsonl, run_main, write_json, write_jsonl
from tasks.data import cache_dir
from trainers.pairfile import read_pairs

SAMPLING = {"gsm8k": Sampling(max_tokens=256), "math": Sampling(max_tokens=512), "arith": Sampling(max_tokens=128), "tldr": Sampling(max_tokens=64)}
KL_SAMPLING = Sampling(max_tokens=128, temperature=1.0)
TASKS = tuple(SAMPLING)


@dataclass
class EvalConfig:
    reference: str = models.DEFAULT_MODEL  # the model shift is measured from, and the judge's baseline
    tasks: tuple[str, ...] = TASKS
    gsm8k: int = 100                       # first N GSM8K test questions
    math: int = 100                        # first N MATH-500 problems
    arith: int = 300                       # first N generated arith test problems
    arith_level: int = ARITH_LEVEL    # arith difficulty (tasks.arith.LEVELS; results/calibration/arith.md)
    tldr: int = 100                        # first N TL;DR eval posts
    kl_prompts: int = 32                   # eval prompts sampled at temperature 1 for the KL estimate
    heldout: list[dict] = field(default_factory=list)  # held-out pairs for Δ log-prob
    backend: str = "auto"
    dtype: str = "auto"                    # generation precision: auto (bf16 where native, else fp32), bfloat16, float32
    max_tokens: int | None = None          # caps every task's max_tokens (quick runs); recorded with the sampling
    seed: int = 0
    judge: str = "offline"                 # none or one of harness.judge.JUDGE_KINDS
    judge_model: str | None = None         # hf: checkpoint path; endpoint: model name
    judge_url: str | None = None           # endpoint: OpenAI-compatible base URL (…/v1)
    judge_key_env: str = "OPENAI_API_KEY"  # endpoint: env var holding the key (never written anywhere)
    cross_check: bool = False              # also run lm-eval on the same tasks and prompts
    cross_check_limit: int | None = None   # items per task for lm-eval (default: the same N as ours)
    reference_run: str | None = None       # the reference's run folder: its TL;DR summaries are the judge's baseline when it is not evaluated in this call
    run_key: str | None = None             # the caller's tag for these settings, stored with the config (compare --resume matches it)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "heldout"} | {"heldout_pairs": len(self.heldout)}


def load_items(cfg: EvalConfig) -> dict[str, list[dict]]:
    loaders = {"gsm8k": lambda: gsm8k.load("test")[: cfg.gsm8k], "math": lambda: mathtask.load("test")[: cfg.math],
               "arith": lambda: arith.load("test", cfg.arith, cfg.arith_level), "tldr": lambda: tldr.split(tldr.load())[0][: cfg.tldr]}
    return {t: loaders[t]() for t in cfg.tasks}


def conversation(task: str, item: dict) -> list[dict]:
    return {"gsm8k": lambda: gsm8k.prompt(item["question"]), "arith": lambda: arith.prompt(item["question"]), "math": lambda: mathtask.prompt(item["problem"]),
            "tldr": lambda: tldr.prompt(item)}[task]()


def grade(task: str, items: list[dict], outs: list[Completion]) -> tuple[dict, list[dict], list[bool] | None]:
    """(metrics, per-item sample rows, answer-format flags) for one task's greedy outputs."""
    texts = [o.text for o in outs]
    if task in ("gsm8k", "arith"):  # arith shares GSM8K's extraction and numeric equivalence
        golds = [gsm8k.gold_answer(q["answer"]) for q in items]
        rows = [{"id": q.get("id", f"gsm8k-{i}"), "gold": g, "extracted": gsm8k.extract_answer(t), "correct": gsm8k.is_correct(t, g)}
                for i, (q, g, t) in enumerate(zip(items, golds, texts))]
        correct = sum(r["correct"] for r in rows)
        level = {"level": items[0]["level"]} if task == "arith" and items else {}
        return {"accuracy": 100 * correct / len(rows), "correct": correct, "n": len(rows), **level}, rows, ["####" in t for t in texts]
    if task == "math":
        rows = [{"id": q["unique_id"], "gold": q["answer"], "subject": q["subject"], "level": q["level"], **mathtask.grade(t, q["answer"])}
                for q, t in zip(items, texts)]
        return mathtask.aggregate(items, [r["correct"] for r in rows]), rows, [r["boxed"] for r in rows]
    scores = tldr.rouge_each(texts, [p["gold_response"] for p in items])
    rows = [{"id": p["instruction_id"], "gold": p["gold_response"], **s} for p, s in zip(items, scores)]
    return {**tldr.mean_rouge(scores), "n": len(rows)}, rows, None


class Evaluator:
    """One generation engine, one reference scorer and one judge for all checkpoints of a call."""

    def __init__(self, cfg: EvalConfig):
        from transformers import AutoTokenizer

        self.cfg, self.ref_path = cfg, models.resolve_model(cfg.reference)
        self.items = load_items(cfg)
        tok = AutoTokenizer.from_pretrained(self.ref_path)
        self.convs = {t: [conversation(t, it) for it in items] for t, items in self.items.items()}
        self.prompts = {t: chat_prompts(tok, c) for t, c in self.convs.items()}
        self.gen: Generator | None = None
        self.scorer: ShiftScorer | None = None
        self.judge = None if cfg.judge == "none" else judges.make_judge(cfg.judge, cfg.judge_url, cfg.judge_model, cfg.judge_key_env)
        self.ref_summaries: list[str] | None = None  # the reference's TL;DR outputs, once evaluated (or from an earlier call)
        earlier = Path(cfg.reference_run or "") / "samples.jsonl"
        if cfg.reference_run and earlier.is_file() and "tldr" in self.items:
            summaries = [s["output"] for s in read_jsonl(earlier) if s["task"] == "tldr"]
            self.ref_summaries = summaries if len(summaries) == len(self.items["tldr"]) else None

    def _sampling(self, base: Sampling) -> Sampling:
        return replace(base, seed=self.cfg.seed, max_tokens=min(base.max_tokens, self.cfg.max_tokens or base.max_tokens))

    def _generator(self, path: str) -> Generator:
        if self.gen is None:
            self.gen = make_generator(path, self.cfg.backend, self.cfg.dtype, seed=self.cfg.seed)
        else:
            self.gen.load(path)
        return self.gen

    def _judge(self, items: list[dict], summaries: list[str], vs_reference: bool) -> tuple[dict, list[dict]]:
        """TL;DR win rates: vs the human summary (anchor: the post) and, for a policy, vs the reference model's summary (anchor: the human one)."""
        cache = cache_dir() / "judge" / f"{self.judge.name.replace('/', '_').replace(':', '_')}.jsonl"
        post = [conv[0]["content"] for conv in self.convs["tldr"]]
        vs = {"human": [{"id": p["instruction_id"], "prompt": x, "output": s, "baseline": p["gold_response"]}
                        for p, x, s in zip(items, post, summaries)]}
        if vs_reference and self.ref_summaries is not None:
            vs["reference"] = [{"id": p["instruction_id"], "prompt": x, "output": s, "baseline": b, "reference": p["gold_response"]}
                               for p, x, s, b in zip(items, post, summaries, self.ref_summaries)]
        result = {name: judges.win_rate(self.judge, rows, cache, progress=f"judge vs {name}") for name, rows in vs.items()}
        per_item = [{f"judge_vs_{name}": r["verdicts"][i]["score"] for name, r in result.items()} for i in range(len(items))]
        return {name: {k: v for k, v in r.items() if k != "verdicts"} for name, r in result.items()}, per_item

    def run(self, model: str, out: Path) -> dict:
        cfg, path = self.cfg, models.resolve_model(model)
        is_ref = Path(path).resolve() == Path(self.ref_path).resolve()
        t0, before = time.time(), dict(self.gen.stats) if self.gen else {}
        gen = self._generator(path)
        result: dict = {"model": model, "reference": cfg.reference, "backend": gen.backend, "dtype": gen.dtype, "seed": cfg.seed}
        samples: list[dict] = []
        for task, items in self.items.items():
            sampling = self._sampling(SAMPLING[task])
            outs = [o[0] for o in gen.generate(self.prompts[task], sampling, desc=task)]
            metrics, rows, formatted = grade(task, items, outs)
            result[task] = {**metrics, "outputs": output_stats(outs, formatted), "sampling": sampling.record()}
            if task == "tldr" and self.judge is not None:
                result[task]["judge"], verdicts = self._judge(items, [o.text for o in outs], vs_reference=not is_ref)
                rows = [{**r, **v} for r, v in zip(rows, verdicts)]
            if task == "tldr" and is_ref:
                self.ref_summaries = [o.text for o in outs]
            samples += [{"task": task, "prompt": c[0]["content"], "output": o.text, **r} for c, o, r in zip(self.convs[task], outs, rows)]
        result["shift"] = identity_shift(len(cfg.heldout)) if is_ref else self._shift(gen, path)
        seconds = time.time() - t0
        stats = {k: v - before.get(k, 0) for k, v in gen.stats.items()}  # this model's share of the shared engine's work
        result["generation"] = {**stats, "tokens_per_second": stats["tokens"] / max(stats["seconds"], 1e-9), "engine_reused": bool(before)}
        if cfg.cross_check:
            result["cross_check"] = self._cross_check(path, samples)
        result |= {"config": cfg.record(), "fingerprint": fingerprint(path), "seconds": seconds, "versions": versions(), "commit": commit()}
        write_jsonl(out / "samples.jsonl", samples)
        write_json(out / "eval.json", result)
        return result

    def _shift(self, gen: Generator, path: str) -> dict:
        """KL samples from the policy on the first eval prompts of the tasks, then fp32 scoring."""
        lists = list(self.prompts.values())  # round robin over the tasks: each gets an equal share
        kl_prompts = [ps[i] for i in range(max(map(len, lists), default=0)) for ps in lists if i < len(ps)][: self.cfg.kl_prompts]
        sampling = self._sampling(KL_SAMPLING)
        kl_samples = [o[0] for o in gen.generate(kl_prompts, sampling, desc="kl samples")] if kl_prompts else []
        if self.scorer is None:
            self.scorer = ShiftScorer(self.ref_path, self.cfg.heldout)
        return {**self.scorer.measure(path, kl_prompts, kl_samples), "kl_sampling": sampling.record()}

    def _cross_check(self, path: str, samples: list[dict]) -> dict:
        """lm-eval's numbers on the first `limit` items of each task, beside ours on the same items."""
        from harness.crosscheck import TASKS as LM_EVAL_TASKS
        from harness.crosscheck import run_lm_eval

        tasks = [t for t in self.cfg.tasks if t in LM_EVAL_TASKS]  # arith has no lm-eval task
        limit = self.cfg.cross_check_limit or max(len(self.items[t]) for t in tasks)
        lm = run_lm_eval(path, tasks, limit, dtype=self.gen.dtype, log_samples=True)  # the precision our generation used
        out: dict = {"lm_eval_version": lm["lm_eval_version"], "seconds": lm["seconds"], "limit": limit}
        for task in tasks:
            mine = [s for s in samples if s["task"] == task][:limit]
            theirs = lm[task].pop("samples")
            ours = sum(s["rougeL"] if task == "tldr" else 100 * s["correct"] for s in mine) / len(mine)
            out[task] = {"ours": ours, "n": len(mine), "lm_eval": lm[task],
                         "same_output": sum(a["output"].strip() == b["output"].strip() for a, b in zip(mine, theirs))}  # both in item order
        return out


def check_models(models_: list[str], outs: list[Path]) -> None:
    """One output folder per model, and one architecture and tokenizer for all (one engine)."""
    if len(models_) != len(outs):
        raise ValueError(f"{len(models_)} models but {len(outs)} output folders: give one --out per --model")
    paths = [models.resolve_model(m) for m in models_]
    for m, p in zip(models_[1:], paths[1:]):
        if not same_architecture(paths[0], p):
            raise ValueError(f"{m}: not the architecture/tokenizer of {models_[0]}; evaluate it in a separate call")


def evaluate(models_: list[str], outs: list[Path], cfg: EvalConfig) -> list[dict]:
    """Evaluate several checkpoints with one engine (the reference first when present); results in the given order."""
    check_models(models_, outs)
    paths = [models.resolve_model(m) for m in models_]
    ref = Path(models.resolve_model(cfg.reference)).resolve()
    order = sorted(range(len(paths)), key=lambda i: Path(paths[i]).resolve() != ref)  # stable: reference first
    ev = Evaluator(cfg)
    results = {i: ev.run(models_[i], outs[i]) for i in order}
    return [results[i] for i in range(len(paths))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m harness.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=[models.DEFAULT_MODEL], help="HF checkpoint dir(s) or hub id(s) (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path, nargs="+", required=True, help="one folder per --model for eval.json and samples.jsonl")
    ap.add_argument("--reference", default=models.DEFAULT_MODEL, help="reference model for shift and judge baselines (default: the default model)")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)} (default all)")
    ap.add_argument("--gsm8k", type=int, default=100, metavar="N", help="GSM8K test questions, from the start (default 100)")
    ap.add_argument("--math", type=int, default=100, metavar="N", help="MATH-500 problems, from the start (default 100)")
    ap.add_argument("--arith", type=int, default=300, metavar="N", help="generated arith test problems (default 300)")
    ap.add_argument("--arith-level", type=int, default=arith.DEFAULT_LEVEL,
                    help=f"arith difficulty level (default {arith.DEFAULT_LEVEL}; see results/calibration/arith.md)")
    ap.add_argument("--tldr", type=int, default=100, metavar="N", help="TL;DR eval posts, from the start (default 100)")
    ap.add_argument("--kl-prompts", type=int, default=32, metavar="N", help="eval prompts sampled for the KL estimate (default 32)")
    ap.add_argument("--heldout", type=Path, nargs="*", default=[], help="held-out pair JSONL files for Δ log-prob")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="generation backend (auto: vLLM if installed, else HF)")
    ap.add_argument("--dtype", choices=DTYPES, default="auto",
                    help="generation precision (default auto: bf16 where the hardware runs it natively, else fp32)")
    ap.add_argument("--max-tokens", type=int, metavar="N", help="cap every task's generation length (default: 256 GSM8K, 512 MATH, 64 TL;DR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-run", help="the reference's earlier run folder: its TL;DR summaries are the judge baseline when --model omits the reference")
    ap.add_argument("--run-key", help="a tag for these settings, stored in eval.json (compare --resume uses it)")
    j = ap.add_argument_group("judge (TL;DR win rate vs the human summary and vs the reference model)")
    j.add_argument("--judge", choices=("none", *judges.JUDGE_KINDS), default="offline",
                   help="offline: embedding similarity (ROUGE-L without the embedding package); hf: local model; endpoint: OpenAI-compatible")
    j.add_argument("--judge-model", help="hf: checkpoint path; endpoint: model name")
    j.add_argument("--judge-url", help="endpoint: base URL, e.g. http://127.0.0.1:8000/v1 (vllm serve)")
    j.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="env var that holds the endpoint's API key (never logged)")
    c = ap.add_argument_group("cross-check")
    c.add_argument("--cross-check", choices=("lm-eval",), help="also score the same tasks and prompts with lm-evaluation-harness")
    c.add_argument("--cross-check-limit", type=int, metavar="N", help="items per task for lm-eval (default: the same N as ours)")
    a = ap.parse_args(argv)
    tasks = tuple(t.strip() for t in a.tasks.split(",") if t.strip())
    if bad := [t for t in tasks if t not in TASKS]:
        ap.error(f"unknown task(s) {', '.join(bad)}; valid: {', '.join(TASKS)}")
    if any(getattr(a, t) < 1 for t in tasks):
        ap.error("each evaluated task needs at least 1 item")
    cfg = EvalConfig(reference=a.reference, tasks=tasks, gsm8k=a.gsm8k, math=a.math, arith=a.arith, arith_level=a.arith_level, tldr=a.tldr, kl_prompts=a.kl_prompts,
                     heldout=[p for f in a.heldout for p in read_pairs(str(f))], backend=a.backend, dtype=a.dtype, max_tokens=a.max_tokens, seed=a.seed,
                     judge=a.judge, judge_model=a.judge_model, judge_url=a.judge_url, judge_key_env=a.judge_key_env,
                     cross_check=a.cross_check == "lm-eval", cross_check_limit=a.cross_check_limit, reference_run=a.reference_run, run_key=a.run_key)
    try:
        check_models(a.model, a.out)
    except ValueError as e:
        ap.error(str(e))
    for r in evaluate(a.model, a.out, cfg):
        print(json.dumps({"model": r["model"], **{k: r[k] for k in (*tasks, "shift") if k in r}}, default=str))


if __name__ == "__main__":
    run_main(main)
