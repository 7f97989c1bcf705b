"""Calibrate the arith task: the reference model's greedy accuracy per difficulty level.

Pick the level where the model is right on roughly half the problems: there its own samples give
both correct and incorrect answers, i.e. on-policy preference pairs. Settings are the evaluator's
(chat template, arith sampling, precision), so these numbers are what harness.evaluate would report.

    python -m harness.calibrate --n 300       # all levels, writes results/calibration/arith.{json,md}
    python -m harness.calibrate --levels 2,3 --n 50 --out /tmp/cal
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from common import run_main, write_json, write_text
from harness import models
from harness.generation import BACKENDS, DTYPES, Sampling, make_generator
from harness.runinfo import commit, machine, versions
from harness.stats import mean_ci
from tasks import arith
from trainers.tokens import prompt_ids


def calibrate(
    model: str, levels: list[int], n: int, seed: int = 0, backend: str = "auto", dtype: str = "auto"
) -> dict:
    """Per-level accuracy (%, with a 95% bootstrap interval) on n test problems; one engine for all levels."""
    from transformers import AutoTokenizer

    path = models.resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    sampling = Sampling(max_tokens=arith.MAX_TOKENS)  # greedy, as in evaluation
    t0 = time.time()
    gen = make_generator(path, backend, dtype, seed=seed)
    result: dict = {
        "model": model,
        "seed": seed,
        "n": n,
        "backend": gen.backend,
        "dtype": gen.dtype,
        "sampling": sampling.record(),
        "levels": {},
    }
    for level in levels:
        rows = arith.generate(n, level, "test", seed)
        prompts = [prompt_ids(tok, arith.prompt(r["question"])) for r in rows]
        outs = [o[0] for o in gen.generate(prompts, sampling, desc=f"arith level {level}")]
        scores = [float(arith.is_correct(o.text, arith.gold_answer(r["answer"]))) for r, o in zip(rows, outs)]
        mean, lo, hi = mean_ci(scores, seed=seed)
        result["levels"][str(level)] = {
            "definition": vars(arith.LEVELS[level]),
            "n": n,
            "correct": int(sum(scores)),
            "distinct_equations": len({r["equation"] for r in rows}),
            "accuracy": 100 * mean,
            "ci95": [100 * lo, 100 * hi],
            "with_final_marker": sum("####" in o.text for o in outs),
            "unfinished": sum(not o.finished for o in outs),
        }
    result |= {
        "seconds": time.time() - t0,
        "generation": gen.stats,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "versions": versions(),
    }
    return result


def table(result: dict) -> str:
    head = (
        f"Arith calibration: {result['model']}, greedy, max_tokens {result['sampling']['max_tokens']}, "
        f"{result['dtype']}, {result['backend']}, seed {result['seed']}, commit {result['commit']}, "
        f"{result['date']}\n\n"
    )
    lines = [
        "| level | steps | max number | ops | distractors | n | distinct equations | correct | accuracy % "
        "| 95% CI | '####' | cut off |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, r in result["levels"].items():
        d = r["definition"]
        lines.append(
            f"| {level} | {d['steps']} | {d['max_number']} | {d['ops']} | {d['distractors']} | {r['n']} "
            f"| {r['distinct_equations']} | {r['correct']} | {r['accuracy']:.1f} "
            f"| {r['ci95'][0]:.1f}–{r['ci95'][1]:.1f} | {r['with_final_marker']} | {r['unfinished']} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m harness.calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--model",
        default=models.DEFAULT_MODEL,
        help="HF checkpoint dir or hub id (default: SmolLM2-135M-Instruct)",
    )
    ap.add_argument(
        "--levels",
        default=",".join(map(str, arith.LEVELS)),
        help=f"comma-separated levels (default {','.join(map(str, arith.LEVELS))})",
    )
    ap.add_argument("--n", type=int, default=300, help="test problems per level (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="problem generator and engine seed (default 0)")
    ap.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="generation backend (auto: vLLM if installed, else HF)",
    )
    ap.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="generation precision (default auto, as evaluate)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("results/calibration"),
        help="folder for arith.json and arith.md (default results/calibration)",
    )
    a = ap.parse_args(argv)
    try:
        levels = [int(x) for x in a.levels.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--levels: expected comma-separated integers, got {a.levels!r}")
    if bad := [lv for lv in levels if lv not in arith.LEVELS]:
        ap.error(f"unknown level(s) {bad}; valid: {', '.join(map(str, arith.LEVELS))}")
    if a.n < 1:
        ap.error("--n must be at least 1")
    result = calibrate(a.model, levels, a.n, a.seed, a.backend, a.dtype)
    write_json(a.out / "arith.json", result)
    write_text(a.out / "arith.md", table(result))
    print(table(result))
    print(f"wrote {a.out / 'arith.json'} and {a.out / 'arith.md'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    run_main(main)
