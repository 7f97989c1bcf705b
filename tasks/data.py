"""Local-first data resolution: $SPO_DATA_DIR, then ../shared/data beside the project (hub fallback: not yet)."""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV_VAR = "SPO_DATA_DIR"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def candidates(task: str, filename: str) -> list[Path]:
    roots = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    return [root / task / filename for root in roots + [SHARED]]


def resolve(task: str, filename: str) -> Path:
    """Path of a local data file, or an error naming every place that was searched."""
    for path in candidates(task, filename):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates(task, filename))
    raise FileNotFoundError(
        f"{task}/{filename} not found; looked in: {looked}. Set {ENV_VAR} to a folder holding {task}/{filename}."
    )


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file; a bad line raises an error naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
    return rows
