"""A checkpoint's token conventions, in one place: how a prompt becomes token ids, which ids end a response,
and generation settings that leave the model's distribution as it is. Generation (vLLM and HF), pairs,
training, probes, KL samples and scoring all go through here, so a prompt has the same ids everywhere.

Model families differ on exactly these points (DESIGN "Model families"): Llama-3, Mistral and Gemma
tokenizers add a BOS token and SmolLM2's and Qwen's do not; Qwen2.5, Llama-3 and Gemma declare several
end-of-sequence ids in generation_config.json; a checkpoint's generation_config may set a repetition
penalty, top-k, top-p, min-p or a no-repeat n-gram size that `generate` would otherwise apply to "greedy"
decoding and to "samples from π".
"""

from __future__ import annotations

from functools import cache

# A checkpoint without a chat template (a base model: Gemma 3 270M's GGUF has none) gets the zero-shot
# question/answer text lm-eval uses for base models, and a sample ends where the model starts another
# question or answer: base models answer after "Answer:" and then go on with "Question: ..." or
# "Answer: ..." lines, hardly ever with an end id (measured on Gemma 3 270M: docs/results.md). A response
# there starts with a space, as the model's own do (lm-eval's target delimiter), and ends with the first
# stop string, the text its own samples end with, in place of an end id.
PLAIN_PROMPT = "Question: {content}\nAnswer:"
PLAIN_STOPS = ("\nQuestion:", "\nAnswer:")

# generate() settings that turn off every logits processor and warper a checkpoint's generation_config can
# switch on (transformers 5: the model's values fill whatever a call leaves unset, so each is set here)
NEUTRAL_GENERATION = {
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "min_length": 0,
    "min_new_tokens": None,
    "guidance_scale": None,
    "watermarking_config": None,
    "dola_layers": None,
    "penalty_alpha": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "token_healing": False,
    "stop_strings": None,
    "max_time": None,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": None,
    "top_h": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


@cache
def _leading_specials(tok) -> tuple[int, ...]:
    """The special ids the tokenizer puts before a text (a BOS for Llama-3, Mistral, Gemma; none for SmolLM2
    or Qwen), without the ones some tokenizers put after it (an EOS)."""
    bare = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start])
    return ()


def prompt_ids(tok, prompt: list[dict] | str) -> list[int]:
    """A prompt's token ids. Chat messages go through the chat template with the generation prompt, and the
    template decides the special tokens (a template that opens with BOS writes it; transformers'
    `apply_chat_template(tokenize=True)` adds none either); without a template they become PLAIN_PROMPT
    text. A plain string gets the special tokens the tokenizer puts before a text (BOS where it adds one),
    unless it already starts with them."""
    if plain(tok, prompt):
        prompt = PLAIN_PROMPT.format(content="\n".join(m["content"] for m in prompt))
    if not isinstance(prompt, str):
        text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    lead = list(_leading_specials(tok))
    return ids if ids[: len(lead)] == lead else lead + ids


@cache
def end_of_turn(tok) -> int:
    """The id that closes an assistant turn in the chat template (<|im_end|> for SmolLM2 and Qwen, <|eot_id|>
    for Llama-3, <end_of_turn> for Gemma, whose `eos_token` is another id); the tokenizer's EOS without a
    template, or where the template closes a turn with no special token."""
    if tok.chat_template is None:
        return tok.eos_token_id
    mark = "\x00response\x00"
    turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
    text = tok.apply_chat_template(turn, tokenize=False)
    after = tok(text.split(mark, 1)[-1], add_special_tokens=False)["input_ids"] if mark in text else []
    return after[0] if after and after[0] in tok.all_special_ids else tok.eos_token_id


def plain(tok, prompt: list[dict] | str) -> bool:
    """Whether `prompt` is chat messages that become PLAIN_PROMPT text (the tokenizer has no chat
    template)."""
    return not isinstance(prompt, str) and tok.chat_template is None


def end_id(tok, prompt: list[dict] | str) -> int:
    """The id that ends a response to `prompt`: the end-of-turn token after a chat prompt, the tokenizer's EOS
    after a plain text (PLAIN_PROMPT text ends with a string instead: `completion_ids`)."""
    return tok.eos_token_id if isinstance(prompt, str) else end_of_turn(tok)


def stop_strings(tok) -> tuple[str, ...]:
    """Text that ends a sample besides the stop ids: PLAIN_STOPS where prompts are PLAIN_PROMPT text."""
    return () if tok.chat_template is not None else PLAIN_STOPS


def stop_ids(tok, generation_config=None) -> tuple[int, ...]:
    """Every id that ends a sample: the tokenizer's EOS, the chat template's end of turn and each
    `eos_token_id` of the checkpoint's generation_config (an int or a list: Qwen2.5 151643 and 151645,
    Llama-3 128001/128008/128009, Gemma 1 and 106), in that order, without repeats."""
    declared = getattr(generation_config, "eos_token_id", None)
    if isinstance(declared, int):
        declared = [declared]
    ids = [tok.eos_token_id, end_of_turn(tok), *(declared or [])]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def generation_config_of(path: str):
    """The checkpoint's generation_config; without a generation_config.json, the one transformers (and vLLM)
    derive from its config.json (its eos_token_id)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))


def completion_ids(tok, prompt: list[dict] | str, text: str, truncated: bool = False) -> list[int]:
    """A response's token ids, followed by the id that ends a response to `prompt` (`end_id`) unless the
    response was cut by a length cap (`truncated`): the model is scored on stopping only where it stopped.
    After PLAIN_PROMPT text a response starts with a space (a gold solution has none) and ends with
    PLAIN_STOPS[0], encoded with it as one text (the tokens the model samples there: "\n\n" may merge)."""
    if plain(tok, prompt):
        spaced = text if text[:1].isspace() else " " + text
        ending = "" if truncated else PLAIN_STOPS[0]
        return tok(spaced + ending, add_special_tokens=False)["input_ids"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids if truncated else ids + [end_id(tok, prompt)]


def encode(tok, prompt: list[dict] | str, completion: str, truncated: bool = False) -> tuple[list, list]:
    """(prompt ids, completion ids) of one response (`prompt_ids`, `completion_ids`)."""
    return prompt_ids(tok, prompt), completion_ids(tok, prompt, completion, truncated)


def split_at_stop(ids: list[int], stops: tuple[int, ...]) -> tuple[list[int], int | None]:
    """(the sampled tokens before the first stop id, that stop id), or (all of them, None) when none stopped
    the sample (it reached the length cap); what follows a stop is padding."""
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i], t
    return ids, None


def cut_at_string(tok, ids: list[int], strings: tuple[str, ...]) -> tuple[list[int], str, bool]:
    """(the sampled tokens up to the one that completed a stop string, their text before that string,
    whether one did); without one, all tokens and their text."""

    def holds(k: int) -> bool:
        decoded = tok.decode(ids[:k], skip_special_tokens=True)
        return any(s in decoded for s in strings)

    text = tok.decode(ids, skip_special_tokens=True)
    if not holds(len(ids)):
        return ids, text, False
    # the shortest prefix whose text holds a stop string (a longer prefix's text holds it too): bisection
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo], text[: min(text.index(s) for s in strings if s in text)], True


def end_sample(tok, row: list[int], stops: tuple[int, ...], strings: tuple[str, ...]):
    """(tokens, text, finished, stop id or None) of one generated row: it ends at its first stop id or at
    the token that completes a stop string, whichever comes first; else the length cap cut it. What follows
    the end is padding, which may be a stop id (pad_id falls back to one): after a stop string it is no
    stop."""
    before, stop = split_at_stop(row, stops)
    ids, text, by_string = cut_at_string(tok, before, strings)
    if by_string:
        return ids, text, True, None
    return ids, text, stop is not None, stop


def generate_kwargs(
    tok, stops: tuple[int, ...], pad: int, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
) -> dict:
    """HF `generate` arguments for the model's own distribution: greedy argmax at temperature 0, else
    sampling at `temperature` (with `top_p`, no top-k); every processor a generation_config could add is
    off (NEUTRAL_GENERATION), every id of `stops` ends a sample, and so do the tokenizer's `stop_strings`."""
    greedy = temperature == 0
    strings = stop_strings(tok)
    return NEUTRAL_GENERATION | {
        "do_sample": not greedy,
        "temperature": 1.0 if greedy else temperature,
        "top_p": 1.0 if greedy else top_p,
        "max_new_tokens": max_new_tokens,
        "eos_token_id": list(stops),
        "pad_token_id": pad,
        "stop_strings": list(strings) or None,
        "tokenizer": tok if strings else None,
    }


def pad_id(tok, stops: tuple[int, ...]) -> int:
    """The tokenizer's pad id, else the first stop id (Llama-3 has no pad token)."""
    return tok.pad_token_id if tok.pad_token_id is not None else stops[0]
