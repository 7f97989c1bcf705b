import pytest

from harness.crosscheck import run_lm_eval
from tasks import gsm8k, math, tldr


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir):
    return run_lm_eval(
        tiny_model_dir, ["gsm8k", "math", "tldr"], limit=2, batch_size=2, dtype="float32", log_samples=True
    )


def test_runs_and_reports_metrics(tiny_run):
    assert tiny_run["lm_eval_version"] >= "0.4"
    for task, metrics in (
        ("gsm8k", {"accuracy"}),
        ("math", {"accuracy"}),
        ("tldr", {"rouge1", "rouge2", "rougeL"}),
    ):
        assert tiny_run[task]["n"] == 2 and len(tiny_run[task]["samples"]) == 2
        assert metrics | {m + "_stderr" for m in metrics} <= set(tiny_run[task])
        for m in metrics:
            assert 0.0 <= tiny_run[task][m] <= 100.0


def test_scores_are_ours(tiny_run):
    # lm-eval's per-item numbers are our scorers applied to its generations
    for s, row in zip(tiny_run["gsm8k"]["samples"], gsm8k.load("test")):
        assert s["accuracy"] == 100.0 * gsm8k.is_correct(s["output"], gsm8k.gold_answer(row["answer"]))
    for s, row in zip(tiny_run["math"]["samples"], math.load()):
        assert s["accuracy"] == 100.0 * math.is_correct(s["output"], row["answer"])
    for s, row in zip(tiny_run["tldr"]["samples"], tldr.split(tldr.load())[0]):
        assert s["rougeL"] == pytest.approx(tldr.rouge([s["output"]], [row["gold_response"]])["rougeL"])


def test_prompts_equal_our_chat_templated_prompts(tiny_run, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    q = gsm8k.load("test")[0]["question"]
    assert tiny_run["gsm8k"]["samples"][0]["prompt"] == tok.apply_chat_template(
        gsm8k.prompt(q), add_generation_prompt=True, tokenize=False
    )
    problem = math.load()[0]["problem"]
    assert tiny_run["math"]["samples"][0]["prompt"] == tok.apply_chat_template(
        math.prompt(problem), add_generation_prompt=True, tokenize=False
    )
    post = tldr.load()[0]
    assert tiny_run["tldr"]["samples"][0]["prompt"] == tok.apply_chat_template(
        tldr.prompt(post), add_generation_prompt=True, tokenize=False
    )


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        run_lm_eval("unused", ["gsm8k", "mmlu"], limit=1)
