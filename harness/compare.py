"""Train each method from the same init on the same pairs, evaluate all checkpoints and the
reference, and write the leaderboard.

    python -m harness.compare --methods dpo,spo                  # the cpu preset (default)
    python -m harness.compare --preset smoke                     # tiny random model, about a minute
    python -m harness.compare --config my.yaml --seeds 0,1,2     # preset < --config < flags
    python -m harness.compare --methods dpo,spo --resume         # continue an interrupted compare

Stages: pairs (sampled from the reference, cached; own process) → training per method and seed
(same init and pairs) → one evaluation process for the reference and every checkpoint (one vLLM
engine, each checkpoint's weights loaded into it) → results/leaderboard.md and .json.
Presets are YAML files in presets/; their keys are this command's options.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from harness import leaderboard, models
from harness.evaluate import TASKS
from harness.generation import BACKENDS, DTYPES
from harness.judge import JUDGE_KINDS
from harness.runinfo import commit, machine, stage_env
from common import exclusive, fingerprint, run_main, write_json, write_jsonl, write_text
from trainers.logprobs import native_bf16, resolve_dtype
from trainers.losses import parse_method
from trainers.pairfile import read_pairs
from trainers.train import add_config_flags
from trainers.trainer import TrainConfig, run

PRESETS = Path(__file__).resolve().parents[1] / "presets"
SET_BY_COMPARE = ("model", "pairs", "output_dir", "method", "seed", "ref_cache", "resume", "probe_pairs")  # per run, not options
SIZES = ("gsm8k_pairs", "arith_pairs", "tldr_pairs", "k", "heldout", "gsm8k_eval", "math_eval", "arith_eval", "arith_level", "tldr_eval", "kl_prompts")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def stage(name: str, timings: dict, cmd: list[str]) -> None:
    """Run a CLI stage in a fresh process (with tcmalloc where installed: `stage_env`) and record its wall time."""
    print(f"\n== {name}", flush=True)
    t = time.time()
    if subprocess.run([sys.executable, "-m", *cmd], env=stage_env()).returncode != 0:
        raise SystemExit(f"compare: stage '{name}' failed (command: python -m {' '.join(cmd)}); finished stages are kept, rerun with --resume")
    timings[name] = round(time.time() - t, 1)


def split_pairs(files: list[Path], heldout: int) -> tuple[list[dict], list[dict]]:
    """The last `heldout` pairs of each task are held out for the shift metrics; the rest train."""
    train, held = [], []
    for f in files:
        rows = read_pairs(str(f), "error")  # written by the pairs stage: a bad row is a bug
        if len(rows) <= heldout:
            raise SystemExit(f"{f}: only {len(rows)} pairs, need more than --heldout {heldout}; raise the pair counts")
        train += rows[: len(rows) - heldout]
        held += rows[len(rows) - heldout :]
    return train, held


def parser() -> argparse.ArgumentParser:
    """Options without built-in values: the preset (and --config) supply them, flags override."""
    ap = argparse.ArgumentParser(prog="python -m harness.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    ap.add_argument("--preset", default="cpu", help=f"settings from presets/<name>.yaml: {', '.join(names)} (default cpu)")
    ap.add_argument("--config", type=Path, help="YAML of options (keys as the flags, dashes or underscores); overrides the preset")
    ap.add_argument("--resume", action="store_true", help="keep (method, seed) runs trained with the same config hash and models evaluated "
                                                          "with the same settings; continue a run cut off mid-training from its last state (--save-every)")
    ap.add_argument("--methods", help="comma-separated methods (dpo, spo = dpo+spo, simpo, simpo+spo, ...)")
    ap.add_argument("--model", help="init and reference: HF checkpoint dir or hub id (smollm2-135m-instruct and tiny-random-llama are provisioned offline)")
    ap.add_argument("--seed", type=int, help="seed of the pairs and of evaluation sampling")
    ap.add_argument("--seeds", help="comma-separated training seeds, one run per method and seed; the leaderboard pools a method's seeds")
    ap.add_argument("--backend", choices=BACKENDS, help="generation backend (auto: vLLM if installed, else HF generate)")
    ap.add_argument("--dtype", choices=DTYPES, help="generation precision, pairs and evaluation (auto: bf16 where native, else fp32)")
    ap.add_argument("--tasks", help=f"evaluation tasks, from {', '.join(TASKS)}")
    ap.add_argument("--judge", choices=("none", *JUDGE_KINDS), help="TL;DR win-rate judge (offline: embedding similarity)")
    g = ap.add_argument_group("sizes")
    g.add_argument("--gsm8k-pairs", type=int, help="GSM8K train questions sampled for pairs")
    g.add_argument("--arith-pairs", type=int, help="arith train problems sampled for pairs (chosen and rejected both sampled)")
    g.add_argument("--arith-gold-chosen", action=argparse.BooleanOptionalAction, help="arith: gold solution as chosen when no sample is correct")
    g.add_argument("--tldr-pairs", type=int, help="TL;DR training posts sampled for pairs")
    g.add_argument("--k", type=int, help="reference samples per GSM8K and arith question")
    g.add_argument("--heldout", type=int, help="pairs per task held out of training for Δ log-prob")
    g.add_argument("--gsm8k-eval", type=int, help="GSM8K test questions evaluated")
    g.add_argument("--math-eval", type=int, help="MATH-500 problems evaluated")
    g.add_argument("--arith-eval", type=int, help="arith test problems evaluated")
    g.add_argument("--arith-level", type=int, help="arith difficulty level, pairs and evaluation (see results/calibration/arith.md)")
    g.add_argument("--tldr-eval", type=int, help="TL;DR eval posts evaluated")
    g.add_argument("--kl-prompts", type=int, help="eval prompts sampled for the KL estimate")
    g.add_argument("--max-tokens", type=int, help="cap on every generation's length, pairs and evaluation (quick runs; default: per task)")
    add_config_flags(ap.add_argument_group("training (TrainConfig fields; unset ones keep TrainConfig's default)"), exclude=SET_BY_COMPARE)
    o = ap.add_argument_group("output paths")
    o.add_argument("--results", type=Path, default=Path("results"), help="leaderboard and runs/<model>/ eval files (default results/)")
    o.add_argument("--outputs", type=Path, default=Path("outputs"), help="pairs and checkpoints, large, git-ignored (default outputs/)")
    return ap


def read_settings(path: Path, ap: argparse.ArgumentParser) -> dict:
    """A preset or config YAML as option values; an unknown key is an error naming the file and the key."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        ap.error(f"{path}: {e}")
    if not isinstance(values, dict):
        ap.error(f"{path}: expected a mapping of option: value")
    values = {k.replace("-", "_"): ",".join(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
    dests = {a.dest for a in ap._actions} - {"help", "preset", "config", "resume"}
    if unknown := sorted(set(values) - dests):
        ap.error(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(dests))}")
    return values


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="cpu")
    pre.add_argument("--config", type=Path)
    first, _ = pre.parse_known_args(argv)
    preset = PRESETS / f"{first.preset}.yaml"
    if not preset.is_file():
        ap.error(f"no preset {first.preset!r}: presets are {', '.join(sorted(p.stem for p in PRESETS.glob('*.yaml')))} (or pass --config FILE)")
    values = read_settings(preset, ap) | (read_settings(first.config, ap) if first.config else {})
    ap.set_defaults(**values)
    for action in ap._actions:  # --help shows what the preset sets
        if action.dest in values and action.help:
            action.help += f" [{first.preset}{' + config' if first.config else ''}: {values[action.dest]}]"
    a = ap.parse_args(argv)
    unset = [k for k in ("model", "methods", "seed", "backend", "dtype", "tasks", "judge", *SIZES) if getattr(a, k) is None]
    if unset:
        ap.error(f"unset option(s) {', '.join('--' + k.replace('_', '-') for k in unset)}: give them or set them in the preset/--config YAML")
    try:
        a.seeds = [int(x) for x in str(a.seeds).split(",") if x.strip()] if a.seeds is not None else [a.seed]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {a.seeds!r}")
    a.dtype = resolve_dtype(a.dtype)  # the precision used is part of the pairs, training and evaluation keys (--resume)
    a.bf16 = native_bf16() if a.bf16 is None else a.bf16
    a.methods = [m.strip() for m in str(a.methods).split(",") if m.strip()]
    for m in a.methods:
        try:
            parse_method(m)
        except ValueError as e:
            ap.error(str(e))
    return a


def train_config(a: argparse.Namespace, ref: str, method: str, seed: int, label: str) -> TrainConfig:
    fields = {k: getattr(a, k) for k in TrainConfig.__dataclass_fields__ if k not in SET_BY_COMPARE and getattr(a, k, None) is not None}
    return TrainConfig(model=ref, pairs=str(a.outputs / "train_pairs.jsonl"), output_dir=str(a.outputs / label), method=method, seed=seed,
                       ref_cache=str(a.outputs), probe_pairs=str(a.outputs / "heldout_pairs.jsonl"), **fields)  # one ref-log-prob cache for all


def train_all(a: argparse.Namespace, ref: str, runs: Path, timings: dict) -> list[str]:
    """Train every (method, seed); with --resume, a run finished under the same config hash is kept and
    a run cut off under it continues from its last saved state. Returns the runs kept."""
    kept = []
    base = [file_digest(a.outputs / "train_pairs.jsonl"), fingerprint(ref)]
    for method in a.methods:
        for seed in a.seeds:
            label = f"{method}-seed{seed}"
            cfg = train_config(a, ref, method, seed, label)
            key = digest({k: v for k, v in asdict(cfg).items() if k != "resume"}, *base)
            done, key_file = runs / label / "train.json", a.outputs / label / "config_hash"
            if a.resume and done.is_file() and json.loads(done.read_text()).get("config_hash") == key \
                    and (a.outputs / label / "checkpoint" / "model.safetensors").is_file():
                print(f"\n== train {label}: finished earlier with config hash {key}, kept", flush=True)
                kept.append(label)
                continue
            cfg.resume = a.resume and key_file.is_file() and key_file.read_text() == key  # its saved state (if any) fits
            write_text(key_file, key)
            print(f"\n== train {label}" + (" (resuming)" if cfg.resume else ""), flush=True)
            t0 = time.time()
            summary = run(cfg) | {"config_hash": key}
            timings[f"train {label}"] = round(time.time() - t0, 1)
            write_text(runs / label / "metrics.jsonl", (a.outputs / label / "metrics.jsonl").read_text())
            write_json(runs / label / "train.json", summary)  # last: marks the run finished
    return kept


def evaluated(out: Path, model: str, run_key: str) -> bool:
    """eval.json exists for these weights under these evaluation settings."""
    try:
        ev = json.loads((out / "eval.json").read_text())
    except (OSError, ValueError):
        return False
    return ev.get("config", {}).get("run_key") == run_key and ev.get("fingerprint") == fingerprint(models.resolve_model(model))


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    with exclusive(a.results, a.outputs, by="compare"):  # two runs on one folder would mix their files
        run_compare(a, argv)


def run_compare(a: argparse.Namespace, argv: list[str] | None) -> None:
    ref = models.resolve_model(a.model)
    pair_dir, runs = a.outputs / "pairs", a.results / "runs"
    earlier = runs / "compare.json"
    timings: dict[str, float] = json.loads(earlier.read_text())["stage_seconds"] if a.resume and earlier.is_file() else {}  # kept stages keep theirs
    cap = ["--max-tokens", str(a.max_tokens)] if a.max_tokens else []
    stage("pairs", timings, ["harness.pairs", "--model", a.model, "--gsm8k", str(a.gsm8k_pairs), "--tldr", str(a.tldr_pairs),
                             "--arith", str(a.arith_pairs), "--arith-level", str(a.arith_level), *(["--arith-gold-chosen"] if a.arith_gold_chosen else []),
                             "--k", str(a.k), "--seed", str(a.seed), "--backend", a.backend, "--dtype", a.dtype, "--out", str(pair_dir), *cap])
    tasks = [t for t, n in (("gsm8k", a.gsm8k_pairs), ("arith", a.arith_pairs), ("tldr", a.tldr_pairs)) if n > 0]
    train, held = split_pairs([pair_dir / f"{t}.jsonl" for t in tasks], a.heldout)
    write_jsonl(a.outputs / "train_pairs.jsonl", train)
    write_jsonl(a.outputs / "heldout_pairs.jsonl", held)
    print(f"{len(train)} training pairs, {len(held)} held-out pairs", flush=True)

    kept = {"train": train_all(a, ref, runs, timings)}
    labels = [f"{m}-seed{s}" for m in a.methods for s in a.seeds]
    eval_args = ["--reference", a.model, "--tasks", a.tasks, "--gsm8k", str(a.gsm8k_eval), "--math", str(a.math_eval), "--tldr", str(a.tldr_eval),
                 "--arith", str(a.arith_eval), "--arith-level", str(a.arith_level),
                 "--kl-prompts", str(a.kl_prompts), "--backend", a.backend, "--dtype", a.dtype, "--seed", str(a.seed), "--judge", a.judge, *cap]
    run_key = digest(eval_args, file_digest(a.outputs / "heldout_pairs.jsonl"))
    todo = [(m, runs / n) for m, n in [(a.model, "reference"), *((str(a.outputs / n / "checkpoint"), n) for n in labels)]
            if not (a.resume and evaluated(runs / n, m, run_key))]
    kept["eval"] = [n for n in ["reference", *labels] if runs / n not in [o for _, o in todo]]
    if todo:
        stage("eval", timings, ["harness.evaluate", "--model", *(m for m, _ in todo), "--out", *(str(o) for _, o in todo), *eval_args,
                                "--heldout", str(a.outputs / "heldout_pairs.jsonl"), "--run-key", run_key, "--reference-run", str(runs / "reference")])

    meta = {"command": "python -m harness.compare " + " ".join(argv if argv is not None else sys.argv[1:]), "preset": a.preset,
            "commit": commit(), "machine": machine(stage_env()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "order": ["reference", *labels], "seeds": a.seeds,
            "stage_seconds": {k: v for k, v in timings.items() if k in ("pairs", "eval", *(f"train {n}" for n in labels))}, "kept_from_earlier": kept,
            "pairs": {"train": len(train), "heldout": len(held)}}
    write_json(runs / "compare.json", meta)
    md = leaderboard.write(a.results)
    print("\n" + md)


if __name__ == "__main__":
    run_main(main, "finished stages are kept: rerun the same command with --resume")
