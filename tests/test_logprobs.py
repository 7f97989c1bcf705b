import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.logprobs import (
    DECODE,
    _decode_attention,
    decoding,
    pair_logps,
    score,
    score_pairs,
    score_shared,
    sequence_logps,
    shared_logps,
)
from trainers.tokens import encode


def naive_logps(model, prompt: list[int], completion: list[int]) -> float:
    """One unpadded sequence, full logits, summed log-probs of the completion tokens."""
    ids = torch.tensor([prompt + completion])
    logp = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    return sum(logp[t, targets[t]].item() for t in range(len(prompt) - 1, len(prompt) + len(completion) - 1))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_model_dir
    )


def test_batched_logps_equal_unpadded_full_logits(tiny):
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (2, 9), (11, 1), (7, 7)]  # very different lengths: heavy right padding
    prompts = [torch.randint(3, 1000, (p,), generator=g).tolist() for p, _ in shapes]
    completions = [torch.randint(3, 1000, (c,), generator=g).tolist() for _, c in shapes]
    with torch.no_grad():
        out = sequence_logps(model, prompts, completions)
    expected = [naive_logps(model, p, c) for p, c in zip(prompts, completions)]
    assert out.count.tolist() == [3, 9, 1, 7]
    assert torch.allclose(out.total, torch.tensor(expected), atol=1e-4)
    assert torch.all(out.total < 0)


def test_score_batches_match_one_batch_and_gradients_flow(tiny):
    model, _ = tiny
    prompts, completions = [[5, 6, 7], [8, 9], [10]], [[11, 12], [13], [14, 15, 16]]
    one = score(model, prompts, completions, batch_size=3)
    many = score(model, prompts, completions, batch_size=1)
    assert torch.allclose(one.total, many.total, atol=1e-5)
    weight = model.model.layers[0].self_attn.q_proj.weight
    sequence_logps(model, prompts, completions).total.sum().backward()
    grad, weight.grad = weight.grad.clone(), None
    expected = 0
    for p, c in zip(prompts, completions):  # the same objective, unpadded and with full logits
        ids = torch.tensor([p + c])
        logp = model(ids).logits[0, :-1].log_softmax(-1)
        expected = expected + logp[torch.arange(len(p) - 1, len(p) + len(c) - 1), ids[0, len(p) :]].sum()
    expected.backward()
    assert grad.abs().sum() > 0 and torch.allclose(grad, weight.grad, atol=1e-6)
    model.zero_grad()


def test_encode_uses_chat_template_and_scores_the_end_of_turn(tiny):
    _, tok = tiny
    p, c = encode(tok, [{"role": "user", "content": "Hi"}], "Hello there")
    assert tok.decode(p).endswith("<|im_start|>assistant\n")
    assert c[-1] == tok.eos_token_id and tok.decode(c[:-1]) == "Hello there"


def test_empty_completion_is_an_error(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="empty completion"):
        sequence_logps(model, [[1, 2]], [[]])


def test_pair_logps_share_the_prompt_and_equal_separate_sequences(tiny):
    """Rejected tokens must not see the chosen ones: values and gradients equal two separate sequences."""
    model, _ = tiny
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 3, 4), (2, 7, 1), (9, 1, 6)]
    prompts, chosen, rejected = (
        [torch.randint(3, 1000, (s[j],), generator=g).tolist() for s in shapes] for j in range(3)
    )
    pc, pr = pair_logps(model, prompts, chosen, rejected)
    alone = sequence_logps(model, prompts + prompts, chosen + rejected)
    assert torch.cat([pc.count, pr.count]).tolist() == [3, 7, 1, 4, 1, 6]
    assert torch.allclose(torch.cat([pc.total, pr.total]), alone.total, atol=1e-5)
    weight = model.model.layers[1].mlp.up_proj.weight
    (pc.total - 2 * pr.total).sum().backward()
    grad, weight.grad = weight.grad.clone(), None
    (alone.total[:3] - 2 * alone.total[3:]).sum().backward()
    assert grad.abs().sum() > 0 and torch.allclose(grad, weight.grad, atol=1e-6)
    model.zero_grad()
    c2 = [[t + 1 for t in c] for c in chosen]  # other chosen tokens leave the rejected log-probs alone
    assert torch.equal(pair_logps(model, prompts, c2, rejected)[1].total.detach(), pr.total.detach())
    sc, sr = score_pairs(model, prompts, chosen, rejected, batch_size=2)
    assert torch.allclose(sc.total, pc.total.detach(), atol=1e-5) and torch.allclose(
        sr.total, pr.total.detach(), atol=1e-5
    )


def test_shared_logps_equal_separate_sequences_with_gaps(tiny_model_dir):
    """Three completion lists over three prompts, with gaps (None) and a prompt that has none: each log-prob
    equals its sequence scored alone, NaN where there is none, gradients included; packed and padded alike."""
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 1000, (n,), generator=g).tolist() for n in (4, 7, 2)]

    def draw(n):
        return torch.randint(3, 1000, (n,), generator=g).tolist()

    lists = ([draw(3), None, draw(5)], [draw(1), None, None], [draw(6), None, draw(2)])
    present = [(j, i) for j in range(3) for i in range(3) if lists[j][i] is not None]
    for attention in ("sdpa", "eager"):  # eager cannot pack: one padded sequence per completion
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention).eval()
        out = shared_logps(model, prompts, *lists)
        alone = sequence_logps(model, [prompts[i] for _, i in present], [lists[j][i] for j, i in present])
        got = torch.stack([out[j].total[i] for j, i in present])
        assert torch.allclose(got, alone.total, atol=1e-5)
        assert [out[j].count[i].item() for j, i in present] == [3, 5, 1, 6, 2]
        assert torch.isnan(torch.stack([out[j].total[1] for j in range(3)])).all()
        assert torch.isnan(out[1].total[2]) and torch.isnan(out[1].count[2])
        weight = model.model.layers[0].mlp.down_proj.weight
        got.sum().backward()
        grad, weight.grad = weight.grad.clone(), None
        alone.total.sum().backward()
        assert grad.abs().sum() > 0 and torch.allclose(grad, weight.grad, atol=1e-6)
        batched = score_shared(model, prompts, *lists, batch_size=2)
        assert all(
            torch.allclose(a.total, b.total.detach(), atol=1e-5, equal_nan=True) for a, b in zip(batched, out)
        )
    with pytest.raises(ValueError, match="empty completion"):
        shared_logps(model, prompts, [[], None, None])
    with pytest.raises(ValueError, match="one entry per prompt"):
        shared_logps(model, prompts, [[5], [6]])


def test_pair_logps_fall_back_to_two_sequences_where_the_mask_cannot_be_used(tiny_model_dir):
    """Models that cannot pack (here: eager attention) are scored as two padded sequences per pair, with the
    same result."""
    from trainers.logprobs import packable

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    assert packable(sdpa) and not packable(eager)
    prompts, chosen, rejected = [[5, 6, 7], [8, 9]], [[11, 12], [13, 14, 15]], [[16], [17, 18]]
    with torch.no_grad():
        a, b = pair_logps(sdpa, prompts, chosen, rejected), pair_logps(eager, prompts, chosen, rejected)
    assert torch.allclose(a[0].total, b[0].total, atol=1e-5) and torch.allclose(
        a[1].total, b[1].total, atol=1e-5
    )


def test_packed_rows_carry_no_padding_and_equal_padded_rows_in_values_and_gradients(tiny_model_dir):
    """Sequences of very different lengths go through the model as one row of exactly their tokens; log-probs
    and gradients equal the right-padded batch (eager attention cannot pack), and the model's attention is
    restored."""
    from trainers.logprobs import packable

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    padded = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    g = torch.Generator().manual_seed(2)
    shapes = [(30, 2), (3, 4), (12, 25), (1, 1)]
    prompts = [torch.randint(3, 1000, (p,), generator=g).tolist() for p, _ in shapes]
    completions = [torch.randint(3, 1000, (c,), generator=g).tolist() for _, c in shapes]
    seen = []
    sdpa.model.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((kwargs["input_ids"], kwargs["position_ids"])),
        with_kwargs=True,
    )
    a, b = sequence_logps(sdpa, prompts, completions), sequence_logps(padded, prompts, completions)
    assert len(seen) == 1 and packable(sdpa) and not packable(padded)
    # exactly the tokens, no pads
    assert seen[0][0].tolist() == [[t for p, c in zip(prompts, completions) for t in p + c]]
    # each sequence counts its positions from 0
    assert seen[0][1].tolist() == [[i for p, c in shapes for i in range(p + c)]]
    assert sdpa.config._attn_implementation == "sdpa"
    assert torch.allclose(a.total, b.total, atol=1e-5) and torch.equal(a.count, b.count)
    (a.total * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
    (b.total * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
    for name in (
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.embed_tokens.weight",
    ):
        ga, gb = sdpa.get_parameter(name).grad, padded.get_parameter(name).grad
        assert ga.abs().sum() > 0 and torch.allclose(ga, gb, atol=1e-6), name


def test_packed_pairs_on_the_default_model_equal_each_sequence_scored_alone(default_model_path):
    """The real model (grouped-query attention, 30 layers): chosen and rejected log-probs of pairs packed in
    one row equal each prompt+completion run alone through the plain model, with full logits."""
    model = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(default_model_path)
    rows = [
        ("What is 7 times 8?", "7 times 8 is 56. #### 56", "It is 54. #### 54"),
        (
            "Tom has 3 apples and buys 12 more. How many apples does he have now?",
            "3 + 12 = 15. #### 15",
            "He has 13. #### 13",
        ),
        (
            "Name a prime number.",
            "Seven is prime, because it has no divisors other than one and itself. #### 7",
            "9 #### 9",
        ),
    ]
    enc = [
        (encode(tok, [{"role": "user", "content": q}], c), encode(tok, [{"role": "user", "content": q}], r))
        for q, c, r in rows
    ]
    prompts, chosen, rejected = [e[0][0] for e in enc], [e[0][1] for e in enc], [e[1][1] for e in enc]
    with torch.no_grad():
        pc, pr = pair_logps(model, prompts, chosen, rejected)
        expected = [naive_logps(model, p, c) for p, c in zip(prompts + prompts, chosen + rejected)]
    assert torch.allclose(torch.cat([pc.total, pr.total]), torch.tensor(expected), rtol=1e-5, atol=1e-4)


TINY = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_every_packable_family_packs_to_the_padded_result(family):
    """Each family `packable` admits gives the padded (eager) log-probs when packed; the same families with a
    sliding window, a family outside the list, and gradient checkpointing are not packed."""
    from transformers import AutoConfig, GPT2Config

    from trainers.logprobs import packable

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, **TINY, **({"sliding_window": None} if family == "mistral" else {}))
    sdpa = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    # from_config sets the config it gets
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    prompts, chosen, rejected = [[5, 6, 7, 8], [9]], [[11, 12], [13, 14, 15, 16, 17]], [[18, 19, 20], [21]]
    assert packable(sdpa) and not packable(eager)
    with torch.no_grad():
        a, b = pair_logps(sdpa, prompts, chosen, rejected), pair_logps(eager, prompts, chosen, rejected)
    assert torch.allclose(a[0].total, b[0].total, atol=1e-5) and torch.allclose(
        a[1].total, b[1].total, atol=1e-5
    )
    windowed = {
        "mistral": {"sliding_window": 8},
        "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0},
    }
    if family in windowed:
        assert not packable(
            AutoModelForCausalLM.from_config(
                AutoConfig.for_model(family, **TINY, **windowed[family]), attn_implementation="sdpa"
            )
        )
    sdpa.gradient_checkpointing_enable()
    assert not packable(sdpa)
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4), attn_implementation="sdpa"
    )
    assert not packable(gpt2)


def test_the_attention_setting_is_restored_when_the_forward_fails(tiny):
    model, _ = tiny
    with pytest.raises(IndexError):
        sequence_logps(model, [[5, 6]], [[10**6]])  # a token id outside the vocabulary
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="empty prompt"):
        pair_logps(model, [[]], [[5]], [[6]])


def _sdpa_reference(query, key, value, mask):
    """torch's SDPA in fp64 on the same inputs, key/value heads repeated for grouped-query attention."""
    groups = query.shape[1] // key.shape[1]
    k, v = (x.double().repeat_interleave(groups, 1) for x in (key, value))
    return F.scaled_dot_product_attention(query.double(), k, v, attn_mask=mask).transpose(1, 2)


def test_decode_attention_equals_sdpa_at_a_decode_step_and_is_sdpa_elsewhere():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    # 2 rows, 6 query heads over 2 key/value heads, 7 cached positions; row 1 left-padded by 3
    query = torch.randn(2, 6, 1, 8, generator=g)
    key, value = torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., :3] = False
    out, _ = _decode_attention(module, query, key, value, mask, scaling=8**-0.5)
    expected = _sdpa_reference(query, key, value, mask)
    assert out.shape == (2, 1, 6, 8) and torch.allclose(out.double(), expected, atol=1e-6)
    # the masked positions take no part: changing them changes nothing
    key[1, :, :3], value[1, :, :3] = 100.0, -100.0
    assert torch.equal(_decode_attention(module, query, key, value, mask, scaling=8**-0.5)[0], out)
    # bf16 inputs: the fp32 products rounded once, to bf16
    half = [x.bfloat16() for x in (query, key, value)]
    out16 = _decode_attention(module, *half, mask, scaling=8**-0.5)[0]
    assert out16.dtype == torch.bfloat16
    assert torch.allclose(out16.double(), _sdpa_reference(*half, mask), rtol=2**-8, atol=1e-6)
    # several new tokens per row (a prompt): SDPA itself
    prompt = torch.randn(2, 6, 7, 8, generator=g)
    assert torch.equal(
        _decode_attention(module, prompt, key, value, None)[0],
        sdpa_attention_forward(module, prompt, key, value, None)[0],
    )


def test_greedy_decoding_on_the_default_model_is_unchanged_in_fp32(default_model_path):
    """The real model (grouped-query attention, 30 layers, left-padded batch): `decoding` generates the same
    greedy tokens as SDPA does, and restores the model's attention."""
    model = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(default_model_path, padding_side="left")
    questions = ["What is 17 + 25?", "Name three primes.", "Summarise: the cat sat on the mat all day."]
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = dict(max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        plain = model.generate(**enc, **kwargs)
        with decoding(model):
            assert model.config._attn_implementation == DECODE
            direct = model.generate(**enc, **kwargs)
    assert model.config._attn_implementation == "sdpa"
    assert enc.attention_mask[:, 0].tolist().count(0) >= 1  # the batch is left-padded
    assert torch.equal(direct, plain)


def test_scores_include_the_models_own_logit_post_processing(default_model_path, tmp_path):
    """A tiny Gemma-2 with final-logit soft-capping 0.5: the scores are log_softmax of the model's own
    forward, soft-capping included (the base model's hidden states through the LM head alone gave −64.5661
    for −64.5744 on the first sequence); several sequences padded together, with gradients."""
    from families import build

    path = build("gemma2", default_model_path, tmp_path / "gemma2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    chats = [[{"role": "user", "content": "What is 2+3?"}], [{"role": "user", "content": "Hi"}]]
    encoded = [encode(tok, c, r) for c, r in zip(chats, ("It is 5.", "Hello there, how are you?"))]
    got = sequence_logps(model, [x for x, _ in encoded], [c for _, c in encoded])
    for (x, c), total in zip(encoded, got.total):
        assert total.item() == pytest.approx(naive_logps(model, x, c), abs=1e-5 * len(c))
    got.total.sum().backward()
    assert model.get_output_embeddings().weight.grad is not None
    model.config.final_logit_softcapping = None  # the soft-capping is what the scores follow
    assert sequence_logps(model, [encoded[0][0]], [encoded[0][1]]).total.item() != pytest.approx(
        got.total[0].item(), abs=1e-3
    )
