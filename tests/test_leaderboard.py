import json

from harness import leaderboard, report


def write_run(runs, name, acc, rougeL, dc, dr, kl, train_seconds=None, win=None, samples=()):
    d = runs / name
    d.mkdir(parents=True)
    judge = (
        {
            "judge": {
                "reference": {
                    "win_rate": win,
                    "ci95": [win - 10, win + 10],
                    "n": 50,
                    "judge": "rouge",
                    "position_consistency": 100.0,
                },
                "human": {
                    "win_rate": 20.0,
                    "ci95": [12.5, 27.25],
                    "n": 50,
                    "judge": "rouge",
                    "position_consistency": 100.0,
                },
            }
        }
        if win
        else {}
    )
    ev = {
        "backend": "hf",
        "gsm8k": {
            "accuracy": acc,
            "n": 100,
            "outputs": {"mean_length": 120.4, "format_rate": 35.0, "distinct_2": 0.5},
        },
        "tldr": {
            "rouge1": 30.0,
            "rouge2": 10.0,
            "rougeL": rougeL,
            "n": 50,
            "outputs": {"mean_length": 30.0, "distinct_2": 0.8125},
            **judge,
        },
        "generation": {
            "startup_seconds": 0.0 if win else 14.25,
            "load_seconds": 3.5 if win else 0.0,
            "tokens_per_second": 480.4,
        },
        "shift": {
            "dlogp_chosen": dc,
            "dlogp_rejected": dr,
            "dlog_combined": dc,
            "both_fell_share": 0.25,
            "heldout_pairs": 16,
            "kl": kl,
            "kl_samples": 32,
        },
    }
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if train_seconds is not None:
        (d / "train.json").write_text(json.dumps({"train_seconds": train_seconds, "steps": 8}))


def test_leaderboard_rows_follow_compare_order_and_format_every_column(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "reference", 1.0, 12.4118, 0.0, 0.0, 0.0)
    write_run(runs, "spo-seed0", 2.0, 13.5, 0.01234, -0.2, 0.5, 301.4, win=55.5)
    write_run(runs, "dpo-seed0", 3.0, 11.25, -0.05, -0.4, 1.25, 299.6, win=40.0)
    (runs / "compare.json").write_text(
        json.dumps(
            {
                "order": ["reference", "dpo-seed0", "spo-seed0"],
                "command": "python -m harness.compare",
                "machine": "test cpu",
                "date": "today",
                "stage_seconds": {"pairs": 1.5},
            }
        )
    )
    md = leaderboard.write(tmp_path)
    tables = [line for line in md.splitlines() if line.startswith("| ")]
    # reasoning: MATH and arith not evaluated in these runs, so no columns for them; no samples.jsonl, so no
    # intervals
    assert tables[0] == "| model | GSM8K acc % [95% CI] | train time |"
    assert tables[1:4] == [
        "| reference | 1.0 | — |",
        "| dpo-seed0 | 3.0 | 300 s (8 steps) |",
        "| spo-seed0 | 2.0 | 301 s (8 steps) |",
    ]
    # summarization
    assert tables[6] == "| dpo-seed0 | 11.25 | 30.00 / 10.00 | 40.0 [30.0, 50.0] | 20.0 [12.5, 27.2] |"
    assert tables[7] == "| spo-seed0 | 13.50 | 30.00 / 10.00 | 55.5 [45.5, 65.5] | 20.0 [12.5, 27.2] |"
    assert "| dpo (1) | reference | — | — |" in tables  # paired: no per-item rows
    # shift
    assert "| dpo-seed0 | -0.0500 | -0.4000 | -0.0500 | 25 | +1.2500 | 120 / 35 | 30 / 0.812 |" in tables
    # the verdict
    assert (
        "- **GSM8K**: highest dpo (3); vs reference —" in md
        and "dpo fell (-0.0500), spo rose (+0.0123)" in md
    )
    assert (
        "- command: `python -m harness.compare`" in md and "- machine: test cpu" in md and "pairs 1.5" in md
    )
    assert (
        "- generation (hf): engine start-up reference 14.2 s, dpo-seed0 0.0 s, spo-seed0 0.0 s; "
        "weight loads into the running engine reference 0.0 s, dpo-seed0 3.5 s, spo-seed0 3.5 s; "
        "tokens/s reference 480, dpo-seed0 480, spo-seed0 480" in md
    )
    assert "judge `rouge`" in md and "[report.html](report.html)" in md
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["reference", "dpo-seed0", "spo-seed0"]
    assert (
        data["rows"][1]["kl"] == 1.25
        and data["rows"][2]["train_seconds"] == 301.4
        and data["rows"][2]["judge_vs_reference"] == 55.5
    )
    assert data["rows"][0]["math_accuracy"] is None and data["rows"][0]["math_n"] is None
    assert (tmp_path / "leaderboard.md").read_text() == md and (tmp_path / "report.html").is_file()
    assert (tmp_path / "figures" / "metrics.png").read_bytes()[
        :4
    ] == b"\x89PNG" and "figures/metrics.png" in md
    # no metrics.jsonl in these runs
    assert not (tmp_path / "figures" / "training.png").exists() and "training.png" not in md


def test_report_tags_fixed_broken_and_judge_outcomes(tmp_path):
    ref = [
        {
            "task": "gsm8k",
            "id": "q0",
            "prompt": "1+1?",
            "output": "3",
            "correct": False,
            "extracted": "3",
            "gold": "2",
        },
        {
            "task": "gsm8k",
            "id": "q1",
            "prompt": "2+2?",
            "output": "4",
            "correct": True,
            "extracted": "4",
            "gold": "4",
        },
        {"task": "tldr", "id": "p0", "prompt": "post <b>", "output": "sum", "rougeL": 10.0},
    ]
    spo = [dict(ref[0], output="2", correct=True), dict(ref[1]), dict(ref[2], judge_vs_reference=0.75)]
    dpo = [dict(ref[0]), dict(ref[1], output="5", correct=False), dict(ref[2], judge_vs_reference=0.5)]
    assert report.tags(ref[0], spo[0], "spo") == ["fixed:spo"] and report.tags(ref[1], dpo[1], "dpo") == [
        "broken:dpo"
    ]
    assert (
        report.tags(ref[1], spo[1], "spo") == []
        and report.tags(ref[2], spo[2], "spo") == ["won:spo"]
        and report.tags(ref[2], dpo[2], "dpo") == []
    )
    html = report.render({"reference": ref, "spo": spo, "dpo": dpo})
    assert (
        html.count("<tr data-task") == 3
        and 'data-tags="fixed:spo"' in html
        and 'data-tags="broken:dpo"' in html
    )
    assert "post &lt;b&gt;" in html and '<option value="fixed:spo">fixed by spo</option>' in html


def test_paired_differences_pool_seeds_per_item_and_mark_intervals_that_exclude_zero(tmp_path):
    runs = tmp_path / "runs"

    def samples(correct, rouge):
        return [{"task": "gsm8k", "prompt": "q", "output": "a", "correct": c} for c in correct] + [
            {"task": "tldr", "prompt": "p", "output": "s", "rougeL": r} for r in rouge
        ]

    write_run(runs, "reference", 0.0, 10.0, 0.0, 0.0, 0.0, samples=samples([0, 0, 0, 0], [10, 20, 30, 40]))
    write_run(
        runs,
        "dpo-seed0",
        0.0,
        10.0,
        0.0,
        0.0,
        0.0,
        1.0,
        win=50.0,
        samples=samples([0, 0, 0, 0], [10, 20, 30, 40]),
    )
    write_run(
        runs,
        "spo-seed0",
        0.0,
        10.0,
        0.0,
        0.0,
        0.0,
        1.0,
        win=50.0,
        samples=samples([1, 1, 1, 1], [11, 21, 31, 41]),
    )
    write_run(
        runs,
        "spo-seed1",
        0.0,
        10.0,
        0.0,
        0.0,
        0.0,
        1.0,
        win=50.0,
        samples=samples([1, 1, 0, 0], [13, 23, 33, 43]),
    )
    order = ["reference", "dpo-seed0", "spo-seed0", "spo-seed1"]
    diffs = {
        (d["method"], d["vs"]): d for d in leaderboard.paired([leaderboard.Run.read(runs / n) for n in order])
    }
    assert set(diffs) == {("dpo", "reference"), ("spo", "reference"), ("spo", "dpo")}
    spo = diffs[("spo", "reference")]
    # per item: 100, 100, 50, 50
    assert spo["seeds"] == 2 and spo["tasks"]["gsm8k"]["diff"] == 75.0 and spo["tasks"]["gsm8k"]["n"] == 4
    assert (
        spo["tasks"]["tldr"]["diff"] == 2.0
        and spo["tasks"]["tldr"]["ci95"] == [2.0, 2.0]
        and spo["tasks"]["tldr"]["significant"]
    )
    assert 50.0 <= spo["tasks"]["gsm8k"]["ci95"][0] and spo["tasks"]["gsm8k"]["ci95"][1] == 100.0
    assert diffs[("dpo", "reference")]["tasks"]["gsm8k"] == {
        "diff": 0.0,
        "ci95": [0.0, 0.0],
        "n": 4,
        "significant": False,
    }
    (runs / "compare.json").write_text(json.dumps({"order": order}))
    md = leaderboard.write(tmp_path)
    assert "| spo (2) | reference | +75.0 [+50.0, +100.0] * | +2.0 [+2.0, +2.0] * |" in md
    # the fixture's eval.json accuracy, the interval from its samples
    assert "| spo-seed0 | 0.0 [100.0, 100.0] | 1 s (8 steps) |" in md
    rows = {r["model"]: r for r in json.loads((tmp_path / "leaderboard.json").read_text())["rows"]}
    assert (
        rows["spo-seed1"]["gsm8k_accuracy_ci95"][1] == 100.0
        and rows["spo-seed0"]["tldr_rougeL_ci95"][0] >= 11.0
    )
    assert json.loads((tmp_path / "leaderboard.json").read_text())["paired"][1]["method"] == "spo"


def test_mean_and_std_over_seeds_appear_only_with_several_seeds(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "reference", 1.0, 12.0, 0.0, 0.0, 0.0)
    write_run(runs, "spo-seed0", 2.0, 13.0, 0.1, -0.2, 0.5, 1.0, win=50.0)
    write_run(runs, "spo-seed1", 4.0, 15.0, 0.3, -0.2, 0.7, 1.0, win=60.0)
    groups = {
        g["method"]: g
        for g in leaderboard.over_seeds(
            [leaderboard.row(leaderboard.Run.read(runs / n)) for n in ("reference", "spo-seed0", "spo-seed1")]
        )
    }
    assert groups["spo"]["seeds"] == 2 and groups["spo"]["gsm8k_accuracy"] == {"mean": 3.0, "std": 2**0.5}
    assert groups["spo"]["judge_vs_reference"]["mean"] == 55.0 and groups["reference"]["kl"] == {
        "mean": 0.0,
        "std": None,
    }
    assert groups["reference"]["judge_vs_reference"] == {"mean": None, "std": None}
    (runs / "compare.json").write_text(json.dumps({"order": ["reference", "spo-seed0", "spo-seed1"]}))
    for name in ("spo-seed0", "spo-seed1"):
        (runs / name / "metrics.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "step": s,
                        "loss": 0.7 - s / 10,
                        "margin": s / 10,
                        "dlogp_chosen": 0.01 * s,
                        "dlogp_rejected": -0.01 * s,
                    }
                )
                + "\n"
                for s in (1, 2, 3)
            )
        )
    md = leaderboard.write(tmp_path)
    assert (tmp_path / "figures" / "training.png").read_bytes()[
        :4
    ] == b"\x89PNG" and "figures/training.png" in md
    # no MATH/arith column: not evaluated
    assert "| spo (2) | 3 ± 1.4 | 14 ± 1.4 | 55 ± 7.1 | 0.2 ± 0.14 | 0.6 ± 0.14 |" in md
    (runs / "compare.json").write_text(json.dumps({"order": ["reference", "spo-seed0"]}))
    assert "Mean ± std over seeds" not in leaderboard.write(tmp_path)


def test_committed_leaderboard_rebuilds_byte_for_byte_from_its_runs(tmp_path):
    """`python -m harness.leaderboard` on the committed results/runs reproduces the committed leaderboard
    exactly."""
    import shutil
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    shutil.copytree(results / "runs", tmp_path / "runs")
    leaderboard.write(tmp_path)
    assert (tmp_path / "leaderboard.md").read_text() == (results / "leaderboard.md").read_text()
    assert (tmp_path / "leaderboard.json").read_text() == (results / "leaderboard.json").read_text()
    assert (tmp_path / "report.html").read_text() == (results / "report.html").read_text()
