"""A compare as jobs: each stage process (pairs, a training, an evaluation) is a `Job` value naming its
module, config file, the jobs it waits for and the resources it asks for. compare builds the jobs; an
executor (harness.executors) decides where and when each one runs, and every executor runs it the same
way: `run_stage` on the machine that got it. What happened is a `Record`, kept in compare.json."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.runinfo import stage_env


@dataclass(frozen=True)
class Job:
    name: str  # "pairs", "train dpo-seed0", "eval shard 1": the label on screen, in logs and compare.json
    module: str  # run as `python -m module --config config`
    config: str  # the stage's config file, written by compare before the job is handed over
    kind: str  # pairs, train or eval: the resources it asks for (--train-gpus for train, else --eval-gpus)
    log: str  # where the stage's output goes when it runs away from the driver's terminal
    after: tuple[str, ...] = ()  # jobs of the same plan that must finish first
    note: str = ""  # what the stage line on screen says about it

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--config", self.config]


@dataclass
class Record:
    """One run of a job: where (host, and the engine's node or job id), when, and how it ended."""

    job: str
    host: str
    start: float
    end: float
    returncode: int | None
    log: str
    node: str = ""
    # the driver's clock: when it handed the job to the executor and when it saw the job finish (the
    # executor's overhead and a queue's wait lie between these and start, end)
    submitted: float = 0.0
    collected: float = 0.0

    @property
    def seconds(self) -> float:
        return round(self.end - self.start, 1)

    def record(self) -> dict:
        return asdict(self) | {"seconds": self.seconds}


def die_with_parent() -> None:
    """In the stage process before exec: SIGKILL it when its parent (an engine's worker) dies, so a lost
    worker or node leaves no stage running on (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run_stage(
    job: Job, verbose: bool = False, to_log: bool = False, node: str = "", cwd: str | None = None
) -> Record:
    """Run `job`'s stage process here with the stage environment (tcmalloc where installed, known harmless
    library output filtered: runinfo.stage_env), in `cwd` (the driver's working folder; None: this one). Its
    stdout is the stage's JSON summary, also in its files: shown only when `verbose`. With `to_log` (a job
    away from the driver's terminal) stdout and stderr go to `job.log`, else stderr (progress bars, warnings)
    goes to this terminal."""
    start = time.time()
    env = stage_env(verbose)
    stdout = None if verbose else subprocess.DEVNULL
    if to_log:
        log = Path(cwd or ".", job.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            proc = subprocess.run(
                job.command(),
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
    else:
        proc = subprocess.run(job.command(), env=env, stdout=stdout)
    return Record(job.name, socket.gethostname(), start, time.time(), proc.returncode, job.log, node)
