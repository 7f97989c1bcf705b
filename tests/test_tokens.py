"""trainers.tokens: one prompt encoding, every end id, generation that leaves the distribution alone."""

import json

import pytest
import torch
from families import ENDOFTEXT, IM_END, REPO, tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from trainers.tokens import (
    NEUTRAL_GENERATION,
    encode,
    end_id,
    end_of_turn,
    generate_kwargs,
    prompt_ids,
    split_at_stop,
    stop_ids,
)

CHAT = [{"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(scope="module")
def bos_tok(default_model_path):
    """The default tokenizer made to add a BOS (<|endoftext|>) as Llama-3, Mistral and Gemma tokenizers do,
    with a chat template that writes it too, and <|endoftext|> as its EOS (a base checkpoint's)."""
    return tokenizer(default_model_path, bos=True, eos=ENDOFTEXT)


def test_a_bos_adding_tokenizer_gets_exactly_one_bos(bos_tok, default_model_path):
    plain = bos_tok("What is 2+3?", add_special_tokens=False)["input_ids"]
    # a plain text: the tokenizer's BOS once, its text after; already starting with BOS: none added
    assert prompt_ids(bos_tok, "What is 2+3?") == [ENDOFTEXT, *plain]
    assert prompt_ids(bos_tok, "<|endoftext|>What is 2+3?") == [ENDOFTEXT, *plain]
    # a chat prompt: the template writes BOS, tokenizing it must not add a second (vLLM given the text would)
    ids = prompt_ids(bos_tok, CHAT)
    assert ids[0] == ENDOFTEXT and ids.count(ENDOFTEXT) == 1
    assert bos_tok(bos_tok.decode(ids))["input_ids"][:2] == [ENDOFTEXT, ENDOFTEXT]  # what text would give
    # the default tokenizer adds nothing, and its ids are the template's text tokenised
    default = tokenizer(default_model_path, bos=False, eos=IM_END)
    text = default.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert prompt_ids(default, CHAT) == default(text, add_special_tokens=False)["input_ids"]
    assert prompt_ids(default, "hi") == default("hi")["input_ids"]


def test_a_response_ends_with_the_templates_end_of_turn_and_a_cut_one_with_nothing(bos_tok):
    # the base tokenizer's EOS is <|endoftext|>, but a chat turn ends with <|im_end|>
    assert bos_tok.eos_token_id == ENDOFTEXT and end_of_turn(bos_tok) == IM_END
    x, c = encode(bos_tok, CHAT, "5")
    assert x == prompt_ids(bos_tok, CHAT) and c == [
        *bos_tok("5", add_special_tokens=False)["input_ids"],
        IM_END,
    ]
    # after a plain text prompt, the tokenizer's EOS; a truncated response gets no end id at all
    assert end_id(bos_tok, "What is 2+3?") == ENDOFTEXT
    assert encode(bos_tok, "What is 2+3?", "5")[1][-1] == ENDOFTEXT
    assert (
        encode(bos_tok, CHAT, "5", truncated=True)[1] == bos_tok("5", add_special_tokens=False)["input_ids"]
    )


def test_without_a_generation_config_the_end_ids_of_config_json_count(tiny_model_dir, tmp_path):
    import shutil

    from trainers.tokens import generation_config_of

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / "generation_config.json").unlink()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["eos_token_id"] = [IM_END, REPO]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert generation_config_of(str(tmp_path / "m")).eos_token_id == [IM_END, REPO]


def test_stop_ids_collect_every_declared_end_id(bos_tok):
    assert stop_ids(bos_tok) == (ENDOFTEXT, IM_END)
    assert stop_ids(bos_tok, GenerationConfig(eos_token_id=[ENDOFTEXT, REPO, IM_END])) == (
        ENDOFTEXT,
        IM_END,
        REPO,
    )
    assert stop_ids(bos_tok, GenerationConfig(eos_token_id=REPO)) == (ENDOFTEXT, IM_END, REPO)
    # the first stop id ends a sample; what follows is padding
    assert split_at_stop([5, 6, REPO, IM_END, IM_END], (IM_END, REPO)) == ([5, 6], REPO)
    assert split_at_stop([5, 6, 7], (IM_END,)) == ([5, 6, 7], None)


def test_neutral_generation_covers_every_logits_processor_a_checkpoint_can_set(tiny_model_dir):
    """Every generation_config field that `generate` turns into a logits processor or warper is set by
    `generate_kwargs`: the processors a config full of non-default values would add are all gone."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.3,
        top_k=5,
        top_p=0.5,
        min_p=0.2,
        typical_p=0.9,
        epsilon_cutoff=1e-3,
        eta_cutoff=1e-3,
        top_h=0.5,
        repetition_penalty=1.5,
        encoder_repetition_penalty=1.2,
        no_repeat_ngram_size=2,
        bad_words_ids=[[5]],
        sequence_bias={(7,): -1.0},
        suppress_tokens=[8],
        begin_suppress_tokens=[9],
        forced_bos_token_id=10,
        forced_eos_token_id=11,
        exponential_decay_length_penalty=(2, 1.5),
        min_length=3,
        min_new_tokens=2,
        eos_token_id=IM_END,
    )
    for greedy in (True, False):
        kwargs = generate_kwargs(tok, (IM_END,), 0, 8, temperature=0.0 if greedy else 1.0)
        config, _ = model._prepare_generation_config(None, **kwargs)
        processors = model._get_logits_processor(
            config, input_ids_seq_length=4, encoder_input_ids=torch.zeros(1, 4, dtype=torch.long)
        )
        assert list(processors) == [], [type(p).__name__ for p in processors]
        assert config.do_sample is not greedy and config.num_beams == 1
    assert set(NEUTRAL_GENERATION) <= set(GenerationConfig().to_dict())


def test_a_checkpoint_without_a_chat_template_gets_plain_question_answer_text(default_model_path):
    """A base checkpoint (no chat template): a chat prompt becomes "Question: …\nAnswer:" text with the
    tokenizer's BOS, a response after it starts with a space and ends with "\nQuestion:", and a sample ends
    where the model starts another question or answer line (the tokens up to the one that completed the
    string are kept, the text stops before it, and padding after it is no stop id even where the pad is
    one)."""
    from trainers.tokens import PLAIN_STOPS, cut_at_string, end_sample, stop_strings

    base = tokenizer(default_model_path, bos=True, eos=ENDOFTEXT, chat=False)
    text = "Question: What is 2+3?\nAnswer:"
    assert (
        prompt_ids(base, CHAT)
        == prompt_ids(base, text)
        == [ENDOFTEXT, *base(text, add_special_tokens=False)["input_ids"]]
    )
    assert end_of_turn(base) == ENDOFTEXT and stop_strings(base) == PLAIN_STOPS
    five = base(" 5", add_special_tokens=False)["input_ids"]
    ended = base(" 5\nQuestion:", add_special_tokens=False)["input_ids"]
    assert base.decode(ended) == " 5\nQuestion:" and len(ended) > len(five)
    assert encode(base, CHAT, "5")[1] == encode(base, CHAT, " 5")[1] == ended
    assert encode(base, CHAT, "5", truncated=True)[1] == five
    # encoded with the stop string as one text, as the model samples it (tokenizers that merge "\n\n" do)
    assert encode(base, CHAT, " 5\n")[1] == base(" 5\n\nQuestion:", add_special_tokens=False)["input_ids"]
    assert encode(base, "What is 2+3? ", "5")[1] == [
        *base("5", add_special_tokens=False)["input_ids"],
        ENDOFTEXT,
    ]
    assert stop_strings(tokenizer(default_model_path, bos=False, eos=IM_END)) == ()
    ids = base(" 5\nAnswer: 6\nQuestion: x", add_special_tokens=False)["input_ids"]
    kept, answer, stopped = cut_at_string(base, ids, PLAIN_STOPS)
    assert (answer, stopped) == (" 5", True) and base.decode(kept).endswith("\nAnswer:")
    assert cut_at_string(base, ids[:2], PLAIN_STOPS) == (ids[:2], base.decode(ids[:2]), False)
    # a row padded after its stop string with the pad id, here a stop id: finished by the string, no stop id
    assert end_sample(base, [*ids, ENDOFTEXT, ENDOFTEXT], (ENDOFTEXT,), PLAIN_STOPS) == (
        kept,
        " 5",
        True,
        None,
    )
    assert end_sample(base, [*five, ENDOFTEXT, ENDOFTEXT], (ENDOFTEXT,), PLAIN_STOPS) == (
        five,
        " 5",
        True,
        ENDOFTEXT,
    )
