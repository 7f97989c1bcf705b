import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from harness.generation import HFGenerator, Sampling, chat_prompts, make_generator
from tasks import gsm8k

QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def test_hf_backend_greedy_on_the_default_model(default_model_path):
    gen = HFGenerator(default_model_path, dtype="float32", batch_size=2)
    tok = AutoTokenizer.from_pretrained(default_model_path)
    prompts = chat_prompts(tok, [QUESTION, gsm8k.prompt("Ann has 2 cats and 3 dogs. How many pets?"), QUESTION])
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
    [out] = gen.generate(chat_prompts(tok, [[{"role": "user", "content": "Name an animal."}]]), Sampling(max_tokens=12, temperature=1.0, n=4, seed=1))
    assert len(out) == 4 and len({c.text for c in out}) > 1


def test_unknown_backend_is_an_error(default_model_path):
    with pytest.raises(ValueError, match="valid: auto, vllm, hf"):
        make_generator(default_model_path, "tgi")


VLLM_VS_HF = """
import json, sys
from transformers import AutoTokenizer
from harness.generation import Sampling, chat_prompts, make_generator
from tasks import gsm8k
if __name__ == "__main__":
    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(path)
    prompts = chat_prompts(tok, [gsm8k.prompt(q["question"]) for q in gsm8k.load("test")[:4]])
    out = {b: [o[0].token_ids for o in make_generator(path, b, dtype="float32").generate(prompts, Sampling(max_tokens=48))] for b in ("hf", "vllm")}
    print(json.dumps(out))
"""


def test_vllm_and_hf_greedy_agree_in_fp32(default_model_path, tmp_path):
    pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    script = tmp_path / "cmp.py"
    script.write_text(VLLM_VS_HF)  # own process: one vLLM engine per process
    proc = subprocess.run([sys.executable, str(script), default_model_path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hf"] == out["vllm"] and all(len(t) > 5 for t in out["hf"])
