"""How training runs over a launcher's processes, as one strategy object the trainer's loop calls without
asking which it is: one process (`Plain`), replicated data parallelism (`DDP`, accelerate's `prepare_model`),
FSDP2 (`FSDP`, `--fsdp`) or a DeepSpeed ZeRO engine (`ZeRO`, `--deepspeed CONFIG`); `strategy` picks one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def shard(model) -> None:
    """FSDP2 in place over all processes: each block the model names unsplittable (its decoder layers),
    innermost first, then the rest (embeddings, tied LM head, final norm), so a block's full weights exist
    only around its use."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(model._no_split_modules or ())
    for module in [m for m in reversed(list(model.modules())) if type(m).__name__ in blocks]:
        fully_shard(module)
    fully_shard(model)


def full_state_dict(model) -> dict:
    """The sharded model's full weights, gathered on the CPU of the main process (a collective: every process
    calls it). Tied weights come back as separate copies; they are made one tensor again, so `save_pretrained`
    stores them once."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    first = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in weights:
            weights[name] = weights[first.setdefault(id(p), name)]
    return weights


def _autos(node, where: str = "") -> list[str]:
    """The dotted names of the fields set to "auto" anywhere in a JSON config."""
    if isinstance(node, dict):
        return [f for k, v in node.items() for f in _autos(v, f"{where}{k}.")]
    return [where[:-1]] if node == "auto" else []


def deepspeed_config(
    path: str, batch_pairs: int, micro_pairs: int, processes: int, max_grad_norm: float, bf16: bool
) -> dict:
    """The DeepSpeed JSON config at `path` with the trainer's own batch, accumulation, clipping and precision
    filled in.

    The trainer's flags stay the one source of these (and of the optimizer and its schedule), so a config
    that sets them otherwise is an error naming the field, never a silent override. DeepSpeed gets the
    trainer's bf16 autocast as its `torch_autocast` (its engine would otherwise switch an outer CUDA autocast
    off), over fp32 weights and fp32 gradient communication (no module marked lower-precision safe), as in the
    DDP path."""
    try:
        ds = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"{path}: expected a JSON object (a DeepSpeed config)")

    def refuse(field: str, why: str) -> ValueError:
        return ValueError(f"{path}: field {field!r}: {why}")

    precision = "precision is the trainer's --bf16 (autocast over fp32 weights)"
    owned = {
        "optimizer": "the trainer's AdamW is used (--lr, --weight-decay)",
        "scheduler": "the trainer's warm-up and decay are used (--warmup-ratio)",
        "torch_autocast": precision,
        "bf16": precision,
        "bfloat16": precision,
        "fp16": precision,
    }
    for field, why in owned.items():
        if field in ds and (
            field in ("optimizer", "scheduler", "torch_autocast")
            or not isinstance(ds[field], dict)
            or ds[field].get("enabled")
        ):
            raise refuse(field, f"{why}; remove it from the config")
    if ds.get("managed_gradient_accumulation", True) is not True:
        raise refuse(
            "managed_gradient_accumulation",
            "the trainer calls engine.step() after every micro-batch and relies on DeepSpeed's accumulation "
            "boundary; remove it",
        )
    zero = ds.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") not in (1, 2, 3):
        raise refuse(
            "zero_optimization.stage",
            f"is {zero.get('stage') if isinstance(zero, dict) else zero!r}; give ZeRO stage 1, 2 or 3 "
            "(without ZeRO, drop --deepspeed: the trainer's own DDP does the same)",
        )
    if (zero.get("offload_optimizer") or {}).get("device", "none") != "none":
        raise refuse(
            "zero_optimization.offload_optimizer",
            "optimizer offload needs DeepSpeed's CPU Adam in place of the trainer's AdamW; not supported",
        )
    ours = {
        "train_batch_size": (batch_pairs, "--batch-pairs"),
        "train_micro_batch_size_per_gpu": (micro_pairs, "--micro-pairs"),
        "gradient_accumulation_steps": (
            batch_pairs // (processes * micro_pairs),
            "--batch-pairs / (processes × --micro-pairs)",
        ),
        "gradient_clipping": (max_grad_norm, "--max-grad-norm (0: none)"),
    }
    for field, (value, flag) in ours.items():
        if ds.get(field, "auto") not in ("auto", value):
            raise refuse(
                field,
                f'is {ds[field]!r} but the trainer runs {value} ({flag}); set it to "auto" or change the '
                "flag",
            )
    ds = {**ds, **{field: value for field, (value, _) in ours.items()}}
    if autos := _autos(ds):
        raise refuse(
            autos[0],
            f'is "auto", which the trainer fills only in {", ".join(ours)}; give a number or leave it out '
            "(DeepSpeed's default)",
        )
    autocast = {}
    if bf16:
        autocast = {
            "torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
        }
    # torch's AdamW, which ZeRO partitions like its own
    return {**ds, **autocast, "zero_allow_untested_optimizer": True}


def deepspeed_engine(model, opt, sched, config: dict):
    """The ZeRO engine around `model` on the launcher's process group (accelerate started it: gloo on CPU,
    NCCL on GPUs). It steps `opt` and `sched` itself at each accumulation boundary, clipping gradients
    first."""
    import logging

    import deepspeed

    # its info lines would go to stdout, beside the run's JSON summary
    deepspeed.utils.logger.setLevel(logging.WARNING)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=opt, lr_scheduler=sched, config=config, dist_init_required=False
    )
    return engine


class Plain:
    """One process: whole weights, a plain backward, clipping and an AdamW step. The others build on it."""

    name: str | None = None  # train.json's `sharding`
    probes_everywhere = False  # whole weights: the probe forward runs on the main process alone

    def __init__(self, acc):
        self.acc, self.model = acc, None

    def prepare(self, model, build_optimizer):
        """The (optimizer, scheduler) that `build_optimizer()` makes for `model`, built when the strategy
        needs it: after FSDP shards the weights, before DeepSpeed's engine takes them over."""
        self.model = model
        return build_optimizer()

    def wrap(self, model):
        """The module the training forwards go through."""
        return model

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, opt, sched, max_grad_norm: float) -> float:
        """Clip (0: no clipping), then AdamW, the schedule and zeroed gradients. Returns the norm before
        clipping; a non-finite one skips the update, so the weights stay those of the last good step (the
        caller stops the run)."""
        # torch's clip with max_norm 0 would zero the gradients
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm or math.inf)
        norm = self._item(norm)
        if math.isfinite(norm):
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        return norm

    def _item(self, norm: torch.Tensor) -> float:
        return norm.item()

    def gather_state_dict(self) -> dict | None:
        """The full weights to save where the model's own state dict is not them (None: it is); a
        collective."""
        return None


class DDP(Plain):
    """Whole weights on each process; DDP averages the gradients in the backward."""

    name = "ddp"

    def wrap(self, model):
        return self.acc.prepare_model(model)


class FSDP(Plain):
    """FSDP2: weights, gradients and AdamW state sharded over the processes."""

    name = "fsdp"
    probes_everywhere = True  # a forward of sharded weights needs every process

    def prepare(self, model, build_optimizer):
        shard(model)  # before the optimizer, which must hold the shards
        return super().prepare(model, build_optimizer)

    def _item(self, norm: torch.Tensor) -> float:
        return norm.full_tensor().item()  # a DTensor

    def gather_state_dict(self) -> dict:
        return full_state_dict(self.model)


class ZeRO(Plain):
    """A DeepSpeed ZeRO engine: it partitions the optimizer state (ZeRO-1/2) and the weights (ZeRO-3), and
    clips, steps the optimizer and the schedule and zeroes the gradients itself."""

    def __init__(self, acc, config: dict):
        super().__init__(acc)
        self.config, self.engine = config, None

    def prepare(self, model, build_optimizer):
        opt, sched = super().prepare(model, build_optimizer)
        self.engine = deepspeed_engine(model, opt, sched, self.config)
        return opt, sched

    @property
    def name(self) -> str:
        return f"zero{self.engine.zero_optimization_stage()}"

    @property
    def probes_everywhere(self) -> bool:
        return self.engine.zero_optimization_partition_weights()  # ZeRO-3: sharded weights

    def wrap(self, model):
        return self.engine

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the trainer scales each micro-batch's loss itself
        # the engine counts micro-batches in step(), so it follows every backward; at the step's last
        # micro-batch it clips, steps AdamW and the schedule and zeroes the gradients
        self.engine.step()

    def step(self, opt, sched, max_grad_norm: float) -> float:
        # the engine has stepped in the last backward (clipping to the config's gradient_clipping, filled from
        # max_grad_norm), or skipped the update and the schedule on a non-finite norm
        return float(self.engine.get_global_grad_norm())  # before clipping, as clip_grad_norm_ returns it

    def gather_state_dict(self) -> dict | None:
        # ZeRO-3 gathers its partitioned weights on every process; ZeRO-1/2 keep whole weights on each
        return self.engine._zero3_consolidated_16bit_state_dict() if self.probes_everywhere else None


def strategy(
    acc,
    fsdp: bool,
    deepspeed: str | None,
    batch_pairs: int,
    micro_pairs: int,
    max_grad_norm: float,
    bf16: bool,
) -> Plain:
    """The strategy for the launcher's processes and the flags. With one process there is nothing to shard
    (`Plain`), but a DeepSpeed config is checked all the same."""
    world = acc.num_processes
    config = None
    if deepspeed:
        config = deepspeed_config(deepspeed, batch_pairs, micro_pairs, world, max_grad_norm, bf16)
    if world == 1:
        return Plain(acc)
    if fsdp:
        return FSDP(acc)
    if config:
        return ZeRO(acc, config)
    return DDP(acc)
