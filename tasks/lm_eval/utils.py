"""lm-evaluation-harness hooks for the spo_* tasks: the data, prompts and scoring of tasks/*, so that a
cross-check against harness.evaluate differs only in the generation engine."""

from __future__ import annotations

from datasets import Dataset, DatasetDict

# the project must be installed (pip install -e .) in lm-eval's environment
from tasks import gsm8k, math, tldr


def _test_split(rows: list[dict]) -> DatasetDict:
    return DatasetDict({"test": Dataset.from_list(rows)})


# custom_dataset hooks: lm-eval passes the task metadata and model args as keywords, which we do not need.
# Rows come through tasks.data.resolve ($SPO_DATA_DIR, ../shared/data, then the hub), as in our own evaluator.
def gsm8k_dataset(**_) -> DatasetDict:
    return _test_split(gsm8k.load("test"))


def math500_dataset(**_) -> DatasetDict:
    return _test_split(math.load("test"))


def tldr_dataset(**_) -> DatasetDict:
    return _test_split(tldr.split(tldr.load())[0])  # the evaluation posts only, never the pair-building ones


# doc_to_text: the single user message of our prompt; lm-eval's --apply_chat_template wraps it as we do
def gsm8k_text(doc: dict) -> str:
    return gsm8k.prompt(doc["question"])[0]["content"]


def math500_text(doc: dict) -> str:
    return math.prompt(doc["problem"])[0]["content"]


def tldr_text(doc: dict) -> str:
    return tldr.prompt(doc)[0]["content"]


def gsm8k_target(doc: dict) -> str:
    return gsm8k.gold_answer(doc["answer"])


# process_results: one generation per doc; accuracy in % and ROUGE ×100, the units of harness.evaluate
def gsm8k_results(doc: dict, results: list[str]) -> dict:
    return {"accuracy": 100.0 * gsm8k.is_correct(results[0], gsm8k.gold_answer(doc["answer"]))}


def math500_results(doc: dict, results: list[str]) -> dict:
    return {"accuracy": 100.0 * math.is_correct(results[0], doc["answer"])}


def tldr_results(doc: dict, results: list[str]) -> dict:
    return tldr.rouge([results[0]], [doc["gold_response"]])
