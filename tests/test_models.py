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
