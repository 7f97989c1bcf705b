"""compare as a researcher brings it their own work: a pairs file or a `datasets` folder instead of the
built-in pairs, an OpenAI-compatible judge endpoint, an lm-eval task of their own; and every option checked
before the first stage starts."""

import json
import math
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import compare

LM_EVAL_DIR = Path(__file__).parent / "data" / "lm_eval"


def arithmetic_pairs(n: int) -> list[dict]:
    """n pairs whose chosen states the right sum and whose rejected a wrong one."""
    return [
        {
            "id": f"sum-{i}",
            "prompt": f"What is {i} + {i + 3}?",
            "chosen": f"{i} + {i + 3} = {2 * i + 3}. The answer is {2 * i + 3}.",
            "rejected": f"{i} + {i + 3} = {2 * i + 4}. The answer is {2 * i + 4}.",
        }
        for i in range(n)
    ]


def run(args: list[str], tmp_path: Path) -> tuple[Path, dict]:
    results = tmp_path / "results"
    compare.main([*args, "--results", str(results), "--outputs", str(tmp_path / "outputs")])
    return results, json.loads((results / "leaderboard.json").read_text())


def test_a_pairs_file_with_a_bom_and_bad_rows_trains_both_methods_on_the_default_model(
    tmp_path, default_model_path
):
    """10 good rows, a BOM, a row missing `rejected` and one with chosen == rejected: both skipped and
    counted, every good row used (8 train, 2 held out), the leaderboard names the custom pairs."""
    rows = [json.dumps(p) for p in arithmetic_pairs(10)]
    rows[3:3] = [
        json.dumps({"prompt": "Q", "chosen": "a"}),
        json.dumps({"prompt": "Q", "chosen": "b", "rejected": "b"}),
    ]
    path = tmp_path / "my_pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    results, board = run(
        [
            "--pairs",
            str(path),
            "--methods",
            "dpo,spo",
            "--heldout",
            "2",
            "--tasks",
            "arith",
            "--arith-eval",
            "4",
        ]
        + [
            "--kl-prompts",
            "2",
            "--max-tokens",
            "24",
            "--judge",
            "none",
            "--backend",
            "hf",
            "--dtype",
            "float32",
        ]
        + ["--no-bf16", "--epochs", "1", "--batch-pairs", "4", "--micro-pairs", "4", "--probe-every", "0"],
        tmp_path,
    )
    meta = board["meta"]
    assert meta["pairs"]["sources"] == [
        {
            "role": "train",
            "path": str(path),
            "rows": 12,
            "kept": 10,
            "skipped": {"missing": 1, "identical": 1},
            "bom_stripped": True,
        }
    ]
    none_cut = {"truncated": {"chosen": 0, "rejected": 0}}
    assert meta["pairs"]["by_task"] == {
        "custom": {"train": 8, "heldout": 2, "style": "from my_pairs.jsonl"} | none_cut
    }
    assert "pairs" not in meta["stage_seconds"]  # no built-in pairs were sampled
    trained = [json.loads(line) for line in open(tmp_path / "outputs" / "train_pairs.jsonl")]
    held = [json.loads(line) for line in open(tmp_path / "outputs" / "heldout_pairs.jsonl")]
    assert sorted(p["id"] for p in trained + held) == sorted(f"sum-{i}" for i in range(10))  # nothing lost
    rows_ = {r["model"]: r for r in board["rows"]}
    for name in ("dpo-seed0", "spo-seed0"):
        assert rows_[name]["train_steps"] == 2 and rows_[name]["heldout_pairs"] == 2
        assert math.isfinite(rows_[name]["dlogp_chosen"]) and rows_[name]["dlogp_chosen"] != 0
    assert (
        "Training pairs: custom 8 (from my_pairs.jsonl); 2 held out"
        in (results / "leaderboard.md").read_text()
    )


def longer(a: str, b: str) -> int:
    """1 when a has more words than b, -1 when fewer, 0 when as many."""
    return (len(a.split()) > len(b.split())) - (len(a.split()) < len(b.split()))


class LongerWins(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose verdict is the response with more words: a judge with a pure
    length bias."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        LongerWins.requests.append(body)
        text = body["messages"][-1]["content"]
        a, b = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nWhich", text, re.S).groups()
        verdict = {1: "A", -1: "B", 0: "tie"}[longer(a, b)]
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), LongerWins)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    LongerWins.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_a_datasets_folder_an_endpoint_judge_and_an_lm_eval_task_on_the_smoke_preset(tmp_path, judge_url):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(arithmetic_pairs(12))}).save_to_disk(
        str(tmp_path / "my_dataset")
    )
    results, board = run(
        ["--preset", "smoke", "--pairs", str(tmp_path / "my_dataset"), "--judge", "endpoint"]
        + ["--judge-url", judge_url, "--judge-model", "m", "--lm-eval-include", str(LM_EVAL_DIR)]
        + ["--lm-eval-tasks", "toy_sums"],
        tmp_path,
    )
    assert board["meta"]["pairs"]["by_task"] == {
        "custom": {
            "train": 10,
            "heldout": 2,
            "style": "from my_dataset",
            "truncated": {"chosen": 0, "rejected": 0},
        }
    }
    rows = {r["model"]: r for r in board["rows"]}
    # the smoke preset's TL;DR items, judged vs human for all three models and vs the reference for two, in
    # both orders (fewer requests where two models' outputs coincide: verdicts are cached)
    tldr = 6
    assert 0 < len(LongerWins.requests) <= 2 * tldr * (3 + 2) and {
        r["model"] for r in LongerWins.requests
    } == {"m"}
    samples = {
        name: [
            s for s in map(json.loads, open(results / "runs" / name / "samples.jsonl")) if s["task"] == "tldr"
        ]
        for name in rows
    }
    for name in ("dpo-seed0", "spo-seed0"):
        r = rows[name]
        assert r["judge"] == f"endpoint:{judge_url}:m" and r["judge_vs_reference_n"] == tldr
        # the endpoint's verdicts, as the leaderboard's win rate: the longer summary wins, ties ½
        wins = [
            (1 + longer(s["output"], ref["output"])) / 2
            for s, ref in zip(samples[name], samples["reference"])
        ]
        assert r["judge_vs_reference"] == pytest.approx(100 * sum(wins) / tldr)
        assert r["judge_vs_reference_lc"] is not None
        # the toy task's accuracy, in lm-eval's units, with its stderr and item count
        assert 0 <= r["lm_eval_toy_sums"] <= 1 and r["lm_eval_toy_sums_metric"] == "acc"
        assert r["lm_eval_toy_sums_n"] == 8 and r["lm_eval_toy_sums_stderr"] is not None
    assert rows["reference"]["lm_eval_toy_sums"] == pytest.approx(0.25)  # tests/test_crosscheck.py's value
    md = (results / "leaderboard.md").read_text()
    assert "## lm-eval tasks" in md and "| model | toy_sums acc |" in md and "LC win % vs ref" in md


@pytest.mark.parametrize(
    "args, message",
    [
        (["--judge", "hf"], "--judge hf needs --judge-model PATH"),
        (["--judge", "endpoint", "--judge-model", "m"], "--judge endpoint needs --judge-url"),
        (["--judge", "endpoint", "--judge-url", "localhost:8000", "--judge-model", "m"], "--judge-url"),
        (["--model", "./no/such/model"], "--model ./no/such/model: no such folder"),
        (["--model", "mymodle"], "--model mymodle: no such folder (nor an owner/name hub id, nor a single"),
        (["--pairs", "no_such_pairs.jsonl"], "no_such_pairs.jsonl: no such file or folder"),
        (["--heldout-pairs", "x.jsonl"], "--heldout-pairs: give --pairs too"),
        (["--methods", "dpo,spo:spo_lambdaa=3"], "field 'spo_lambdaa' cannot vary per method"),
        (["--methods", "dpo,simpo+dpo"], "unknown"),
        (["--tasks", "gsm8k,mmlu"], "unknown task(s) mmlu"),
        (["--arith-eval", "0"], "--arith-eval: each evaluated task needs at least 1 item"),
        (["--gsm8k-pairs", "-1"], "--gsm8k-pairs: a count of pairs cannot be negative"),
        (["--micro-pairs", "3"], "batch_pairs (8) must be a multiple of micro_pairs (3)"),
        (["--lm-eval-tasks", "toy_sums"], "unknown lm-eval task(s) toy_sums"),
        (["--lm-eval-include", "tests/data/lm_eval"], "--lm-eval-include: give --lm-eval-tasks too"),
        (["--seeds", "0,0"], "--seeds 0,0: a seed twice would be two runs writing one folder"),
        (["--eval-shards", "0"], "--eval-shards 0: must be at least 1"),
        (["--train-gpus", "-1"], "--train-gpus -1: must be at least 0"),
        (["--eval-gpus", "2"], "--eval-gpus: a compare job is one process on one GPU"),
        # nothing listens on port 9 (discard): found by a one-item request before the pairs are sampled
        (
            ["--judge", "endpoint", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "x"],
            "--judge-url http://127.0.0.1:9/v1 --judge-model x: a one-item judge request failed",
        ),
        (
            ["--model", "nobody-xyz/no-such-model"],
            "--model nobody-xyz/no-such-model: not a folder, not in the",
        ),
    ],
)
def test_a_bad_option_exits_with_one_line_before_any_stage(args, message, tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: started.append(a) or subprocess.CompletedProcess(a, 1)
    )
    from huggingface_hub import constants

    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", True
    )  # a hub id resolves in the local cache or not at all
    with pytest.raises(SystemExit) as exit_:
        compare.main([*args, "--results", str(tmp_path / "r"), "--outputs", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_.value.code == 2
        and message in err[-1]
        and err[-1].startswith("python -m harness.compare: error:")
    )
    assert started == [] and not (tmp_path / "o").exists()


def test_a_single_name_hub_id_is_a_model_once_the_local_hub_cache_holds_it(tmp_path, monkeypatch):
    """`--model gpt2` (a legacy id without an owner) passes the check only when the hub cache has it;
    a folder name mistyped stays an error."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="gpt2: no such folder"):
        compare.check_model("gpt2", "--model")
    snapshot = tmp_path / "models--gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--gpt2" / "refs").mkdir()
    (tmp_path / "models--gpt2" / "refs" / "main").write_text("abc123")
    compare.check_model("gpt2", "--model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="the hub did not resolve it"):  # owner/name: the hub is asked now
        compare.check_model("openai-community/gpt2", "--model")
    (tmp_path / "models--gpt2").rename(tmp_path / "models--openai-community--gpt2")
    compare.check_model("openai-community/gpt2", "--model")  # in the hub cache: no request
    for provisioned in ("smollm2-135m-instruct", "tiny-random-llama", "gemma3-270m"):
        compare.check_model(provisioned, "--model")  # provisioned from PyPI (or built) at first use
    for bad in ("gpt3", "my model", "x--y"):
        with pytest.raises(ValueError, match="no such folder"):
            compare.check_model(bad, "--model")


def test_held_out_pairs_are_whole_prompts_and_never_training_pairs(tmp_path, capsys):
    """Drawn from --pairs: pairs that share a prompt all stay on one side. Given with --heldout-pairs: a
    held-out pair that is also a training pair stops the run before any stage."""
    pairs = [
        p | {"id": f"{p['id']}-{k}", "rejected": f"{p['rejected']} ({k})"}
        for p in arithmetic_pairs(6)
        for k in range(3)
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    a = compare.parse(["--pairs", str(path), "--heldout", "4"])
    train, held, _ = a.user
    prompts = {p["prompt"] for p in held}
    # two prompts of three pairs each: 6 held out (the draw stops once 4 are), 12 train, none shared
    assert len(prompts) == 2 and len(held) == 6 and len(train) == 12
    assert not prompts & {p["prompt"] for p in train}
    assert compare.parse(["--pairs", str(path), "--heldout", "4"]).user[1] == held  # a fixed draw (--seed)
    with pytest.raises(SystemExit):
        compare.parse(["--pairs", str(path), "--heldout-pairs", str(path)])
    assert "--heldout-pairs: 18 of its 18 pairs are also training pairs" in capsys.readouterr().err


def test_pair_counts_from_a_config_survive_pairs_but_the_presets_do_not(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in arithmetic_pairs(10)))
    (tmp_path / "my.yaml").write_text("gsm8k_pairs: 12\n")
    a = compare.parse(
        ["--pairs", str(path), "--config", str(tmp_path / "my.yaml"), "--tldr-pairs", "5", "--heldout", "2"]
    )
    # the cpu preset's arith_pairs (64) is dropped; the config's and the flag's counts are kept
    assert a.pair_sizes == {"gsm8k": 12, "math": 0, "arith": 0, "tldr": 5}
