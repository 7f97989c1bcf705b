"""bench/floor.py's training term on a hand-made run folder: each pass over the pairs and the probes
counted as the trainer makes them (peaks of 1 FLOP/s, so seconds are FLOPs)."""

import json

import pytest
from transformers import AutoTokenizer

from bench import floor
from trainers.probes import ProbeSet
from trainers.tokens import encode

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
        "chosen": f"{a}+{b} = {a + b}. #### {a + b}",
        "rejected": f"The answer is {a * b + 1}.",
    }
    for a, b in [(1, 2), (3, 4), (5, 6)]
]
BODY, HEAD = 10, 1  # a forward: 20 FLOPs per prompt token, 22 per predicted token


def run_folder(tmp_path, train: dict, config: dict) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (tmp_path / "run").mkdir()
    settings = {"pairs": str(pairs), "max_len": 512, "bad_pairs": "skip", "lora_r": 0, "epochs": 2}
    settings |= {"probe_pairs": str(pairs), "probe_every": 2, "probe_greedy": True, "fsdp": False}
    (tmp_path / "run" / "train_config.json").write_text(json.dumps(settings | {"deepspeed": None} | config))
    (tmp_path / "run" / "train.json").write_text(json.dumps({"bf16": False, "steps": 4} | train))
    rows = [{"step": s, "loss": 0.5} | ({"probe_dlogp_chosen": 0.0} if s % 2 == 0 else {}) for s in range(5)]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "train, config, passes, fixed, prompts",
    [
        # 2 epochs × 3 passes + the reference once per epoch; probes at steps 0, 2, 4: the reference's fixed
        # responses and the policy's at 2 and 4; greedy prompts prefilled 3 times and scored 3 + 2 times
        ({"resumed_from": 0, "reference_logps_computed": True}, {}, 8, 3, 8),
        # resumed from step 2: half the steps, the reference cached; the probe at step 4 only
        ({"resumed_from": 2, "reference_logps_computed": False}, {}, 3, 2, 3),
        # LoRA: a backward of one forward; no greedy probes
        (
            {"resumed_from": 0, "reference_logps_computed": False},
            {"lora_r": 8, "probe_greedy": False},
            4,
            3,
            0,
        ),
    ],
)
def test_training_floor_counts_each_pass(tmp_path, default_model_path, train, config, passes, fixed, prompts):
    tok = AutoTokenizer.from_pretrained(default_model_path)
    run_folder(tmp_path, train, config)
    encoded = [
        (encode(tok, p["prompt"], p["chosen"]), encode(tok, p["prompt"], p["rejected"])[1]) for p in PAIRS
    ]
    one = sum(20 * len(x) + 22 * (len(c) + len(r)) for (x, c), r in encoded)
    probe = ProbeSet(tok, PAIRS)
    responses = sum(
        len(r) for k in ("chosen", "rejected", "rephrased", "unrelated") for r in probe.responses[k] if r
    )
    prompt_tokens = sum(len(x) for (x, _), _ in encoded)
    expected = passes * one + fixed * (20 * prompt_tokens + 22 * responses) + prompts * 20 * prompt_tokens
    peaks = {"float32": 1.0, "bfloat16": 1.0}
    got = floor.training_seconds(tmp_path, "run", BODY, HEAD, tok, peaks, first=True)
    assert got == pytest.approx(expected, rel=1e-12)
