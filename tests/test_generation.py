import pytest
from transformers import AutoTokenizer

from harness.generation import HFGenerator, Sampling, chat_prompts, make_generator
from tasks import gsm8k

QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def test_hf_backend_greedy_on_the_default_model(default_model_path):
    gen = HFGenerator(default_model_path, dtype="float32", batch_size=2)
    tok = AutoTokenizer.from_pretrained(default_model_path)
    prompts = chat_prompts(
        tok, [QUESTION, gsm8k.prompt("Ann has 2 cats and 3 dogs. How many pets?"), QUESTION]
    )
    out = gen.generate(prompts, Sampling(max_tokens=16))
    assert out[0][0].text == "2 + 3 = 5" and out[0][0].finished
    assert tok.decode(out[0][0].token_ids) == "2 + 3 = 5"
    assert out[2][0] == out[0][0]  # batched with a longer, left-padded prompt: same greedy answer
    assert len(out[1][0].token_ids) == 16 and not out[1][0].finished  # cut at max_tokens
    answer_tokens = len(tok("2 + 3 = 5", add_special_tokens=False)["input_ids"])
    assert gen.stats["tokens"] == 2 * (answer_tokens + 1) + 16  # answer + end of turn, twice; 16 cut tokens


def test_sampling_n_returns_n_different_completions(default_model_path):
    gen = HFGenerator(default_model_path, dtype="float32")
    tok = AutoTokenizer.from_pretrained(default_model_path)
    [out] = gen.generate(
        chat_prompts(tok, [[{"role": "user", "content": "Name an animal."}]]),
        Sampling(max_tokens=12, temperature=1.0, n=4, seed=1),
    )
    assert len(out) == 4 and len({c.text for c in out}) > 1


def test_unknown_backend_is_an_error(default_model_path):
    with pytest.raises(ValueError, match="valid: auto, vllm, hf"):
        make_generator(default_model_path, "tgi")


GROUPS_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
from harness.generation import Sampling, chat_prompts, make_generator
from tasks import gsm8k
path, backend = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
questions = [r["question"] for r in gsm8k.load("test")[:9]]
prompts = chat_prompts(tok, [gsm8k.prompt(q) for q in questions])
# three groups of different length caps and samplings, generated together and split back
groups = [
    (prompts[:3], Sampling(max_tokens=8)),
    (prompts[3:6], Sampling(max_tokens=24)),
    (prompts[6:], Sampling(max_tokens=16, temperature=1.0, seed=3)),
]
gen = make_generator(path, backend, "float32")
together = gen.generate_groups(groups)
apart = [gen.generate(p, s) for p, s in groups]
# per call: per group, per prompt, its one completion
print(json.dumps([[[[o[0].text, o[0].token_ids] for o in g] for g in r] for r in (together, apart)]))
"""


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_generate_groups_gives_each_group_what_its_own_call_gives(backend, default_model_path):
    """One engine call for groups of different length caps and samplings: each prompt's greedy completion is
    the one its group's own call gives, in the group's order and within its cap (HF: seeded per group, so
    its sampled group is the same too)."""
    import json
    import subprocess
    import sys

    if backend == "vllm":
        pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    proc = subprocess.run(
        [sys.executable, "-c", GROUPS_SCRIPT, default_model_path, backend], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    together, apart = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [len(g) for g in together] == [3, 3, 3]
    assert together[:2] == apart[:2]  # greedy, fp32
    assert [max(len(ids) for _, ids in g) for g in together[:2]] == [8, 24]  # each group's own cap
    if backend == "hf":
        assert together[2] == apart[2]
    assert all(len(ids) <= 16 for _, ids in together[2])
