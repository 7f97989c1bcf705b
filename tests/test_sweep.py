"""bench/sweep.py at toy size on the tiny model: every setting is a real compare."""

import json

from bench import sweep
from harness import models

TOY = (
    "--arith-pairs 6 --arith-eval 4 --heldout 2 --kl-prompts 2 --judge none --probe-every 0 --backend hf "
    "--max-tokens 8"
)


def test_sweep_runs_each_setting_and_keeps_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SPO_CACHE_DIR", str(models.link_provisioned(tmp_path / "cache")))  # no model built
    args = [
        "--preset", "smoke", "--tasks", "arith", "--styles", "edit", "--inits", "sft",
        "--epochs", "1", "--lrs", "1e-3", "--compare-args", TOY, "--name", "toy",
        "--results", str(tmp_path / "sweeps"), "--outputs", str(tmp_path / "outputs"),
    ]  # fmt: skip
    sweep.main(args)
    table = json.loads((tmp_path / "sweeps" / "toy.json").read_text())
    rows = table["rows"]
    assert [(r["style"], r["init"], r["epochs"], r["lr"]) for r in rows] == [("edit", "sft", 1, 0.001)]
    assert set(rows[0]["methods"]) == {"reference", "sft", "dpo", "spo"}
    # the sft init is the methods' reference: measured against itself it did not move
    assert rows[0]["methods"]["sft"]["dlogp_chosen"] == 0.0
    assert rows[0]["methods"]["sft"]["outside_safe_region_share"] == 0.0
    for r in rows:
        for m in ("dpo", "spo"):
            got = r["methods"][m]
            assert got["dlogp_chosen"] != 0.0 and 0.0 <= got["outside_safe_region_share"] <= 1.0
            assert got["arith_accuracy"] is not None
    md = (tmp_path / "sweeps" / "toy.md").read_text()
    assert md.count("\n| edit |") == 1 and "dpo Δ chosen" in md
    # finished settings are kept: a rerun starts no compare
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    sweep.main(args)
    assert json.loads((tmp_path / "sweeps" / "toy.json").read_text())["rows"] == rows
