"""Preference trainer: one policy in memory, reference log-probs computed once and cached on disk,
chosen and rejected in one forward, AdamW with gradient accumulation, HF checkpoint at the end.

Pairs are generic: {"prompt": chat messages or text, "chosen": str, "rejected": str}.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainers.logprobs import autocast, encode, score, sequence_logps
from trainers.losses import SeqLogps, preference_loss


@dataclass
class TrainConfig:
    model: str                    # local HF checkpoint directory (or hub id when a hub is reachable)
    pairs: str                    # JSONL of {"prompt", "chosen", "rejected"}
    output_dir: str = "outputs/train"  # metrics.jsonl, train.json and checkpoint/ go here
    method: str = "spo"           # dpo | spo (= dpo+spo)
    beta: float = 0.1             # DPO inverse temperature
    spo_lambda: float = 1.0       # weight of the SPO penalty
    spo_delta: float = 0.0        # reference anchor margin: v̂ = ℓ_ref − δ
    lr: float = 1e-5              # AdamW peak learning rate
    epochs: int = 1               # passes over the pairs (shuffled each epoch)
    batch_pairs: int = 8          # pairs per optimizer step
    micro_pairs: int = 4          # pairs per forward pass (accumulation = batch_pairs / micro_pairs)
    max_len: int = 640            # prompt + completion tokens; longer pairs are skipped and counted
    warmup_ratio: float = 0.1     # share of steps with linear warm-up; then linear decay to 0
    weight_decay: float = 0.0     # AdamW weight decay
    max_grad_norm: float = 1.0    # gradient clipping
    seed: int = 0                 # python and torch RNGs, data order
    bf16: bool = True             # bf16 autocast (CPU with AVX-512 bf16, or GPU); weights stay fp32
    ref_cache: str | None = None  # where cached reference log-probs live (default: in output_dir)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fingerprint(model: str) -> list:
    """Name plus, for a local checkpoint, the weights' size and mtime: a retrained checkpoint at the
    same path does not reuse stale cached log-probs."""
    weights = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    return [model] + [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights]


def read_pairs(path: str) -> list[dict]:
    """Pairs from JSONL; a malformed line raises an error naming file, line and field."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            for field in ("prompt", "chosen", "rejected"):
                if not row.get(field):
                    raise ValueError(f"{path}:{lineno}: field {field!r} is missing or empty")
            pairs.append(row)
    return pairs


class Trainer:
    def __init__(self, cfg: TrainConfig, model, tok):
        if cfg.batch_pairs % cfg.micro_pairs:
            raise ValueError(f"batch_pairs ({cfg.batch_pairs}) must be a multiple of micro_pairs ({cfg.micro_pairs})")
        self.cfg, self.model, self.tok = cfg, model, tok
        self.out = Path(cfg.output_dir)
        encoded = [(encode(tok, p["prompt"], p["chosen"]), encode(tok, p["prompt"], p["rejected"])) for p in read_pairs(cfg.pairs)]
        fits = [max(len(c[0]) + len(c[1]), len(r[0]) + len(r[1])) <= cfg.max_len for c, r in encoded]
        self.skipped = fits.count(False)
        self.pairs = [e for e, ok in zip(encoded, fits) if ok]
        if not self.pairs:
            raise ValueError(f"{cfg.pairs}: no pair fits max_len={cfg.max_len} ({self.skipped} skipped)")

    def _flat(self, idx: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Chosen sequences of the pairs in idx, then their rejected ones: one batch, one forward."""
        seqs = [self.pairs[i][0] for i in idx] + [self.pairs[i][1] for i in idx]
        return [s[0] for s in seqs], [s[1] for s in seqs]

    def reference_logps(self) -> SeqLogps:
        """Log-probs of every chosen/rejected sequence under the initial model, cached on disk,
        keyed by the model, the tokenised pairs and the precision (so methods share them)."""
        from safetensors.torch import load_file, save_file

        key = hashlib.sha256(json.dumps([fingerprint(self.cfg.model), self.cfg.bf16, self.pairs]).encode()).hexdigest()[:16]
        path = Path(self.cfg.ref_cache or self.out) / f"ref_logps-{key}.safetensors"
        if path.is_file():
            t = load_file(path)
            return SeqLogps(t["total"], t["count"])
        prompts, completions = self._flat(list(range(len(self.pairs))))
        ref = score(self.model, prompts, completions, 2 * self.cfg.micro_pairs, self.cfg.bf16, "reference log-probs").to("cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"total": ref.total.contiguous(), "count": ref.count.contiguous()}, str(tmp))
        os.replace(tmp, path)
        return ref

    def train(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        seed_everything(cfg.seed)
        ref = self.reference_logps()
        n = len(self.pairs)
        ref_c, ref_r = SeqLogps(ref.total[:n], ref.count[:n]), SeqLogps(ref.total[n:], ref.count[n:])
        steps_per_epoch = -(-n // cfg.batch_pairs)  # the last batch of an epoch may be smaller
        total_steps = steps_per_epoch * cfg.epochs
        warmup = max(1, int(cfg.warmup_ratio * total_steps))
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
        self.out.mkdir(parents=True, exist_ok=True)
        log = open(self.out / "metrics.jsonl", "w")
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model.train()
        t0, step = time.time(), 0
        bar = tqdm(total=total_steps, desc=f"train {cfg.method}")
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen).tolist()
            for s in range(steps_per_epoch):
                batch = order[s * cfg.batch_pairs : (s + 1) * cfg.batch_pairs]
                stats: dict[str, float] = {}
                for m in range(0, len(batch), cfg.micro_pairs):
                    idx = batch[m : m + cfg.micro_pairs]
                    with autocast(cfg.bf16, self.model.device.type):
                        out = sequence_logps(self.model, *self._flat(idx))
                    k = len(idx)
                    pc, pr = SeqLogps(out.total[:k], out.count[:k]), SeqLogps(out.total[k:], out.count[k:])
                    rc = SeqLogps(ref_c.total[idx], ref_c.count[idx]).to(out.total.device)
                    rr = SeqLogps(ref_r.total[idx], ref_r.count[idx]).to(out.total.device)
                    loss, terms = preference_loss(cfg.method, pc, pr, rc, rr, cfg.beta, cfg.spo_lambda, cfg.spo_delta)
                    (loss * k / len(batch)).backward()
                    terms = {**terms, "loss": loss.detach().expand(k),
                             "dlogp_chosen": (pc.mean - rc.mean).detach(), "dlogp_rejected": (pr.mean - rr.mean).detach()}
                    for name, v in terms.items():
                        stats[name] = stats.get(name, 0.0) + v.detach().sum().item() / len(batch)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm).item()
                lr = opt.param_groups[0]["lr"]  # the rate this step used
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                row = {"step": step, **stats, "grad_norm": grad_norm, "lr": lr, "seconds": time.time() - t0}
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update()
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
        bar.close()
        log.close()
        train_seconds = time.time() - t0
        self.save()
        summary = {"config": asdict(cfg), "steps": step, "pairs_used": n, "pairs_skipped": self.skipped,
                   "train_seconds": train_seconds, "final": row}
        tmp = self.out / "train.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, self.out / "train.json")
        return summary

    def save(self) -> Path:
        """HF checkpoint (safetensors + tokenizer), written aside and renamed into place."""
        final, partial = self.out / "checkpoint", self.out / "checkpoint.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.model.save_pretrained(partial)
        self.tok.save_pretrained(partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return final


def run(cfg: TrainConfig) -> dict:
    """Load the model named in cfg (safetensors only, no remote code), train, save the checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed_everything(cfg.seed)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32, use_safetensors=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return Trainer(cfg, model, tok).train()
