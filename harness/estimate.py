"""What a compare will cost on this machine, said before it starts: its first printed line, and `--help`.

The default run (`make run`, the cpu preset) was timed from a fresh clone with nothing cached on each
machine class in MEASURED (docs/performance.md). A run is estimated by scaling each stage's measured
seconds by its own work against the default run's:

- pairs: tokens that sampling may generate (items × samples per item × the length cap);
- train: pair-epochs over all trainings (training pairs × epochs, the SFT init included);
- eval: tokens that evaluation may generate (items × the length cap, per model evaluated);

each times the weights' size over the default model's (on a CPU, time grows with the parameters). The
probes, the judge and engine start-up are folded into those rates, so a run far from the default's shape is
estimated less well. A class with no measurement gets none, and the line says which classes have one.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from harness import models
from harness.runinfo import device_class
from tasks import TASKS
from trainers.trainer import TrainConfig


@dataclass(frozen=True)
class Measured:
    """The default run on one machine class, nothing cached: seconds per stage and the work it did (`work`
    of the cpu preset as it then was)."""

    machine: str  # in words, with where the number comes from
    cores: int
    seconds: dict[str, float]
    work: dict[str, int]


# the cpu preset's work before its GSM8K and MATH-500 evaluation went from 50 to 25 items each
WORK_50 = {"pairs": 32768, "train": 384, "eval": 240000}
MEASURED = {
    "cpu AVX512 avx512_bf16": Measured(
        "a 2-core AMD EPYC (Zen 4, AVX-512 bf16) at c380333, fresh clone",
        2,
        {"pairs": 53.8, "train": 386.3, "eval": 402.5},
        {"pairs": 32768, "train": 384, "eval": 182400},
    ),
    "cpu AVX2": Measured(
        "a 2-core AMD EPYC with AVX2 only (fp32), in issue 33's report, fresh clone",
        2,
        {"pairs": 191.0, "train": 972.0, "eval": 1438.0},
        WORK_50,
    ),
}


def weights_bytes(model: str) -> int | None:
    """The size of a checkpoint's safetensors files, without provisioning or downloading it."""
    path = Path(model)
    if not path.is_dir():
        path = models.cache_dir() / "models" / model
    files = list(path.glob("*.safetensors")) if path.is_dir() else []
    return sum(f.stat().st_size for f in files) or None


def trainings(a: argparse.Namespace) -> list:
    """The method spec of every training: each method per seed, and the SFT init."""
    return [*(spec for spec in a.specs for _ in a.seeds), *([a.init_spec] if a.init_spec else [])]


def work(a: argparse.Namespace) -> dict[str, int]:
    """The run's work in the units of the module docstring (a: compare's parsed options)."""

    def cap(task: str) -> int:
        return min(TASKS[task].MAX_TOKENS, a.max_tokens or TASKS[task].MAX_TOKENS)

    sampled = {t: n for t, n in a.pair_sizes.items() if n > 0}
    pairs = sum(n * (TASKS[t].PAIR_SAMPLES or a.k) * cap(t) for t, n in sampled.items())
    # each task's pairs, at most one per item, less the held-out ones; then your own
    train_pairs = sum(max(n - a.heldout, 0) for n in sampled.values()) + len(a.user[0])
    # each training's epochs: its variant's, else compare's option, else TrainConfig's default
    epochs = a.epochs if a.epochs is not None else TrainConfig.__dataclass_fields__["epochs"].default
    runs = trainings(a)
    pair_epochs = sum(train_pairs * spec.overrides.get("epochs", epochs) for spec in runs)
    per_model = sum(a.eval_sizes[t] * cap(t) for t in a.tasks)
    return {"pairs": pairs, "train": pair_epochs, "eval": (1 + len(runs)) * per_model}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def total(m: Measured) -> float:
    return sum(m.seconds.values())


def stages(a: argparse.Namespace, m: Measured) -> dict[str, float]:
    """Seconds per stage of the run `a` on m's machine class, nothing cached."""
    size, default_size = weights_bytes(a.model), weights_bytes(models.DEFAULT_MODEL)
    ratio = size / default_size if size and default_size else 1.0
    units = work(a)
    return {k: m.seconds[k] * units[k] / m.work[k] * ratio for k in units}


def line(a: argparse.Namespace) -> str:
    """One line: this run's estimated time on this machine class, or why there is none."""
    here = device_class()
    m = MEASURED.get(here)
    if m is None:
        known = "; ".join(f"{c}, where the default run took {minutes(total(v))}" for c, v in MEASURED.items())
        return f"estimate: none for this machine class ({here}); measured on {known}"
    cold = stages(a, m)
    # cached from an earlier run: the pairs, and the reference's share of the evaluation
    evaluated = 1 + len(trainings(a))
    warm = cold["train"] + cold["eval"] * (evaluated - 1) / evaluated
    text = (
        f"estimate: about {minutes(sum(cold.values()))} on this machine class ({here}): "
        + ", ".join(f"{k} {minutes(v)}" for k, v in cold.items())
        + f"; about {minutes(warm)} with the pairs and the reference's evaluation cached"
        + f" (scaled from the default run on {m.machine}"
    )
    cores = len(os.sched_getaffinity(0))
    if cores != m.cores and here.startswith("cpu"):
        text += f"; it had {m.cores} cores, this machine {cores}"
    if weights_bytes(a.model) is None:
        text += f"; {a.model}'s size unknown: scaled as the default model"
    return text + ")"


def help_text() -> str:
    """For --help: what the default run took on this machine class."""
    here = device_class()
    m = MEASURED.get(here)
    if m is None:
        return f"The default run has not been timed on this machine class ({here}): see docs/performance.md."
    took = minutes(total(m))
    return f"On this machine class ({here}) the default run took {took} from a fresh clone ({m.machine})."
