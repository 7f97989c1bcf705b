"""Stage configs: one dataclass per stage gives the flags, the YAML/JSON keys and their types."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common import ConfigError, coerce, config_from_args, config_json
from harness import evaluate, pairs
from trainers import train
from trainers.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    {"prompt": f"{a}+{b}=", "chosen": f" {a + b}", "rejected": f" {a * b + 1}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (2, 9)]
]


def test_values_are_converted_to_the_field_type_or_refused_naming_the_key():
    assert (
        coerce(float, "1e-5", "k") == 1e-5
        and coerce(int | None, None, "k") is None
        and coerce(int, 3.0, "k") == 3
    )
    assert coerce(tuple[str, ...], "a, b", "k") == ("a", "b") and coerce(bool, "false", "k") is False
    for kind, value in [(float, "fast"), (int, 2.5), (int, True), (bool, "yes"), (str, [1]), (float, None)]:
        with pytest.raises(ConfigError, match="^where: "):
            coerce(kind, value, "where")


def test_train_config_yaml_takes_lr_1e_5_as_a_number_and_trains_with_it(tiny_model_dir, tmp_path):
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = tmp_path / "run.yaml"
    # YAML 1.1 reads 1e-5 (no dot) as the string "1e-5"
    settings = "lr: 1e-5\nbatch_pairs: 4\nmicro-pairs: 2\nbf16: false\n"
    cfg.write_text(f"model: {tiny_model_dir}\npairs: {pairs_file}\n{settings}")
    assert train.parse(["--config", str(cfg), "--method", "dpo"]).lr == 1e-5
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.train",
            "--config",
            str(cfg),
            "--method",
            "dpo",
            "--output-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["config"]["lr"] == 1e-5 and summary["steps"] == 1
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert rows[0]["lr"] == pytest.approx(1e-5, rel=1e-12)  # one step, warm-up of one step: the peak rate


def test_a_string_in_a_numeric_field_or_an_unknown_key_fails_naming_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: m\npairs: p\nlr: fast\n")
    with pytest.raises(SystemExit):
        train.parse(["--config", str(cfg)])
    assert f"{cfg}: key 'lr': expected a number, got 'fast'" in capsys.readouterr().err
    cfg.write_text("model: m\npairs: p\nlearning_rate: 1\n")
    with pytest.raises(SystemExit):
        train.parse(["--config", str(cfg)])
    assert f"{cfg}: unknown key 'learning_rate'; valid keys: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse(["--model", "m", "--pairs", "p", "--epochs", "two"])
    assert "--epochs: expected an integer, got 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse(["--model", "m", "--pairs", "p", "--spo-anchor", "nearest"])
    assert "spo_anchor: unknown value 'nearest'; valid: reference, lookahead" in capsys.readouterr().err


def test_stage_configs_round_trip_through_their_json_files(tmp_path):
    cfg = TrainConfig(model="m", pairs="p", lr=2e-3, bf16=None, method="ipo")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config_json(cfg)))
    assert config_from_args(TrainConfig, {"config": path}) == cfg
    p = pairs.PairsConfig(
        out="o", sizes={"gsm8k": 3, "tldr": 0}, options={"arith": {"level": 1}}, max_tokens=8
    )
    path.write_text(json.dumps(config_json(p)))
    assert config_from_args(pairs.PairsConfig, {"config": path}) == p
    e = evaluate.EvalConfig(
        model=["a", "b"], out=["x", "y"], tasks=("gsm8k", "tldr"), sizes={"gsm8k": 2, "tldr": 1}
    )
    path.write_text(json.dumps(config_json(e)))
    assert config_from_args(evaluate.EvalConfig, {"config": path}) == e


def test_per_task_flags_come_from_the_registry_and_fill_the_config(tmp_path):
    cfg = pairs.parse(
        ["--out", str(tmp_path), "--gsm8k", "5", "--arith-level", "3", "--arith-gold-chosen", "--k", "2"]
    )
    assert (
        cfg.sizes["gsm8k"] == 5 and cfg.options == {"arith": {"level": 3, "gold_chosen": True}} and cfg.k == 2
    )
    assert cfg.sizes["arith"] == 128 and cfg.sizes["math"] == 0  # the tasks' own PAIR_ITEMS
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"model": ["m"], "out": ["o"], "tasks": "gsm8k,math", "sizes": {"gsm8k": 7}}))
    cfg = evaluate.parse(["--config", str(path), "--math", "2"])
    assert cfg.sizes == {"gsm8k": 7, "math": 2} and cfg.tasks == ("gsm8k", "math")
    with pytest.raises(SystemExit):
        evaluate.parse(["--tasks", "gsm8k,chess", "--out", "o"])


def test_reading_the_options_loads_no_model_library():
    """`compare --help` and its option errors come before any heavy import: transformers' modeling code
    (~3 s) and rouge-score's nltk (~2 s) load only in the stages that use them."""
    heavy = "{'transformers', 'rouge_score', 'vllm'}"
    code = f"import sys, harness.compare; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
