"""One preference-training run → a Hugging Face checkpoint directory.

    python -m trainers.train --model PATH --pairs pairs.jsonl --method spo --lr 5e-6
    python -m trainers.train --config run.yaml --method dpo   # flags override the YAML (or JSON)

Every flag is a TrainConfig field (trainers/trainer.py), and so is every key of --config; values are
converted to the field's type (`lr: 1e-5` is a number), and a wrong type or an unknown key is an
error naming the file and the key. `python -m harness.models` prints (and provisions) the default
model's local path.
"""

from __future__ import annotations

import argparse
import json

from common import ConfigError, add_flags, check_choices, read_config_file, run_main, set_values, typed_values
from trainers.trainer import TrainConfig, run

REQUIRED = ("model", "pairs")


def parse(argv: list[str] | None = None) -> TrainConfig:
    ap = argparse.ArgumentParser(
        prog="python -m trainers.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", help="YAML or JSON file with any of the fields below")
    add_flags(ap, TrainConfig)
    a = ap.parse_args(argv)
    try:
        values = typed_values(TrainConfig, read_config_file(a.config), a.config) if a.config else {}
        values |= set_values(TrainConfig, a)
        if missing := [k for k in REQUIRED if k not in values]:
            raise ConfigError(f"missing: {', '.join('--' + m for m in missing)}")
        cfg = TrainConfig(**values)
        check_choices(cfg)
    except ConfigError as e:
        ap.error(str(e))
    return cfg


if __name__ == "__main__":
    run_main(
        lambda: print(json.dumps(run(parse()), indent=2, default=str)),
        "with --save-every N, rerun with --resume to continue from the last saved state",
    )
