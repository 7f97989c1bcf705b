"""One preference-training run → a Hugging Face checkpoint directory.

    python -m trainers.train --model PATH --pairs pairs.jsonl --method spo --lr 5e-6
    python -m trainers.train --config run.yaml --method dpo   # flags override the YAML (or JSON)

Every flag is a TrainConfig field (trainers/trainer.py), and so is every key of --config; values are
converted to the field's type (`lr: 1e-5` is a number), and a wrong type or an unknown key is an
error naming the file and the key. `python -m harness.models` prints (and provisions) the default
model's local path.
"""

from __future__ import annotations

import json

from common import ConfigError, config_from_args, config_parser, run_main
from trainers.trainer import TrainConfig, run


def parse(argv: list[str] | None = None) -> TrainConfig:
    ap = config_parser(TrainConfig, "python -m trainers.train", __doc__)
    a = vars(ap.parse_args(argv))
    try:
        return config_from_args(TrainConfig, a)
    except ConfigError as e:
        ap.error(str(e))


if __name__ == "__main__":
    run_main(
        lambda: print(json.dumps(run(parse()), indent=2, default=str)),
        "with --save-every N, rerun with --resume to continue from the last saved state",
    )
