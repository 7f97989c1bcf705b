"""A task added through the registry alone (tasks.TASKS) runs through pair building and evaluation."""

import json
from types import SimpleNamespace

import pytest

import tasks
from harness import pairs
from harness.evaluate import EvalConfig, evaluate
from harness.generation import make_generator
from tasks import base


def _load(split: str, n: int | None = None, offset: int = 0, **_options) -> list[dict]:
    """Numbers generated in code: 100, 200, ... plus the offset option."""
    return [{"id": f"copy-{split}-{i}", "number": str(100 * (i + 1) + offset)} for i in range(n or 3)]


def _prompt(item: dict) -> list[dict]:
    return [{"role": "user", "content": f"Copy the number {item['number']}."}]


def _grade(items: list[dict], outputs: list[str]):
    rows = [
        {"id": it["id"], "gold": it["number"], "correct": it["number"] in out}
        for it, out in zip(items, outputs)
    ]
    correct = sum(r["correct"] for r in rows)
    formatted = [any(c.isdigit() for c in out) for out in outputs]
    return {"accuracy": 100 * correct / len(rows), "correct": correct, "n": len(rows)}, rows, formatted


def _make_pair(item: dict, samples: list[str], **_options) -> dict | None:
    """chosen = the number itself, rejected = the first sample unless it copied the number."""
    if item["number"] in samples[0]:
        return None
    return {
        "prompt": _prompt(item),
        "chosen": item["number"],
        "rejected": samples[0],
        "chosen_source": "gold",
    }


def _pair_report(items: list[dict], samples: list[list[str]], offset: int = 0, **_options) -> dict:
    return {"offset": offset, "samples_per_item": [len(s) for s in samples]}


COPY = SimpleNamespace(
    NAME="copy",
    TITLE="Copy",
    MAX_TOKENS=5,
    EVAL_ITEMS=3,
    PAIR_ITEMS=2,
    PAIR_SAMPLES=None,
    OPTIONS={"offset": (0, "added to every number")},
    METRIC="accuracy",
    METRIC_LABEL="acc %",
    ITEM_SCORE=("correct", 100.0),
    SECTION="Reasoning",
    NOTE="Copy: {n} numbers.",
    FORMAT_LABEL="Copy len / digits %",
    JUDGED=False,
    EXTRAS={},
    LM_EVAL_TASK=None,
    load=_load,
    prompt=_prompt,
    grade=_grade,
    make_pair=_make_pair,
    pair_report=_pair_report,
)


@pytest.fixture
def copy_task(monkeypatch, tmp_path):
    monkeypatch.setitem(tasks.TASKS, "copy", COPY)
    monkeypatch.setenv("SPO_CACHE_DIR", str(tmp_path / "cache"))
    return COPY


class Recording:
    """A generator that keeps what it generated (to check the pairs against the samples)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.backend, self.dtype, self.stats = inner.backend, inner.dtype, inner.stats

    def generate(self, prompts, sampling, desc="generate"):
        out = self.inner.generate(prompts, sampling, desc=desc)
        self.calls.append((sampling, out))
        return out


def _refuse():
    raise AssertionError("generator asked for although the pairs are cached")


def test_protocol_defaults_and_unknown_options(copy_task):
    assert base.resolve_options(copy_task, None) == {"offset": 0}
    assert base.resolve_options(tasks.TASKS["arith"], {"level": 3}) == {
        "level": 3,
        "gold_chosen": False,
        "pair_style": "on-policy",
    }
    with pytest.raises(ValueError, match="unknown option.*level.*valid: offset"):
        base.resolve_options(copy_task, {"level": 1})
    assert base.pair_report(tasks.TASKS["gsm8k"], [], [], {}) == {}  # the hook is optional
    assert pairs.sampling_for("copy", 3, 7).n == 3 and pairs.sampling_for("tldr", 3, 7).n == 1
    assert pairs.sampling_for("copy", 3, 7, max_tokens=2).max_tokens == 2
    assert pairs.sampling_for("copy", 3, 7).max_tokens == 5


def test_toy_task_pairs_through_build(copy_task, tiny_model_dir):
    gens = []

    def generator():
        gens.append(Recording(make_generator(tiny_model_dir, "hf", "float32", seed=0)))
        return gens[-1]

    args = (tiny_model_dir, "copy", 2, 3, 0, "hf")
    rows, report = pairs.build(*args, generator, options={"offset": 1}, dtype="float32")
    sampling, samples = gens[0].calls[0]
    assert (sampling.n, sampling.max_tokens, sampling.temperature) == (3, 5, 1.0)  # PAIR_SAMPLES None: k
    assert [len(s) for s in samples] == [3, 3]
    expected = [
        {
            "id": f"copy-train-{i}",
            "task": "copy",
            "prompt": [{"role": "user", "content": f"Copy the number {num}."}],
            "chosen": num,
            "rejected": s[0].text,
            "chosen_source": "gold",
            # a sample that hit the 5-token cap is marked: it is scored without an end token
            "truncated": [] if s[0].finished else ["rejected"],
        }
        for i, (num, s) in enumerate(zip(["101", "201"], samples))
        if num not in s[0].text
    ]
    assert rows == expected and rows  # the random model does not copy three-digit numbers
    assert list(report) == [
        "task",
        "items",
        "pairs",
        "no_pair",
        "offset",
        "samples_per_item",
        "chosen_from_gold",
        "style",
        "styles",
        "samples_truncated",
        "truncated",
        "truncated_handling",
        "backend",
        "dtype",
        "generation",
    ]
    assert report["pairs"] == len(rows) and report["no_pair"] == 2 - len(rows)
    assert report["samples_truncated"] == sum(not c.finished for s in samples for c in s)
    assert report["truncated"]["rejected"] == sum(r["truncated"] == ["rejected"] for r in rows)
    assert (report["offset"], report["samples_per_item"], report["chosen_from_gold"]) == (
        1,
        [3, 3],
        len(rows),
    )
    # cached: the same options reuse the pairs; other options are another cache entry
    again, cached = pairs.build(*args, _refuse, options={"offset": 1}, dtype="float32")
    assert again == rows and "cached" in cached
    with pytest.raises(AssertionError, match="generator asked for"):
        pairs.build(*args, _refuse, options={"offset": 2}, dtype="float32")
    with pytest.raises(ValueError, match="unknown option"):
        pairs.build(*args, _refuse, options={"level": 2}, dtype="float32")


def test_toy_task_metrics_through_evaluate(copy_task, tiny_model_dir, tmp_path):
    cfg = EvalConfig(
        reference=tiny_model_dir,
        tasks=("copy",),
        sizes={"copy": 3},
        options={"copy": {"offset": 5}},
        kl_prompts=0,
        backend="hf",
        dtype="float32",
        judge="none",
    )
    (result,) = evaluate([tiny_model_dir], [tmp_path / "run"], cfg)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    samples = [json.loads(line) for line in open(tmp_path / "run" / "samples.jsonl")]
    assert [s["task"] for s in samples] == ["copy"] * 3
    assert [s["gold"] for s in samples] == ["105", "205", "305"]  # the option reached load()
    assert [s["prompt"] for s in samples] == [f"Copy the number {n}." for n in (105, 205, 305)]
    outputs = [s["output"] for s in samples]
    correct = [g in o for g, o in zip(["105", "205", "305"], outputs)]
    assert [s["correct"] for s in samples] == correct
    metrics = saved["copy"]
    assert (metrics["accuracy"], metrics["correct"], metrics["n"]) == (
        100 * sum(correct) / 3,
        sum(correct),
        3,
    )
    assert metrics["outputs"]["format_rate"] == 100 * sum(any(c.isdigit() for c in o) for o in outputs) / 3
    # MAX_TOKENS, greedy
    assert metrics["sampling"]["max_tokens"] == 5 and metrics["sampling"]["temperature"] == 0.0
    assert "judge" not in metrics and result["copy"]["n"] == 3


def test_another_pair_style_reuses_the_cached_samples(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPO_CACHE_DIR", str(tmp_path / "cache"))
    args = (tiny_model_dir, "arith", 3, 2, 0, "hf")
    on_policy, _ = pairs.build(
        *args, lambda: make_generator(tiny_model_dir, "hf", "float32"), 8, {"level": 1}, "float32"
    )
    edit, report = pairs.build(*args, _refuse, 8, {"level": 1, "pair_style": "edit"}, "float32")
    # the random model is never right: no on-policy pair; every edit pair has the gold as chosen
    assert on_policy == [] and len(edit) == 3 and "cached" in report
    assert report["styles"]["edit"]["chosen_source"] == {"sample": 0, "gold": 3}
    assert [p["chosen"] for p in edit] == [
        it["answer"] for it in tasks.TASKS["arith"].load("train", 3, level=1)
    ]
