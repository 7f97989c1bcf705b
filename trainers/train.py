"""One preference-training run → a Hugging Face checkpoint directory.

    python -m trainers.train --model PATH --pairs pairs.jsonl --method spo --lr 5e-6
    python -m trainers.train --config run.yaml --method dpo   # flags override the YAML

`python -m harness.models` prints (and provisions) the default model's local path.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing

import yaml

from common import run_main
from trainers.trainer import TrainConfig, run


def field_docs() -> dict[str, str]:
    """The trailing comment of each TrainConfig field: one source for the code and for --help."""
    sources = "".join(inspect.getsource(c) for c in TrainConfig.__mro__ if dataclasses.is_dataclass(c))
    return dict(re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", sources, re.M))


def add_config_flags(ap: argparse._ActionsContainer, exclude: tuple[str, ...] = ()) -> None:
    """One --flag per TrainConfig field (default None: unset), help from the field's comment."""
    hints, docs = typing.get_type_hints(TrainConfig), field_docs()
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        kind = hints[f.name]
        default = "required" if f.default is dataclasses.MISSING else "default: unset" if f.default is None else f"default {f.default}"
        flag, text = f"--{f.name.replace('_', '-')}", f"{docs.get(f.name, '')} ({default})".strip()
        if kind in (bool, bool | None):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            ap.add_argument(flag, type=kind if kind in (int, float, str) else str, default=None, help=text)  # str | None → str


def parse(argv: list[str] | None = None) -> TrainConfig:
    ap = argparse.ArgumentParser(prog="python -m trainers.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with any of the fields below")
    add_config_flags(ap)
    hints = typing.get_type_hints(TrainConfig)
    a = vars(ap.parse_args(argv))
    config = a.pop("config")
    values = (yaml.safe_load(open(config)) or {}) if config else {}
    if not isinstance(values, dict):
        ap.error(f"{config}: expected a mapping of field: value")
    unknown = set(values) - set(hints)
    if unknown:
        ap.error(f"unknown field(s) in {config}: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in a.items() if v is not None})
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        ap.error(f"missing: {', '.join('--' + m for m in missing)}")
    return TrainConfig(**values)


if __name__ == "__main__":
    run_main(lambda: print(json.dumps(run(parse()), indent=2, default=str)), "with --save-every N, rerun with --resume to continue from the last saved state")
