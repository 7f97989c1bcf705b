"""Sharded training over a launcher's processes: FSDP2 (`--fsdp`) or a DeepSpeed ZeRO engine (`--deepspeed CONFIG`).
Replicated data parallelism (DDP) needs nothing here: accelerate's `prepare_model` does it."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def shard(model) -> None:
    """FSDP2 in place over all processes: each block the model names unsplittable (its decoder layers), innermost
    first, then the rest (embeddings, tied LM head, final norm), so a block's full weights exist only around its use."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(model._no_split_modules or ())
    for module in [m for m in reversed(list(model.modules())) if type(m).__name__ in blocks]:
        fully_shard(module)
    fully_shard(model)


def full_state_dict(model) -> dict:
    """The sharded model's full weights, gathered on the CPU of the main process (a collective: every process calls it).
    Tied weights come back as separate copies; they are made one tensor again, so `save_pretrained` stores them once."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights, first = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)), {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in weights:
            weights[name] = weights[first.setdefault(id(p), name)]
    return weights


def deepspeed_config(path: str, batch_pairs: int, micro_pairs: int, processes: int, max_grad_norm: float) -> dict:
    """The DeepSpeed JSON config at `path` with the trainer's own batch, accumulation and clipping filled in where it
    says "auto" or nothing. The trainer's flags stay the one source of these values (and of the optimizer, schedule
    and precision), so a config that sets them otherwise is an error that names the field, not a silent override."""
    try:
        ds = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"{path}: expected a JSON object (a DeepSpeed config)")
    owned = {"optimizer": "the trainer's AdamW is used (--lr, --weight-decay)", "scheduler": "the trainer's warm-up and decay are used (--warmup-ratio)",
             "bf16": "precision is the trainer's --bf16 (autocast, fp32 weights)", "fp16": "precision is the trainer's --bf16 (autocast, fp32 weights)"}
    for field, why in owned.items():
        if field in ds and (field not in ("bf16", "fp16") or ds[field].get("enabled")):
            raise ValueError(f"{path}: field {field!r}: {why}; remove it from the config")
    ours = {"train_batch_size": batch_pairs, "train_micro_batch_size_per_gpu": micro_pairs,
            "gradient_accumulation_steps": batch_pairs // (processes * micro_pairs), "gradient_clipping": max_grad_norm}
    flags = {"train_batch_size": "--batch-pairs", "train_micro_batch_size_per_gpu": "--micro-pairs",
             "gradient_accumulation_steps": "--batch-pairs / (processes × --micro-pairs)", "gradient_clipping": "--max-grad-norm"}
    for field, value in ours.items():
        if ds.get(field, "auto") not in ("auto", value):
            raise ValueError(f"{path}: field {field!r} is {ds[field]!r} but the trainer runs {value} ({flags[field]}); "
                             f"set it to \"auto\" or change the flag")
    return {**ds, **ours, "zero_allow_untested_optimizer": True}  # torch's AdamW, which ZeRO partitions like its own


def deepspeed_engine(model, opt, sched, config: dict):
    """The ZeRO engine around `model` on the launcher's process group (accelerate started it: gloo on CPU, NCCL on
    GPUs). It steps `opt` and `sched` itself at each accumulation boundary, clipping gradients first."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=config, dist_init_required=False)
    return engine

