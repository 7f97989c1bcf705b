"""Score checkpoints on the registered tasks (tasks.TASKS: GSM8K, MATH-500, arith, TL;DR), judge the
outputs of judged tasks (TL;DR summaries), and measure their shift from the reference model.

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

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common import (
    ConfigError,
    atomic_file,
    config_from_args,
    config_parser,
    digest,
    fingerprint,
    option,
    read_jsonl,
    run_main,
    write_json,
    write_jsonl,
)
from harness import judge as judges
from harness import models, refcache
from harness.generation import (
    BACKENDS,
    DTYPES,
    Completion,
    Generator,
    Group,
    Sampling,
    make_generator,
    resolve_backend,
    same_architecture,
    same_tokenizer,
)
from harness.runinfo import commit, device_class, versions
from harness.shift import ShiftScorer, identity_shift, output_stats
from harness.taskflags import TASK_FIELDS, add_task_flags, fill_task_settings
from tasks import TASKS
from tasks.base import resolve_options
from tasks.data import cache_dir
from trainers.logprobs import resolve_dtype
from trainers.pairfile import read_pairs
from trainers.probes import GREEDY_TOKENS
from trainers.tokens import prompt_ids

KL_SAMPLING = Sampling(max_tokens=128, temperature=1.0)
# the held-out probes' greedy response, as capped in the training probes
GREEDY_SAMPLING = Sampling(max_tokens=GREEDY_TOKENS)


@dataclass
class EvalConfig:
    """The evaluation stage: flags, YAML/JSON (`--config`) and compare's stage file all come from here."""

    model: list[str] = option(
        [models.DEFAULT_MODEL], "HF checkpoint dir(s) or hub id(s), one engine for all", nargs="+"
    )
    out: list[str] = option([], "one folder per --model for eval.json and samples.jsonl", nargs="+")
    reference: str | None = option(
        None,
        "the model shift is measured from, and the judge's baseline; it has the models' tokenizer "
        "(default: the first --model)",
    )
    tasks: tuple[str, ...] = option(tuple(TASKS), "comma-separated evaluation tasks", choices=tuple(TASKS))
    sizes: dict[str, int] = option({}, "task → first N test items (default: each task's EVAL_ITEMS)")
    options: dict[str, dict] = option({}, "task → its options (tasks/<task>.py OPTIONS)")
    kl_prompts: int = option(32, "eval prompts sampled at temperature 1 for the KL estimate", metavar="N")
    heldout_files: list[str] = option(
        [], "held-out pair JSONL files for Δ log-prob", flag="--heldout", nargs="*"
    )
    heldout: list[dict] = option([], "held-out pairs for Δ log-prob (read from --heldout)")
    train_pairs_files: list[str] = option(
        [],
        "training pair JSONL files: each pair's chosen Δ log-prob, and on the reference their CHES "
        "(ches.jsonl, harness.diagnose)",
        flag="--train-pairs",
        nargs="*",
    )
    train_pairs: list[dict] = option([], "training pairs (read from --train-pairs)")
    backend: str = option("auto", "generation backend (auto: vLLM if installed, else HF)", choices=BACKENDS)
    dtype: str = option("auto", "generation precision (auto: bf16 where native, else fp32)", choices=DTYPES)
    compile: bool = option(
        True,
        "vLLM in bf16: compile the model (1.07-1.17x the tokens/s; start-up +12-14 s, about +60 s the "
        "first time on a machine)",
    )
    max_tokens: int | None = option(None, "cap on every task's generation length (quick runs)", metavar="N")
    seed: int = option(0, "seed of sampled generations (KL samples)")
    judge: str = option(
        "offline", "TL;DR win-rate judge: none or a judge kind", choices=("none", *judges.JUDGE_KINDS)
    )
    judge_model: str | None = option(None, "judge hf: checkpoint path; endpoint: model name")
    judge_url: str | None = option(
        None, "judge endpoint: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    judge_key_env: str = option(
        "OPENAI_API_KEY", "env var holding the endpoint's API key (never written anywhere)"
    )
    lm_eval_tasks: list[str] = option(
        [], "lm-eval tasks scored on every model with lm-eval's own evaluator (stock or --lm-eval-include)"
    )
    lm_eval_include: list[str] = option([], "folders of your own lm-eval task YAMLs", nargs="*")
    lm_eval_limit: int | None = option(None, "first N items of each lm-eval task (default: all)", metavar="N")
    cross_check: bool = option(False, "also score the same tasks and prompts with lm-evaluation-harness")
    cross_check_limit: int | None = option(None, "items per task for lm-eval (default: the same N as ours)")
    reference_run: str | None = option(
        None, "the reference's earlier run folder: its TL;DR summaries are the judge's baseline"
    )
    run_key: str | None = option(None, "a tag for these settings, stored in eval.json (compare --resume)")
    reuse_reference: bool = option(
        False,
        "the reference's evaluation from the cache when its weights, these settings and pairs, the code, the "
        "libraries and the machine class match (harness/refcache.py; compare turns it on)",
    )

    def record(self) -> dict:
        """The settings stored in eval.json: everything but the per-call paths and the pairs themselves."""
        settings = {
            k: v for k, v in asdict(self).items() if k not in ("model", "out", "heldout", "train_pairs")
        }
        return settings | {"heldout_pairs": len(self.heldout), "train_pairs": len(self.train_pairs)}


def load_items(cfg: EvalConfig) -> dict[str, list[dict]]:
    """Each evaluated task's first cfg.sizes[task] test items, loaded with its options."""
    return {
        t: TASKS[t].load("test", cfg.sizes[t], **resolve_options(TASKS[t], cfg.options.get(t, {})))
        for t in cfg.tasks
    }


def conversation(task: str, item: dict) -> list[dict]:
    return TASKS[task].prompt(item)


def grade(task: str, items: list[dict], outs: list[Completion]) -> tuple[dict, list[dict], list[bool] | None]:
    """(metrics, per-item sample rows, answer-format flags) for one task's greedy outputs."""
    return TASKS[task].grade(items, [o.text for o in outs])


class Evaluator:
    """One generation engine, one reference scorer and one judge for all checkpoints of a call."""

    def __init__(self, cfg: EvalConfig):
        from transformers import AutoTokenizer

        self.cfg, self.ref_path = cfg, models.resolve_model(cfg.reference)
        self.items = load_items(cfg)
        tok = AutoTokenizer.from_pretrained(self.ref_path)
        self.convs = {t: [conversation(t, it) for it in items] for t, items in self.items.items()}
        self.prompts = {t: [prompt_ids(tok, x) for x in c] for t, c in self.convs.items()}
        self.gen: Generator | None = None
        self.scorer: ShiftScorer | None = None
        self.judge = (
            None
            if cfg.judge == "none"
            else judges.make_judge(cfg.judge, cfg.judge_url, cfg.judge_model, cfg.judge_key_env)
        )
        # judged task → the reference's outputs, once evaluated (or from an earlier call)
        self.ref_outputs: dict[str, list[str]] = {}
        judged = [t for t in self.items if TASKS[t].JUDGED]
        earlier = Path(cfg.reference_run or "") / "samples.jsonl"
        if cfg.reference_run and earlier.is_file() and judged:
            earlier_samples = read_jsonl(earlier)
            for t in judged:
                outputs = [s["output"] for s in earlier_samples if s["task"] == t]
                if len(outputs) == len(self.items[t]):
                    self.ref_outputs[t] = outputs

    def _sampling(self, base: Sampling) -> Sampling:
        return replace(
            base, seed=self.cfg.seed, max_tokens=min(base.max_tokens, self.cfg.max_tokens or base.max_tokens)
        )

    def _generator(self, path: str) -> Generator:
        if self.gen is None:
            cfg = self.cfg
            self.gen = make_generator(path, cfg.backend, cfg.dtype, seed=cfg.seed, compile=cfg.compile)
        else:
            self.gen.load(path)
        return self.gen

    def _judge(
        self, task: str, graded: list[dict], outputs: list[str], vs_reference: bool, run: str
    ) -> tuple[dict, list[dict]]:
        """Win rates of a judged task's outputs: vs the human reference (each graded row's `gold`; anchor:
        the prompt) and, for a policy, vs the reference model's output (anchor: the human reference)."""
        cache = cache_dir() / "judge" / f"{self.judge.name.replace('/', '_').replace(':', '_')}.jsonl"
        prompts = [conv[0]["content"] for conv in self.convs[task]]
        vs = {
            "human": [
                {"id": g["id"], "prompt": x, "output": s, "baseline": g["gold"]}
                for g, x, s in zip(graded, prompts, outputs)
            ]
        }
        if vs_reference and task in self.ref_outputs:
            vs["reference"] = [
                {"id": g["id"], "prompt": x, "output": s, "baseline": b, "reference": g["gold"]}
                for g, x, s, b in zip(graded, prompts, outputs, self.ref_outputs[task])
            ]
        result = {
            name: judges.win_rate(self.judge, rows, cache, progress=f"{run} judge vs {name}")
            for name, rows in vs.items()
        }
        per_item = [
            {f"judge_vs_{name}": r["verdicts"][i]["score"] for name, r in result.items()}
            for i in range(len(graded))
        ]
        return {name: {k: v for k, v in r.items() if k != "verdicts"} for name, r in result.items()}, per_item

    def reference_key(self, path: str) -> str:
        """The reference's cache key (harness/refcache.py): everything its evaluation depends on."""
        cfg = self.cfg
        # paths that name this call's folders, not what is computed
        unrelated = ("reference", "reference_run", "run_key", "reuse_reference")
        return digest(
            {
                "model": fingerprint(path),
                "settings": {k: v for k, v in cfg.record().items() if k not in unrelated},
                "pairs": [cfg.heldout, cfg.train_pairs],
                "prompts": self.prompts,
                "backend": resolve_backend(cfg.backend),
                "dtype": resolve_dtype(cfg.dtype),
                "versions": versions(),
                "code": refcache.code_digest(),
                "device": device_class(),
            }
        )

    def _reuse(self, key: str, out: Path) -> dict | None:
        """The reference's stored evaluation into `out` (eval.json with this call's settings), or None."""
        files = refcache.load(key)
        if files is None:
            return None
        result = json.loads(files.pop("eval.json")) | {
            "config": self.cfg.record(),
            "reference_cache": {"key": key, "hit": True},
        }
        for name, data in files.items():
            with atomic_file(out / name) as tmp:
                tmp.write_bytes(data)
        write_json(out / "eval.json", result)
        samples = [json.loads(line) for line in files["samples.jsonl"].splitlines()]
        for task in (t for t in self.items if TASKS[t].JUDGED):
            self.ref_outputs[task] = [s["output"] for s in samples if s["task"] == task]
        print(f"{out.name}: evaluation reused from {refcache.folder(key)}", file=sys.stderr, flush=True)
        return result

    def run(self, model: str, out: Path) -> dict:
        cfg, path = self.cfg, models.resolve_model(model)
        is_ref = Path(path).resolve() == Path(self.ref_path).resolve()
        key = self.reference_key(path) if is_ref and cfg.reuse_reference else None
        if key is not None and (reused := self._reuse(key, out)) is not None:
            return reused
        t0, before = time.time(), dict(self.gen.stats) if self.gen else {}
        gen = self._generator(path)
        result: dict = {
            "model": model,
            "reference": cfg.reference,
            "backend": gen.backend,
            "dtype": gen.dtype,
            "compiled": gen.compiled,
            "seed": cfg.seed,
        }
        # every task's prompts, and a policy's KL and probe prompts, as one piece of generation work
        groups = self.task_groups()
        if not is_ref:
            groups |= self._shift_groups()
        generated = dict(zip(groups, gen.generate_groups(list(groups.values()), desc=f"{out.name} generate")))
        samples: list[dict] = []
        for task, items in self.items.items():
            sampling, outs = groups[task][1], [o[0] for o in generated[task]]
            metrics, rows, formatted = grade(task, items, outs)
            result[task] = {
                **metrics,
                "outputs": output_stats(outs, formatted),
                "sampling": sampling.record(),
            }
            texts = [o.text for o in outs]
            if TASKS[task].JUDGED and self.judge is not None:
                result[task]["judge"], verdicts = self._judge(task, rows, texts, not is_ref, out.name)
                rows = [{**r, **v} for r, v in zip(rows, verdicts)]
            if TASKS[task].JUDGED and is_ref:
                self.ref_outputs[task] = texts
            samples += [
                {"task": task, "prompt": c[0]["content"], "output": o.text, "finished": o.finished, **r}
                for c, o, r in zip(self.convs[task], outs, rows)
            ]
        result["shift"] = identity_shift(cfg.heldout) if is_ref else self._shift(path, groups, generated)
        if is_ref and (cfg.train_pairs or cfg.heldout):
            self._ches(out)
        seconds = time.time() - t0
        # this model's share of the shared engine's work
        stats = {k: v - before.get(k, 0) for k, v in gen.stats.items()}
        result["generation"] = {
            **stats,
            "tokens_per_second": stats["tokens"] / max(stats["seconds"], 1e-9),
            "engine_reused": bool(before),
        }
        if cfg.cross_check:
            result["cross_check"] = self._cross_check(path, samples)
        if cfg.lm_eval_tasks:
            from harness.crosscheck import run_lm_eval_tasks

            print(f"lm-eval: {', '.join(cfg.lm_eval_tasks)} on {out.name}", file=sys.stderr, flush=True)
            result["lm_eval"] = run_lm_eval_tasks(
                path, cfg.lm_eval_tasks, cfg.lm_eval_include, cfg.lm_eval_limit, dtype=gen.dtype
            )
        result |= {
            "config": cfg.record(),
            "fingerprint": fingerprint(path),
            "seconds": seconds,
            "versions": versions(),
            "commit": commit(),
        }
        if key is not None:
            result["reference_cache"] = {"key": key, "hit": False}
        write_jsonl(out / "samples.jsonl", samples)
        write_json(out / "eval.json", result)
        if key is not None:
            ches = ["ches.jsonl"] if cfg.train_pairs or cfg.heldout else []
            refcache.store(key, [out / n for n in ["eval.json", "samples.jsonl", *ches]])
        return result

    def task_groups(self) -> dict[str, Group]:
        """Each task's prompts, greedy up to the task's length cap."""
        return {
            task: (self.prompts[task], self._sampling(Sampling(max_tokens=TASKS[task].MAX_TOKENS)))
            for task in self.items
        }

    def kl_prompts(self) -> list[list[int]]:
        """The first eval prompts, taken round robin over the tasks so that each gets an equal share."""
        lists = list(self.prompts.values())
        interleaved = [ps[i] for i in range(max(map(len, lists), default=0)) for ps in lists if i < len(ps)]
        return interleaved[: self.cfg.kl_prompts]

    def _shift_groups(self) -> dict[str, Group]:
        """A policy's generation for its shift: temperature-1 KL samples and the held-out probe prompts'
        greedy responses."""
        return {
            "kl samples": (self.kl_prompts(), self._sampling(KL_SAMPLING)),
            "probe greedy": (self._scorer().probe.prompts, self._sampling(GREEDY_SAMPLING)),
        }

    def _ches(self, out: Path) -> None:
        """CHES and LN-CHES of the training and held-out pairs on the reference (the methods' init), for the
        leaderboard's rank correlation with each method's Δ log-prob: out/ches.jsonl (harness.diagnose)."""
        from harness.diagnose import ches_rows

        scorer, cfg = self._scorer(), self.cfg
        model, tok = scorer.reference, scorer.tok
        rows = ches_rows(model, tok, cfg.train_pairs, "train") + ches_rows(model, tok, cfg.heldout, "heldout")
        write_jsonl(out / "ches.jsonl", rows)

    def _scorer(self) -> ShiftScorer:
        """The reference model with its held-out and training-pair scores, loaded once per call."""
        if self.scorer is None:
            self.scorer = ShiftScorer(self.ref_path, self.cfg.heldout, self.cfg.train_pairs)
        return self.scorer

    def _shift(self, path: str, groups: dict[str, Group], generated: dict[str, list]) -> dict:
        """The shift from the reference, scored in fp32 on the samples of `_shift_groups`."""
        (kl_prompts, kl_sampling), (_, greedy_sampling) = groups["kl samples"], groups["probe greedy"]
        kl_samples, greedy = ([o[0] for o in generated[k]] for k in ("kl samples", "probe greedy"))
        return {
            **self.scorer.measure(path, kl_prompts, kl_samples, greedy),
            "kl_sampling": kl_sampling.record(),
            "greedy_sampling": greedy_sampling.record(),
        }

    def _cross_check(self, path: str, samples: list[dict]) -> dict:
        """lm-eval's numbers on the first `limit` items of each task, beside ours on the same items."""
        from harness.crosscheck import LM_EVAL, run_lm_eval

        tasks = [t for t in self.cfg.tasks if t in LM_EVAL]  # not every task has an lm-eval twin
        limit = self.cfg.cross_check_limit or max(len(self.items[t]) for t in tasks)
        lm = run_lm_eval(
            path,
            tasks,
            limit,
            # the precision our generation used
            dtype=self.gen.dtype,
            log_samples=True,
        )
        out: dict = {"lm_eval_version": lm["lm_eval_version"], "seconds": lm["seconds"], "limit": limit}
        for task in tasks:
            mine = [s for s in samples if s["task"] == task][:limit]
            theirs = lm[task].pop("samples")
            field, scale = TASKS[task].ITEM_SCORE
            ours = sum(scale * s[field] for s in mine) / len(mine)
            # both in item order
            same = sum(a["output"].strip() == b["output"].strip() for a, b in zip(mine, theirs))
            out[task] = {"ours": ours, "n": len(mine), "lm_eval": lm[task], "same_output": same}
        return out


def check_models(models_: list[str], outs: list[Path], reference: str) -> None:
    """One output folder per model, one architecture and tokenizer for all (one engine), and the reference's
    tokenizer: prompts are encoded and shifts scored with it, so another one would score other token ids."""
    if len(models_) != len(outs):
        raise ValueError(f"{len(models_)} models but {len(outs)} output folders: give one --out per --model")
    paths = [models.resolve_model(m) for m in models_]
    for m, p in zip(models_[1:], paths[1:]):
        if not same_architecture(paths[0], p):
            raise ValueError(
                f"{m}: not the architecture/tokenizer of {models_[0]}; evaluate it in a separate call"
            )
    if not same_tokenizer(paths[0], models.resolve_model(reference)):
        raise ValueError(
            f"--reference {reference}: not the tokenizer of {models_[0]}; give the checkpoint these models "
            "were trained from (the default is the first --model)"
        )


def evaluate(models_: list[str], outs: list[Path], cfg: EvalConfig) -> list[dict]:
    """Evaluate several checkpoints with one engine (the reference first when present; without one, the
    first model is the reference); results in the given order."""
    cfg = replace(cfg, reference=cfg.reference or models_[0])
    check_models(models_, outs, cfg.reference)
    paths = [models.resolve_model(m) for m in models_]
    ref = Path(models.resolve_model(cfg.reference)).resolve()
    # stable: reference first
    order = sorted(range(len(paths)), key=lambda i: Path(paths[i]).resolve() != ref)
    ev = Evaluator(cfg)
    results = {i: ev.run(models_[i], outs[i]) for i in order}
    return [results[i] for i in range(len(paths))]


def evaluated(out: Path, model: str, run_key: str) -> bool:
    """eval.json exists for these weights under these evaluation settings."""
    try:
        ev = json.loads((out / "eval.json").read_text())
    except (OSError, ValueError):
        return False
    return ev.get("config", {}).get("run_key") == run_key and ev.get("fingerprint") == fingerprint(
        models.resolve_model(model)
    )


def parse(argv: list[str] | None = None) -> EvalConfig:
    """EvalConfig from --config (JSON/YAML, e.g. compare's stage file) with flags on top; the held-out
    pairs are read here, so a bad file stops the stage before any model loads."""
    read_later = (*TASK_FIELDS, "heldout", "train_pairs")
    ap = config_parser(EvalConfig, "python -m harness.evaluate", __doc__, exclude=read_later)
    add_task_flags(ap, "test items, from the start", "EVAL_ITEMS")
    a = vars(ap.parse_args(argv))
    try:
        cfg = config_from_args(EvalConfig, a, exclude=read_later)
        fill_task_settings(cfg, a, {t: TASKS[t].EVAL_ITEMS for t in cfg.tasks})
        if small := [t for t in cfg.tasks if cfg.sizes[t] < 1]:
            raise ConfigError(f"each evaluated task needs at least 1 item: {', '.join(small)}")
        check_models(cfg.model, [Path(o) for o in cfg.out], cfg.reference or cfg.model[0])
        if cfg.lm_eval_tasks:
            from harness.crosscheck import task_manager

            task_manager(cfg.lm_eval_include, cfg.lm_eval_tasks)  # an unknown name fails before any model
    except (ConfigError, ValueError) as e:
        ap.error(str(e))
    cfg.heldout = [p for f in cfg.heldout_files for p in read_pairs(str(f))]
    cfg.train_pairs = [p for f in cfg.train_pairs_files for p in read_pairs(str(f))]
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    for r in evaluate(cfg.model, [Path(o) for o in cfg.out], cfg):
        print(
            json.dumps(
                {"model": r["model"], **{k: r[k] for k in (*cfg.tasks, "shift") if k in r}}, default=str
            )
        )


if __name__ == "__main__":
    run_main(main)
