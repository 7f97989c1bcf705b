"""The contract every task module implements (after openai/simple-evals' small `types.py`).

A task is a module; `tasks.TASKS` maps each module's NAME to it, and harness/ reaches a task only
through these attributes, so a new benchmark is one module plus one registry entry.
"""

from __future__ import annotations

from typing import Any, Protocol

# make_pair's pair styles (a task's `pair_style` option): both responses sampled and graded, the gold
# solution over a wrong sample, or a correct solution over the same text with one number changed
PAIR_STYLES = ("on-policy", "gold", "edit")
# the style name a task without a `pair_style` option reports its pairs under
DEFAULT_STYLE = "default"
# the OPTIONS entry of a task whose make_pair offers every style
PAIR_STYLE_OPTION = (
    "on-policy",
    "pair style: on-policy (a correct over a wrong sample), gold (the gold solution over a wrong sample), "
    "edit (a correct solution over the same text with one number and the final answer changed)",
    PAIR_STYLES,
)


class Task(Protocol):
    """Module attributes of a task (tasks/gsm8k.py, math.py, arith.py, tldr.py)."""

    NAME: str  # registry key, run-file and flag prefix: "gsm8k"
    TITLE: str  # display name: "GSM8K"
    MAX_TOKENS: int  # generation cap for pair samples and evaluation
    EVAL_ITEMS: int  # default number of test items evaluated
    PAIR_ITEMS: int  # default number of train items sampled for pairs (0: no train split)
    PAIR_SAMPLES: int | None  # samples per train item (None: the caller's k)
    # option → (default, help) or (default, help, choices); load, make_pair and pair_report get every
    # option as a keyword (defaults filled in) and ignore those they do not use. A `pair_style` option
    # (choices from PAIR_STYLES) makes the pairs report cover each style.
    OPTIONS: dict[str, tuple[Any, str] | tuple[Any, str, tuple]]

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
        """A preference pair {prompt, chosen, rejected, chosen_source, ...} from one item's samples, or None.
        Tasks with a `pair_style` option add `style` and `rephrased` (another correct wording of chosen,
        or None)."""
        ...


def pair_report(task, items: list[dict], samples: list[list[str]], options: dict) -> dict:
    """The task's extra pairs-report entries (its optional `pair_report(items, samples, **options)`)."""
    hook = getattr(task, "pair_report", None)
    return hook(items, samples, **options) if hook else {}


def option_spec(task, option: str) -> tuple[Any, str, tuple | None]:
    """(default, help, choices or None) of one of the task's OPTIONS."""
    default, help_text, *choices = task.OPTIONS[option]
    return default, help_text, tuple(choices[0]) if choices else None


def check_option(task, option: str, value) -> None:
    """Refuse a value outside the option's declared choices, naming the valid ones."""
    choices = option_spec(task, option)[2]
    if choices is not None and value not in choices:
        valid = ", ".join(map(str, choices))
        raise ValueError(f"unknown {option} {value!r} for task {task.NAME}; valid: {valid}")


def resolve_options(task, options: dict | None) -> dict:
    """The task's OPTIONS defaults overridden by `options`; an unknown option, or a value outside an
    option's choices, is refused."""
    options = options or {}
    if unknown := sorted(set(options) - set(task.OPTIONS)):
        valid = ", ".join(task.OPTIONS) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for task {task.NAME}; valid: {valid}")
    for option, value in options.items():
        check_option(task, option, value)
    return {k: option_spec(task, k)[0] for k in task.OPTIONS} | options


def pair_styles(task, options: dict) -> dict[str, dict]:
    """style → the (resolved) options that make `task.make_pair` build that style: one entry per choice of
    the task's `pair_style` option, or {DEFAULT_STYLE: options} for a task without one."""
    if "pair_style" not in task.OPTIONS:
        return {DEFAULT_STYLE: options}
    return {style: options | {"pair_style": style} for style in option_spec(task, "pair_style")[2]}


def normalized_edit_distance(a: str, b: str) -> float:
    """Character Levenshtein distance over the longer length: 0 for equal texts (two empty ones too), 1
    for texts with nothing in common."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    # a shared prefix and suffix never change the distance; cutting them keeps small edits cheap
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    a, b = a[head:], b[head:]
    tail = 0
    while tail < min(len(a), len(b)) and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    a, b = a[: len(a) - tail], b[: len(b) - tail]
    return _levenshtein(a, b) / longest


def _levenshtein(a: str, b: str) -> int:
    """Edit distance by Myers' bit-parallel DP (in Hyyrö's 2003 form): the DP column over b is kept as
    its +1 and -1 vertical deltas, two Python integers used as bit masks, so each character of a is a few
    integer operations (2k-character texts in milliseconds, where the cell-by-cell DP takes seconds)."""
    if not b:
        return len(a)
    full, top = (1 << len(b)) - 1, 1 << (len(b) - 1)
    match: dict[str, int] = {}  # character → bit mask of its positions in b
    for i, c in enumerate(b):
        match[c] = match.get(c, 0) | 1 << i
    plus, minus, score = full, 0, len(b)  # vertical deltas: all +1 in the first column
    for c in a:
        eq = match.get(c, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        hplus = minus | ~(xh | plus)
        hminus = plus & xh
        if hplus & top:
            score += 1
        elif hminus & top:
            score -= 1
        # the first row's horizontal delta is always +1 (distance to the empty prefix of b)
        hplus = (hplus << 1) | 1
        hminus <<= 1
        plus = (hminus | ~(xv | hplus)) & full
        minus = hplus & xv & full
    return score
