"""Before training: which of your pairs will make DPO lower the preferred response? CHES and LN-CHES per pair
on the model training would start from (trainers/ches.py; Razin et al. 2024), and their distribution per
task and pair style. The higher a pair's LN-CHES, the further DPO is expected to displace its chosen
response; `--methods dpo:ches_filter=0.25` in harness.compare drops the top quarter before training.

    python -m harness.diagnose --pairs my_pairs.jsonl              # → my_pairs.ches.jsonl beside it
    python -m harness.diagnose --model PATH --pairs ORG/DATASET --out ches.jsonl

Prompts and responses are encoded as training encodes them (trainers.tokens.encode). In a compare, the
evaluation of the init writes the same rows for the training and held-out pairs to its run folder
(runs/<init>/ches.jsonl), and the leaderboard correlates them with each method's measured Δ log-prob.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import run_main, write_jsonl
from harness import models
from trainers.pairfile import load_pairs, truncated
from trainers.tokens import encode


def ches_rows(model, tok, pairs: list[dict], split: str, batch_size: int = 8) -> list[dict]:
    """One row per pair: split, index, id, task, style, CHES, LN-CHES and both responses' token counts."""
    from trainers.ches import pair_ches

    if not pairs:
        return []
    prompts, chosen, rejected = [], [], []
    for p in pairs:
        x, c = encode(tok, p["prompt"], p["chosen"], truncated(p, "chosen"))
        prompts.append(x)
        chosen.append(c)
        rejected.append(encode(tok, p["prompt"], p["rejected"], truncated(p, "rejected"))[1])
    scores = pair_ches(model, prompts, chosen, rejected, batch_size)
    return [
        {
            "split": split,
            "index": i,
            "id": p.get("id"),
            "task": p.get("task", "custom"),
            "style": p.get("style", "default"),
            "ches": scores["ches"][i],
            "ln_ches": scores["ln_ches"][i],
            "chosen_tokens": len(chosen[i]),
            "rejected_tokens": len(rejected[i]),
        }
        for i, p in enumerate(pairs)
    ]


def distribution(rows: list[dict]) -> list[dict]:
    """LN-CHES per (task, style): pairs, quartiles and the maximum."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["style"]), []).append(r["ln_ches"])
    out = []
    for (task, style), values in sorted(groups.items()):
        values = sorted(values)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        out.append(
            {"task": task, "style": style, "pairs": len(values), "q1": quartiles[0], "median": quartiles[1]}
            | {"q3": quartiles[2], "max": values[-1]}
        )
    return out


def distribution_lines(rows: list[dict]) -> list[str]:
    """The distribution as a markdown table."""
    lines = ["| task | style | pairs | LN-CHES q1 / median / q3 | max |", "|---|---|---|---|---|"]
    for d in distribution(rows):
        lines.append(
            f"| {d['task']} | {d['style']} | {d['pairs']} | {d['q1']:.3g} / {d['median']:.3g} / "
            f"{d['q3']:.3g} | {d['max']:.3g} |"
        )
    return lines


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m harness.diagnose", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="the model training starts from")
    ap.add_argument("--pairs", required=True, help="a pair JSONL/Parquet file, datasets folder or hub id")
    ap.add_argument("--split", default="train", help="the split of a dataset with several")
    ap.add_argument("--out", type=Path, help="rows JSONL (default: <pairs file>.ches.jsonl beside it)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per forward")
    ap.add_argument("--top", type=int, default=10, help="the highest-scoring pairs to print")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    source = Path(a.pairs)
    if a.out is None and not source.is_file():
        ap.error(f"--out: {a.pairs} is not a file to write beside; name the output file")
    out = a.out or source.with_name(source.stem + ".ches.jsonl")
    if a.batch_size < 1:
        ap.error(f"--batch-size must be at least 1, got {a.batch_size}")
    try:
        pairs, report = load_pairs(a.pairs, "skip", split=a.split)
    except ValueError as e:
        ap.error(f"--pairs: {e}")
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    if not pairs:
        ap.error(f"--pairs: {a.pairs} has no usable pair")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    rows = ches_rows(model, tok, pairs, a.split, a.batch_size)
    write_jsonl(out, rows)
    print(f"{len(rows)} pairs scored on {a.model} → {out}\n")
    print("\n".join(distribution_lines(rows)))
    print("\nhighest LN-CHES (the pairs most likely to displace their chosen response under DPO):")
    for r in sorted(rows, key=lambda r: -r["ln_ches"])[: a.top]:
        print(f"  {r['ln_ches']:10.4g}  {r['task']}/{r['style']}  id {r['id']} (pair {r['index'] + 1})")


if __name__ == "__main__":
    run_main(main)
