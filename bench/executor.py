"""What does an executor cost? The same small compare (the smoke preset: dpo,spo × training seeds 0,1) with
`--executor local` and with `--executor ray` on a local Ray cluster of two single-CPU nodes, in one run.

    python -m bench.executor                  # results/bench/executor.json and .md
    python -m bench.executor --preset cpu --seeds 0,1 --tldr-pairs 3 ...   # extra options go to both runs

Per executor: the compare's wall time (process start to exit), the sum of its stage times (each stage
process's own wall time), and the executor's overhead: the driver's start-up (process start to the first job
handed over: options, Ray connection, preflight), per job the wait to start (from the moment it could start,
handed over with the jobs it waits for done and its node free, to its stage process starting) and the wait
to be collected (stage end to the driver seeing it), and the driver's tail (last job collected to exit:
leaderboard). A cache warmed by an untimed run first holds the pairs, so both runs do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import run_main, write_json, write_text
from harness import models
from harness.runinfo import commit, machine, stage_env

ROOT = Path(__file__).resolve().parents[1]


def compare(args: list[str], work: Path, cache: Path, *extra: str) -> dict:
    """One compare into work/: its wall time and the jobs of its compare.json."""
    cmd = [sys.executable, "-m", "harness.compare", *args, "--results", str(work / "results")]
    cmd += ["--outputs", str(work / "outputs"), *extra]
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "SPO_CACHE_DIR": str(cache)}, check=True)
    end = time.time()
    meta = json.loads((work / "results" / "runs" / "compare.json").read_text())
    return {"started": t, "ended": end, "jobs": meta["jobs"]}


def waits_for(name: str, names: list[str]) -> list[str]:
    """The jobs of a compare that `name` waits for (harness.compare's plan): an evaluation shard waits for
    the trainings and the reference's evaluation; the rest wait for the jobs of earlier waves only."""
    if name.startswith("eval shard") or name == "eval":
        return [n for n in names if n.startswith("train") or n == "eval reference"]
    return []


def overheads(run: dict) -> dict:
    jobs = sorted(run["jobs"], key=lambda j: j["start"])
    end = {j["job"]: j["end"] for j in jobs}
    starts, collects = [], []
    for i, j in enumerate(jobs):
        before = [p["end"] for p in jobs[:i] if p["node"] == j["node"]]  # its node (local: this machine) free
        deps = [end[n] for n in waits_for(j["job"], list(end))]
        ready = max([j["submitted"], *deps, *before[-1:]])
        starts.append(j["start"] - ready)
        collects.append(j["collected"] - j["end"])
    first = min(j["submitted"] for j in jobs)
    return {
        "wall_seconds": round(run["ended"] - run["started"], 1),
        "stage_seconds_sum": round(sum(j["end"] - j["start"] for j in jobs), 1),
        "jobs": len(jobs),
        "nodes": len({j["node"] for j in jobs}),
        "driver_startup_seconds": round(first - run["started"], 2),
        "start_wait_mean_seconds": round(statistics.mean(starts), 3),
        "start_wait_max_seconds": round(max(starts), 3),
        "collect_wait_mean_seconds": round(statistics.mean(collects), 3),
        "driver_tail_seconds": round(run["ended"] - max(j["collected"] for j in jobs), 2),
        "stages": {j["job"]: round(j["end"] - j["start"], 1) for j in jobs},
    }


def table(rows: dict[str, dict]) -> str:
    cols = (
        ("wall_seconds", "wall s"),
        ("stage_seconds_sum", "Σ stages s"),
        ("jobs", "jobs"),
        ("nodes", "nodes"),
        ("driver_startup_seconds", "driver start-up s"),
        ("start_wait_mean_seconds", "start wait / job s (mean)"),
        ("start_wait_max_seconds", "(max)"),
        ("collect_wait_mean_seconds", "collect wait / job s"),
        ("driver_tail_seconds", "driver tail s"),
    )
    lines = ["| executor | " + " | ".join(h for _, h in cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(str(r[k]) for k, _ in cols) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.executor", description=__doc__)
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-executor")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "executor")
    a, extra = ap.parse_known_args(argv)
    import ray
    from ray.cluster_utils import Cluster

    args = ["--preset", a.preset, "--methods", "dpo,spo", "--seeds", a.seeds, *extra]
    cache = models.link_provisioned(a.work / "cache")
    print("== warm-up (untimed): the pairs into the cache", flush=True)
    compare(args, a.work / "warmup", cache, "--methods", "dpo", "--seeds", "0")
    print("== local", flush=True)
    runs = {"local": compare(args, a.work / "local", cache)}
    t = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster_start = round(time.time() - t, 1)
    try:
        print(f"== ray: two single-CPU nodes at {cluster.address} (up in {cluster_start} s)", flush=True)
        runs["ray (2 nodes × 1 CPU)"] = compare(
            args, a.work / "ray", cache, "--executor", "ray", "--ray-address", cluster.address
        )
    finally:
        cluster.shutdown()
    rows = {name: overheads(run) for name, run in runs.items()}
    report = {
        "command": "python -m bench.executor " + " ".join(argv if argv is not None else sys.argv[1:]),
        "compare": args,
        "machine": machine(stage_env()),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "ray_cluster_startup_seconds": cluster_start,
        "executors": rows,
    }
    write_json(a.out.with_suffix(".json"), report)
    md = (
        f"# Executor overhead: `{report['command']}`\n\n{report['machine']}; Ray {ray.__version__}; commit "
        f"{report['commit']}; {report['date']}. compare {' '.join(args)}. The Ray cluster (not counted "
        f"above) started in {cluster_start} s.\n\n{table(rows)}\n"
    )
    write_text(a.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    run_main(main)
