"""Sharded training over a launcher's processes: FSDP2 (`--fsdp`) or a DeepSpeed ZeRO engine (`--deepspeed CONFIG`).
Replicated data parallelism (DDP) needs nothing here: accelerate's `prepare_model` does it."""
from __future__ import annotations

import json
from pathlib import Path



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


def _autos(node, where: str = "") -> list[str]:
    """The dotted names of the fields set to "auto" anywhere in a JSON config."""
    if isinstance(node, dict):
        return [f for k, v in node.items() for f in _autos(v, f"{where}{k}.")]
    return [where[:-1]] if node == "auto" else []


def deepspeed_config(path: str, batch_pairs: int, micro_pairs: int, processes: int, max_grad_norm: float, bf16: bool) -> dict:
    """The DeepSpeed JSON config at `path` with the trainer's own batch, accumulation, clipping and precision filled in.

    The trainer's flags stay the one source of these (and of the optimizer and its schedule), so a config that sets them
    otherwise is an error naming the field, never a silent override. DeepSpeed gets the trainer's bf16 autocast as its
    `torch_autocast` (its engine would otherwise switch an outer CUDA autocast off), over fp32 weights and fp32
    gradient communication (no module marked lower-precision safe), as in the DDP path."""
    try:
        ds = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"{path}: expected a JSON object (a DeepSpeed config)")

    def refuse(field: str, why: str) -> ValueError:
        return ValueError(f"{path}: field {field!r}: {why}")

    precision = "precision is the trainer's --bf16 (autocast over fp32 weights)"
    owned = {"optimizer": "the trainer's AdamW is used (--lr, --weight-decay)", "scheduler": "the trainer's warm-up and decay are used (--warmup-ratio)",
             "torch_autocast": precision, "bf16": precision, "bfloat16": precision, "fp16": precision}
    for field, why in owned.items():
        if field in ds and (field in ("optimizer", "scheduler", "torch_autocast") or not isinstance(ds[field], dict) or ds[field].get("enabled")):
            raise refuse(field, f"{why}; remove it from the config")
    if ds.get("managed_gradient_accumulation", True) is not True:
        raise refuse("managed_gradient_accumulation", "the trainer calls engine.step() after every micro-batch and relies on DeepSpeed's accumulation boundary; remove it")
    zero = ds.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") not in (1, 2, 3):
        raise refuse("zero_optimization.stage", f"is {zero.get('stage') if isinstance(zero, dict) else zero!r}; give ZeRO stage 1, 2 or 3 "
                     "(without ZeRO, drop --deepspeed: the trainer's own DDP does the same)")
    if (zero.get("offload_optimizer") or {}).get("device", "none") != "none":
        raise refuse("zero_optimization.offload_optimizer", "optimizer offload needs DeepSpeed's CPU Adam in place of the trainer's AdamW; not supported")
    ours = {"train_batch_size": (batch_pairs, "--batch-pairs"), "train_micro_batch_size_per_gpu": (micro_pairs, "--micro-pairs"),
            "gradient_accumulation_steps": (batch_pairs // (processes * micro_pairs), "--batch-pairs / (processes × --micro-pairs)"),
            "gradient_clipping": (max_grad_norm, "--max-grad-norm (0: none)")}
    for field, (value, flag) in ours.items():
        if ds.get(field, "auto") not in ("auto", value):
            raise refuse(field, f"is {ds[field]!r} but the trainer runs {value} ({flag}); set it to \"auto\" or change the flag")
    ds = {**ds, **{field: value for field, (value, _) in ours.items()}}
    if autos := _autos(ds):
        raise refuse(autos[0], f"is \"auto\", which the trainer fills only in {', '.join(ours)}; give a number or leave it out (DeepSpeed's default)")
    autocast = {"torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}} if bf16 else {}
    return {**ds, **autocast, "zero_allow_untested_optimizer": True}  # torch's AdamW, which ZeRO partitions like its own


def deepspeed_engine(model, opt, sched, config: dict):
    """The ZeRO engine around `model` on the launcher's process group (accelerate started it: gloo on CPU, NCCL on
    GPUs). It steps `opt` and `sched` itself at each accumulation boundary, clipping gradients first."""
    import logging

    import deepspeed

    deepspeed.utils.logger.setLevel(logging.WARNING)  # its info lines would go to stdout, beside the run's JSON summary
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=config, dist_init_required=False)
    return engine

