"""Train each method from the same init on the same pairs, evaluate all checkpoints and the
reference, and write the leaderboard.

    python -m harness.compare --methods dpo,spo                  # the cpu preset (default)
    python -m harness.compare --preset smoke                     # tiny random model, about a minute
    python -m harness.compare --config my.yaml --seeds 0,1,2     # preset < --config < flags
    python -m harness.compare --methods dpo,spo --resume         # continue an interrupted compare
    python -m harness.compare --pairs my_pairs.jsonl             # your pairs (file, datasets folder, hub id)
    python -m harness.compare --preset paper --executor ray      # the jobs on a Ray cluster (or slurm)

Stages, each a job (harness.plan.Job): a process started with its config file (outputs/stages/pairs.json,
outputs/<run>/train_config.json, outputs/stages/eval*.json) and the same environment (tcmalloc where
installed): pairs (sampled from the reference, cached) → training per method and seed (same init and
pairs) → evaluation of the reference and every checkpoint (one engine per job, each checkpoint's weights
loaded into it) → results/leaderboard.md and .json on this driver. Resume keys hash those configs.
The executor (harness.executors) runs the jobs here one after another (local), or spreads them over a Ray
cluster or SLURM, the trainings side by side and the evaluation in --eval-shards jobs (docs/scaling.md).
Presets are YAML files in presets/; their keys are this command's options.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from common import (
    ConfigError,
    add_flags,
    check_choices,
    config_json,
    digest,
    exclusive,
    file_digest,
    fingerprint,
    read_config_file,
    read_jsonl,
    run_main,
    write_json,
    write_jsonl,
    write_text,
)
from harness import estimate, leaderboard, models
from harness.evaluate import EvalConfig, evaluated
from harness.executors import ExecutorConfig, make_executor
from harness.generation import BACKENDS, DTYPES
from harness.judge import JUDGE_KINDS
from harness.methods import PER_RUN, MethodSpec, parse_spec, parse_specs
from harness.pairs import PairsConfig, pair_counts, pair_key, split_pairs
from harness.plan import Job, Record
from harness.preflight import check_judge, check_model
from harness.runinfo import commit, machine, stage_env
from harness.taskflags import (
    add_option_flags,
    add_size_flags,
    check_tasks,
    merge_options,
    options_given,
    sizes_given,
)
from tasks import TASKS
from tasks.base import PAIR_STYLES, resolve_options
from tasks.data import cache_dir
from trainers.logprobs import native_bf16, resolve_dtype
from trainers.pairfile import load_pairs
from trainers.trainer import TrainConfig, Trainer

PRESETS = Path(__file__).resolve().parents[1] / "presets"
REQUIRED = (
    "model",
    "methods",
    "init",
    "seed",
    "backend",
    "dtype",
    "tasks",
    "judge",
    "k",
    "heldout",
    "kl_prompts",
)
# the task option --pair-style sets, for every task that has it
PAIR_STYLE = "pair_style"
# options that take sources (files, folders, hub ids), repeatable and comma-separated
SOURCES = ("pairs", "heldout_pairs", "lm_eval_include")


def load_user_pairs(a: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, held-out, load reports) of the user's --pairs sources: bad rows skipped and counted (or, with
    --bad-pairs error, the first one stops the run); the held-out pairs are --heldout-pairs, else pairs
    of whole prompts drawn from --pairs with --seed until --heldout are held out. A held-out pair that is
    also a training pair is an error. A row without a `task` is task "custom"; its style names its source."""
    policy = "error" if a.bad_pairs == "error" else "skip"
    pool, held, reports = [], [], []
    for role, sources, split, rows in (
        ("train", a.pairs, a.pairs_split, pool),
        ("heldout", a.heldout_pairs, a.heldout_split, held),
    ):
        for source in sources:
            loaded, report = load_pairs(source, policy, split=split)
            print(report.summary(), flush=True)
            if not loaded:
                raise ValueError(f"{source}: no usable pair ({report.summary()})")
            reports.append({"role": role, **report.record()})
            style = f"from {Path(source).name if Path(source).exists() else source}"
            rows += [{"task": "custom", "style": style} | r for r in loaded]
    if a.heldout_pairs:
        seen = {pair_key(r) for r in pool}
        if leaked := sum(pair_key(r) in seen for r in held):
            raise ValueError(
                f"--heldout-pairs: {leaked} of its {len(held)} pairs are also training pairs (--pairs); "
                "give a held-out set apart from the training one (e.g. --heldout-split test)"
            )
        return pool, held, reports
    # whole prompts, in a fixed draw: pairs sharing a prompt all train or all stay out, and a file sorted by
    # anything does not bias the held-out set as its tail would
    prompts = list(dict.fromkeys(json.dumps(r["prompt"]) for r in pool))
    random.Random(a.seed).shuffle(prompts)
    drawn, count = set(), 0
    for prompt in prompts:
        if count >= a.heldout:
            break
        drawn.add(prompt)
        count += sum(json.dumps(r["prompt"]) == prompt for r in pool)
    if len(drawn) == len(prompts):
        raise ValueError(
            f"--pairs: {len(pool)} usable pairs over {len(prompts)} prompts leave none to train on after "
            f"--heldout {a.heldout}; lower --heldout or give --heldout-pairs"
        )
    held = [r for r in pool if json.dumps(r["prompt"]) in drawn]
    return [r for r in pool if json.dumps(r["prompt"]) not in drawn], held, reports


def parser() -> argparse.ArgumentParser:
    """Options without built-in values: the preset (and --config) supply them, flags override."""
    ap = argparse.ArgumentParser(
        prog="python -m harness.compare",
        description=f"{__doc__}\n{estimate.help_text()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    ap.add_argument(
        "--preset", default="cpu", help=f"settings from presets/<name>.yaml: {', '.join(names)} (default cpu)"
    )
    ap.add_argument(
        "--config",
        type=Path,
        help="YAML of options (keys as the flags, dashes or underscores); overrides the preset",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep (method, seed) runs trained with the same config hash and models evaluated with the same "
        "settings; continue a run cut off mid-training from its last state (--save-every)",
    )
    ap.add_argument(
        "--methods",
        help="comma-separated methods (dpo, spo = dpo+spo, simpo, simpo+spo, sft, ...), each optionally a "
        "variant METHOD:FIELD=VALUE[:FIELD=VALUE] of TrainConfig fields, e.g. spo:spo_lambda=10",
    )
    ap.add_argument(
        "--init",
        help="what every method starts from and uses as its reference: reference (--model) or sft (one SFT "
        "run of --model on the training pairs' chosen responses, trained first; sft:FIELD=VALUE sets its "
        "TrainConfig fields)",
    )
    ap.add_argument(
        "--model",
        help="init and reference: HF checkpoint dir or hub id "
        "(smollm2-135m-instruct and tiny-random-llama are provisioned offline)",
    )
    ap.add_argument(
        "--pairs",
        action="append",
        metavar="SOURCE",
        help="your training pairs instead of the built-in ones (repeatable or comma-separated): a JSONL, "
        "JSON or Parquet file, a folder saved by datasets, or a hub dataset id; rows as in "
        "trainers/pairfile.py, bad rows skipped and counted. The built-in pairs are then sampled only "
        "where --<task>-pairs is given",
    )
    ap.add_argument(
        "--heldout-pairs",
        action="append",
        metavar="SOURCE",
        help="held-out pairs for the Δ log-probs and probes (as --pairs); default: --heldout pairs drawn "
        "from --pairs with --seed",
    )
    ap.add_argument("--pairs-split", help="the split of a --pairs dataset with several (default train)")
    ap.add_argument(
        "--heldout-split", help="the split of a --heldout-pairs dataset with several (default test)"
    )
    ap.add_argument("--seed", type=int, help="seed of the pairs and of evaluation sampling")
    ap.add_argument(
        "--seeds",
        help="comma-separated training seeds, one run per method and seed; the leaderboard pools a "
        "method's seeds",
    )
    ap.add_argument(
        "--backend", choices=BACKENDS, help="generation backend (auto: vLLM if installed, else HF generate)"
    )
    ap.add_argument(
        "--dtype",
        choices=DTYPES,
        help="generation precision, pairs and evaluation (auto: bf16 where native, else fp32)",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="evaluation on vLLM in bf16: compile the model (default on; 1.07-1.17x the tokens/s, "
        "start-up +12-14 s, about +60 s the first time on a machine)",
    )
    ap.add_argument(
        "--reuse-reference",
        action=argparse.BooleanOptionalAction,
        help="reuse the reference's evaluation of an earlier compare with the same key "
        "(harness/refcache.py; default on)",
    )
    ap.add_argument("--tasks", help=f"evaluation tasks, from {', '.join(TASKS)}")
    ap.add_argument(
        "--judge", choices=("none", *JUDGE_KINDS), help="TL;DR win-rate judge (offline: embedding similarity)"
    )
    ap.add_argument("--judge-model", help="judge hf: a local checkpoint folder; endpoint: the model name")
    ap.add_argument(
        "--judge-url", help="judge endpoint: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    ap.add_argument("--judge-key-env", help="env var holding the endpoint's API key (default OPENAI_API_KEY)")
    ap.add_argument(
        "--verbose", action="store_true", help="show every library warning and log line (default: filtered)"
    )
    e = ap.add_argument_group("lm-evaluation-harness tasks, scored on the reference and every checkpoint")
    e.add_argument(
        "--lm-eval-tasks", help="comma-separated lm-eval task names (stock, or in --lm-eval-include)"
    )
    e.add_argument("--lm-eval-include", action="append", metavar="DIR", help="a folder of your lm-eval YAMLs")
    e.add_argument("--lm-eval-limit", type=int, metavar="N", help="first N items of each (default: all)")
    g = ap.add_argument_group("sizes (a task not set here: its own default)")
    add_size_flags(g, "-pairs", "train items sampled for pairs", "PAIR_ITEMS")
    add_size_flags(g, "-eval", "test items evaluated", "EVAL_ITEMS")
    add_option_flags(g)
    g.add_argument(
        "--pair-style",
        choices=PAIR_STYLES,
        help="pair style of every task that has one (--<task>-pair-style overrides): on-policy (chosen and "
        "rejected sampled), gold (chosen the gold solution) or edit (rejected = chosen with one number and "
        "the final answer changed)",
    )
    g.add_argument("--k", type=int, help="reference samples per train item, for tasks that grade several")
    g.add_argument("--heldout", type=int, help="pairs per task held out of training for Δ log-prob")
    g.add_argument("--kl-prompts", type=int, help="eval prompts sampled for the KL estimate")
    g.add_argument(
        "--max-tokens",
        type=int,
        help="cap on every generation's length, pairs and evaluation (default: per task)",
    )
    add_flags(
        ap.add_argument_group("training (TrainConfig fields; unset ones keep TrainConfig's default)"),
        TrainConfig,
        exclude=PER_RUN,
    )
    add_flags(ap.add_argument_group("where the jobs run (docs/scaling.md)"), ExecutorConfig)
    o = ap.add_argument_group("output paths")
    o.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="leaderboard and runs/<model>/ eval files (default results/)",
    )
    o.add_argument(
        "--outputs",
        type=Path,
        default=Path("outputs"),
        help="pairs and checkpoints, large, git-ignored (default outputs/)",
    )
    return ap


def read_settings(path: Path, ap: argparse.ArgumentParser) -> dict:
    """A preset or config YAML as option values; an unknown key is an error naming the file and the key."""
    try:
        values = read_config_file(path)
    except ConfigError as e:
        ap.error(str(e))
    values = {
        k.replace("-", "_"): ",".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()
    }
    dests = {a.dest for a in ap._actions} - {"help", "preset", "config", "resume"}
    if unknown := sorted(set(values) - dests):
        ap.error(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(dests))}")
    return values


def task_options(*layers: dict) -> dict[str, dict]:
    """task → its options from the settings `layers` (preset, --config, command line), each overriding the
    ones before it; within a layer a per-task option (--arith-pair-style) overrides --pair-style. So a flag
    always beats a YAML. A task option given as text in a YAML is typed here, naming it."""
    styled = [t for t, task in TASKS.items() if PAIR_STYLE in task.OPTIONS]
    return merge_options(
        *(
            merge_options(
                {t: {PAIR_STYLE: layer[PAIR_STYLE]} for t in styled if layer.get(PAIR_STYLE)},
                options_given(layer),
            )
            for layer in layers
        )
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="cpu")
    pre.add_argument("--config", type=Path)
    first, _ = pre.parse_known_args(argv)
    preset = PRESETS / f"{first.preset}.yaml"
    if not preset.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        ap.error(f"no preset {first.preset!r}: presets are {presets} (or pass --config FILE)")
    config = read_settings(first.config, ap) if first.config else {}
    preset_values = read_settings(preset, ap)
    values = preset_values | config
    # the source lists of a YAML as lists: argparse appends a flag's values to them
    values |= {k: [values[k]] for k in SOURCES if isinstance(values.get(k), str)}
    ap.set_defaults(**values)
    source = f"{first.preset}{' + config' if first.config else ''}"
    for action in ap._actions:  # --help shows what the preset sets
        if action.dest in values and action.help:
            action.help += f" [{source}: {values[action.dest]}]"
    a = ap.parse_args(argv)
    # what the command line itself gave (no preset): its source flags replace the YAML's, not add to them
    given = vars(parser().parse_args(argv))
    if unset := [k for k in REQUIRED if getattr(a, k) is None]:
        flags = ", ".join("--" + k.replace("_", "-") for k in unset)
        ap.error(f"unset option(s) {flags}: give them or set them in the preset/--config YAML")
    try:
        a.seeds = [int(x) for x in str(a.seeds).split(",") if x.strip()] if a.seeds is not None else [a.seed]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {a.seeds!r}")
    if len(set(a.seeds)) < len(a.seeds):
        ap.error(f"--seeds {','.join(map(str, a.seeds))}: a seed twice would be two runs writing one folder")
    # the precision used is part of the pairs, training and evaluation keys (--resume)
    a.dtype = resolve_dtype(a.dtype)
    if a.bf16 is None:
        a.bf16 = native_bf16()
    a.methods = [m.strip() for m in str(a.methods).split(",") if m.strip()]
    a.tasks = tuple(t.strip() for t in str(a.tasks).split(",") if t.strip())
    try:
        a.specs = parse_specs(a.methods)
        a.init_spec = None if a.init == "reference" else parse_spec(str(a.init))
        if a.init_spec is not None and a.init_spec.method != "sft":
            raise ValueError(f"--init: {a.init!r}; valid: reference, sft or sft:FIELD=VALUE")
        check_tasks(a.tasks)
        a.task_options = task_options(preset_values, config, given)
        for name, opts in a.task_options.items():
            resolve_options(TASKS[name], opts)  # a bad value fails here, before any stage
        a.pair_sizes = {t: task.PAIR_ITEMS for t, task in TASKS.items()} | sizes_given(vars(a), "-pairs")
        for k in SOURCES:
            chosen = given[k] if given[k] is not None else getattr(a, k) or []
            setattr(a, k, [x.strip() for text in chosen for x in text.split(",") if x.strip()])
        a.pairs_split, a.heldout_split = a.pairs_split or "train", a.heldout_split or "test"
        if a.pairs:
            # your pairs replace the built-in ones, but for the tasks whose pair counts you set yourself
            a.pair_sizes = {t: 0 for t in TASKS} | sizes_given(
                config | {k: v for k, v in given.items() if v is not None}, "-pairs"
            )
        a.eval_sizes = {t: TASKS[t].EVAL_ITEMS for t in a.tasks} | sizes_given(vars(a), "-eval")
        a.executor_config = ExecutorConfig(
            **{k: getattr(a, k) for k in ExecutorConfig.__dataclass_fields__ if getattr(a, k) is not None}
        )
        check_choices(a.executor_config)  # a YAML's value: argparse checks only the flag's
        check_values(a)
        # your pairs are read now, so that a bad source stops the run before any stage
        a.user = load_user_pairs(a) if a.pairs else ([], [], [])
    except (ConfigError, ValueError) as e:
        ap.error(str(e))
    return a


def check_values(a: argparse.Namespace) -> None:
    """Every value a later stage would refuse, refused now with the option named (ValueError)."""
    if negative := [f"--{t}-pairs" for t, n in a.pair_sizes.items() if n < 0]:
        raise ValueError(f"{', '.join(negative)}: a count of pairs cannot be negative")
    if empty := [f"--{t}-eval" for t in a.tasks if a.eval_sizes[t] < 1]:
        raise ValueError(
            f"{', '.join(empty)}: each evaluated task needs at least 1 item (or drop it from --tasks)"
        )
    # the smallest value of each count, sizes first, then the executor's
    lows = {"k": 1, "heldout": 1, "kl_prompts": 0, "max_tokens": 1, "lm_eval_limit": 1, "eval_shards": 1}
    lows |= {"cpus_per_job": 1, "train_gpus": 0, "eval_gpus": 0, "slurm_time": 1, "slurm_parallel": 1}
    for name, low in lows.items():
        value = getattr(a, name)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least {low}")
    if not any(a.pair_sizes.values()) and not a.pairs:
        raise ValueError("no training pairs: set a --<task>-pairs count above 0 or give --pairs")
    if a.heldout_pairs and not a.pairs:
        raise ValueError("--heldout-pairs: give --pairs too (the built-in pairs hold out their own)")
    if many := [f"--{k.replace('_', '-')}" for k in ("train_gpus", "eval_gpus") if (getattr(a, k) or 0) > 1]:
        raise ValueError(
            f"{', '.join(many)}: a compare job is one process on one GPU; a training over several GPUs "
            "runs under a launcher (docs/training.md)"
        )
    check_judge(a)
    check_model(a.model, "--model")
    a.lm_eval_tasks = [t.strip() for t in str(a.lm_eval_tasks or "").split(",") if t.strip()]
    if a.lm_eval_tasks:
        from harness.crosscheck import task_manager

        task_manager(a.lm_eval_include, a.lm_eval_tasks)  # names it does not know fail here
    elif a.lm_eval_include:
        raise ValueError("--lm-eval-include: give --lm-eval-tasks too (the tasks to run from it)")
    # each run's training settings, as the trainer will check them
    for spec in [*a.specs, *([a.init_spec] if a.init_spec else [])]:
        Trainer._check_config(train_config(a, a.model, spec, a.seeds[0], spec.label))


def pairs_config(a: argparse.Namespace) -> PairsConfig:
    return PairsConfig(
        out=str(a.outputs / "pairs"),
        model=a.model,
        sizes=a.pair_sizes,
        options=a.task_options,
        k=a.k,
        seed=a.seed,
        backend=a.backend,
        dtype=a.dtype,
        max_tokens=a.max_tokens,
    )


def train_config(a: argparse.Namespace, init: str, spec: MethodSpec, seed: int, label: str) -> TrainConfig:
    """The run of `spec` from `init`: compare's training options, then the variant's own fields."""
    fields = {
        k: getattr(a, k)
        for k in TrainConfig.__dataclass_fields__
        if k not in PER_RUN and getattr(a, k, None) is not None
    }
    # one reference log-prob cache (ref_cache) for all runs: its key holds the init's weights and the pairs
    return TrainConfig(
        model=init,
        pairs=str(a.outputs / "train_pairs.jsonl"),
        output_dir=str(a.outputs / label),
        method=spec.method,
        seed=seed,
        ref_cache=str(a.outputs),
        probe_pairs=str(a.outputs / "heldout_pairs.jsonl"),
        **(fields | spec.overrides),
    )


def eval_config(a: argparse.Namespace, todo: list[tuple[str, Path]], init_run: Path) -> EvalConfig:
    """The evaluation of the models in `todo` (model, run folder), shift and judge measured from the init
    (the methods' reference; its run folder `init_run`); the run_key hashes the settings and the held-out
    pairs, not the models (each eval.json also records its model's fingerprint)."""
    heldout, train = a.outputs / "heldout_pairs.jsonl", a.outputs / "train_pairs.jsonl"
    cfg = EvalConfig(
        model=[m for m, _ in todo],
        out=[str(o) for _, o in todo],
        reference=init_weights(a),
        tasks=a.tasks,
        sizes={t: a.eval_sizes[t] for t in a.tasks},
        options=a.task_options,
        kl_prompts=a.kl_prompts,
        heldout_files=[str(heldout)],
        train_pairs_files=[str(train)],
        backend=a.backend,
        dtype=a.dtype,
        max_tokens=a.max_tokens,
        seed=a.seed,
        judge=a.judge,
        lm_eval_tasks=a.lm_eval_tasks,
        lm_eval_include=[str(Path(d).resolve()) for d in a.lm_eval_include],
        lm_eval_limit=a.lm_eval_limit,
        judge_model=a.judge_model,
        judge_url=a.judge_url,
        reference_run=str(init_run),
        reuse_reference=a.reuse_reference is not False,
        **({"judge_key_env": a.judge_key_env} if a.judge_key_env else {}),
        **({"compile": a.compile} if a.compile is not None else {}),
    )
    # the models, folders and the cache switch change no evaluation
    unrelated = ("model", "out", "run_key", "reference_run", "reuse_reference")
    settings = {k: v for k, v in config_json(cfg).items() if k not in unrelated}
    cfg.run_key = digest(settings, file_digest(heldout), file_digest(train))
    return cfg


def run_labels(a: argparse.Namespace) -> list[str]:
    """Every training run, in order: the SFT init first (when --init sft), then each method and seed."""
    init = [f"{a.init_spec.label}-seed{a.seeds[0]}"] if a.init_spec else []
    methods = [f"{spec.label}-seed{seed}" for spec in a.specs for seed in a.seeds]
    return init + [x for x in methods if x not in init]


def init_weights(a: argparse.Namespace) -> str:
    """What every method starts from: the SFT init's checkpoint (--init sft), else --model."""
    if a.init_spec:
        return str(a.outputs / run_labels(a)[0] / "checkpoint")
    return models.resolve_model(a.model)


def train_jobs(a: argparse.Namespace, runs: Path, labels: list[str]) -> tuple[list[Job], list[str]]:
    """The training jobs of `labels` (each from the init; an sft method from --model, as the init), and the
    runs kept: with --resume, a run finished under the same config hash is kept and a run cut off under it
    continues from its last saved state. Each job's config file and hash are written here."""
    jobs, kept, model, init = [], [], models.resolve_model(a.model), init_weights(a)
    n_pairs = len(read_jsonl(a.outputs / "train_pairs.jsonl"))
    specs = {f"{spec.label}-seed{seed}": (spec, seed) for spec in a.specs for seed in a.seeds}
    if a.init_spec:
        specs[run_labels(a)[0]] = (a.init_spec, a.seeds[0])
    for label in labels:
        spec, seed = specs[label]
        start = model if spec.method == "sft" else init
        cfg = train_config(a, start, spec, seed, label)
        base = [file_digest(a.outputs / "train_pairs.jsonl"), fingerprint(start)]
        key = digest({k: v for k, v in config_json(cfg).items() if k != "resume"}, *base)
        out = a.outputs / label
        done, key_file = runs / label / "train.json", out / "config_hash"
        if (
            a.resume
            and done.is_file()
            and json.loads(done.read_text()).get("config_hash") == key
            and (out / "checkpoint" / "model.safetensors").is_file()
        ):
            print(f"\n== train {label}: finished earlier with config hash {key}, kept", flush=True)
            kept.append(label)
            continue
        # its saved state (if any) fits
        cfg.resume = a.resume and key_file.is_file() and key_file.read_text() == key
        write_text(key_file, key)
        write_json(out / "train_config.json", config_json(cfg))
        epochs = f"{cfg.epochs} epoch" + ("" if cfg.epochs == 1 else "s")
        note = f": {spec.label} from {Path(start).name}, {n_pairs} pairs × {epochs}"
        note += " (resuming)" if cfg.resume else ""
        config = str(out / "train_config.json")
        jobs.append(
            Job(f"train {label}", "trainers.train", config, "train", str(out / "stage.log"), note=note)
        )
    return jobs, kept


def record_training(a: argparse.Namespace, runs: Path, label: str) -> None:
    """A finished training's summary and metrics into its run folder; train.json last: it marks the run
    finished for --resume."""
    out = a.outputs / label
    summary = json.loads((out / "train.json").read_text()) | {
        "config_hash": (out / "config_hash").read_text()
    }
    write_text(runs / label / "metrics.jsonl", (out / "metrics.jsonl").read_text())
    if (out / "ches_dropped.jsonl").is_file():
        write_text(runs / label / "ches_dropped.jsonl", (out / "ches_dropped.jsonl").read_text())
    write_json(runs / label / "train.json", summary)


def eval_jobs(
    a: argparse.Namespace, runs: Path, trained: list[Job], shards: int | None
) -> tuple[list[Job], list[str]]:
    """The evaluation jobs of the reference and every checkpoint not evaluated under these settings (a run
    trained now always is), and the runs kept. `shards` None: one job for all (one engine, the init first).
    Else the init first in a job of its own (the judge's "vs reference" reads its samples), then the others
    in up to `shards` jobs, each after the trainings of its checkpoints."""
    labels, stages = run_labels(a), a.outputs / "stages"
    init_run = runs / (labels[0] if a.init_spec else "reference")
    every = [(a.model, runs / "reference"), *((str(a.outputs / n / "checkpoint"), runs / n) for n in labels)]
    run_key = eval_config(a, every, init_run).run_key
    fresh = {job.name.removeprefix("train ") for job in trained}
    todo = [(m, o) for m, o in every if o.name in fresh or not (a.resume and evaluated(o, m, run_key))]
    kept = [o.name for m, o in every if (m, o) not in todo]
    if shards is None:
        groups = [("eval", "eval", todo)] if todo else []
    else:
        first = [(m, o) for m, o in todo if o == init_run]
        rest = [(m, o) for m, o in todo if o != init_run]
        count = min(shards, len(rest))
        # "eval reference", or with --init sft "eval sft-seed0": the shards wait for it
        groups = [(f"eval {init_run.name}", f"eval-{init_run.name}", first)] if first else []
        groups += [(f"eval shard {i + 1}", f"eval-{i + 1}", rest[i::count]) for i in range(count)]
    jobs = []
    items = ", ".join(f"{t} {a.eval_sizes[t]}" for t in a.tasks)
    extra = f", lm-eval {', '.join(a.lm_eval_tasks)}" if a.lm_eval_tasks else ""
    for name, file, group in groups:
        write_json(stages / f"{file}.json", config_json(eval_config(a, group, init_run)))
        note = f": {', '.join(o.name for _, o in group)} on {items}{extra}; judge {a.judge}"
        waits = [f"train {o.name}" for _, o in group]
        if name.startswith("eval shard"):
            waits.append(f"eval {init_run.name}")
        after = tuple(w for w in waits if w in {j.name for j in [*trained, *jobs]})
        log = str(stages / "logs" / f"{file}.log")
        jobs.append(Job(name, "harness.evaluate", str(stages / f"{file}.json"), "eval", log, after, note))
    return jobs, kept


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    print(estimate.line(a), flush=True)
    with exclusive(a.results, a.outputs, by="compare"):  # two runs on one folder would mix their files
        # the endpoint judge's key goes to the Ray jobs that judge; no other secret leaves this driver
        key = (a.judge_key_env or "OPENAI_API_KEY",) if a.judge == "endpoint" else ()
        executor = make_executor(a.executor_config, a.verbose, a.outputs / "stages", key, a.resume)
        try:
            run_compare(a, argv, executor)
        finally:
            executor.close()


def run_compare(a: argparse.Namespace, argv: list[str] | None, executor) -> None:
    runs, stages = a.results / "runs", a.outputs / "stages"
    # kept stages keep their times: those of the outputs resumed (the results folder may hold another run's)
    earlier = stages / "seconds.json"
    timings: dict[str, float] = json.loads(earlier.read_text()) if a.resume and earlier.is_file() else {}
    records: list[dict] = []

    def done(job: Job, rec: Record) -> None:
        """A finished job: its time and record kept, a training's results copied to its run folder."""
        timings[job.name] = rec.seconds
        records.append(rec.record())
        write_json(stages / "seconds.json", timings)
        if job.kind == "train":
            record_training(a, runs, job.name.removeprefix("train "))

    # 0. what the jobs need outside themselves, checked before the first one: resources, shared folders
    pairs = pairs_config(a)
    kinds = {"train", "eval"} | ({"pairs"} if any(pairs.sizes.values()) else set())
    shared = {"outputs": a.outputs, "results": a.results, "cache": cache_dir()}
    executor.preflight(kinds, shared, models.resolve_model(a.model))

    # 1. pairs: the built-in ones sampled from the reference (cached by the stage itself), then yours
    train, held = [], []
    if any(pairs.sizes.values()):
        write_json(stages / "pairs.json", config_json(pairs))
        sizes = ", ".join(f"{t} {n}" for t, n in pairs.sizes.items() if n)
        note = f": sampling {a.model} on {sizes} train items × k={a.k}"
        log = str(stages / "logs" / "pairs.log")
        executor.run(
            [Job("pairs", "harness.pairs", str(stages / "pairs.json"), "pairs", log, note=note)], done
        )
        files = [Path(pairs.out) / f"{t}.jsonl" for t, n in pairs.sizes.items() if n > 0]
        train, held = split_pairs(files, a.heldout)
    user_train, user_held, sources = a.user
    train, held = train + user_train, held + user_held
    write_jsonl(a.outputs / "train_pairs.jsonl", train)
    write_jsonl(a.outputs / "heldout_pairs.jsonl", held)
    print(f"{len(train)} training pairs, {len(held)} held-out pairs", flush=True)

    # 2. the SFT init when asked for: every method starts from its weights (their config hashes hold them)
    labels = run_labels(a)
    kept_runs: list[str] = []
    if a.init_spec:
        jobs, kept_runs = train_jobs(a, runs, labels[:1])
        executor.run(jobs, done)

    # 3. every method and seed from the init on the same pairs, and the evaluation of every model not
    # evaluated under these settings (with a parallel executor, each shard as soon as its trainings are done)
    trainings, kept = train_jobs(a, runs, labels[1:] if a.init_spec else labels)
    evaluations, kept_evals = eval_jobs(
        a, runs, trainings, a.executor_config.eval_shards if executor.parallel else None
    )
    # the reference's evaluation waits for nothing: a parallel executor starts it beside the trainings
    free = [job for job in evaluations if not job.after]
    executor.run([*free, *trainings, *(job for job in evaluations if job.after)], done)

    # 4. the leaderboard, from the run folders alone
    command = "python -m harness.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    # this plan's evaluations, else (all kept) those of the run it resumed
    evals = [job.name for job in evaluations] or [k for k in timings if k.startswith("eval")]
    stage_keys = ("pairs", *(f"train {n}" for n in labels), *evals)
    meta = {
        "command": command,
        "preset": a.preset,
        "commit": commit(),
        "machine": machine(stage_env(a.verbose)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "order": ["reference", *labels],
        "init": "sft" if a.init_spec else "reference",
        "init_run": labels[0] if a.init_spec else "reference",
        "seeds": a.seeds,
        "executor": executor.name,
        "stage_seconds": {k: v for k, v in timings.items() if k in stage_keys},
        "jobs": records,
        "kept_from_earlier": {"train": kept_runs + kept, "eval": kept_evals},
        "pairs": {
            "train": len(train),
            "heldout": len(held),
            "by_task": pair_counts(train, held),
            "sources": sources,
        },
    }
    write_json(runs / "compare.json", meta)
    md = leaderboard.write(a.results)
    print("\n" + md)


if __name__ == "__main__":
    run_main(main, "finished stages are kept: rerun the same command with --resume")
