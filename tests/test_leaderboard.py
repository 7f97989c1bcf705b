import json

from harness import leaderboard


def write_run(runs, name, acc, rougeL, dc, dr, kl, train_seconds=None):
    d = runs / name
    d.mkdir(parents=True)
    ev = {"backend": "hf", "gsm8k": {"accuracy": acc, "n": 100}, "tldr": {"rouge1": 30.0, "rouge2": 10.0, "rougeL": rougeL, "n": 50},
          "shift": {"dlogp_chosen": dc, "dlogp_rejected": dr, "heldout_pairs": 16, "kl": kl, "kl_samples": 32}}
    (d / "eval.json").write_text(json.dumps(ev))
    if train_seconds is not None:
        (d / "train.json").write_text(json.dumps({"train_seconds": train_seconds, "steps": 8}))


def test_leaderboard_rows_follow_compare_order_and_format_every_column(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "reference", 1.0, 12.4118, 0.0, 0.0, 0.0)
    write_run(runs, "spo-seed0", 2.0, 13.5, 0.01234, -0.2, 0.5, 301.4)
    write_run(runs, "dpo-seed0", 3.0, 11.25, -0.05, -0.4, 1.25, 299.6)
    (runs / "compare.json").write_text(json.dumps({"order": ["reference", "dpo-seed0", "spo-seed0"], "command": "python -m harness.compare",
                                                   "machine": "test cpu", "date": "today", "stage_seconds": {"pairs": 1.5}}))
    md = leaderboard.write(tmp_path)
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[1] == "| reference | 1.0 (100) | 12.41 (50) | +0.0000 | +0.0000 | +0.0000 | — |"
    assert table[2] == "| dpo-seed0 | 3.0 (100) | 11.25 (50) | -0.0500 | -0.4000 | +1.2500 | 300 s (8 steps) |"
    assert table[3] == "| spo-seed0 | 2.0 (100) | 13.50 (50) | +0.0123 | -0.2000 | +0.5000 | 301 s (8 steps) |"
    assert "- command: `python -m harness.compare`" in md and "- machine: test cpu" in md and "pairs 1.5" in md
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["reference", "dpo-seed0", "spo-seed0"]
    assert data["rows"][1]["kl"] == 1.25 and data["rows"][2]["train_seconds"] == 301.4
    assert (tmp_path / "leaderboard.md").read_text() == md
