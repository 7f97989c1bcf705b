"""Method variants and run names: what `--methods dpo,spo,spo:spo_lambda=10,sft` means, and which method a
leaderboard row is compared with head-to-head.

A spec is a method (trainers.losses.METHODS) optionally followed by `:field=value` TrainConfig overrides;
its label names the runs (`<label>-seed<n>`) and is filesystem-safe: `spo:spo_lambda=10` →
`spo@spo_lambda=10`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common import coerce, config_fields

# TrainConfig fields compare sets per run: a variant may not override them
PER_RUN = ("model", "pairs", "output_dir", "method", "seed", "ref_cache", "resume", "probe_pairs")
# what a value may contain so that the label stays one plain folder name
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._+-]+")


@dataclass
class MethodSpec:
    """One `--methods` entry: `label` names its runs, `method` is trainers.losses' name, `overrides` the
    TrainConfig fields it sets (typed)."""

    label: str
    method: str
    overrides: dict


def parse_spec(spec: str) -> MethodSpec:
    """`spo:spo_lambda=10:lr=2e-5` → MethodSpec('spo@spo_lambda=10@lr=2e-5', 'spo', {...}); a ValueError
    names the spec, the field and what is valid."""
    # imported here: the leaderboard uses method_of and base_of without loading torch
    from trainers.losses import parse_method
    from trainers.trainer import TrainConfig

    method, *parts = [p.strip() for p in spec.strip().split(":")]
    try:
        parse_method(method)
    except ValueError as e:
        raise ValueError(f"method spec {spec!r}: {e}") from None
    fields, overrides, written = config_fields(TrainConfig), {}, []
    variable = [name for name in fields if name not in PER_RUN]
    for part in parts:
        name, eq, text = (s.strip() for s in part.partition("="))
        if not eq or not name or not text:
            raise ValueError(f"method spec {spec!r}: {part!r} is not field=value")
        if name not in variable:
            raise ValueError(
                f"method spec {spec!r}: field {name!r} cannot vary per method; valid: {', '.join(variable)}"
            )
        if name in overrides:
            raise ValueError(f"method spec {spec!r}: field {name!r} given twice")
        f, kind = fields[name]
        value = coerce(kind, text, f"method spec {spec!r}: field {name!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(
                f"method spec {spec!r}: field {name!r}: unknown value {text!r}; valid: {', '.join(choices)}"
            )
        if not _SAFE_VALUE.fullmatch(text):
            raise ValueError(
                f"method spec {spec!r}: field {name!r}: value {text!r} would not fit a run folder's name; "
                "valid: letters, digits and . _ + -"
            )
        overrides[name] = value
        written.append(f"{name}={text}")
    return MethodSpec("@".join([method, *written]), method, overrides)


def parse_specs(specs: str | list[str]) -> list[MethodSpec]:
    """The `--methods` list (comma-separated text or a list), each parsed; the same runs twice (the same
    method and typed overrides, in any spelling or order: 'spo' = 'dpo+spo') is a ValueError."""
    from trainers.losses import parse_method

    items = [s.strip() for s in specs.split(",")] if isinstance(specs, str) else [s.strip() for s in specs]
    out: list[MethodSpec] = []
    for text in (s for s in items if s):
        spec = parse_spec(text)
        # 'spo' and 'dpo+spo' are one method: compare the (loss, plug-in) pairs
        runs = (parse_method(spec.method), spec.overrides)
        twin = next((o for o in out if (parse_method(o.method), o.overrides) == runs), None)
        if twin is not None:
            raise ValueError(f"method spec {text!r}: the same runs as {twin.label!r} (a duplicate)")
        out.append(spec)
    return out


def method_of(name: str) -> str:
    """'spo@spo_lambda=10-seed1' → 'spo@spo_lambda=10': a run's method label (its seeds are pooled)."""
    return re.sub(r"-seed\d+$", "", name)


def base_of(name: str) -> str | None:
    """The method a method label is compared with head-to-head: a variant with its plain method
    ('spo@spo_lambda=10' → 'spo'), a plug-in with its upper-level loss ('simpo+spo' → 'simpo', 'spo' →
    'dpo'); None for a plain loss ('dpo', 'simpo', 'sft') or a name that is no method."""
    if "@" in name:
        return name.split("@", 1)[0]
    if name == "spo":
        return "dpo"
    loss, plus, plug = name.partition("+")
    return loss if plus and plug == "spo" else None
