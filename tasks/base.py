"""The contract every task module implements (after openai/simple-evals' small `types.py`).

A task is a module; `tasks.TASKS` maps each module's NAME to it, and harness/ reaches a task only
through these attributes, so a new benchmark is one module plus one registry entry.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    """Module attributes of a task (tasks/gsm8k.py, math.py, arith.py, tldr.py)."""

    NAME: str  # registry key, run-file and flag prefix: "gsm8k"
    TITLE: str  # display name: "GSM8K"
    MAX_TOKENS: int  # generation cap for pair samples and evaluation
    EVAL_ITEMS: int  # default number of test items evaluated
    PAIR_ITEMS: int  # default number of train items sampled for pairs (0: no train split)
    PAIR_SAMPLES: int | None  # samples per train item (None: the caller's k)
    # option → (default, help); load, make_pair and pair_report get every option as a keyword
    # (defaults filled in) and ignore those they do not use
    OPTIONS: dict[str, tuple[Any, str]]

    # presentation (harness.leaderboard, figures, report)
    METRIC: str  # headline metric key of grade's metrics; "accuracy" marks an accuracy task (Reasoning table)
    METRIC_LABEL: str  # its name in tables and figures after TITLE: "acc %", "ROUGE-L"
    ITEM_SCORE: tuple[str, float]  # per-item field of grade's rows and its scale to the metric's units
    SECTION: str  # leaderboard section: "Reasoning" (accuracy tasks share its table) or the task's own
    NOTE: str  # leaderboard note; format fields: {n} (items evaluated) and the EXTRAS keys
    FORMAT_LABEL: str | None  # shift-table column "len / format %"; None: no answer format (distinct-2 shown)
    # outputs judged against grade's `gold` (win rates; the leaderboard shows the first such task)
    JUDGED: bool
    EXTRAS: dict[str, str]  # further metric keys → label, kept in leaderboard rows as <NAME>_<key>
    LM_EVAL_TASK: str | None  # the same data, prompt and scoring as an lm-eval task (tasks/lm_eval/), or None

    def load(self, split: str, n: int | None = None, **options) -> list[dict]:
        """The first n items of a split ("train" or "test"; n None: all)."""
        ...

    def prompt(self, item: dict) -> list[dict]:
        """Chat messages for one item."""
        ...

    def grade(self, items: list[dict], outputs: list[str]) -> tuple[dict, list[dict], list[bool] | None]:
        """(metrics, one row per item with at least `id` and `gold`, answer-format flags or None)."""
        ...

    def make_pair(self, item: dict, samples: list[str], **options) -> dict | None:
        """A preference pair {prompt, chosen, rejected, chosen_source} from one item's samples, or None."""
        ...


def pair_report(task, items: list[dict], samples: list[list[str]], options: dict) -> dict:
    """The task's extra pairs-report entries (its optional `pair_report(items, samples, **options)`)."""
    hook = getattr(task, "pair_report", None)
    return hook(items, samples, **options) if hook else {}


def resolve_options(task, options: dict | None) -> dict:
    """The task's OPTIONS defaults overridden by `options`; an unknown option is refused."""
    options = options or {}
    if unknown := sorted(set(options) - set(task.OPTIONS)):
        valid = ", ".join(task.OPTIONS) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for task {task.NAME}; valid: {valid}")
    return {k: default for k, (default, _) in task.OPTIONS.items()} | options
