import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.train import parse
from trainers.trainer import TrainConfig, Trainer

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
        "chosen": f"{a}+{b} = {a + b}. #### {a + b}",
        "rejected": f"The answer is {a * b + 1}.",
    }
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3)]
]


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return str(path)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def train_tiny(model_dir, pairs, out, **kw):
    cfg = TrainConfig(
        **{
            "model": model_dir,
            "pairs": pairs,
            "output_dir": str(out),
            "batch_pairs": 4,
            "micro_pairs": 2,
            "bf16": False,
            **kw,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    summary = Trainer(cfg, model, AutoTokenizer.from_pretrained(model_dir)).train()
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return summary, rows, model


def test_training_lowers_the_loss_and_writes_a_reloadable_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    summary, rows, model = train_tiny(
        tiny_model_dir, pairs_file, tmp_path / "run", method="dpo", lr=1e-2, epochs=4
    )
    assert summary["steps"] == 8 and summary["pairs_used"] == 8 and summary["pairs_skipped"] == 0
    assert rows[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 1: −log σ(0)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    # the rate each step used: 1 warm-up step, then linear decay to 0 over the other 7
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 1e-2] + [1e-2 * k / 7 for k in (6, 5, 4, 3, 2, 1)])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoint", use_safetensors=True)
    ids = torch.tensor([[1, 5, 9, 13]])
    assert torch.equal(reloaded(ids).logits, model.eval()(ids).logits)


def test_another_seed_orders_the_same_pairs_differently(tiny_model_dir, pairs_file, tmp_path):
    """compare --seeds 0,1 relies on it: the seed changes the data order, not the data or the first-step
    model."""
    _, a, _ = train_tiny(tiny_model_dir, pairs_file, tmp_path / "s0", method="dpo", lr=1e-2, epochs=1, seed=0)
    _, b, _ = train_tiny(tiny_model_dir, pairs_file, tmp_path / "s1", method="dpo", lr=1e-2, epochs=1, seed=1)
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], abs=1e-6)  # −log σ(0) whatever the order
    # step 2 saw other pairs after another step 1
    assert a[1]["loss"] != pytest.approx(b[1]["loss"], abs=1e-4)


def test_spo_with_lambda_zero_trains_exactly_like_dpo(tiny_model_dir, pairs_file, tmp_path):
    _, dpo_rows, dpo_model = train_tiny(
        tiny_model_dir, pairs_file, tmp_path / "dpo", method="dpo", lr=1e-2, epochs=2
    )
    _, spo_rows, spo_model = train_tiny(
        tiny_model_dir, pairs_file, tmp_path / "spo", method="spo", spo_lambda=0.0, lr=1e-2, epochs=2
    )
    assert [r["loss"] for r in dpo_rows] == [r["loss"] for r in spo_rows]
    for a, b in zip(dpo_model.parameters(), spo_model.parameters()):
        assert torch.equal(a, b)


def test_reference_logps_are_cached_and_reused(tiny_model_dir, pairs_file, tmp_path):
    train_tiny(tiny_model_dir, pairs_file, tmp_path / "a", method="dpo", ref_cache=str(tmp_path / "ref"))
    [cache] = list((tmp_path / "ref").glob("ref_logps-*.safetensors"))
    stamp = cache.stat().st_mtime_ns
    train_tiny(tiny_model_dir, pairs_file, tmp_path / "b", method="spo", ref_cache=str(tmp_path / "ref"))
    assert cache.stat().st_mtime_ns == stamp and len(list((tmp_path / "ref").iterdir())) == 1
    train_tiny(
        tiny_model_dir, pairs_file, tmp_path / "c", method="dpo", ref_cache=str(tmp_path / "ref"), bf16=True
    )
    assert len(list((tmp_path / "ref").iterdir())) == 2  # another precision, other log-probs
    # train.json says which runs computed them
    computed = [
        json.loads((tmp_path / r / "train.json").read_text())["reference_logps_computed"] for r in "abc"
    ]
    assert computed == [True, False, True]


def test_too_long_pairs_are_skipped_and_counted(tiny_model_dir, pairs_file, tmp_path):
    long = {"prompt": "x " * 400, "chosen": "a", "rejected": "b"}
    with open(pairs_file, "a") as f:
        f.write(json.dumps(long) + "\n")
    summary, _, _ = train_tiny(tiny_model_dir, pairs_file, tmp_path / "run", method="dpo", max_len=128)
    assert summary["pairs_used"] == 8 and summary["pairs_skipped"] == 1


def test_cli_reads_yaml_and_flags_override_it(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: m\npairs: p.jsonl\nmethod: dpo\nlr: 1.0e-4\nbf16: false\n")
    parsed = parse(["--config", str(cfg), "--lr", "3e-6", "--spo-lambda", "0.5"])
    assert (parsed.model, parsed.method, parsed.lr, parsed.spo_lambda, parsed.bf16) == (
        "m",
        "dpo",
        3e-6,
        0.5,
        False,
    )
    cfg.write_text("model: m\npairs: p\nbogus: 1\n")
    with pytest.raises(SystemExit):
        parse(["--config", str(cfg)])
    cfg.write_text("")  # an empty YAML is no fields, not a crash
    assert parse(["--config", str(cfg), "--model", "m", "--pairs", "p"]).lr == 1e-5


def test_a_few_steps_on_the_real_default_model_lower_the_loss_from_inside_the_safe_region(
    default_model_path, pairs_file, tmp_path
):
    """In the machine's precision (bf16 where native): the reference log-probs are scored in the very
    micro-batches and precision of the training forwards, so at step 1 (the policy is the reference) every
    pair's margin is exactly 0, no pair is outside SPO's safe region, and SPO's step is DPO's."""
    tok, runs = AutoTokenizer.from_pretrained(default_model_path), {}
    for method, epochs in (("spo", 3), ("dpo", 1)):
        cfg = TrainConfig(
            model=default_model_path,
            pairs=pairs_file,
            output_dir=str(tmp_path / method),
            method=method,
            lr=2e-5,
            epochs=epochs,
            batch_pairs=8,
            micro_pairs=4,
            warmup_ratio=0.0,
        )
        model = AutoModelForCausalLM.from_pretrained(default_model_path, use_safetensors=True)
        summary = Trainer(cfg, model, tok).train()
        runs[method] = [json.loads(line) for line in open(tmp_path / method / "metrics.jsonl")]
    assert summary["steps"] == 1 and len(runs["spo"]) == 3
    spo, dpo = runs["spo"][0], runs["dpo"][0]
    assert (spo["loss"], spo["dlogp_chosen"], spo["outside_safe_region"], spo["penalty"]) == (
        pytest.approx(math.log(2), abs=1e-6),
        0.0,
        0.0,
        0.0,
    )
    assert (spo["loss"], spo["grad_norm"]) == (dpo["loss"], dpo["grad_norm"])
    assert runs["spo"][2]["loss"] < spo["loss"] - 0.02


def test_reference_log_probs_are_scored_in_each_epochs_training_micro_batches(
    tiny_model_dir, pairs_file, tmp_path
):
    """The model here rounds differently with the shape of its batch (as a GPU's or another CPU's GEMMs pick
    kernels by shape): its hidden states move by 1e-3 × (packed row length mod 5). Scored in file order, the
    reference would differ from the step-1 policy on most pairs and SPO's penalty would fire on that noise;
    scored per epoch in the training micro-batches, it equals the policy to the bit at step 1."""
    from trainers.logprobs import pair_logps

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.model.norm.register_forward_hook(lambda _m, _i, out: out + 1e-3 * (out.shape[1] % 5))
    cfg = TrainConfig(
        model=tiny_model_dir,
        pairs=pairs_file,
        output_dir=str(tmp_path / "run"),
        method="spo",
        epochs=2,
        batch_pairs=4,
        micro_pairs=2,
        bf16=False,
        lr=1e-2,
    )
    trainer = Trainer(cfg, model, tok)
    batches = trainer._batches()
    chosen, rejected = trainer.reference_logps(batches)
    assert chosen.total.shape == (2, len(PAIRS))
    with torch.no_grad():
        for step, batch in enumerate(batches):
            epoch = step // (len(batches) // 2)
            for idx in trainer._micro_batches(batch, 0):
                pc, pr = pair_logps(model, *trainer._columns(trainer.pairs, idx))
                assert torch.equal(pc.total, chosen.total[epoch, idx]) and torch.equal(
                    pr.total, rejected.total[epoch, idx]
                )
    trainer.train()
    first = json.loads(open(tmp_path / "run" / "metrics.jsonl").readline())
    assert (first["outside_safe_region"], first["penalty"], first["dlogp_chosen"]) == (0.0, 0.0, 0.0)


def test_lookahead_anchor_equals_the_loss_after_a_manual_sgd_step(tiny_model_dir):
    import copy

    from trainers.logprobs import sequence_logps
    from trainers.trainer import lookahead_anchor

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts, completions = [[5, 6, 7], [8, 9]], [[11, 12, 13], [14, 15]]
    pc = sequence_logps(model, prompts, completions)
    v_hat = lookahead_anchor(model, prompts, completions, pc, alpha=0.5)
    manual = copy.deepcopy(model)
    sgd = torch.optim.SGD(manual.parameters(), lr=0.5)
    (-sequence_logps(manual, prompts, completions).mean).mean().backward()
    sgd.step()
    with torch.no_grad():
        expected = -sequence_logps(manual, prompts, completions).mean
    assert not v_hat.requires_grad
    assert torch.allclose(v_hat, expected, atol=1e-5)
    assert torch.all(v_hat < -pc.mean.detach())  # a step of SFT lowers the chosen NLL: v̂ sits below ℓ_θ


def test_bad_pairs_are_reported_with_ids_or_raise(tiny_model_dir, pairs_file, tmp_path):
    with open(pairs_file, "a") as f:
        f.write(json.dumps({"id": "same", "prompt": "p", "chosen": "a b", "rejected": " a b"}) + "\n")
    summary, _, _ = train_tiny(tiny_model_dir, pairs_file, tmp_path / "run", method="dpo")
    assert summary["skipped"] == [
        {
            "line": 9,
            "id": "same",
            "field": "rejected",
            "reason": "identical",
            "detail": "chosen and rejected are the same text",
        }
    ]
    with pytest.raises(
        ValueError, match="pairs.jsonl:9 field 'rejected': chosen and rejected are the same text"
    ):
        train_tiny(tiny_model_dir, pairs_file, tmp_path / "strict", method="dpo", bad_pairs="error")


def test_probe_set_logs_training_dynamics(tiny_model_dir, pairs_file, tmp_path):
    _, rows, _ = train_tiny(
        tiny_model_dir,
        pairs_file,
        tmp_path / "run",
        method="dpo",
        lr=1e-2,
        epochs=2,
        probe_pairs=pairs_file,
        probe_every=2,
        probe_flow=True,
    )
    probes = [r for r in rows if "probe_dlogp_chosen" in r]
    assert [r["step"] for r in probes] == [0, 2, 4]
    # the token flow after step 0 (at step 0 nothing moved): the chosen tokens' lost probability and, where
    # they lost any, three shares of it
    flows = [r for r in probes if "probe_flow_lost" in r]
    assert [r["step"] for r in flows] == [2, 4] and all(r["probe_flow_lost"] >= 0 for r in flows)
    for r in (r for r in flows if r["probe_flow_lost"] > 0):
        shares = [r[f"probe_flow_to_{k}"] for k in ("argmax", "rejected", "rest")]
        # in probability (fp32 sums over the vocabulary: the shares of a random model's tiny losses are noisy)
        assert r["probe_flow_lost"] * (sum(shares) - 1) == pytest.approx(0.0, abs=1e-5)
    first, last = probes[0], probes[-1]
    assert (
        first["probe_dlogp_chosen"],
        first["probe_dlogp_rejected"],
        first["probe_dlog_combined"],
        first["probe_margin"],
    ) == (0.0, 0.0, 0.0, 0.0)
    # DPO separated the pairs it trained on
    assert last["probe_margin"] > 0.5 and last["probe_reward_accuracy"] > 0.5
    assert last["probe_logp_chosen"] == pytest.approx(
        first["probe_logp_chosen"] + last["probe_dlogp_chosen"], abs=1e-5
    )


def test_non_finite_loss_stops_with_the_last_good_state_kept(
    tiny_model_dir, pairs_file, tmp_path, monkeypatch
):
    import trainers.trainer as tr

    calls = {"n": 0}
    real = tr.pair_logps

    def faulty(*args, **kw):  # fault injection: the 3rd training forward returns NaN
        pc, pr = real(*args, **kw)
        calls["n"] += 1
        return (tr.SeqLogps(pc.total * float("nan"), pc.count), pr) if calls["n"] == 3 else (pc, pr)

    monkeypatch.setattr(tr, "pair_logps", faulty)
    with pytest.raises(FloatingPointError, match="non-finite loss .* at step 2"):
        train_tiny(tiny_model_dir, pairs_file, tmp_path / "run", method="dpo", epochs=2, save_every=1)
    state = torch.load(tmp_path / "run" / "state" / "trainer.pt", weights_only=True)
    assert state["step"] == 1 and not (tmp_path / "run" / "checkpoint").exists()


TRAIN_CLI = [
    "-m",
    "trainers.train",
    "--method",
    "spo",
    "--epochs",
    "150",
    "--batch-pairs",
    "4",
    "--micro-pairs",
    "2",
    "--no-bf16",
    "--lr",
    "1e-3",
    "--save-every",
    "7",
]


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tiny_model_dir, pairs_file, tmp_path):
    import subprocess
    import sys
    import time

    base = [sys.executable, *TRAIN_CLI, "--model", tiny_model_dir, "--pairs", pairs_file]
    subprocess.run(base + ["--output-dir", str(tmp_path / "whole")], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        base + ["--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while proc.poll() is None:  # SIGKILL once a third of the 300 steps are logged
        log = killed / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 100:
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    assert not (killed / "checkpoint").exists(), "the run finished before it could be killed"
    subprocess.run(base + ["--output-dir", str(killed), "--resume"], check=True, capture_output=True)
    whole, resumed = (json.loads((tmp_path / d / "train.json").read_text()) for d in ("whole", "killed"))
    assert 0 < resumed["resumed_from"] < 300 and resumed["resumed_from"] % 7 == 0
    assert resumed["final"]["loss"] == pytest.approx(whole["final"]["loss"], rel=1e-6)
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 301))  # no step lost or logged twice
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "checkpoint")
    b = AutoModelForCausalLM.from_pretrained(killed / "checkpoint")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.parameters(), b.parameters()))


def test_plot_draws_the_probe_curves_of_several_runs(tiny_model_dir, pairs_file, tmp_path):
    from common import read_jsonl
    from harness.figures import curves, dynamics_chart

    for method in ("dpo", "spo"):
        train_tiny(
            tiny_model_dir,
            pairs_file,
            tmp_path / method,
            method=method,
            lr=1e-2,
            probe_pairs=pairs_file,
            probe_every=1,
        )
    steps, values = curves(read_jsonl(tmp_path / "dpo" / "metrics.jsonl"), ["probe_dlogp_chosen"])[
        "probe_dlogp_chosen"
    ]
    assert steps == [0, 1, 2] and values[0] == 0.0
    dynamics_chart([tmp_path / "dpo", tmp_path / "spo"], tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no probe rows"):
        train_tiny(tiny_model_dir, pairs_file, tmp_path / "plain", method="dpo")
        dynamics_chart([tmp_path / "plain"], tmp_path / "x.png")


# every loss; the +spo plug-in is generic (spo = dpo+spo: below)
@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo", "dpop", "rpo", "simpo+spo"])
def test_every_method_trains_on_the_default_model_from_the_cli(
    method, default_model_path, pairs_file, tmp_path
):
    from trainers.trainer import run

    cfg = parse(
        [
            "--model",
            default_model_path,
            "--pairs",
            pairs_file,
            "--method",
            method,
            "--output-dir",
            str(tmp_path),
            "--batch-pairs",
            "4",
            "--micro-pairs",
            "4",
            "--epochs",
            "1",
            "--ref-cache",
            str(tmp_path.parent / "ref"),
        ]
    )
    summary = run(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert summary["steps"] == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert ("penalty" in rows[0]) == method.endswith("+spo")
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_spo_lookahead_trains_on_the_default_model_from_the_command_line(
    default_model_path, pairs_file, tmp_path
):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "trainers.train",
        "--model",
        default_model_path,
        "--pairs",
        pairs_file,
        "--method",
        "spo",
        "--spo-anchor",
        "lookahead",
        "--spo-alpha",
        "1e-3",
        "--batch-pairs",
        "4",
        "--micro-pairs",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    # the virtual SFT step lowers the chosen NLL, so the lookahead anchor puts pairs outside the region
    assert len(rows) == 2 and rows[0]["outside_safe_region"] > 0 and rows[0]["penalty"] > 0


def test_lora_trains_adapters_only_and_saves_a_merged_plain_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    from transformers import LlamaForCausalLM

    from trainers.trainer import run

    cfg = TrainConfig(
        model=tiny_model_dir,
        pairs=pairs_file,
        output_dir=str(tmp_path),
        method="spo",
        spo_anchor="lookahead",
        lora_r=4,
        lr=1e-2,
        epochs=3,
        batch_pairs=4,
        micro_pairs=2,
        bf16=False,
    )
    summary = run(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert summary["steps"] == 6 and rows[-1]["loss"] < rows[0]["loss"]
    init = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint", use_safetensors=True)
    assert type(merged) is LlamaForCausalLM and not any("lora" in n for n, _ in merged.named_parameters())
    changed = {
        n
        for (n, a), (_, b) in zip(init.named_parameters(), merged.named_parameters())
        if not torch.equal(a, b)
    }
    # only the adapted linear layers moved; embeddings, norms did not
    assert changed and all("proj" in n for n in changed)


ZERO2, ZERO3 = (["--deepspeed", str(CONFIGS / "deepspeed" / f"zero{n}.json")] for n in (2, 3))


@pytest.mark.parametrize(
    "model, shard, sharding, lr",
    [
        ("tiny_model_dir", [], "ddp", 1e-2),
        ("tiny_model_dir", ["--fsdp"], "fsdp", 1e-2),
        ("default_model_path", ["--fsdp"], "fsdp", 1e-5),
        ("tiny_model_dir", ZERO2, "zero2", 1e-2),
        # ZeRO-3 on the real model; its accumulation is the DeepSpeed engine's, checked with ZeRO-2 above
        ("default_model_path", ZERO3, "zero3", 1e-5),
    ],
    ids=["ddp", "fsdp", "fsdp-default-model", "zero2", "zero3-default-model"],
)
def test_two_process_run_matches_one_process(model, shard, sharding, lr, pairs_file, tmp_path, request):
    """torchrun (or `accelerate launch` on GPUs) → Accelerator → DDP, FSDP2 with --fsdp, or a DeepSpeed
    ZeRO engine with --deepspeed, over gloo on this CPU."""
    import socket
    import subprocess
    import sys

    from safetensors import safe_open

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # 2 micro-batches per process; the default model keeps CI short: 1 step of 2 pairs per process, 2 probe
    # pairs and no greedy probe (the sharded run skips it, so there is nothing to compare, and decoding
    # 128 tokens twice was a third of the test's time)
    tiny = model == "tiny_model_dir"
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[: 8 if tiny else 2]))
    args = [
        "-m",
        "trainers.train",
        "--model",
        request.getfixturevalue(model),
        "--pairs",
        pairs_file,
        "--method",
        "spo",
        "--no-bf16",
        "--batch-pairs",
        "4",
        "--micro-pairs",
        "1" if tiny else "2",
        "--epochs",
        "2" if tiny else "1",
        "--lr",
        str(lr),  # tiny: accumulation
        "--probe-pairs",
        str(probes),
        "--probe-every",
        "1",
        *([] if tiny else ["--no-probe-greedy"]),
    ]
    subprocess.run(
        [sys.executable, *args, "--output-dir", str(tmp_path / "one")], check=True, capture_output=True
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
    ]
    proc = subprocess.run(
        torchrun + args + shard + ["--output-dir", str(tmp_path / "two")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"process": 1' in proc.stdout  # the second rank really ran (and left logging and saving to rank 0)
    ran = json.loads((tmp_path / "two" / "train.json").read_text())
    assert (ran["processes"], ran["sharding"]) == (2, sharding)  # what really ran, as the run records it
    one, two = ([json.loads(line) for line in open(tmp_path / d / "metrics.jsonl")] for d in ("one", "two"))
    # step 0: the probe
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(len(one))) and len(one) >= 3
    assert [r["probe_logp_chosen"] for r in two] == pytest.approx(
        [r["probe_logp_chosen"] for r in one], rel=1e-5
    )
    one, two = one[1:], two[1:]
    # fp32 sums in another order
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    # gradients averaged, not summed
    assert [r["grad_norm"] for r in two] == pytest.approx([r["grad_norm"] for r in one], rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "checkpoint")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "checkpoint")
    keys = [
        set(safe_open(str(tmp_path / d / "checkpoint" / "model.safetensors"), "pt").keys())
        for d in ("one", "two")
    ]
    assert keys[0] == keys[1]  # the same checkpoint format (tied weights stored once)
    init = AutoModelForCausalLM.from_pretrained(args[3])
    moved = torch.cat([(x - w).abs().flatten() for x, w in zip(a.parameters(), init.parameters())]).mean()
    apart = torch.cat([(x - y).abs().flatten() for x, y in zip(a.parameters(), b.parameters())]).mean()
    # AdamW moves each weight by about lr whatever its gradient's size, so a near-zero gradient whose sign
    # rounding flips moves a weight the other way: single weights may differ by up to ~lr, but on average
    # the two runs agree
    # to well under 1 % of the distance trained; unsynchronised, missing or unsaved updates would not
    assert moved > lr / 10 and apart < moved / 100, (moved, apart)


@pytest.mark.parametrize(
    "sharding", [{"fsdp": True}, {"deepspeed": "configs/deepspeed/zero3.json"}], ids=["fsdp", "deepspeed"]
)
def test_sharding_refuses_what_it_does_not_support_yet(sharding, tiny_model_dir, pairs_file, tmp_path):
    flag = "--" + next(iter(sharding))
    for extra in (
        {"lora_r": 4},
        {"save_every": 1},
        {"method": "spo", "spo_anchor": "lookahead"},
        {"fsdp": True, "deepspeed": "x.json"},
    ):
        cfg = TrainConfig(
            **{"model": tiny_model_dir, "pairs": pairs_file, "output_dir": str(tmp_path), **sharding, **extra}
        )
        with pytest.raises(ValueError, match=f"{flag} does not support|both shard the model; choose one"):
            Trainer(
                cfg,
                AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                AutoTokenizer.from_pretrained(tiny_model_dir),
            )


@pytest.mark.parametrize(
    "kind, section",
    [("DEEPSPEED", "deepspeed_config:\n  zero_stage: 3\n"), ("FSDP", "fsdp_config:\n  fsdp_version: 2\n")],
    ids=["deepspeed", "fsdp"],
)
def test_an_accelerate_deepspeed_or_fsdp_config_is_refused_with_what_to_launch_instead(
    kind, section, tiny_model_dir, pairs_file, tmp_path
):
    """accelerate only wires DeepSpeed and FSDP into `accelerator.prepare`, which this trainer does not
    use: without the guard each process would train alone on GPUs, unsynchronised, and rank 0 would save
    its own half-trained weights (on CPU accelerate quietly falls back to DDP instead)."""
    import subprocess
    import sys

    config = tmp_path / "accelerate.yaml"
    config.write_text(
        f"distributed_type: {kind}\n{section}num_machines: 1\nnum_processes: 2\nuse_cpu: true\n"
        "mixed_precision: 'no'\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "-m",
            "trainers.train",
            "--model",
            tiny_model_dir,
            "--pairs",
            pairs_file,
            "--output-dir",
            str(tmp_path / "out"),
            "--batch-pairs",
            "4",
            "--micro-pairs",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode != 0
        and f"asks for {kind}, which this trainer does not take from accelerate" in proc.stderr
    ), proc.stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_deepspeed_config_takes_batch_clipping_and_precision_from_the_flags_and_names_a_conflicting_field(
    tmp_path,
):
    from trainers.parallel import deepspeed_config

    flags = {"batch_pairs": 16, "micro_pairs": 2, "processes": 4, "max_grad_norm": 0.5}
    shipped = deepspeed_config(str(CONFIGS / "deepspeed" / "zero3.json"), **flags, bf16=True)
    assert shipped["zero_optimization"]["stage"] == 3
    assert (
        shipped["train_batch_size"],
        shipped["train_micro_batch_size_per_gpu"],
        shipped["gradient_accumulation_steps"],
        shipped["gradient_clipping"],
    ) == (16, 2, 2, 0.5)  # 16 pairs = 4 processes × 2 pairs × 2 accumulation steps
    # --bf16 reaches the engine as its own autocast (else it switches a CUDA autocast off), gradients
    # communicated in fp32
    assert shipped["torch_autocast"] == {
        "enabled": True,
        "dtype": "bfloat16",
        "lower_precision_safe_modules": [],
    }
    assert "torch_autocast" not in deepspeed_config(
        str(CONFIGS / "deepspeed" / "zero2.json"), **flags, bf16=False
    )
    path = tmp_path / "ds.json"
    zero = {"zero_optimization": {"stage": 2}}
    for config, error in [
        (
            {**zero, "gradient_accumulation_steps": 4},
            "field 'gradient_accumulation_steps': is 4 but the trainer runs 2",
        ),
        (
            {**zero, "train_batch_size": 16, "gradient_clipping": 2.0},
            "field 'gradient_clipping': is 2.0 but the trainer runs 0.5",
        ),
        ({**zero, "optimizer": {"type": "Adam"}}, "field 'optimizer': the trainer's AdamW is used"),
        ({**zero, "bf16": {"enabled": True}}, "field 'bf16': precision is the trainer's --bf16"),
        ({**zero, "bfloat16": {"enabled": True}}, "field 'bfloat16': precision"),  # DeepSpeed's legacy name
        ({**zero, "fp16": True}, "field 'fp16': precision"),
        ({**zero, "torch_autocast": {"enabled": False}}, "field 'torch_autocast': precision"),
        ({**zero, "managed_gradient_accumulation": False}, "field 'managed_gradient_accumulation'"),
        (
            {"zero_optimization": {"stage": 0}},
            "field 'zero_optimization.stage': is 0; give ZeRO stage 1, 2 or 3",
        ),
        ({}, "field 'zero_optimization.stage': is None"),
        (
            {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}},
            "field 'zero_optimization.offload_optimizer'",
        ),
        (
            {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}},
            "field 'zero_optimization.reduce_bucket_size': is \"auto\"",
        ),
    ]:
        path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=f"{path}: {error}"):
            deepspeed_config(str(path), **flags, bf16=False)
    path.write_text('{"zero_optimization": {"stage": 2},\n "train_batch_size": auto}')
    with pytest.raises(ValueError, match=f"{path}: line 2: not valid JSON"):
        deepspeed_config(str(path), **flags, bf16=False)
    # a disabled section and matching values pass
    path.write_text(json.dumps({**zero, "bf16": {"enabled": False}, "train_batch_size": 16}))
    assert deepspeed_config(str(path), **flags, bf16=False)["gradient_accumulation_steps"] == 2


def test_a_non_finite_gradient_stops_the_run_before_the_update(tiny_model_dir, pairs_file, tmp_path):
    """A finite loss with a NaN gradient (fault injection on step 2's first backward): the run stops with
    the reason before AdamW writes NaN into the weights."""
    cfg = TrainConfig(
        model=tiny_model_dir,
        pairs=pairs_file,
        output_dir=str(tmp_path),
        method="dpo",
        epochs=2,
        batch_pairs=4,
        micro_pairs=2,
        bf16=False,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    backwards = {"n": 0}

    def poison(grad):
        backwards["n"] += 1
        return grad * float("nan") if backwards["n"] == 3 else grad

    model.get_input_embeddings().weight.register_hook(poison)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient norm \(nan\) at step 2"):
        Trainer(cfg, model, AutoTokenizer.from_pretrained(tiny_model_dir)).train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [1]


def test_metrics_also_go_to_tensorboard_when_installed(tiny_model_dir, pairs_file, tmp_path):
    pytest.importorskip(
        "tensorboard", reason="optional: TensorBoard logging is on when tensorboard is installed"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, rows, _ = train_tiny(
        tiny_model_dir, pairs_file, tmp_path / "run", method="dpo", probe_pairs=pairs_file, probe_every=1
    )
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2] and loss[1].value == pytest.approx(rows[-1]["loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("probe_dlogp_chosen")] == [0, 1, 2]


def test_truncate_policy_keeps_long_pairs_with_cut_completions(tiny_model_dir, pairs_file, tmp_path):
    with open(pairs_file, "a") as f:
        f.write(
            json.dumps(
                {"id": "long", "prompt": "short prompt", "chosen": "yes " * 300, "rejected": "no " * 300}
            )
            + "\n"
        )
    cfg = TrainConfig(
        model=tiny_model_dir,
        pairs=pairs_file,
        output_dir=str(tmp_path),
        max_len=64,
        bad_pairs="truncate",
        bf16=False,
    )
    trainer = Trainer(
        cfg,
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    prompt, chosen, rejected = trainer.pairs[-1]
    assert len(trainer.pairs) == 9 and len(prompt) + len(chosen) == 64 and len(prompt) + len(rejected) == 64
    assert trainer.skipped == [
        {
            "line": 9,
            "id": "long",
            "field": None,
            "reason": "truncated",
            "detail": "304 tokens, over max_len=64; completions cut, pair kept",
        }
    ]


def test_precision_left_unset_follows_the_hardware(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    import trainers.logprobs as lp
    import trainers.trainer as tr
    from harness.generation import make_generator

    for native in (True, False):
        monkeypatch.setattr(tr, "native_bf16", lambda device_type=None: native)
        monkeypatch.setattr(lp, "native_bf16", lambda device_type=None: native)
        cfg = TrainConfig(model=tiny_model_dir, pairs=pairs_file, output_dir=str(tmp_path / str(native)))
        assert (
            Trainer(
                cfg,
                AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                AutoTokenizer.from_pretrained(tiny_model_dir),
            ).bf16
            is native
        )
        assert make_generator(tiny_model_dir, "hf").dtype == ("bfloat16" if native else "float32")
        assert make_generator(tiny_model_dir, "hf", "float32").dtype == "float32"  # an explicit choice stands
    cfg = TrainConfig(model=tiny_model_dir, pairs=pairs_file, output_dir=str(tmp_path / "x"), bf16=True)
    assert (
        Trainer(
            cfg,
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            AutoTokenizer.from_pretrained(tiny_model_dir),
        ).bf16
        is True
    )


def test_resumed_metrics_keep_rows_up_to_the_state_and_drop_a_line_cut_by_a_kill(tmp_path):
    from trainers.trainer import MetricsLog

    rows = [{"step": s, "loss": 0.7 - s / 10} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')
    log = MetricsLog(tmp_path, keep_until=2)
    log.write({"step": 3, "loss": 0.1}, tensorboard=False)
    log.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        *rows[:2],
        {"step": 3, "loss": 0.1},
    ]
    assert not list(tmp_path.glob("*.tmp"))


def test_shipped_accelerate_config_is_a_valid_multi_gpu_config():
    """configs/accelerate/multi_gpu.yaml, as `accelerate launch --config_file` reads it (no GPU here to run
    it)."""
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(
        str(Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "multi_gpu.yaml")
    )
    assert (cfg.distributed_type, cfg.num_processes, cfg.mixed_precision, cfg.use_cpu) == (
        "MULTI_GPU",
        8,
        "no",
        False,
    )
