import json
from pathlib import Path

import pytest

from harness.crosscheck import run_lm_eval, run_lm_eval_tasks, task_manager
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


LM_EVAL_DIR = Path(__file__).parent / "data" / "lm_eval"


def test_a_users_lm_eval_task_scores_what_an_independent_forward_gives(tiny_model_dir):
    """tests/data/lm_eval/toy_sums.yaml (multiple choice over local JSONL) through lm-eval's evaluator: its
    accuracy equals the share of items whose right answer has the highest log-prob after the chat-templated
    question, computed here with the model directly; its stderr is the sample one of a mean."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    got = run_lm_eval_tasks(tiny_model_dir, ["toy_sums"], [str(LM_EVAL_DIR)], dtype="float32")["tasks"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    docs = [json.loads(line) for line in (LM_EVAL_DIR / "toy_sums.jsonl").read_text().splitlines()]
    right = []
    for d in docs:
        messages = [{"role": "user", "content": f"What is {d['a']} + {d['b']}? Answer:"}]
        context = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        scores = []
        for choice in d["choices"]:
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        right.append(float(max(range(len(scores)), key=scores.__getitem__) == d["answer"]))
    acc = sum(right) / len(right)
    stderr = (sum((x - acc) ** 2 for x in right) / (len(right) - 1) / len(right)) ** 0.5
    assert got["toy_sums"]["metric"] == "acc" and got["toy_sums"]["n"] == len(docs) == 8
    assert got["toy_sums"]["value"] == pytest.approx(acc) and got["toy_sums"]["stderr"] == pytest.approx(
        stderr
    )


def test_an_unknown_lm_eval_task_or_include_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"--lm-eval-include .*nowhere: no such folder"):
        task_manager([str(tmp_path / "nowhere")], ["toy_sums"])
    with pytest.raises(ValueError, match=r"unknown lm-eval task\(s\) toy_sumz \(not in lm-eval nor in "):
        task_manager([str(LM_EVAL_DIR)], ["toy_sumz"])


def test_a_checkpoint_without_a_chat_template_is_refused_before_lm_eval_runs(tiny_model_dir, tmp_path):
    """lm-eval applies the chat template; a base checkpoint without one would be prompted with other text than
    the harness's plain Question/Answer format, so the cross-check refuses it, naming why."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="has no chat template"):
        run_lm_eval(str(tmp_path / "base"), ["gsm8k"], 1)
