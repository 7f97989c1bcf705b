"""Preference trainer: one policy in memory, reference log-probs computed once and cached on disk,
chosen and rejected in one padding-free forward with their prompt encoded once (`pair_logps`),
AdamW with gradient accumulation, HF checkpoint at the end.

Pairs are generic: {"prompt": chat messages or text, "chosen": str, "rejected": str}.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common import atomic_file, digest, fingerprint, option, replace_dir, write_json, write_jsonl, write_text
from trainers.logprobs import autocast, native_bf16, pair_logps, score_pairs, sequence_logps
from trainers.losses import LossParams, SeqLogps, parse_method, preference_loss
from trainers.pairfile import describe, load_pairs, truncated
from trainers.parallel import strategy
from trainers.probes import ProbeSet, nan_mean, probe_terms
from trainers.tokenflow import pair_flows, shares
from trainers.tokens import encode


@dataclass(kw_only=True)
class TrainConfig(LossParams):
    model: str = option(help="local HF checkpoint directory (or hub id when a hub is reachable)")
    pairs: str = option(help='JSONL of {"prompt", "chosen", "rejected"}')
    output_dir: str = option("outputs/train", "metrics.jsonl, train.json, state/ and checkpoint/ go here")
    method: str = option(
        "spo", "dpo, ipo, simpo, dpop, rpo, <loss>+spo (spo = dpo+spo), or sft (NLL of the chosen responses)"
    )
    spo_anchor: str = option(
        "reference",
        "v̂ of the SPO penalty: reference (ℓ_ref − δ) or lookahead (ℓ after a virtual SFT step)",
        choices=("reference", "lookahead"),
    )
    spo_alpha: float = option(1e-3, "α, step size of the lookahead anchor's virtual SGD step on L_SFT")
    lr: float = option(1e-5, "AdamW peak learning rate")
    epochs: int = option(1, "passes over the pairs (shuffled each epoch)")
    batch_pairs: int = option(8, "pairs per optimizer step")
    micro_pairs: int = option(4, "pairs per forward pass (accumulation = batch_pairs / micro_pairs)")
    max_len: int = option(640, "prompt + completion tokens; longer pairs are skipped and reported")
    bad_pairs: str = option(
        "skip",
        "malformed rows (trainers.pairfile) and pairs over max_len: skip or error; truncate cuts long "
        "completions (all reported)",
        choices=("skip", "error", "truncate"),
    )
    warmup_ratio: float = option(0.1, "share of steps with linear warm-up; then linear decay to 0")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping (0: none)")
    seed: int = option(0, "python and torch RNGs, data order")
    bf16: bool | None = option(
        None,
        "bf16 autocast, weights stay fp32; unset: on where bf16 is native (GPU, CPU with AVX-512 bf16 or "
        "AMX), else fp32",
    )
    ref_cache: str | None = option(None, "where cached reference log-probs live (default: in output_dir)")
    save_every: int = option(0, "save a resumable state every N steps (0: never)")
    resume: bool = option(
        False, "continue from output_dir/state (model, optimizer, schedule, RNG, data position)"
    )
    ches_filter: float = option(
        0.0,
        "drop this top fraction of the training pairs by LN-CHES on the initial model before training "
        "(trainers/ches.py, Razin et al. 2024); output_dir/ches_dropped.jsonl lists the pairs dropped",
    )
    probe_pairs: str | None = option(
        None, "held-out pairs JSONL whose log-probs are logged (training dynamics)"
    )
    probe_every: int = option(0, "log the probe set every N steps, and before the first (0: never)")
    probe_greedy: bool = option(
        True,
        "probe the policy's own greedy response too (trainers.probes: generated at each probe step and "
        "scored against a frozen copy of the initial model; not under --fsdp/--deepspeed)",
    )
    probe_flow: bool = option(
        False,
        "at each probe step after 0, also where the chosen tokens' lost mass went (trainers.tokenflow: a "
        "forward of the policy and of a frozen copy of the initial model per probe pair: a cpu-preset "
        "training took 218 s instead of 169; not under --fsdp/--deepspeed)",
    )
    lora_r: int = option(0, "LoRA rank on every linear layer via peft (0: full fine-tuning)")
    lora_alpha: float = option(16.0, "LoRA scaling; the saved checkpoint has the adapters merged")
    fsdp: bool = option(
        False,
        "under a launcher: shard weights, gradients and AdamW state over the processes (FSDP2) instead of "
        "replicating them (DDP)",
    )
    deepspeed: str | None = option(
        None,
        "under a launcher: a DeepSpeed JSON config (configs/deepspeed/zero{2,3}.json) whose ZeRO engine "
        'shards instead of DDP; its batch and clipping fields are "auto": the flags here',
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _row(line: str) -> dict | None:
    """A metrics row, or None for a line cut by a kill."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard scalars (when tensorboard is installed), rank 0 only."""

    def __init__(self, out: Path, keep_until: int):
        path = out / "metrics.jsonl"
        rows = [_row(line) for line in path.read_text().splitlines()] if keep_until and path.exists() else []
        # a resumed run keeps the rows up to its state, and there is never a moment where they are gone
        kept = [json.dumps(r) for r in rows if r and r["step"] <= keep_until]
        write_text(path, "".join(line + "\n" for line in kept))
        self.file = open(path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict, tensorboard: bool = True) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if tensorboard and self.tb:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.close()


def lookahead_anchor(
    model, prompts: list[list[int]], completions: list[list[int]], pc: SeqLogps, alpha: float
) -> torch.Tensor:
    """v̂ = ℓ_θ'(x, y_w), θ' = θ − α∇_θ L_SFT(θ) with L_SFT = mean over the batch of −a_θ(y_w):
    one virtual SGD step on the chosen responses, evaluated functionally and detached. `pc` are
    the chosen log-probs of the current forward (their graph gives ∇L_SFT without another forward)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grads = torch.autograd.grad((-pc.mean).mean(), params, retain_graph=True, allow_unused=True)
    virtual = {n: (p if g is None else p - alpha * g).detach() for (n, p), g in zip(named, grads)}
    with torch.no_grad():
        return -sequence_logps(model, prompts, completions, params=virtual).mean


def encode_pairs(tok, path: str, max_len: int, policy: str) -> tuple[list, list[dict], list[dict]]:
    """Tokenised (prompt, chosen, rejected) pairs of a pair file, the skipped or truncated rows (line, id,
    field, reason, detail) and the kept pairs' {line, id}. Skipped: the file's bad rows (trainers.pairfile)
    and the pairs over `max_len` tokens (`policy`: --bad-pairs), summarised on stderr. A response the pairs
    stage marked as cut by its length cap gets no end token (trainers.tokens.encode)."""
    rows, report = load_pairs(path, "error" if policy == "error" else "skip")
    kept, where = [], []
    for line, p in zip(report.lines, rows):
        x, c = encode(tok, p["prompt"], p["chosen"], truncated(p, "chosen"))
        r = encode(tok, p["prompt"], p["rejected"], truncated(p, "rejected"))[1]
        n = len(x) + max(len(c), len(r))  # the longer of the two sequences
        if n > max_len:
            cut = policy == "truncate" and len(x) < max_len  # the prompt stays whole
            s = {
                "line": line,
                "id": p.get("id"),
                "field": None,
                "reason": "truncated" if cut else "too_long",
                "detail": f"{n} tokens, over max_len={max_len}"
                + ("; completions cut, pair kept" if cut else ""),
            }
            if policy == "error":
                raise ValueError(describe(path, s, report.unit))
            report.skipped.append(s)
            if not cut:
                continue
            c, r = c[: max_len - len(x)], r[: max_len - len(x)]
        kept.append((x, c, r))
        where.append({"line": line, "id": p.get("id")})
    report.kept = len(kept)
    if report.skipped:
        print(report.summary(), file=sys.stderr, flush=True)
    return kept, report.skipped, where


class Trainer:
    def __init__(self, cfg: TrainConfig, model, tok):
        from accelerate import Accelerator

        self.base, self.plug = self._check_config(cfg)
        # one process: a no-op; under a launcher: the process group (gloo on CPU)
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self._check_processes(cfg)
        # the precision used (recorded in train.json)
        self.bf16 = native_bf16(self.acc.device.type) if cfg.bf16 is None else cfg.bf16
        # how the loop runs over the processes (plain, DDP, FSDP or ZeRO), chosen once here
        self.parallel = strategy(
            self.acc, cfg.fsdp, cfg.deepspeed, cfg.batch_pairs, cfg.micro_pairs, cfg.max_grad_norm, self.bf16
        )
        self.cfg, self.model, self.tok = cfg, model.to(self.acc.device), tok
        self.out = Path(cfg.output_dir)
        self.pairs, self.skipped, where = encode_pairs(tok, cfg.pairs, cfg.max_len, cfg.bad_pairs)
        if not self.pairs:
            raise ValueError(f"{cfg.pairs}: no usable pair ({len(self.skipped)} skipped: {self.skipped[:5]})")
        self.dropped = self._ches_filter(where) if cfg.ches_filter else []
        self.probe = None
        if cfg.probe_pairs and cfg.probe_every:
            self.probe = ProbeSet(
                tok, load_pairs(cfg.probe_pairs, "error")[0], getattr(model, "generation_config", None)
            )

    def _ches_filter(self, where: list[dict]) -> list[dict]:
        """The data-side guard against displacement: the top `ches_filter` share of the pairs by LN-CHES on
        the initial weights (trainers/ches.py) leaves the training set; returns them, scores included. The
        main process scores and its choice goes to every process (their rounding may differ at the cut), and
        it is written at once to ches_dropped.jsonl, which a resumed run reads instead of scoring again."""
        from accelerate.utils import broadcast_object_list

        from trainers.ches import pair_ches, top_fraction

        listed = self.out / "ches_dropped.jsonl"
        chosen: list = [None]
        if self.cfg.resume and listed.is_file():
            chosen = [[json.loads(line) for line in listed.read_text().splitlines()]]
        elif self.acc.is_main_process:
            scores = pair_ches(
                self.model, *self._columns(self.pairs, range(len(self.pairs))), self.cfg.micro_pairs
            )
            drop = top_fraction(scores["ln_ches"], self.cfg.ches_filter)
            chosen = [
                [where[i] | {"index": i} | {k: scores[k][i] for k in ("ches", "ln_ches")} for i in drop]
            ]
            write_jsonl(listed, chosen[0])
        if self.acc.num_processes > 1:
            broadcast_object_list(chosen)
        dropped = chosen[0]
        if len(dropped) == len(self.pairs):
            raise ValueError(f"ches_filter {self.cfg.ches_filter} drops all {len(self.pairs)} pairs")
        gone = {d["index"] for d in dropped}
        self.pairs = [p for i, p in enumerate(self.pairs) if i not in gone]
        lowest = f", LN-CHES at or above {min(d['ln_ches'] for d in dropped):.4g}" if dropped else ""
        print(
            f"ches_filter {self.cfg.ches_filter}: dropped {len(dropped)} of {len(where)} pairs{lowest}",
            file=sys.stderr,
            flush=True,
        )
        return dropped

    @staticmethod
    def _check_config(cfg: TrainConfig) -> tuple[str, str]:
        """The method's (loss, plug-in), once the config's values and the launcher's environment pass."""
        for name in ("epochs", "batch_pairs", "micro_pairs", "max_len"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
        if not cfg.lr > 0:
            raise ValueError(f"lr must be above 0, got {cfg.lr}")
        if not 0 <= cfg.ches_filter < 1:
            raise ValueError(f"ches_filter must be at least 0 and below 1, got {cfg.ches_filter}")
        if cfg.batch_pairs % cfg.micro_pairs:
            raise ValueError(
                f"batch_pairs ({cfg.batch_pairs}) must be a multiple of micro_pairs ({cfg.micro_pairs})"
            )
        if cfg.spo_anchor not in ("reference", "lookahead"):
            raise ValueError(f"unknown spo_anchor {cfg.spo_anchor!r}; valid: reference, lookahead")
        if cfg.bad_pairs not in ("skip", "error", "truncate"):
            raise ValueError(f"unknown bad_pairs policy {cfg.bad_pairs!r}; valid: skip, error, truncate")
        method = parse_method(cfg.method)
        kinds = ("DEEPSPEED", "FSDP", "MEGATRON_LM", "PARALLELISM_CONFIG")
        asked = [
            k for k in kinds if os.environ.get(f"ACCELERATE_USE_{k}", "").lower() in ("1", "true", "yes")
        ]
        # accelerate wires these only into `accelerator.prepare`: on GPUs each process would train alone
        if asked:
            raise ValueError(
                f"the launcher's accelerate config asks for {asked[0]}, which this trainer does not take "
                "from accelerate: launch with configs/accelerate/multi_gpu.yaml (or torchrun) and pass "
                "--deepspeed CONFIG.json (configs/deepspeed/) or --fsdp"
            )
        return method

    def _check_processes(self, cfg: TrainConfig) -> None:
        """Batches that split evenly over the processes, and a sharding the other options allow."""
        world = self.acc.num_processes
        if world > 1 and cfg.batch_pairs % (world * cfg.micro_pairs):
            raise ValueError(
                f"batch_pairs ({cfg.batch_pairs}) must be a multiple of processes × micro_pairs "
                f"({world} × {cfg.micro_pairs})"
            )
        flag = None  # the sharding asked for
        if cfg.fsdp:
            flag = "--fsdp"
        elif cfg.deepspeed:
            flag = "--deepspeed"
        if cfg.fsdp and cfg.deepspeed:
            raise ValueError("--fsdp and --deepspeed both shard the model; choose one")
        lookahead = self.plug == "spo" and cfg.spo_anchor == "lookahead"
        if flag and (cfg.lora_r or cfg.save_every or cfg.resume or lookahead):
            raise ValueError(
                f"{flag} does not support --lora-r, --save-every/--resume or --spo-anchor lookahead yet; "
                f"drop {flag} for those (under a launcher the model is then replicated: DDP)"
            )
        if flag and world == 1:
            print(
                f"note: {flag} with one process has nothing to shard; it takes effect under a launcher "
                "(torchrun, accelerate launch)",
                file=sys.stderr,
            )

    @staticmethod
    def _columns(pairs: list, idx: list[int]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        """(prompts, chosen, rejected) of the pairs in idx."""
        return tuple([pairs[i][j] for i in idx] for j in range(3))

    def reference_logps(self, batches: list[list[int]]) -> tuple[SeqLogps, SeqLogps]:
        """(chosen, rejected) log-probs of the pairs under the model as it is now (the initial model), per
        epoch: `total` and `count` are [epochs, pairs]. Each pair is scored in the very micro-batch, packing
        and precision its training forward of that epoch uses (`_micro_batches`), so at step 0, where the
        policy is this model, policy and reference log-probs are equal to the last bit in bf16 as in fp32,
        and SPO's penalty starts inactive on every pair instead of on rounding noise. Cached on disk, keyed
        by the weights, the tokenised pairs, the precision and the layout (so methods share them)."""
        from safetensors.torch import load_file, save_file

        world, epochs = self.acc.num_processes, self.cfg.epochs
        per_epoch = len(batches) // epochs
        # each epoch's micro-batches, of every process, in order
        layout = [
            [
                m
                for b in batches[e * per_epoch : (e + 1) * per_epoch]
                for r in range(world)
                for m in self._micro_batches(b, r)
            ]
            for e in range(epochs)
        ]
        key = hashlib.sha256(
            json.dumps([fingerprint(self.cfg.model), self.bf16, self.pairs, layout]).encode()
        ).hexdigest()[:16]
        path = Path(self.cfg.ref_cache or self.out) / f"ref_logps-{key}.safetensors"
        self.reference_computed = not path.is_file()  # else another run (method) computed them
        if self.reference_computed and self.acc.is_main_process:
            columns, n = self._columns(self.pairs, range(len(self.pairs))), len(self.pairs)
            # [chosen/rejected, epoch, pair]; NaN for a pair no micro-batch of an epoch holds (the pairs a
            # multi-process epoch leaves out: only full batches are split over processes)
            total, count = (torch.full((2, epochs, n), float("nan")) for _ in range(2))
            for e, groups in enumerate(layout):
                rc, rr = score_pairs(
                    self.model,
                    *columns,
                    bf16=self.bf16,
                    progress=f"reference log-probs {e + 1}",
                    groups=groups,
                )
                at = [i for m in groups for i in m]
                total[:, e, at], count[:, e, at] = (
                    torch.stack([rc.total, rr.total]),
                    torch.stack([rc.count, rr.count]),
                )
            with atomic_file(path) as tmp:
                save_file({"total": total, "count": count}, str(tmp))
        self.acc.wait_for_everyone()
        t = load_file(path)
        return SeqLogps(t["total"][0], t["count"][0]), SeqLogps(t["total"][1], t["count"][1])

    def probe_metrics(
        self,
        reference: dict[str, SeqLogps],
        frozen,
        initial: bool = False,
        initial_greedy: SeqLogps | None = None,
    ) -> dict[str, float]:
        """Training dynamics on the fixed probe set (trainers.probes): per response kind the absolute and
        Δ log-probs, Δ log of the pair's combined probability, the DPO margin and reward accuracy, and the
        share outside SPO's safe region; with `frozen` (the initial model), the greedy response
        (`probe_greedy`) and, after step 0, where the chosen tokens' lost mass went (`probe_flow`).
        `initial`: the model still has the initial weights (step 0), so its fixed responses' scores are
        `reference` and its greedy ones `initial_greedy` (`initial_probe`): nothing is scored again."""
        policy = dict(reference) if initial else self.probe.score_fixed(self.model, self.cfg.micro_pairs)
        if frozen is not None and self.cfg.probe_greedy:
            if initial:
                policy["greedy"] = frozen_greedy = initial_greedy
            else:
                greedy = self.probe.greedy(self.model, bf16=self.bf16)
                policy["greedy"] = self.probe.score(self.model, greedy, self.cfg.micro_pairs)
                frozen_greedy = self.probe.score(frozen, greedy, self.cfg.micro_pairs)
            reference = {**reference, "greedy": frozen_greedy}
        values = probe_terms(policy, reference, self.cfg.spo_delta)
        margin = self.cfg.beta * (values["dsum_chosen"] - values["dsum_rejected"])
        values |= {"margin": margin, "reward_accuracy": (margin > 0).float()}
        means = {f"probe_{k}": nan_mean(v) for k, v in values.items()}
        if frozen is not None and self.cfg.probe_flow and not initial:
            chosen, rejected = self.probe.responses["chosen"], self.probe.responses["rejected"]
            flow = shares(pair_flows(self.model, frozen, self.probe.prompts, chosen, rejected))
            means |= {f"probe_flow_{k}": v for k, v in flow.items()}
        return {k: v for k, v in means.items() if v is not None}

    def initial_probe(self, with_greedy: bool) -> tuple[dict[str, SeqLogps], SeqLogps | None]:
        """The probe set under the initial weights: the fixed responses' scores (every probe step's reference
        terms) and, `with_greedy`, the scores of the model's own greedy responses (step 0's). They are the
        same for every method and seed from one init, so they are cached beside the reference log-probs,
        keyed by the weights, the tokenised probe set, the precision and the batch size."""
        probe, size = self.probe, self.cfg.micro_pairs
        parts = [fingerprint(self.cfg.model), self.bf16, probe.prompts, probe.responses, size, with_greedy]
        path = Path(self.cfg.ref_cache or self.out) / f"probe_ref-{digest(*parts)}.json"
        if path.is_file():
            kept = {k: SeqLogps(*map(torch.tensor, v)) for k, v in json.loads(path.read_text()).items()}
            return kept, kept.pop("greedy", None)
        scores = probe.score_fixed(self.model, size)
        if with_greedy:
            scores["greedy"] = probe.score(self.model, probe.greedy(self.model, bf16=self.bf16), size)
        # float32 values through Python floats and back: exact
        write_json(path, {k: [v.total.tolist(), v.count.tolist()] for k, v in scores.items()})
        greedy = scores.pop("greedy", None)
        return scores, greedy

    def _save_state(self, step: int, opt, sched) -> None:
        """Everything a killed run needs to continue, written aside and swapped in atomically."""
        from safetensors.torch import save_model

        partial = self.out / "state.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_model(self.model, str(partial / "model.safetensors"))
        torch.save(
            {
                "step": step,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            partial / "trainer.pt",
        )
        replace_dir(partial, self.out / "state")

    def _load_state(self, opt, sched) -> int:
        from safetensors.torch import load_model

        state = next(
            (d for d in (self.out / "state", self.out / "state.old") if (d / "trainer.pt").is_file()), None
        )
        if state is None:
            return 0
        load_model(self.model, str(state / "model.safetensors"))
        t = torch.load(state / "trainer.pt", weights_only=True)
        opt.load_state_dict(t["optimizer"])
        sched.load_state_dict(t["scheduler"])
        torch.set_rng_state(t["torch_rng"])
        random.setstate(t["python_rng"])
        return t["step"]

    def _diverged(self, what: str, step: int) -> FloatingPointError:
        return FloatingPointError(
            f"non-finite {what} at step {step}; the last good state is in {self.out / 'state'} (saved every "
            f"{self.cfg.save_every} steps; resume with --resume after lowering --lr or checking the pairs)"
        )

    def train(self) -> dict:
        """The loop, read top to bottom as nanoGPT's: 1. data order; then for each step 2. accumulate the
        micro-batches, 3. optimizer step, 4. log; at the end 5. checkpoint and train.json."""
        from tqdm.auto import tqdm

        cfg, main = self.cfg, self.acc.is_main_process
        seed_everything(cfg.seed)
        # 1. data order: every epoch's shuffle drawn up front from the seed, so a resumed run goes on with it
        batches = self._batches()
        ref = self.reference_logps(batches)  # before any resume: the initial weights
        frozen = self._frozen_copy() if self.probe is not None and main else None
        # the probe set's reference terms and step 0's greedy ones, likewise from the initial weights, before
        # any sharding
        probe_ref, greedy0 = None, None
        if self.probe is not None:
            probe_ref, greedy0 = self.initial_probe(frozen is not None and cfg.probe_greedy)
        opt, sched = self.parallel.prepare(self.model, lambda: self._optimizer(len(batches)))
        self.out.mkdir(parents=True, exist_ok=True)
        start = self._load_state(opt, sched) if cfg.resume else 0
        log = MetricsLog(self.out, start) if main else None
        probing = self.probe is not None and (main or self.parallel.probes_everywhere)
        if probing and start == 0:
            self._write(log, {"step": 0, **self.probe_metrics(probe_ref, frozen, True, greedy0)})
        # the module of the training forwards, wrapped once the resumed weights are in place
        forward = self.parallel.wrap(self.model)
        self.model.train()
        t0, row = time.time(), {}
        bar = tqdm(total=len(batches), initial=start, desc=f"train {cfg.method}", disable=not main)
        for step, batch in enumerate(batches[start:], start + 1):
            # read before 2.: DeepSpeed steps the schedule in the last micro-batch's backward
            t_step, lr = time.time(), opt.param_groups[0]["lr"]
            # 2. accumulate: forward, loss and backward of each micro-batch of this process's share
            epoch = (step - 1) * cfg.epochs // len(batches)
            stats = self._accumulate(
                forward, batch, tuple(SeqLogps(r.total[epoch], r.count[epoch]) for r in ref), step
            )
            # 3. optimizer step: clip, AdamW, schedule, zero the gradients; a non-finite norm stops before it
            grad_norm = self._optimizer_step(opt, sched, step)
            # 4. log: the metrics row, with the probe set on probe steps; then the resumable state
            row = {
                "step": step,
                **stats,
                "grad_norm": grad_norm,
                "lr": lr,
                "step_seconds": time.time() - t_step,
            }
            if probing and (step % cfg.probe_every == 0 or step == len(batches)):
                row.update(self.probe_metrics(probe_ref, frozen))
            self._write(log, row)
            if cfg.save_every and step % cfg.save_every == 0:
                if main:
                    self._save_state(step, opt, sched)
                self.acc.wait_for_everyone()
            bar.update()
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
        bar.close()
        # 5. checkpoint and train.json
        return self._finish(log, row, len(batches), start, t0)

    def _frozen_copy(self):
        """The initial model, frozen, to score the policy's greedy responses and token flow against; None
        when both are off or the run shards (a generate over an FSDP or ZeRO engine is not supported here)."""
        if not (self.cfg.probe_greedy or self.cfg.probe_flow) or self.cfg.fsdp or self.cfg.deepspeed:
            return None
        frozen = copy.deepcopy(self.model).eval()
        frozen.requires_grad_(False)
        return frozen

    def _batches(self) -> list[list[int]]:
        """The pair indices of every step, epoch after epoch, each epoch in its own seeded order."""
        cfg, n = self.cfg, len(self.pairs)
        # the last batch of an epoch may be smaller; across processes only full batches (equal shares)
        steps_per_epoch = -(-n // cfg.batch_pairs) if self.acc.num_processes == 1 else n // cfg.batch_pairs
        gen = torch.Generator().manual_seed(cfg.seed)
        orders = [torch.randperm(n, generator=gen).tolist() for _ in range(cfg.epochs)]
        return [
            o[s * cfg.batch_pairs : (s + 1) * cfg.batch_pairs] for o in orders for s in range(steps_per_epoch)
        ]

    def _optimizer(self, steps: int):
        """AdamW, and its schedule: linear warm-up over warmup_ratio of the steps (at least one), then
        linear decay to 0."""
        cfg = self.cfg
        warmup = max(1, int(cfg.warmup_ratio * steps))
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
        )
        return opt, sched

    def _micro_batches(self, batch: list[int], rank: int) -> list[list[int]]:
        """The pair indices of each forward of process `rank` for one step's `batch`: its share, sorted by
        length (models that cannot pack, with eager attention, pad less; the step's gradient is the same), in
        chunks of micro_pairs. The reference log-probs are scored in this layout too (`reference_logps`)."""
        share = batch[rank :: self.acc.num_processes]
        share = sorted(share, key=lambda i: sum(map(len, self.pairs[i])))
        return [share[m : m + self.cfg.micro_pairs] for m in range(0, len(share), self.cfg.micro_pairs)]

    def _accumulate(self, forward, batch: list[int], ref: tuple[SeqLogps, SeqLogps], step: int) -> dict:
        """2. Forward, loss and backward of each micro-batch of this process's share of `batch`; `ref`: the
        reference log-probs of this epoch. Returns the step's metrics, each the mean over the whole batch (all
        processes)."""
        world = self.acc.num_processes
        stats = {}
        # the lookahead anchor's virtual step is per micro-batch
        for idx in self._micro_batches(batch, self.acc.process_index):
            loss, terms = self._micro_batch_loss(forward, idx, ref, step)
            # each micro-batch weighs its share of the batch; DDP and ZeRO average gradients over processes
            self.parallel.backward(loss * len(idx) / len(batch) * world)
            for name, v in terms.items():
                stats[name] = stats.get(name, 0.0) + v.detach().sum().item() / len(batch)
        return self._sum_over_processes(stats)

    def _micro_batch_loss(self, forward, idx: list[int], ref: tuple[SeqLogps, SeqLogps], step: int):
        """The preference loss of the pairs in idx (a non-finite one stops the run before its backward), and
        the per-pair terms to log."""
        cfg = self.cfg
        prompts, chosen, rejected = self._columns(self.pairs, idx)
        with autocast(self.bf16, self.model.device.type):
            pc, pr = pair_logps(forward, prompts, chosen, rejected)
            v_hat = None
            if self.plug == "spo" and cfg.spo_anchor == "lookahead":
                v_hat = lookahead_anchor(self.model, prompts, chosen, pc, cfg.spo_alpha)
        rc, rr = (SeqLogps(r.total[idx], r.count[idx]).to(pc.total.device) for r in ref)
        loss, terms = preference_loss(cfg.method, pc, pr, rc, rr, cfg, v_hat)  # TrainConfig is a LossParams
        if not torch.isfinite(loss):
            raise self._diverged(f"loss ({loss.item()})", step)
        terms = {
            **terms,
            "loss": loss.detach().expand(len(idx)),
            "dlogp_chosen": (pc.mean - rc.mean).detach(),
            "dlogp_rejected": (pr.mean - rr.mean).detach(),
        }
        return loss, terms

    def _sum_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        if self.acc.num_processes == 1:
            return stats  # as summed, in float64 (a reduce goes through a float32 tensor)
        summed = self.acc.reduce(torch.tensor(list(stats.values()), device=self.acc.device), "sum")
        return dict(zip(stats, summed.tolist()))

    def _optimizer_step(self, opt, sched, step: int) -> float:
        """3. The strategy's clip, AdamW, schedule and zeroed gradients; the gradient norm before clipping."""
        grad_norm = self.parallel.step(opt, sched, self.cfg.max_grad_norm)
        # the strategy skipped the update on a non-finite norm: the weights are still the last good step's
        if not math.isfinite(grad_norm):
            raise self._diverged(f"gradient norm ({grad_norm})", step)
        return grad_norm

    @staticmethod
    def _write(log: MetricsLog | None, row: dict) -> None:
        if log is not None:  # the main process's
            log.write(row)

    def _finish(self, log: MetricsLog | None, row: dict, steps: int, start: int, t0: float) -> dict:
        """5. The checkpoint and train.json, written by the main process; the run's summary (the others: their
        rank)."""
        self.acc.wait_for_everyone()
        weights = self.parallel.gather_state_dict()  # a collective: every process gathers the shards
        if log is not None:
            log.close()
            self.save(weights)
            summary = self._summary(row, steps, start, t0)
        else:
            summary = {"steps": steps, "process": self.acc.process_index}
        # the others leave only once the main process has saved, and every process tears down its process
        # group itself: a rank that exited with gloo's threads still running aborted (2 runs of 21 did)
        self.acc.wait_for_everyone()
        if self.acc.num_processes > 1:
            self.acc.end_training()
        return summary

    def _summary(self, row: dict, steps: int, start: int, t0: float) -> dict:
        """train.json: the config, what ran, the pairs used and skipped, and the last metrics row."""
        summary = {
            "config": asdict(self.cfg),
            "bf16": self.bf16,
            "processes": self.acc.num_processes,
            "sharding": self.parallel.name,
            "steps": steps,
            "resumed_from": start,
            "reference_logps_computed": self.reference_computed,
            "pairs_used": len(self.pairs),
            "pairs_dropped_by_ches": len(self.dropped),
            "pairs_skipped": sum(s["reason"] != "truncated" for s in self.skipped),
            "pairs_truncated": sum(s["reason"] == "truncated" for s in self.skipped),
            "skipped": self.skipped,
            "train_seconds": time.time() - t0,
            "final": row,
        }
        write_json(self.out / "train.json", summary)
        return summary

    def save(self, state_dict: dict | None = None) -> Path:
        """HF checkpoint (safetensors + tokenizer; LoRA adapters merged), written aside and renamed into
        place."""
        final, partial = self.out / "checkpoint", self.out / "checkpoint.partial"
        shutil.rmtree(partial, ignore_errors=True)
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
        self.model.save_pretrained(partial, state_dict=state_dict)
        self.tok.save_pretrained(partial)
        return replace_dir(partial, final)


def run(cfg: TrainConfig) -> dict:
    """Load the model named in cfg (safetensors only, no remote code), train, save the checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed_everything(cfg.seed)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    # the Trainer moves it to its device
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32, use_safetensors=True)
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)
    return Trainer(cfg, model, tok).train()
