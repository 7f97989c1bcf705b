import json

import numpy as np
import pytest

from harness import leaderboard, report


def write_run(
    runs, name, acc, rougeL, dc, dr, kl, train_seconds=None, win=None, samples=(), shift=None, separated=False
):
    d = runs / name
    d.mkdir(parents=True)
    judge = (
        {
            "judge": {
                "reference": {
                    "win_rate": win,
                    "ci95": [win - 10, win + 10],
                    "lc_win_rate": win - 5,
                    "lc_ci95": [win - 17, win + 7],
                    "length_ratio": 1.254,
                    "n": 50,
                    "judge": "rouge",
                    "position_consistency": 100.0,
                },
                "human": {
                    "win_rate": 20.0,
                    "ci95": [12.5, 27.25],
                    **({"lc_win_rate": None, "lc_ci95": None, "lc_separated": True} if separated else {}),
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
            **(shift or {}),
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
    # the judge's verdicts on dpo vs the human summaries are separated by length: no LC
    write_run(runs, "dpo-seed0", 3.0, 11.25, -0.05, -0.4, 1.25, 299.6, win=40.0, separated=True)
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
    # summarization; the judge vs human has no length-controlled keys (an eval.json from before them): —
    assert tables[4] == (
        "| model | ROUGE-L [95% CI] | ROUGE-1 / ROUGE-2 | win % vs ref [95% CI] | LC win % vs ref [95% CI] "
        "| len ratio vs ref | win % vs human [95% CI] | LC win % vs human [95% CI] | len ratio vs human |"
    )
    assert tables[6] == (
        "| dpo-seed0 | 11.25 | 30.00 / 10.00 | 40.0 [30.0, 50.0] | 35.0 [23.0, 47.0] | 1.25 "
        "| 20.0 [12.5, 27.2] | not estimable (separated) | — |"
    )
    assert tables[7] == (
        "| spo-seed0 | 13.50 | 30.00 / 10.00 | 55.5 [45.5, 65.5] | 50.5 [38.5, 62.5] | 1.25 "
        "| 20.0 [12.5, 27.2] | — | — |"
    )
    assert "LC = length-controlled win rate (AlpacaEval 2)" in md
    assert "| dpo (1) | reference | — | — |" in tables  # paired: no per-item rows
    # shift: eval.json without the probe keys (rephrased, unrelated, greedy, safe region) shows —
    assert (
        "| dpo-seed0 | -0.0500 | -0.4000 | — | — | — | -0.0500 | 25 | — "
        "| +1.2500 | 120 / 35 | 30 / 0.812 |" in tables
    )
    # the verdict; no per-pair values in these eval.json, so the seeds' means without an interval
    assert "Every method trained from: **reference**." in md
    assert "- **GSM8K**: highest dpo (3); vs reference —, spo vs dpo —" in md
    assert (
        "- **Δ log-prob, held-out chosen response**: dpo lowered it by 0.0500 per token (mean of 1 seed; "
        "no per-pair values); spo raised it by 0.0123 per token (mean of 1 seed; no per-pair values)" in md
    )
    assert "outside SPO's safe region" not in md and "Δ log-prob, policy's own greedy" not in md
    assert "a method's seeds pooled." in md and "a rephrased chosen, an unrelated" in md
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
    spo = data["rows"][2]
    assert (spo["judge_vs_reference_lc"], spo["judge_vs_reference_lc_ci95"]) == (50.5, [38.5, 62.5])
    assert spo["judge_vs_reference_length_ratio"] == 1.254
    assert all(spo[f"judge_vs_human_{k}"] is None for k in ("lc", "lc_ci95", "length_ratio"))
    assert data["rows"][0]["judge_vs_reference_lc"] is None
    assert data["rows"][0]["math_accuracy"] is None and data["rows"][0]["math_n"] is None
    assert (tmp_path / "leaderboard.md").read_text() == md and (tmp_path / "report.html").is_file()
    assert (tmp_path / "figures" / "metrics.png").read_bytes()[
        :4
    ] == b"\x89PNG" and "figures/metrics.png" in md
    # no metrics.jsonl in these runs
    assert not (tmp_path / "figures" / "training.png").exists() and "training.png" not in md
    assert not (tmp_path / "figures" / "dynamics.png").exists() and "dynamics.png" not in md
    assert data["rows"][1]["dlogp_greedy"] is None and data["rows"][1]["outside_safe_region_share"] is None


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
    # the seeds disagree (+1 and +3 on every post): resampling the items alone would give [+2, +2], the
    # two-stage interval spans what either seed alone says
    assert (spo["tasks"]["tldr"]["diff"], spo["tasks"]["tldr"]["ci95"]) == (2.0, [1.0, 3.0])
    assert spo["tasks"]["tldr"]["significant"] and (spo["interval"], spo["vs_seeds"]) == (
        "seeds and items",
        1,
    )
    # seed 1 alone fails items 3 and 4: a resample of it and of those items reaches 25
    assert spo["tasks"]["gsm8k"]["ci95"] == [25.0, 100.0]
    assert diffs[("dpo", "reference")]["tasks"]["gsm8k"] == {
        "diff": 0.0,
        "ci95": [0.0, 0.0],
        "n": 4,
        "significant": False,
    }
    (runs / "compare.json").write_text(json.dumps({"order": order}))
    md = leaderboard.write(tmp_path)
    assert "| spo (2) | reference | +75.0 [+25.0, +100.0] * | +2.0 [+1.0, +3.0] * |" in md
    # spo has 2 seeds, dpo 1: spo vs reference covers every trained side's seeds, spo vs dpo only spo's
    assert "paired bootstrap interval (2000 resamples) over training seeds where a method has several" in md
    assert [d["interval"] for d in json.loads((tmp_path / "leaderboard.json").read_text())["paired"]] == [
        "items",
        "seeds and items",
        "items and some seeds",
    ]
    # what the reference's 4 items could show: at 0 % correct, δ = z²/(n + z²) with z = z_0.975 + z_0.8;
    # ROUGE-L: z·sd·√(2/n), sd 12.91
    assert (
        "- **smallest difference each task can show** (80% power, two-sided 5%, at the reference's score, "
        "points; unpaired, so an upper bound): GSM8K 66.2 (4 items, reference 0.0); TL;DR ROUGE-L 25.6 "
        "(4 items, reference 25.0)" in md
    )
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


def samples(correct, rouge=()):
    return [{"task": "gsm8k", "prompt": "q", "output": "a", "correct": c} for c in correct] + [
        {"task": "tldr", "prompt": "p", "output": "s", "rougeL": r} for r in rouge
    ]


def test_head_to_head_pairs_each_method_with_its_base_when_that_ran(tmp_path):
    runs = tmp_path / "runs"
    scores = {
        "reference": [0, 0, 0, 0],
        "simpo-seed0": [1, 0, 0, 0],
        "simpo+spo-seed0": [1, 1, 1, 0],
        "spo-seed0": [1, 1, 0, 0],
        "spo@spo_lambda=10-seed0": [0, 1, 1, 1],
    }
    for name, correct in scores.items():
        acc = 100.0 * sum(correct) / len(correct)
        write_run(runs, name, acc, 10.0, 0.0, 0.0, 0.0, 1.0, samples=samples(correct, [10, 20, 30, 40]))
    diffs = {
        (d["method"], d["vs"]): d["tasks"]
        for d in leaderboard.paired([leaderboard.Run.read(runs / n) for n in scores])
    }
    # dpo did not run: spo has no base row; simpo has no base at all
    assert set(diffs) == {
        ("simpo", "reference"),
        ("simpo+spo", "reference"),
        ("simpo+spo", "simpo"),
        ("spo", "reference"),
        ("spo@spo_lambda=10", "reference"),
        ("spo@spo_lambda=10", "spo"),
    }
    # per item: 0, 100, 100, 0 and −100, 0, 100, 100
    assert diffs[("simpo+spo", "simpo")]["gsm8k"]["diff"] == 50.0
    assert diffs[("spo@spo_lambda=10", "spo")]["gsm8k"]["diff"] == 25.0
    assert diffs[("simpo+spo", "simpo")]["tldr"]["diff"] == 0.0
    (runs / "compare.json").write_text(json.dumps({"order": list(scores)}))
    md = leaderboard.write(tmp_path)
    assert "| simpo+spo (1) | simpo | +50.0 [" in md and "| spo@spo_lambda=10 (1) | spo | +25.0 [" in md
    # the accuracy consequence names every method vs its base, whichever way it goes
    consequence = next(line for line in md.splitlines() if line.startswith("- **accuracy, each method vs"))
    assert "simpo+spo vs simpo: GSM8K +50.0 [" in consequence
    assert "spo@spo_lambda=10 vs spo: GSM8K +25.0 [" in consequence and "vs reference" not in consequence
    # the best method's line lists its own pairs
    assert "- **GSM8K**: highest simpo+spo (75); vs reference +75.0 [" in md


def test_an_sft_init_is_named_and_every_method_is_compared_with_it(tmp_path):
    runs = tmp_path / "runs"
    order = ["reference", "sft-seed0", "dpo-seed0", "spo-seed0"]
    for name, correct in zip(order, ([0, 0], [1, 0], [1, 1], [0, 1])):
        write_run(runs, name, 0.0, 10.0, 0.0, 0.0, 0.0, 1.0, samples=samples(correct))
    meta = {"order": order, "init": "sft", "init_run": "sft-seed0"}
    (runs / "compare.json").write_text(json.dumps(meta))
    md = leaderboard.write(tmp_path)
    paired = json.loads((tmp_path / "leaderboard.json").read_text())["paired"]
    assert [(p["method"], p["vs"]) for p in paired] == [
        ("sft", "reference"),
        ("dpo", "reference"),
        ("dpo", "sft"),
        ("spo", "reference"),
        ("spo", "dpo"),
        ("spo", "sft"),
    ]
    assert "Every method trained from: **sft** (run sft-seed0's weights, also the reference)." in md
    assert "| dpo (1) | sft | +50.0 [" in md and "dpo vs sft: GSM8K +50.0 [" in md
    # older compare.json files have no init; the reference init names no run
    assert leaderboard.init_method({}) is None
    assert leaderboard.init_method({"init": "reference", "init_run": "reference"}) is None
    assert leaderboard.init_method(meta) == "sft"


def probes(step, chosen, outside):
    return {
        "step": step,
        "loss": 0.5,
        "probe_dlogp_chosen": chosen,
        "probe_dlogp_rejected": -chosen,
        "probe_dlogp_greedy": 2 * chosen,
        "probe_outside_safe_region": outside,
    }


def test_shift_is_stated_in_words_from_pooled_per_pair_values_and_dynamics_are_drawn(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "reference", 0.0, 10.0, 0.0, 0.0, 0.0, samples=samples([0, 0, 0, 0]))
    per_pair = {
        "dpo-seed0": ([-0.01, -0.02, -0.03, -0.02], [0.01, None, 0.03, None], 0.5),
        "dpo-seed1": ([-0.01, -0.01, -0.02, 0.0], [0.01, None, 0.01, None], 1.0),
        "spo-seed0": ([0.03, -0.02, 0.01, -0.01], None, 0.25),
        "spo-seed1": ([0.03, -0.02, 0.01, -0.01], None, 0.25),
    }
    for name, (chosen, rephrased, outside) in per_pair.items():
        pairs = {"dlogp_chosen": chosen}
        extra = {"outside_safe_region_share": outside, "per_pair": pairs}
        if rephrased:
            pairs |= {"dlogp_rephrased": rephrased, "dlogp_greedy": [0.05] * 4}
            extra |= {"dlogp_greedy": 0.05, "dlogp_rephrased": 0.02, "dsum_greedy": 1.5, "rephrased_pairs": 2}
        correct = [1, 1, 0, 0] if name.startswith("dpo") else [1, 1, 1, 1]
        write_run(
            runs, name, 0.0, 10.0, sum(chosen) / 4, 0.0, 0.0, 1.0, samples=samples(correct), shift=extra
        )
        # a probe every other step: the rows in between carry no probe keys and are skipped
        sign = -1 if name.startswith("dpo") else 1
        rows = [probes(0, 0.0, 0.0), {"step": 1, "loss": 0.6}, probes(2, sign * 0.01, 0.5 - sign * 0.25)]
        (runs / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = [leaderboard.Run.read(runs / n) for n in ["reference", *per_pair]]
    pooled = {g["method"]: g for g in leaderboard.shift_pooled(read)}
    # (−0.08 − 0.04) / 8; rephrased: the null pairs have no response, 0.06 / 4 over 2 pairs
    assert pooled["dpo"]["chosen"]["mean"] == pytest.approx(-0.015) and pooled["dpo"]["chosen"]["pairs"] == 4
    assert (
        pooled["dpo"]["rephrased"]["mean"] == pytest.approx(0.015)
        and pooled["dpo"]["rephrased"]["pairs"] == 2
    )
    assert pooled["dpo"]["outside_safe_region_share"] == 0.75 and pooled["spo"]["greedy"] is None
    assert pooled["reference"]["chosen"] == {"mean": 0.0, "ci95": None, "pairs": None, "seeds": 1}
    (runs / "compare.json").write_text(json.dumps({"order": ["reference", *per_pair]}))
    md = leaderboard.write(tmp_path)
    lines = md.splitlines()
    chosen = next(line for line in lines if line.startswith("- **Δ log-prob, held-out chosen"))
    assert "dpo lowered it by 0.0150 per token [-0.0" in chosen and "] (4 pairs × 2 seeds)" in chosen
    assert "; spo changed it by +0.0025 per token [-0.0" in chosen  # its interval holds 0
    assert (
        "- **Δ log-prob, policy's own greedy response**: dpo raised it by 0.0500 per token "
        "[+0.0500, +0.0500] (4 pairs × 2 seeds)" in lines
    )
    assert "dpo raised it by 0.0150 per token" in next(line for line in lines if "rephrased chosen" in line)
    assert "held-out pairs whose chosen fell below the reference, mean over seeds): dpo 75%, spo 25%" in md
    assert (
        "- **accuracy, each method vs its base** (paired per item, seeds averaged): spo vs dpo: GSM8K +50.0"
        in md
    )
    # the shift table: chosen, rejected, rephrased, unrelated, greedy, combined, both fell, outside, KL
    assert "| dpo-seed0 | -0.0200 | +0.0000 | +0.0200 | — | +0.0500 | -0.0200 | 25 | 50 | +0.0000 |" in md
    row = json.loads((tmp_path / "leaderboard.json").read_text())["rows"][1]
    assert (
        row["dsum_greedy"] == 1.5 and row["dsum_chosen"] is None and row["outside_safe_region_share"] == 0.5
    )
    assert "a rephrased chosen (2 pairs have one), an unrelated" in md
    assert "seeds pooled, 95% bootstrap resampling the training seeds, then the pairs." in md
    png = (tmp_path / "figures" / "dynamics.png").read_bytes()
    assert png[:4] == b"\x89PNG" and "figures/dynamics.png" in md


def test_probe_curves_average_the_seeds_per_step_and_no_probe_draws_nothing(tmp_path):
    from harness import figures

    seeds = [
        [probes(0, 0.0, 0.0), {"step": 1, "loss": 0.6}, probes(2, -0.01, 0.25)],
        [probes(2, -0.03, 0.75)],
    ]
    steps, mean, low, high = figures.seed_band(seeds, "probe_dlogp_chosen")
    assert (
        steps == [0, 2]
        and mean == [0.0, pytest.approx(-0.02)]
        and low == [0.0, -0.03]
        and high == [0.0, -0.01]
    )
    assert figures.probe_chart({"dpo": [[{"step": 1, "loss": 0.6}]]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_seed_aware_intervals_widen_when_seeds_disagree_and_equal_the_item_ones_when_they_agree():
    import math

    from harness.stats import mean_ci, paired_diff_ci, seeded_diff_ci, seeded_mean_ci

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 40), rng.normal(0.0, 2.0, 40)
    # one seed each: the item bootstrap itself, from the same draws
    assert seeded_diff_ci([a], [b]) == paired_diff_ci(a, b) and seeded_mean_ci([a]) == mean_ci(a)
    # seeds that agree exactly: nothing for the seed stage to add
    assert seeded_diff_ci([a] * 3, [b] * 2) == pytest.approx(paired_diff_ci(a, b), rel=1e-12)
    assert seeded_mean_ci([a] * 3) == pytest.approx(mean_ci(a), rel=1e-12)
    # seeds that disagree by ±1 on every item: the same mean, an interval that also spans the seeds
    mean, lo, hi = seeded_diff_ci([a - 1, a, a + 1], [b])
    item_mean, item_lo, item_hi = paired_diff_ci(a, b)
    assert mean == pytest.approx(item_mean) and lo < item_lo - 0.3 and hi > item_hi + 0.3
    mean, lo, hi = seeded_mean_ci([a - 1, a, a + 1])
    assert lo < mean_ci(a)[1] - 0.3 and hi > mean_ci(a)[2] + 0.3
    # missing values (NaN: no such response under that seed): an item without any is dropped
    table = [[1.0, math.nan, 2.0, 3.0], [3.0, math.nan, math.nan, 3.0]]
    assert seeded_mean_ci(table)[0] == pytest.approx(12 / 5)
    assert all(map(math.isnan, seeded_mean_ci([[math.nan]]))) and seeded_mean_ci([[0.5]]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="same items"):
        seeded_diff_ci([a], [b[:-1]])


def test_the_smallest_detectable_difference_follows_the_normal_approximation():
    from harness.stats import min_detectable_difference

    z = 1.959964 + 0.841621
    # a rate of 0: only the other model's spread, δ = z·√(δ(1 − δ)/n), so δ = z²/(n + z²)
    assert min_detectable_difference([0] * 50, True) == pytest.approx(z**2 / (50 + z**2), rel=1e-5)
    assert min_detectable_difference([1] * 50, True) == min_detectable_difference([0] * 50, True)
    # at 30 %: z·√((0.21 + q(1 − q))/n) = q − 0.3 at the returned q
    d = min_detectable_difference([1] * 30 + [0] * 70, True)
    q = 0.3 + d
    assert z * ((0.21 + q * (1 - q)) / 100) ** 0.5 == pytest.approx(d, rel=1e-5) and 0.15 < d < 0.2
    # a continuous score: z·sd·√(2/n)
    values = [10.0, 20.0, 30.0, 40.0]
    assert min_detectable_difference(values, False) == pytest.approx(z * np.std(values, ddof=1) * 0.5**0.5)
    # nothing within reach, or no spread to go by
    assert min_detectable_difference([0, 1], True) is None and min_detectable_difference([0.5], False) is None
    assert min_detectable_difference([3.0] * 5, False) is None


def test_seeds_evaluated_on_other_items_are_an_error_naming_the_runs(tmp_path):
    gsm8k = [{"task": "gsm8k", "prompt": "q", "output": "a", "correct": 1, "id": f"g{i}"} for i in range(4)]

    def seeds(folder: str, second: list[dict], shift: tuple[int, int] | None = None) -> list:
        runs = tmp_path / folder
        for name, items, n in (("dpo-seed0", gsm8k, 4), ("dpo-seed1", second, 3)):
            per_pair = {"per_pair": {"dlogp_chosen": [0.1] * n}} if shift else None
            write_run(runs, name, 0.0, 10.0, 0.0, 0.0, 0.0, 1.0, samples=items, shift=per_pair)
        return [leaderboard.Run.read(runs / n) for n in ("dpo-seed0", "dpo-seed1")]

    fewer = "seeds of dpo were evaluated on different GSM8K items: dpo-seed0 has 4, dpo-seed1 has 3;"
    with pytest.raises(ValueError, match=fewer):
        leaderboard.paired(seeds("fewer", gsm8k[:3]))
    with pytest.raises(ValueError, match=r"dpo-seed1 has 4 \(other ids\)"):
        leaderboard.paired(seeds("other", [*gsm8k[:3], {**gsm8k[3], "id": "g9"}]))
    # the held-out pairs: one seed scored 4, the other 3
    with pytest.raises(ValueError, match="different held-out pairs: dpo-seed0 has 4, dpo-seed1 has 3"):
        leaderboard.shift_pooled(seeds("heldout", gsm8k, shift=(4, 3)))


def test_the_response_kinds_are_the_probes_kinds():
    from harness import figures
    from trainers.probes import KINDS

    assert tuple(leaderboard.KINDS) == KINDS
    from trainers.tokenflow import TERMS

    flows = [f"probe_flow_{k}" for k in TERMS if k in ("to_argmax", "to_rejected")]
    assert [k for k, _ in figures.PROBES] == [
        *(f"probe_dlogp_{k}" for k in KINDS),
        "probe_outside_safe_region",
        *flows,
    ]


def test_the_pairs_line_counts_responses_the_length_cap_cut():
    from harness.pairs import pair_counts

    rows = [
        {"task": "arith", "style": "edit", "truncated": ["chosen", "rejected"]},
        {"task": "arith", "style": "edit", "truncated": []},
        {"task": "gsm8k", "style": "on-policy", "truncated": ["rejected"]},
    ]
    by_task = pair_counts(rows[:2], rows[2:])
    assert by_task["arith"]["truncated"] == {"chosen": 1, "rejected": 1}
    line = leaderboard._pairs_line({"pairs": {"by_task": by_task}})
    assert line.endswith(
        "1 chosen and 2 rejected responses were cut by the sampling length cap: kept, scored without an end "
        "token."
    )
    # nothing cut (or a compare.json from before the count): no such sentence
    assert "cut" not in leaderboard._pairs_line({"pairs": {"by_task": pair_counts(rows[1:2], [])}})
