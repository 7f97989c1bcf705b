"""Data resolution, local first: $SPO_DATA_DIR, then ../shared/data beside the project, then the
Hugging Face hub (downloaded once into $SPO_CACHE_DIR/data, in the same JSONL form)."""

from __future__ import annotations

import os
from pathlib import Path

from common import write_jsonl

ENV_VAR = "SPO_DATA_DIR"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (task, file) → (hub dataset, config, split); their fields match the local files
HUB = {
    ("gsm8k", "train.jsonl"): ("openai/gsm8k", "main", "train"),
    ("gsm8k", "test.jsonl"): ("openai/gsm8k", "main", "test"),
    ("math", "math500_test.jsonl"): ("HuggingFaceH4/MATH-500", None, "test"),
}


def cache_dir() -> Path:
    """Where provisioned models, hub data and pairs are kept ($SPO_CACHE_DIR)."""
    return Path(os.environ.get("SPO_CACHE_DIR", Path.home() / ".cache" / "spo-harness"))


def candidates(task: str, filename: str) -> list[Path]:
    roots = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    return [root / task / filename for root in roots + [SHARED, cache_dir() / "data"]]


def resolve(task: str, filename: str) -> Path:
    """Path of a local data file, else a hub download, or an error naming every place searched."""
    for path in candidates(task, filename):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates(task, filename))
    if (task, filename) not in HUB:
        hub = "no hub source is known for this file"
    else:
        try:
            return from_hub(task, filename)
        except Exception as e:  # offline, missing dataset, ...: report it with the local paths
            hub = f"hub {HUB[task, filename][0]} failed: {type(e).__name__}: {str(e)[:200]}"
    raise FileNotFoundError(
        f"{task}/{filename} not found; looked in: {looked}; {hub}. "
        f"Set {ENV_VAR} to a folder holding {task}/{filename}."
    )


def from_hub(task: str, filename: str) -> Path:
    from datasets import load_dataset

    repo, config, split = HUB[task, filename]
    target = cache_dir() / "data" / task / filename
    write_jsonl(target, list(load_dataset(repo, config, split=split)))
    return target
