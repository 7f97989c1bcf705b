"""compare's jobs on a real local Ray cluster (two nodes, one CPU and one logical GPU each) and through
submitit's local executor, against the local executor's leaderboard; the preflight refusals."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import compare

ray = pytest.importorskip("ray")
submitit = pytest.importorskip("submitit")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--seeds", "0,1"]
TIMING = ("seconds", "per_second")  # measured times: the only fields that may differ between executors


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    c.add_node(num_cpus=1, num_gpus=1)
    yield c
    c.shutdown()


def board(path: Path) -> dict:
    """A leaderboard.json without its meta (command, machine, date, times) and measured times."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not any(t in k for t in TIMING)}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip({k: v for k, v in json.loads(path.read_text()).items() if k != "meta"})


def compare_cmd(cache: Path, work: Path, *extra: str) -> tuple[list[str], dict]:
    args = [*SMOKE, "--results", str(work / "results"), "--outputs", str(work / "outputs"), *extra]
    return [sys.executable, "-m", "harness.compare", *args], {**os.environ, "SPO_CACHE_DIR": str(cache)}


def test_ray_gives_the_local_leaderboard_on_two_nodes_and_resumes_after_a_lost_worker(
    cluster, smoke_run, tmp_path
):
    """The third training's Ray worker is killed mid-training: the run fails naming the job and its log;
    --resume keeps what finished and ends with the local executor's leaderboard, its jobs on both nodes."""
    cmd, env = compare_cmd(
        smoke_run[0] / "cache",
        tmp_path,
        *("--executor", "ray", "--ray-address", cluster.address, "--resume"),
        *("--train-gpus", "1", "--eval-gpus", "1"),  # the nodes' logical GPUs: one job per node at a time
    )
    runs, log = tmp_path / "results" / "runs", tmp_path / "log.txt"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    victim, end = None, time.time() + 300
    while victim is None:  # a training started after another one finished: its stage process and worker
        assert proc.poll() is None and time.time() < end, log.read_text()[-3000:]
        if any(runs.glob("*/train.json")):
            for p in Path("/proc").glob("[0-9]*"):
                try:
                    argv = (p / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                config = next((a.decode() for a in argv if a.endswith(b"train_config.json")), None)
                label = config and Path(config).parent.name
                if label and str(tmp_path) in config and not (runs / label / "train.json").exists():
                    victim = label, int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        time.sleep(0.2)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/train.json")}
    os.kill(victim[1], signal.SIGKILL)  # the Ray worker running that training
    assert proc.wait(timeout=120) != 0
    out = log.read_text()
    assert (
        f"compare: job 'train {victim[0]}' failed (" in out and "rerun the same command with --resume" in out
    )
    assert f"its log: {tmp_path / 'outputs' / victim[0] / 'stage.log'}" in out

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((runs / "compare.json").read_text())
    assert set(finished) <= set(meta["kept_from_earlier"]["train"]) and victim[0] not in finished
    assert all((runs / n / "train.json").stat().st_mtime_ns == t for n, t in finished.items())  # not redone
    assert meta["executor"] == "ray" and {"train " + victim[0], "eval shard 1"} <= {
        j["job"] for j in meta["jobs"]
    }
    assert all(j["returncode"] == 0 and j["end"] > j["start"] for j in meta["jobs"])
    assert len({j["node"] for j in meta["jobs"]}) == 2  # both nodes ran jobs
    # the smoke baseline's run: the same command on the local executor
    assert board(tmp_path / "results" / "leaderboard.json") == board(smoke_run[0] / "leaderboard.json")


def test_ray_refuses_resources_no_node_has_before_any_stage(cluster, smoke_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SPO_CACHE_DIR", str(smoke_run[0] / "cache"))
    args = ["--executor", "ray", "--ray-address", cluster.address, "--cpus-per-job", "2"]
    with pytest.raises(
        SystemExit, match=r"no node of the Ray cluster .* has the 2 CPU\(s\) and 0 GPU\(s\) that each"
    ):
        compare.main([*SMOKE, *args, "--results", str(tmp_path / "r"), "--outputs", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "stages" / "pairs.json").exists()


def test_ray_refuses_a_node_that_does_not_see_the_outputs(cluster, smoke_run, tmp_path, monkeypatch):
    """A third node started in a mount namespace of its own, where the run's folder is an empty tmpfs: a
    real node that does not share the driver's filesystem."""
    shared = tmp_path / "shared"
    shared.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here: no node with a filesystem of its own can be started")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    join = f"{ray_cli} start --address {cluster.address} --num-cpus 1 --block"
    start = f"mount -t tmpfs none {shared} && exec {join}"
    node = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", start], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ray.init(address=cluster.address)
        end = time.time() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 3:
            assert time.time() < end and node.poll() is None, "the third node did not join"
            time.sleep(0.5)
        ray.shutdown()
        monkeypatch.setenv("SPO_CACHE_DIR", str(smoke_run[0] / "cache"))
        args = ["--executor", "ray", "--ray-address", cluster.address]
        with pytest.raises(
            SystemExit, match=rf"does not see outputs {shared}/outputs, results {shared}/results"
        ):
            compare.main(
                [*SMOKE, *args, "--results", str(shared / "results"), "--outputs", str(shared / "outputs")]
            )
        assert not (shared / "outputs" / "stages" / "pairs.json").exists()
    finally:
        ray.shutdown()
        node.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        node.wait(timeout=60)


SLURM_CONF = """ClusterName=spo-test
SlurmctldHost={host}
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM of Debian's slurm-wlm (controller and node daemon, munge auth, root) in a folder of
    its own: the environment that points sbatch at it. None where it cannot run here (not installed, not
    root, no munge key): the tests then run submitit's local executor, real processes without SLURM."""
    tools = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo")
    if not all(map(shutil.which, tools)) or os.geteuid() != 0 or not Path("/etc/munge/munge.key").is_file():
        yield None
        return
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0], d=d, cpus=os.cpu_count()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        subprocess.run(["munged", "--force"], capture_output=True)
    daemons = [subprocess.Popen([tool, "-D", "-f", str(conf)], env=env) for tool in ("slurmctld", "slurmd")]
    try:
        end = time.time() + 60
        while (
            "idle"
            not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
        ):
            assert time.time() < end, (
                f"the test SLURM did not come up: {(d / 'slurmctld.log').read_text()[-2000:]}"
            )
            time.sleep(0.5)
        yield {"SLURM_CONF": str(conf)}
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)


def test_slurm_jobs_give_the_local_numbers_and_a_new_driver_keeps_the_running_ones(
    slurm, smoke_run, tmp_path
):
    """--executor slurm on a real one-node SLURM (else submitit's local executor): the same evaluation of the
    reference and of dpo-seed0 as the local executor. On SLURM the driver is killed while the training runs;
    a new driver with --resume finds that job in slurm_jobs.json and collects it instead of submitting it
    again."""
    cluster = "slurm" if slurm else "local"
    extra = (
        "--executor",
        "slurm",
        "--slurm-cluster",
        cluster,
        "--methods",
        "dpo",
        "--seeds",
        "0",
        "--resume",
    )
    cmd, env = compare_cmd(smoke_run[0] / "cache", tmp_path, *extra)
    ids = tmp_path / "outputs" / "stages" / "slurm_jobs.json"
    if slurm:
        env |= slurm
        log = tmp_path / "driver.txt"
        driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        end = time.time() + 300
        while not (tmp_path / "outputs" / "dpo-seed0" / "stage.log").is_file():  # the training job started
            assert driver.poll() is None and time.time() < end, log.read_text()[-3000:]
            time.sleep(0.2)
        driver.kill()
        driver.wait()
        first = json.loads(ids.read_text())["train dpo-seed0"]["id"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "results" / "runs" / "compare.json").read_text())
    jobs = {j["job"]: j for j in meta["jobs"]}
    if slurm:
        # still running, or finished while this driver sampled no pairs: either way collected, not resubmitted
        kept = rf"== train dpo-seed0: SLURM job {first} of an earlier driver \((RUNNING|COMPLETED)\), kept"
        assert re.search(kept, done.stdout), done.stdout[-3000:]
        assert jobs["train dpo-seed0"]["node"] == first  # the earlier driver's job, not submitted again
    rows = {r["model"]: r for r in board(tmp_path / "results" / "leaderboard.json")["rows"]}
    local = {r["model"]: r for r in board(smoke_run[0] / "leaderboard.json")["rows"]}
    assert rows == {m: local[m] for m in ("reference", "dpo-seed0")}
    # what this driver collected left the ledger (the earlier driver's finished eval of the reference may
    # stay: compare kept its eval.json, so no driver asks for it)
    assert {"train dpo-seed0", "eval shard 1"} <= set(jobs) and not set(jobs) & set(
        json.loads(ids.read_text())
    )
    assert meta["executor"] == "slurm" and all(j["returncode"] == 0 for j in jobs.values())
