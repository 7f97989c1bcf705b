"""The reference model's evaluation, kept across compares.

Every compare evaluates its reference, and that work depends only on the reference's weights, the
evaluation settings and pairs, the code and the machine class: a second `make run`, or each setting of a
sweep, would redo it. The evaluator stores it under <cache>/reference-evals/<key>/ (the run folder's
files: eval.json, samples.jsonl, ches.jsonl) and copies it back when every part of the key matches:

- the weights' fingerprint (path, and size and mtime of each safetensors file);
- every evaluation setting (EvalConfig.record) and the held-out and training pairs themselves;
- the token ids of every evaluation prompt (the task data, the prompt template and the tokenizer);
- the backend and precision as resolved on the machine, and the library versions;
- the harness's code: every .py file of tasks/, harness/, trainers/ and common.py. That is more than the
  tasks and the scoring, so an unrelated change also misses; no change that matters can hit;
- the machine class (`runinfo.device_class`): the GPU's name, or the CPU's widest vector extension.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

from tasks.data import cache_dir

ROOT = Path(__file__).resolve().parent.parent
CODE = ("tasks", "harness", "trainers")


@functools.cache
def code_digest(root: Path = ROOT) -> str:
    """sha256 over the path and bytes of every .py file of the harness under `root`."""
    files = sorted([root / "common.py", *(f for d in CODE for f in (root / d).rglob("*.py"))])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def folder(key_: str) -> Path:
    return cache_dir() / "reference-evals" / key_


def load(key_: str) -> dict[str, bytes] | None:
    """The stored files of `key_` by name, or None (a miss)."""
    where = folder(key_)
    if not (where / "eval.json").is_file():
        return None
    return {f.name: f.read_bytes() for f in sorted(where.iterdir()) if f.is_file()}


def store(key_: str, files: list[Path]) -> Path:
    """Keep `files` under `key_`: written aside, then renamed into place, so a reader sees all or none.
    Two jobs storing one key at once both succeed; the first rename wins and the contents are the same."""
    final = folder(key_)
    partial = final.with_name(f"{key_}.{os.getpid()}-{os.urandom(3).hex()}.partial")
    partial.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, partial / f.name)
    try:
        partial.rename(final)
    except OSError:  # stored meanwhile by another job
        shutil.rmtree(partial, ignore_errors=True)
    return final
