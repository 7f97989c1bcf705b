"""Faults injected into real runs: a killed and an interrupted compare resume without redoing finished work;
a busy results folder is refused; disk-full and read-only folders end in one line with the old files intact;
remote code and pickled weights are never run. (Flaky judge servers: tests/test_judge.py.)"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import exclusive
from harness import compare

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the fault could be injected"
        assert time.time() < end, "timed out waiting for the run to reach the fault point"
        time.sleep(0.1)


def test_killed_then_interrupted_compare_resumes_without_redoing_finished_work(tmp_path):
    """SIGKILL while the second method trains, SIGINT (Ctrl-C) during evaluation, then --resume to the end."""
    results, outputs, log = tmp_path / "results", tmp_path / "outputs", tmp_path / "log.txt"
    cmd = [
        sys.executable,
        "-m",
        "harness.compare",
        "--preset",
        "smoke",
        "--epochs",
        "12",
        "--save-every",
        "5",
        # the probe set (its greedy decoding at every second step) is not what this test is about
        "--probe-every",
        "0",
        "--results",
        str(results),
        "--outputs",
        str(outputs),
        "--resume",
    ]

    def start() -> subprocess.Popen:
        # Ctrl-C's default restored: started from a script's `cmd &`, pytest would pass on an ignored SIGINT,
        # and Python then never raises KeyboardInterrupt
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    proc = start()
    wait_for(lambda: (outputs / "spo-seed0" / "state" / "trainer.pt").is_file(), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    dpo_done = (results / "runs" / "dpo-seed0" / "train.json").stat().st_mtime_ns
    assert not (results / "runs" / "spo-seed0" / "train.json").exists()

    proc = start()  # resumes: dpo kept, spo continues from its saved state, then Ctrl-C during evaluation
    # the evaluator's progress bar ("reference generate 1/5: ...") says it is generating
    wait_for(lambda: re.search(r" generate( \d+/\d+)?:", log.read_text().split("\n== eval")[-1]), proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    out = log.read_text()
    assert (
        "interrupted; finished stages are kept: rerun the same command with --resume" in out
        and "Traceback" not in out
    )
    assert "train dpo-seed0: finished earlier" in out
    assert re.search(r"^== train spo-seed0: .* \(resuming\)$", out, re.MULTILINE)
    spo = json.loads((results / "runs" / "spo-seed0" / "train.json").read_text())
    assert spo["resumed_from"] > 0 and spo["resumed_from"] % 5 == 0 and spo["steps"] > spo["resumed_from"]
    assert (results / "runs" / "dpo-seed0" / "train.json").stat().st_mtime_ns == dpo_done

    proc = start()
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    meta = json.loads((results / "runs" / "compare.json").read_text())
    assert meta["kept_from_earlier"]["train"] == ["dpo-seed0", "spo-seed0"]
    assert (results / "runs" / "dpo-seed0" / "train.json").stat().st_mtime_ns == dpo_done
    board = json.loads((results / "leaderboard.json").read_text())
    assert [r["model"] for r in board["rows"]] == ["reference", "dpo-seed0", "spo-seed0"]
    assert all(r["tldr_rougeL"] is not None for r in board["rows"])


def test_a_second_compare_on_a_busy_folder_is_refused(tmp_path):
    with exclusive(tmp_path / "results", by="compare"):
        with pytest.raises(
            SystemExit,
            match=rf"^compare: {tmp_path}/results is in use by compare \(pid {os.getpid()}\); wait for it",
        ):
            compare.main(
                [
                    "--preset",
                    "smoke",
                    "--results",
                    str(tmp_path / "results"),
                    "--outputs",
                    str(tmp_path / "outputs"),
                ]
            )
    assert not (tmp_path / "outputs").exists()  # refused before any work


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from common import exclusive\n"
            "with exclusive(Path(sys.argv[1]), by='x'):\n    print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    with (
        pytest.raises(SystemExit, match=rf"y: {tmp_path} is in use by x \(pid {holder.pid}\)"),
        exclusive(tmp_path, by="y"),
    ):
        pass
    holder.kill()
    holder.wait()
    # no stale lock after a SIGKILL; one folder named twice is locked once
    with exclusive(tmp_path, tmp_path / ".", by="y"):
        pass


@pytest.fixture
def results_copy(tmp_path) -> Path:
    """The committed results a rebuild reads and writes (runs/, figures/ and the files beside them; not the
    other result folders: they outgrow the 16 MB tmpfs below) with a marked leaderboard.md: after a failed
    rebuild each file must be the old or the whole new one."""
    dst, src = tmp_path / "results", ROOT / "results"

    def other_folders(folder: str, names: list[str]) -> list[str]:
        return [
            n for n in names if Path(folder) == src and (src / n).is_dir() and n not in ("runs", "figures")
        ]

    shutil.copytree(src, dst, ignore=other_folders)
    (dst / "leaderboard.md").write_text("OLD\n")
    return dst


def rebuild(results: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.leaderboard", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        env={k: v for k, v in os.environ.items() if k != "SPO_TRACEBACK"},
    )


def test_full_disk_ends_in_one_line_and_leaves_no_half_written_file(results_copy):
    """A file-size limit of half the report's size (EFBIG: what a full disk does to the next write) on a
    rebuild whose other files (figures, leaderboard) are smaller than that."""
    report = (results_copy / "report.html").read_bytes()
    limit = len(report) // 2
    assert limit > max(
        f.stat().st_size for f in results_copy.rglob("*") if f.suffix in (".png", ".json", ".md")
    )
    proc = rebuild(results_copy, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(
        rf"error: a file-size limit was hit on {results_copy}/report\.html\.\d+-[0-9a-f]+\.tmp", last
    )
    assert (results_copy / "report.html").read_bytes() == report  # the old report, whole
    # written before the fault, whole
    assert (results_copy / "leaderboard.md").read_text() == (ROOT / "results" / "leaderboard.md").read_text()
    assert not list(results_copy.rglob("*.tmp"))


def test_read_only_results_end_in_one_line_and_change_nothing(results_copy, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(ro)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root and mount (a read-only tmpfs); root ignores file permissions")
    try:
        shutil.copytree(results_copy, ro / "results")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        proc = rebuild(ro / "results")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: the file system is read-only on ")
        assert (ro / "results" / "leaderboard.md").read_text() == "OLD\n"
    finally:
        subprocess.run(["umount", str(ro)], check=True)


MARKER_CODE = "import pathlib; pathlib.Path({path!r}).write_text('code ran')"


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (MARKER_CODE.format(path=self.marker),))


def test_remote_code_and_pickled_weights_are_never_run(tiny_model_dir, tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    from harness import models
    from harness.generation import HFGenerator
    from trainers.trainer import TrainConfig, Trainer, run

    marker = tmp_path / "marker"
    remote = tmp_path / "remote"  # a checkpoint whose config maps AutoModelForCausalLM to its own code
    shutil.copytree(tiny_model_dir, remote)
    (remote / "evil.py").write_text(
        MARKER_CODE.format(path=str(marker))
        + "\nfrom transformers import LlamaForCausalLM as EvilForCausalLM\n"
    )
    cfg = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(
        json.dumps(cfg | {"auto_map": {"AutoModelForCausalLM": "evil.EvilForCausalLM"}})
    )
    model, _ = models.load(str(remote))
    assert (
        type(model) is LlamaForCausalLM
        and HFGenerator(str(remote), "float32").model.__class__ is LlamaForCausalLM
    )

    # weights only as a pickle (pytorch_model.bin) that runs code when unpickled
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, pickled / f.name)
    torch.save({"x": Evil(str(marker))}, pickled / "pytorch_model.bin")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    for load in (
        lambda: models.load(str(pickled)),
        lambda: HFGenerator(str(pickled), "float32"),
        lambda: run(TrainConfig(model=str(pickled), pairs=str(pairs), output_dir=str(tmp_path / "t"))),
    ):
        with pytest.raises(OSError, match="safetensors|model.safetensors"):
            load()

    state = tmp_path / "run" / "state"  # a resume state whose trainer.pt is a malicious pickle
    shutil.copytree(tiny_model_dir, tmp_path / "init")
    trainer_cfg = TrainConfig(
        model=str(tmp_path / "init"),
        pairs=str(pairs),
        output_dir=str(tmp_path / "run"),
        resume=True,
        bf16=False,
    )
    state.mkdir(parents=True)
    shutil.copy(Path(tiny_model_dir) / "model.safetensors", state / "model.safetensors")
    torch.save({"step": 1, "x": Evil(str(marker))}, state / "trainer.pt")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = Trainer(
        trainer_cfg,
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    with pytest.raises(Exception, match="Weights only load failed"):
        t.train()
    assert not marker.exists()


def test_config_files_cannot_redirect_where_runs_write(tmp_path, capsys):
    """compare sets each run's output_dir and ref_cache itself (inside --outputs); a config naming them is
    refused. `pairs` is an input (your own pairs file), checked to exist before any stage."""
    cfg = tmp_path / "c.yaml"
    for key in ("output_dir", "ref_cache", "model_dir"):
        cfg.write_text(f"{key}: /etc/evil\n")
        with pytest.raises(SystemExit):
            compare.parse(["--config", str(cfg)])
        assert f"{cfg}: unknown key(s) {key}" in capsys.readouterr().err
    cfg.write_text("pairs: /etc/evil\n")
    with pytest.raises(SystemExit):
        compare.main(
            ["--config", str(cfg), "--results", str(tmp_path / "r"), "--outputs", str(tmp_path / "o")]
        )
    assert "/etc/evil: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        compare.parse(["--methods", "dpo,../../etc/x"])
    assert "unknown method '../../etc/x'" in capsys.readouterr().err
