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
