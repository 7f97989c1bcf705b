"""Reddit TL;DR: loading, prompt, train/eval split and ROUGE against the human summary."""

from __future__ import annotations

from common import read_jsonl
from tasks.data import resolve

EVAL_POSTS = 200  # the first posts are for evaluation only; pairs come from the rest, never overlapping

NAME, TITLE = "tldr", "TL;DR"
MAX_TOKENS, EVAL_ITEMS, PAIR_ITEMS, PAIR_SAMPLES = 64, 100, 24, 1
OPTIONS: dict = {}
METRIC, METRIC_LABEL, ITEM_SCORE, SECTION = "rougeL", "ROUGE-L", ("rougeL", 1.0), "Summarization (TL;DR)"
NOTE = "first {n} eval posts. ROUGE F×100 against the human summary (95% bootstrap interval over posts)."
FORMAT_LABEL, JUDGED, EXTRAS = None, True, {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2"}
LM_EVAL_TASK = "spo_tldr"  # its lm-eval twin in tasks/lm_eval/ (harness.crosscheck), or None


def load(split: str | None = None, n: int | None = None, **_options) -> list[dict]:
    """All posts (split None), the eval posts ("test") or the pair-building posts ("train"); the first n."""
    rows = read_jsonl(resolve("tldr", "dove_tldr_test.jsonl"))
    if split is None:
        return rows[:n]
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    # split() by hand: the argument shadows it
    return (rows[EVAL_POSTS:] if split == "train" else rows[:EVAL_POSTS])[:n]


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(eval posts, train posts), disjoint by construction."""
    return rows[:EVAL_POSTS], rows[EVAL_POSTS:]


def prompt(row: dict) -> list[dict]:
    text = (
        f"SUBREDDIT: r/{row['subreddit']}\nTITLE: {row['title']}\nPOST: {row['instruction']}\n\n"
        "Write a one-sentence TL;DR of the post."
    )
    return [{"role": "user", "content": text}]


ROUGE = ("rouge1", "rouge2", "rougeL")


def rouge_each(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """ROUGE-1/2/L F-measure ×100 per prediction (rouge-score, Porter stemming)."""
    # imported here: rouge-score loads nltk and scipy (~2 s), which the stages that only list tasks skip
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=True)
    return [
        {k: 100 * v.fmeasure for k, v in scorer.score(ref, pred).items()}
        for pred, ref in zip(predictions, references, strict=True)
    ]


def mean_rouge(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(s[k] for s in scores) / len(scores) for k in ROUGE}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure ×100."""
    return mean_rouge(rouge_each(predictions, references))


def grade(items: list[dict], outputs: list[str]) -> tuple[dict, list[dict], None]:
    """Mean ROUGE-1/2/L against the human summary (each row's `gold`, also the judge's baseline); no
    answer format."""
    scores = rouge_each(outputs, [p["gold_response"] for p in items])
    rows = [{"id": p["instruction_id"], "gold": p["gold_response"], **s} for p, s in zip(items, scores)]
    return {**mean_rouge(scores), "n": len(rows)}, rows, None


def make_pair(row: dict, samples: list[str], **_options) -> dict | None:
    """chosen = the human summary, rejected = the first model sample (None if it is empty or identical)."""
    sample = samples[0]
    if not sample.strip() or sample.strip() == row["gold_response"].strip():
        return None
    return {
        "prompt": prompt(row),
        "chosen": row["gold_response"],
        "rejected": sample,
        "chosen_source": "human",
    }
