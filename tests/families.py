"""Tiny random checkpoints of the model families researchers bring, built offline (the model-family matrix).

Each has its family's architecture and the token conventions the default model hides: a tokenizer that adds
BOS (Llama-3, Mistral, Gemma), a chat template that writes BOS itself, several end-of-sequence ids in
generation_config.json (Qwen2.5, Llama-3, Gemma), a tokenizer EOS other than the template's end of turn (Qwen
and Gemma base checkpoints), sampling defaults in generation_config.json (Qwen2.5-Instruct), final-logit
soft-capping (Gemma-2), sliding-window layers (Gemma-2, Gemma-3) and no chat template at all (base
checkpoints). The real tokenizers are not available offline, so each behaviour is emulated on the default
model's tokenizer (SmolLM2's: ids 0 <|endoftext|>, 1 <|im_start|>, 2 <|im_end|>, and 3 <repo_name>, a further
special token, as a third end id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ENDOFTEXT, IM_END, REPO = 0, 2, 3
# Qwen2.5-Instruct's generation_config.json sets these; a min-p and a no-repeat n-gram size besides
SAMPLING_DEFAULTS = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.05,
    "min_p": 0.05,
    "no_repeat_ngram_size": 3,
}
SIZE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,  # vLLM's CPU attention takes head sizes from 32 up
    "max_position_embeddings": 1024,
}


@dataclass(frozen=True)
class Family:
    config: str  # transformers config class
    fields: dict  # its fields beyond SIZE
    bos: bool  # the tokenizer puts a BOS before a text and the chat template writes one
    eos: int  # the tokenizer's EOS
    eos_ids: list[int]  # generation_config's end ids
    sampling: dict = field(default_factory=dict)  # generation_config's sampling defaults
    chat: bool = True  # has a chat template (a base checkpoint often has none)


FAMILIES = {
    "llama3": Family("LlamaConfig", {}, True, IM_END, [ENDOFTEXT, REPO, IM_END]),
    "qwen2": Family("Qwen2Config", {}, False, ENDOFTEXT, [IM_END, ENDOFTEXT], SAMPLING_DEFAULTS),
    "gemma2": Family(
        "Gemma2Config",
        {
            "final_logit_softcapping": 0.5,
            "attn_logit_softcapping": 50.0,
            "query_pre_attn_scalar": 32,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        True,
        ENDOFTEXT,
        [ENDOFTEXT, IM_END],
    ),
    "gemma3": Family(
        "Gemma3TextConfig",
        {
            "query_pre_attn_scalar": 32,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        True,
        ENDOFTEXT,
        [ENDOFTEXT, IM_END],
    ),
    "mistral": Family("MistralConfig", {"sliding_window": None}, True, IM_END, [IM_END]),
    # a base checkpoint without a chat template: prompts become plain question/answer text
    "base": Family("LlamaConfig", {}, True, ENDOFTEXT, [ENDOFTEXT], chat=False),
}


def tokenizer(default_model_path: str, bos: bool, eos: int, chat: bool = True):
    """The default tokenizer with a family's conventions: <|endoftext|> as a BOS that it puts before every
    text and that the chat template writes first (`bos`), `eos` as its EOS token, and no chat template
    unless `chat`."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_path)
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    if bos:
        tok.bos_token = "<|endoftext|>"
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="<|endoftext|> $A",
            pair="<|endoftext|> $A <|endoftext|> $B",
            special_tokens=[("<|endoftext|>", ENDOFTEXT)],
        )
        tok.chat_template = "{{ bos_token }}" + tok.chat_template
    if not chat:
        tok.chat_template = None
    return tok


def build(family: str, default_model_path: str, target: Path, seed: int = 0) -> str:
    """A tiny random checkpoint of `family` (FAMILIES) with its emulated tokenizer and generation_config."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    f = FAMILIES[family]
    tok = tokenizer(default_model_path, f.bos, f.eos, f.chat)
    config = getattr(transformers, f.config)(
        vocab_size=len(tok),
        bos_token_id=ENDOFTEXT,
        eos_token_id=f.eos,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        **SIZE,
        **f.fields,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT, eos_token_id=f.eos_ids, pad_token_id=tok.pad_token_id, **f.sampling
    )
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return str(target)
