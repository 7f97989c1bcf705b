"""Where compare's jobs run. Every executor runs the same stage process with the same config file and
environment (harness.plan.run_stage); it only decides where and when.

- local: one after another on this machine, output on this terminal (the default).
- ray: each job a Ray task with its declared CPUs and GPUs, on a cluster (`--ray-address`, else RAY_ADDRESS,
  else a Ray instance started here). Ray places the tasks; a job starts when the jobs it waits for are done.
- slurm: each job a SLURM job through submitit; the jobs that are ready together (the trainings) go out as
  one job array, at most --slurm-parallel running at once. `--slurm-cluster local` runs them as local
  processes through submitit, to try a plan without SLURM.

Before any stage, the ray and slurm executors check what the jobs depend on (`preflight`): resources that
some node has, and a filesystem every node shares (a sentinel written here is read on each node). The jobs'
records (host, node or job id, start, end, exit status) go to compare.json. A job runs in the driver's working
folder wherever it lands (relative paths mean the same files). docs/scaling.md has the setup.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import option, write_json
from harness.plan import Job, Record, run_stage

EXECUTORS = ("local", "ray", "slurm")
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "COMPLETING")  # SLURM job states before an end
# environment variables of the driver that a Ray job gets too (SLURM jobs inherit the submitter's environment)
FORWARDED = ("SPO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "VLLM_", "TOKENIZERS_")
Done = Callable[[Job, Record], None]


@dataclass
class ExecutorConfig:
    """compare's --executor options: flags, preset and --config keys all come from here."""

    executor: str = option(
        "local",
        "where the jobs run: local (here, one after another), ray (Ray tasks on a cluster) or slurm (SLURM "
        "jobs through submitit); docs/scaling.md",
        choices=EXECUTORS,
    )
    eval_shards: int = option(
        1,
        "ray, slurm: evaluate the checkpoints in N jobs, one engine each, after a job of its own for the "
        "init (the methods' reference; local: one job for all, the init first)",
        metavar="N",
    )
    cpus_per_job: int = option(1, "ray, slurm: CPUs each job asks for", metavar="N")
    train_gpus: int = option(0, "ray, slurm: GPUs each training job asks for (0 or 1)", metavar="N")
    eval_gpus: int = option(0, "ray, slurm: GPUs each pairs or evaluation job asks for (0 or 1)", metavar="N")
    ray_address: str | None = option(
        None,
        "ray: the cluster (`ray start --head` prints it); unset: RAY_ADDRESS, else a Ray started here",
        metavar="ADDRESS",
    )
    slurm_partition: str | None = option(None, "slurm: the partition (unset: the cluster's default)")
    slurm_account: str | None = option(None, "slurm: the account to charge (unset: yours)")
    slurm_time: int = option(240, "slurm: time limit of each job, minutes", metavar="MIN")
    slurm_parallel: int = option(
        8, "slurm: most jobs of an array (the trainings) running at once", metavar="N"
    )
    slurm_cluster: str = option(
        "slurm",
        "slurm: slurm (sbatch), or local (submitit runs the jobs as processes here)",
        choices=("slurm", "local"),
    )

    def gpus(self, kind: str) -> int:
        """The GPUs a job of `kind` (pairs, train, eval) asks for."""
        return self.train_gpus if kind == "train" else self.eval_gpus


class JobFailed(SystemExit):
    """A job that did not finish: names it, why, and its log."""

    def __init__(self, job: Job, why: str):
        super().__init__(
            f"compare: job '{job.name}' failed ({why}); its log: {job.log}. Finished jobs are kept: rerun "
            "the same command with --resume"
        )


def last_line(e: BaseException) -> str:
    """An exception's last line of text, else its type's name."""
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else type(e).__name__


class LocalExecutor:
    """Each job here, in the plan's order, its progress on this terminal (compare's behaviour before
    executors)."""

    name = "local"
    parallel = False

    def __init__(self, cfg: ExecutorConfig, verbose: bool = False):
        self.verbose = verbose

    def preflight(self, kinds: set[str], shared: dict[str, Path], model: str) -> None:
        pass

    def run(self, jobs: list[Job], done: Done) -> None:
        for job in jobs:
            print(f"== {job.name}{job.note}", flush=True)
            submitted = time.time()
            rec = run_stage(job, self.verbose)
            rec.submitted, rec.collected = submitted, time.time()
            if rec.returncode != 0:
                raise SystemExit(
                    f"compare: stage '{job.name}' failed (command: {' '.join(job.command()[1:])}); finished "
                    "stages are kept, rerun with --resume"
                )
            done(job, rec)

    def close(self) -> None:
        pass


def write_sentinels(shared: dict[str, Path]) -> str:
    """A file of a random name in each shared folder (two drivers sharing a cache do not overwrite each
    other's); returns the name."""
    name = f".spo-shared-{secrets.token_hex(8)}"
    for folder in shared.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    return name


def remove_sentinels(shared: dict[str, Path], name: str) -> None:
    for folder in shared.values():
        (folder / name).unlink(missing_ok=True)


def sentinel_check(shared: dict[str, str], name: str, model: str) -> dict:
    """On a node: the `shared` folders where the driver's sentinel `name` is missing, and the model's folder
    if it is missing (a hub id is not a folder: not checked)."""
    missing = [f"{k} {folder}" for k, folder in shared.items() if not (Path(folder) / name).is_file()]
    if Path(model).is_absolute() and not (Path(model) / "config.json").is_file():
        missing.append(f"the model {model}")
    return {"host": socket.gethostname(), "missing": missing}


def not_shared(reports: dict[str, dict]) -> None:
    """Refuse a cluster where a node misses the driver's folders (reports: node id → sentinel_check)."""
    if bad := {node: r for node, r in reports.items() if r["missing"]}:
        lines = "; ".join(
            f"node {n} ({r['host']}) does not see {', '.join(r['missing'])}" for n, r in bad.items()
        )
        raise SystemExit(
            f"compare: the executor's nodes must share the driver's filesystem: {lines}. Put outputs/, "
            "results/ and the cache (SPO_CACHE_DIR) on a filesystem every node mounts at the same path "
            "(docs/scaling.md)"
        )


class StageError(RuntimeError):
    pass


def remote_stage(job: Job, verbose: bool, cwd: str, node: str) -> Record:
    """A job away from the driver (a Ray task, a SLURM job): the stage in the driver's working folder, its
    output to its log. A failed stage raises, so the jobs waiting for it fail without running."""
    rec = run_stage(job, verbose, to_log=True, node=node, cwd=cwd)
    if rec.returncode != 0:
        raise StageError(f"exit status {rec.returncode} on {rec.host}")
    return rec


def ray_stage(job: Job, verbose: bool, cwd: str, *after: Record) -> Record:
    """A Ray task: `remote_stage` on this node (`after`: the records of the jobs it waited for)."""
    import ray

    return remote_stage(job, verbose, cwd, ray.get_runtime_context().get_node_id())


def slurm_stage(job: Job, verbose: bool, cwd: str) -> Record:
    """A submitit job: `remote_stage` under this SLURM job's id (an array task's as submitit writes it)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array}_{task}" if array else os.environ.get("SLURM_JOB_ID", f"pid {os.getpid()}")
    return remote_stage(job, verbose, cwd, job_id)


class RayExecutor:
    """Each job a Ray task (`ray_stage`) asking for --cpus-per-job CPUs and its kind's GPUs. A task waits for
    the jobs of `after` by taking their results as arguments, so Ray orders them; this driver collects the
    records as they come, cancels what is in flight on the first failure or Ctrl-C, and never retries (a
    rerun with --resume continues a cut-off training from its last saved state)."""

    name = "ray"
    parallel = True

    def __init__(self, cfg: ExecutorConfig, verbose: bool = False, forward: tuple[str, ...] = ()):
        try:
            import ray
        except ImportError:
            raise SystemExit("--executor ray: Ray is not installed; pip install 'spo-harness[ray]'") from None
        self.ray, self.cfg, self.verbose, self.cwd = ray, cfg, verbose, os.getcwd()
        # the driver's settings a stage reads (the cache, hub, engine settings; the judge's key), as ours
        self.env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) or k in forward}
        address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
        self.where = address or "a Ray instance started here"
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
        except Exception as e:  # no cluster at that address, another Ray version, ...
            raise SystemExit(
                f"--executor ray: cannot join {self.where} ({type(e).__name__}: {last_line(e)}); give "
                "--ray-address HOST:PORT of a running cluster (`ray start --head` prints it)"
            ) from None

    def demand(self, kind: str) -> dict[str, float]:
        return {"CPU": float(self.cfg.cpus_per_job), "GPU": float(self.cfg.gpus(kind))}

    def preflight(self, kinds: set[str], shared: dict[str, Path], model: str) -> None:
        """Every kind of job fits on some live node, and every node sees the shared folders and the model."""
        nodes = [n for n in self.ray.nodes() if n["Alive"]]
        for kind in sorted(kinds):
            need = self.demand(kind)
            if not any(all(n["Resources"].get(r, 0) >= v for r, v in need.items()) for n in nodes):
                have = "; ".join(
                    f"{n['NodeManagerAddress']} CPU {n['Resources'].get('CPU', 0):g} GPU "
                    f"{n['Resources'].get('GPU', 0):g}"
                    for n in nodes
                )
                flag = "--train-gpus" if kind == "train" else "--eval-gpus"
                raise SystemExit(
                    f"compare: no node of the Ray cluster at {self.where} has the {need['CPU']:g} CPU(s) and "
                    f"{need['GPU']:g} GPU(s) that each {kind} job asks for (nodes: {have}); lower "
                    f"--cpus-per-job or {flag}, or add such a node. A task asking for more than any node has "
                    "would wait forever"
                )
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name, check = write_sentinels(shared), self.ray.remote(sentinel_check)
        folders = {k: str(v.resolve()) for k, v in shared.items()}
        refs = {
            n["NodeID"][:12]: check.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(folders, name, model)
            for n in nodes
        }
        try:
            reports = self.ray.get(list(refs.values()), timeout=120)
        except self.ray.exceptions.RayError as e:
            raise SystemExit(
                f"compare: a node of the Ray cluster at {self.where} did not run the shared-filesystem check "
                f"({type(e).__name__}); install the project on every node (docs/scaling.md)"
            ) from None
        finally:
            remove_sentinels(shared, name)
        not_shared(dict(zip(refs, reports)))

    def run(self, jobs: list[Job], done: Done) -> None:
        """`jobs` in an order where each comes after the jobs it waits for (a KeyError otherwise)."""
        ray = self.ray
        task = ray.remote(ray_stage)
        refs: dict[str, object] = {}
        submitted = time.time()
        for job in jobs:
            need = self.demand(job.kind)
            refs[job.name] = task.options(
                num_cpus=need["CPU"],
                num_gpus=need["GPU"],
                max_retries=0,
                name=job.name,
                runtime_env={"env_vars": self.env},
            ).remote(job, self.verbose, self.cwd, *(refs[d] for d in job.after))
        print(f"== {len(jobs)} job(s) handed to Ray ({self.where}): {', '.join(refs)}", flush=True)
        by_ref = {ref: job for job, ref in zip(jobs, refs.values())}
        pending = list(by_ref)
        try:
            while pending:
                [ref], pending = ray.wait(pending, num_returns=1)
                job = by_ref[ref]
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise JobFailed(job, failure(e)) from None
                except ray.exceptions.RayError as e:  # the worker or its node died, or the task was cancelled
                    raise JobFailed(job, f"{type(e).__name__}: its Ray worker or node was lost") from None
                rec.submitted, rec.collected = submitted, time.time()
                print(
                    f"== {job.name}: done on {rec.host} (node {rec.node[:12]}) in {rec.seconds} s", flush=True
                )
                done(job, rec)
        finally:
            for ref in pending:  # the first failure, or Ctrl-C: nothing keeps running for a driver that left
                ray.cancel(ref, force=True)

    def close(self) -> None:
        self.ray.shutdown()


def failure(e: Exception) -> str:
    """The reason a Ray task raised: our StageError's message, else the exception's type."""
    cause = getattr(e, "cause", None)
    return str(cause) if isinstance(cause, StageError) else f"{type(cause or e).__name__}: {cause or e}"


class SlurmExecutor:
    """Each job a SLURM job through submitit (or a local process with --slurm-cluster local). The jobs ready
    together go out as one job array (`executor.batch()`), at most --slurm-parallel running at once; a job is
    submitted when the jobs it waits for have finished. Until the driver collects a job, its id stays in
    slurm_jobs.json in the stages folder: a driver started again with --resume keeps those that are queued,
    running or finished (same config, same inputs) instead of submitting them twice."""

    name = "slurm"
    parallel = True

    def __init__(
        self, cfg: ExecutorConfig, verbose: bool = False, folder: Path = Path("outputs/stages"), resume=False
    ):
        try:
            import submitit
        except ImportError:
            raise SystemExit(
                "--executor slurm: submitit is not installed; pip install 'spo-harness[slurm]'"
            ) from None
        self.submitit, self.cfg, self.verbose, self.resume = submitit, cfg, verbose, resume
        self.folder, self.ids, self.cwd = folder / "slurm", folder / "slurm_jobs.json", os.getcwd()
        self.submitted: dict[str, float] = {}
        self.ex = submitit.AutoExecutor(folder=self.folder, cluster=cfg.slurm_cluster)
        self.ex.update_parameters(
            timeout_min=cfg.slurm_time,
            cpus_per_task=cfg.cpus_per_job,
            slurm_array_parallelism=cfg.slurm_parallel,
            **({"slurm_partition": cfg.slurm_partition} if cfg.slurm_partition else {}),
            **({"slurm_account": cfg.slurm_account} if cfg.slurm_account else {}),
        )

    def submit_to_slurm(self, fn, calls: list[tuple]) -> list:
        """submitit jobs of `fn` for each argument tuple, as one array; a refusal (partition, account,
        resources) as a clear message."""
        try:
            with self.ex.batch():
                return [self.ex.submit(fn, *args) for args in calls]
        except Exception as e:  # submitit's FailedJobError: sbatch said why
            raise SystemExit(f"--executor slurm: sbatch refused the jobs ({last_line(e)})") from None

    def preflight(self, kinds: set[str], shared: dict[str, Path], model: str) -> None:
        """One small job reads the sentinels where the jobs will run (one node of the partition)."""
        name = write_sentinels(shared)
        folders = {k: str(v.resolve()) for k, v in shared.items()}
        self.ex.update_parameters(name="spo-preflight", gpus_per_node=0)
        [check] = self.submit_to_slurm(sentinel_check, [(folders, name, model)])
        try:
            report = check.result()
        except Exception as e:  # the job could not run there
            raise SystemExit(
                f"--executor slurm: the preflight job {check.job_id} failed ({last_line(e)})"
            ) from None
        finally:
            remove_sentinels(shared, name)
        not_shared({f"of job {check.job_id}": report})

    def state(self, handle) -> str:
        """submitit's state of a job (from sacct); where the cluster keeps no accounting (sacct fails and
        submitit says UNKNOWN), squeue's: a job it no longer lists is COMPLETED if it left a result, else
        GONE."""
        state = handle.state
        if state != "UNKNOWN" or self.cfg.slurm_cluster != "slurm":
            return state
        cmd = ["squeue", "-h", "-j", handle.job_id, "-o", "%T"]
        listed = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
        if listed:
            return listed[0]
        return "COMPLETED" if handle.paths.result_pickle.exists() else "GONE"

    def ledger(self) -> dict[str, dict]:
        try:
            return json.loads(self.ids.read_text())
        except (OSError, ValueError):
            return {}

    def earlier(self, jobs: list[Job]) -> dict[str, object]:
        """With --resume, the SLURM jobs a driver before this one submitted and never collected, for the same
        config and inputs, that are queued, running or finished, and wait only for jobs kept too: collected
        here, not submitted again. (submitit's local processes end with their driver: nothing to find.)"""
        if not self.resume or self.cfg.slurm_cluster != "slurm":
            return {}
        ids, out = self.ledger(), {}
        names = {job.name for job in jobs}
        for job in jobs:
            entry = ids.get(job.name)
            if not entry or entry["config"] != config_digest(job):
                continue
            if any(d in names and d not in out for d in job.after):
                continue
            handle = self.submitit.SlurmJob(folder=self.folder, job_id=entry["id"])
            state = self.state(handle)
            if state in (*ACTIVE, "COMPLETED"):
                print(
                    f"== {job.name}: SLURM job {entry['id']} of an earlier driver ({state}), kept", flush=True
                )
                out[job.name] = handle
        return out

    def submit(self, ready: list[Job]) -> dict[str, object]:
        by_gpus: dict[int, list[Job]] = {}
        for job in ready:
            by_gpus.setdefault(self.cfg.gpus(job.kind), []).append(job)
        handles, self.submitted = {}, self.submitted | {job.name: time.time() for job in ready}
        for gpus, group in by_gpus.items():
            self.ex.update_parameters(
                name=f"spo-{'-'.join(dict.fromkeys(j.kind for j in group))}", gpus_per_node=gpus
            )
            submitted = self.submit_to_slurm(slurm_stage, [(job, self.verbose, self.cwd) for job in group])
            handles |= {job.name: h for job, h in zip(group, submitted)}
        ids = self.ledger() | {
            job.name: {"id": handles[job.name].job_id, "config": config_digest(job)} for job in ready
        }
        write_json(self.ids, ids)
        names = ", ".join(f"{j.name} ({handles[j.name].job_id})" for j in ready)
        print(f"== submitted to SLURM ({self.cfg.slurm_cluster}): {names}", flush=True)
        return handles

    def collected(self, name: str) -> None:
        """A job's result is in: its id leaves the ledger (nothing for a later driver to keep)."""
        ids = self.ledger()
        ids.pop(name, None)
        write_json(self.ids, ids)

    def run(self, jobs: list[Job], done: Done) -> None:
        by_name = {job.name: job for job in jobs}
        handles, finished = self.earlier(jobs), set()
        try:
            while len(finished) < len(jobs):
                ready = [
                    j
                    for j in jobs
                    if j.name not in handles and all(d in finished or d not in by_name for d in j.after)
                ]
                if ready:
                    handles |= self.submit(ready)
                for name, handle in handles.items():
                    if name in finished:
                        continue
                    job = by_name[name]
                    if not handle.done():
                        if self.state(handle) == "GONE":
                            raise JobFailed(job, f"SLURM job {handle.job_id} left the queue unfinished")
                        continue
                    try:
                        rec = handle.result()
                    except Exception as e:  # submitit's FailedJobError, UncompletedJobError: its logs name it
                        raise JobFailed(job, f"SLURM job {handle.job_id}: {last_line(e)}") from None
                    finished.add(name)
                    rec.submitted, rec.collected = self.submitted.get(name, rec.start), time.time()
                    print(
                        f"== {name}: done on {rec.host} (job {handle.job_id}) in {rec.seconds} s", flush=True
                    )
                    done(job, rec)
                    self.collected(name)
                time.sleep(1)
        finally:
            for name, handle in handles.items():
                if name not in finished and not handle.done():
                    handle.cancel(check=False)

    def close(self) -> None:
        pass


def config_digest(job: Job) -> str:
    """The job's config file but whether it resumes (a driver started again with --resume writes the same
    training with resume on), and a training's config hash (it holds the pairs' digest and the init's
    weights, which the config file names only by path)."""
    config = {k: v for k, v in json.loads(Path(job.config).read_text()).items() if k != "resume"}
    key = Path(job.config).with_name("config_hash")
    inputs = key.read_text() if job.kind == "train" and key.is_file() else ""
    return hashlib.sha256(json.dumps([config, inputs], sort_keys=True).encode()).hexdigest()[:16]


def make_executor(
    cfg: ExecutorConfig, verbose: bool, stages: Path, forward: tuple[str, ...] = (), resume: bool = False
):
    """The executor `cfg` names; `forward`: environment variables a Ray job gets from this driver (beside
    FORWARDED), e.g. the judge's key; `resume`: a SLURM driver keeps the jobs of the one before it."""
    if cfg.executor == "ray":
        return RayExecutor(cfg, verbose, forward)
    if cfg.executor == "slurm":
        return SlurmExecutor(cfg, verbose, stages, resume)
    return LocalExecutor(cfg, verbose)
