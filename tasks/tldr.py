"""Reddit TL;DR: loading, prompt, train/eval split and ROUGE against the human summary."""
from __future__ import annotations

from rouge_score import rouge_scorer

from common import read_jsonl
from tasks.data import resolve

EVAL_POSTS = 200  # the first posts are for evaluation only; pairs come from the rest, never overlapping


def load() -> list[dict]:
    return read_jsonl(resolve("tldr", "dove_tldr_test.jsonl"))


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(eval posts, train posts), disjoint by construction."""
    return rows[:EVAL_POSTS], rows[EVAL_POSTS:]


def prompt(row: dict) -> list[dict]:
    text = f"SUBREDDIT: r/{row['subreddit']}\nTITLE: {row['title']}\nPOST: {row['instruction']}\n\nWrite a one-sentence TL;DR of the post."
    return [{"role": "user", "content": text}]


ROUGE = ("rouge1", "rouge2", "rougeL")


def rouge_each(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """ROUGE-1/2/L F-measure ×100 per prediction (rouge-score, Porter stemming)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=True)
    return [{k: 100 * v.fmeasure for k, v in scorer.score(ref, pred).items()} for pred, ref in zip(predictions, references, strict=True)]


def mean_rouge(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(s[k] for s in scores) / len(scores) for k in ROUGE}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure ×100."""
    return mean_rouge(rouge_each(predictions, references))


def make_pair(row: dict, sample: str) -> dict | None:
    """chosen = the human summary, rejected = a model sample (None if the sample is empty or identical)."""
    if not sample.strip() or sample.strip() == row["gold_response"].strip():
        return None
    return {"prompt": prompt(row), "chosen": row["gold_response"], "rejected": sample, "chosen_source": "human"}
