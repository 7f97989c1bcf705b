"""Where does DPO displace the preferred responses' probability? A grid of harness.compare runs over pair
style × init × epochs × learning rate, each training every method from the same pairs, and one table of
what the held-out probes and the accuracy measured.

    python -m bench.sweep                                  # the committed grid (results/sweeps/)
    python -m bench.sweep --styles edit --inits sft --epochs 4 --lrs 5e-5 --name one
    python -m bench.sweep --preset smoke --tasks arith ... # toy size (tests/test_sweep.py)

Each setting is one `python -m harness.compare` (its --preset, --tasks, pair counts and --methods, plus the
setting's --pair-style, --init, --epochs and --lr) into results/sweeps/<name>/<setting>/ and outputs/
sweeps/<name>/<setting>/; the reference's samples are sampled once and cached, whatever the style. Per
method the table gives the held-out Δ token-mean log-prob of the chosen and of the policy's greedy
response vs the init (the methods' reference), the share of held-out pairs outside SPO's safe region, and
the accuracy of each task evaluated, with the setting's wall time. A setting already in the table is kept
(rerun the same command to continue); --fresh drops the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from common import read_config_file, run_main, write_json, write_text
from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
# the measures of each method's row, from leaderboard.json: (key, label, format, scale)
MEASURES = (
    ("dlogp_chosen", "Δ chosen", "+.4f", 1),
    ("dlogp_greedy", "Δ greedy", "+.4f", 1),
    ("outside_safe_region_share", "outside %", ".0f", 100),
)


def settings(a: argparse.Namespace) -> list[dict]:
    return [
        {"style": s, "init": i, "epochs": e, "lr": lr}
        for s, i, e, lr in itertools.product(a.styles, a.inits, a.epochs, a.lrs)
    ]


def setting_name(s: dict) -> str:
    return f"{s['style']}-{s['init']}-e{s['epochs']}-lr{s['lr']}"


def compare_command(a: argparse.Namespace, s: dict, results: Path, outputs: Path) -> list[str]:
    """The compare of one setting: the sweep's fixed options, then the setting's own."""
    return [
        sys.executable,
        "-m",
        "harness.compare",
        "--preset",
        a.preset,
        "--tasks",
        ",".join(a.tasks),
        "--methods",
        a.methods,
        *a.compare_args,
        "--pair-style",
        s["style"],
        "--init",
        s["init"],
        "--epochs",
        str(s["epochs"]),
        "--lr",
        str(s["lr"]),
        "--results",
        str(results),
        "--outputs",
        str(outputs),
        "--resume",
    ]


def measure(results: Path, tasks: list[str]) -> dict[str, dict]:
    """method → its measures (mean over its seeds) from a compare's leaderboard.json."""
    board = json.loads((results / "leaderboard.json").read_text())
    keys = [m[0] for m in MEASURES] + [f"{t}_{TASKS[t].METRIC}" for t in tasks]
    return {g["method"]: {k: g.get(k, {}).get("mean") for k in keys} for g in board["over_seeds"]}


def table(rows: list[dict], methods: list[str], tasks: list[str]) -> list[str]:
    """One line per setting: every method's measures side by side."""
    cols = [
        *MEASURES,
        *((f"{t}_{TASKS[t].METRIC}", f"{TASKS[t].TITLE} {TASKS[t].METRIC_LABEL}", ".1f", 1) for t in tasks),
    ]
    head = ["style", "init", "epochs", "lr", "train pairs"] + [f"{m} {c[1]}" for m in methods for c in cols]
    lines = ["| " + " | ".join(head + ["wall s"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        cells = [r["style"], r["init"], str(r["epochs"]), str(r["lr"]), str(r.get("pairs", "–"))]
        for m in methods:
            got = r["methods"].get(m, {})
            for key, _, fmt, scale in cols:
                cells.append("–" if got.get(key) is None else format(got[key] * scale, fmt))
        lines.append("| " + " | ".join(cells + [f"{r['seconds']:.0f}"]) + " |")
    return lines


def write_table(path: Path, a: argparse.Namespace, rows: list[dict], methods: list[str]) -> None:
    """results/sweeps/<name>.md from the table's rows (every setting run so far)."""
    shown = [m for m in ("sft", *methods) if any(m in r["methods"] for r in rows)]
    commands = dict.fromkeys(r.get("command") for r in rows if r.get("command"))
    write_text(
        path,
        "\n".join(
            [
                f"# Sweep `{a.name}`",
                "",
                "Commands: " + ", ".join(f"`{c}`" for c in commands),
                "",
                f"Each setting: `python -m harness.compare --preset {a.preset} --tasks "
                f"{','.join(a.tasks)} --methods {a.methods} {' '.join(a.compare_args)}` plus its pair "
                "style, init, epochs and lr. Δ: held-out token-mean log-prob change vs the init (the "
                "methods' reference), chosen and the policy's greedy response; outside %: held-out pairs "
                "whose chosen fell below the init's (SPO's penalty active); accuracy on the evaluated "
                "tasks; means over the compare's seeds; wall s: the setting's compare, pairs sampling "
                "included where it was not cached yet.",
                "",
                *table(rows, shown, a.tasks),
                "",
            ]
        ),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--name", default="displacement", help="table name: results/sweeps/<name>.md and .json")
    ap.add_argument("--preset", default="cpu", help="compare preset every setting starts from (default cpu)")
    ap.add_argument("--tasks", default="arith", help="evaluated tasks, pairs from these only (default arith)")
    ap.add_argument("--methods", default="dpo,spo", help="compare --methods (default dpo,spo)")
    ap.add_argument("--styles", default="on-policy,edit", help="pair styles (default on-policy,edit)")
    ap.add_argument("--inits", default="reference,sft", help="inits (default reference,sft)")
    ap.add_argument("--epochs", default="1,4", help="epochs (default 1,4)")
    ap.add_argument("--lrs", default="1e-5,5e-5", help="learning rates (default 1e-5,5e-5)")
    ap.add_argument(
        "--compare-args",
        default="--arith-pairs 128 --arith-eval 100 --heldout 12 --kl-prompts 8 --judge none --probe-every 0",
        help="further compare flags, the same for every setting",
    )
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "sweeps", help="tables go here")
    ap.add_argument("--outputs", type=Path, default=ROOT / "outputs" / "sweeps", help="checkpoints go here")
    ap.add_argument("--fresh", action="store_true", help="drop the table's earlier settings")
    a = ap.parse_args(argv)
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    if bad := [t for t in a.tasks if t not in TASKS]:
        ap.error(f"--tasks: unknown {', '.join(bad)}; valid: {', '.join(TASKS)}")
    a.styles, a.inits = a.styles.split(","), a.inits.split(",")
    a.epochs, a.lrs = [int(x) for x in a.epochs.split(",")], [float(x) for x in a.lrs.split(",")]
    a.compare_args = a.compare_args.split()
    # pairs of the evaluated tasks only: every other task's pair count set to 0
    preset = read_config_file(ROOT / "presets" / f"{a.preset}.yaml")
    for t in TASKS:
        if t not in a.tasks and preset.get(f"{t}_pairs"):
            a.compare_args += [f"--{t}-pairs", "0"]
    methods = [m.strip().replace(":", "@") for m in a.methods.split(",")]

    out_json = a.results / f"{a.name}.json"
    rows = [] if a.fresh or not out_json.is_file() else json.loads(out_json.read_text())["rows"]
    done = {setting_name(r) for r in rows}
    todo = [s for s in settings(a) if setting_name(s) not in done]
    command = "python -m bench.sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    for n, s in enumerate(todo, 1):
        name = setting_name(s)
        results, outputs = a.results / a.name / name, a.outputs / a.name / name
        print(f"\n=== sweep {n}/{len(todo)}: {name}", flush=True)
        t0 = time.time()
        cmd = compare_command(a, s, results, outputs)
        if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"sweep: setting {name} failed ({' '.join(cmd[1:])}); rerun to continue")
        got = measure(results, a.tasks)
        pairs = json.loads((results / "runs" / "compare.json").read_text())["pairs"]
        rows.append(
            {**s, "pairs": pairs["train"], "methods": got, "seconds": time.time() - t0, "command": command}
        )
        write_json(out_json, {"compare_args": a.compare_args, "rows": rows})
        write_table(a.results / f"{a.name}.md", a, rows, methods)
        print(f"{name}: {json.dumps(got)} ({time.time() - t0:.0f} s)", flush=True)
    write_table(a.results / f"{a.name}.md", a, rows, methods)


if __name__ == "__main__":
    run_main(main, "finished settings are kept: rerun the same command to continue")
