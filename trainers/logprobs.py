"""Batched completion log-probs: the one scorer shared by training, training probes and evaluation.

Sequences are prompt+completion token ids, right-padded. With right padding every real token sits
before every pad, so the causal mask alone keeps pads out of attention and no padding mask is
needed. The LM head is applied only at the positions that predict completion tokens, so the
(large-vocabulary) logits are never materialised for prompt or pad positions.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from trainers.losses import SeqLogps


def encode(tok, prompt: list[dict] | str, completion: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): the chat template with the generation prompt, then the
    response followed by the end-of-turn token, so the model is scored on stopping as well."""
    text = prompt if isinstance(prompt, str) else tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    p = tok(text, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p, c


def native_bf16(device_type: str | None = None) -> bool:
    """Whether bf16 runs natively on `device_type` (default: cuda if there is a GPU, else cpu): a GPU with bf16
    units, or a CPU with AVX-512 bf16 or AMX. Elsewhere bf16 is emulated (an AVX2-only CPU here: 0.2 GFLOP/s
    bf16 against 64.9 fp32 for a 2048² matmul)."""
    if (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(dtype: str) -> str:
    """`auto` → bfloat16 where it is native (`native_bf16`), else float32; other names pass through."""
    return ("bfloat16" if native_bf16() else "float32") if dtype == "auto" else dtype


def autocast(bf16: bool, device_type: str = "cpu"):
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _completion_logps(model, ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, counts: list[int],
                      mask: torch.Tensor | None = None, positions: torch.Tensor | None = None, params: dict | None = None) -> SeqLogps:
    """Summed log-prob of `targets`, predicted at (rows, cols) of the batch `ids`, per sequence: the targets are
    the sequences' tokens one after another, `counts` long each. The LM head runs only at those positions. `mask`/`positions` (a 4D boolean mask, True = may attend,
    and position ids) replace the causal mask for packed rows; `params` evaluates other weights functionally."""
    seq = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]).to(ids.device)
    kwargs = {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    if params is None and not _wrapped(model):
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model: its LoRA-injected base
        hidden = core.base_model(**kwargs).last_hidden_state
        logits = core.get_output_embeddings()(hidden[rows, cols]).float()
    else:  # other weights (functional call), or a DDP/FSDP model
        start = int(cols.min())
        kwargs["logits_to_keep"] = slice(start, None)
        out = model(**kwargs) if params is None else torch.func.functional_call(model, params, (), kwargs)
        logits = out.logits[rows, cols - start].float()
    token_logps = -F.cross_entropy(logits, targets, reduction="none")
    total = torch.zeros(len(counts), device=ids.device, dtype=token_logps.dtype).index_add(0, seq, token_logps)
    return SeqLogps(total, torch.tensor(counts, device=ids.device, dtype=total.dtype))


def _wrapped(model) -> bool:
    """A DDP or FSDP model: its own forward must run (gradient sync; gathering the shards)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, torch.nn.parallel.DistributedDataParallel | FSDPModule)


def sequence_logps(model, prompts: list[list[int]], completions: list[list[int]], params: dict | None = None) -> SeqLogps:
    """Summed log-prob of each completion given its prompt, and its length, in one forward.
    `params` (name → tensor) evaluates the model at other weights through `torch.func.functional_call`."""
    if any(len(c) == 0 for c in completions):
        raise ValueError("empty completion: nothing to score")
    device = next(model.parameters()).device
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : lengths[i]] = torch.tensor(p + c)
    # position t predicts token t+1: completion tokens p..p+c-1 are predicted at p-1..p+c-2
    rows = torch.cat([torch.full((len(c),), i) for i, c in enumerate(completions)])
    cols = torch.cat([torch.arange(len(p) - 1, len(p) + len(c) - 1) for p, c in zip(prompts, completions)])
    ids, rows, cols = ids.to(device), rows.to(device), cols.to(device)
    return _completion_logps(model, ids, rows, cols, ids[rows, cols + 1], [len(c) for c in completions], params=params)


def packable(model) -> bool:
    """Whether `pair_logps` may pack a pair into one row: its boolean 4D mask is passed as-is to the attention, which
    only SDPA reads as a mask (eager attention would add it to the scores), and it knows no sliding window."""
    cfg = getattr(model, "module", model).config  # a DDP wrapper's module; peft models forward .config
    return cfg._attn_implementation == "sdpa" and not getattr(cfg, "sliding_window", None)


def pair_logps(model, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]]) -> tuple[SeqLogps, SeqLogps]:
    """(chosen, rejected) log-probs of each pair in one forward with the prompt encoded once.

    Row i holds prompt, chosen, rejected. The rejected tokens take the positions that follow the prompt and a
    4D mask lets them attend to the prompt and to earlier rejected tokens, never to the chosen ones, so each
    log-prob equals `sequence_logps` of that sequence alone, while the prompt costs one pass instead of two
    and a batch of k pairs pads k rows, not 2k. Models it cannot pack (`packable`) get two sequences per pair."""
    if any(len(c) == 0 for c in chosen + rejected):
        raise ValueError("empty completion: nothing to score")
    k = len(prompts)
    out = _packed_logps(model, prompts, chosen, rejected) if packable(model) else sequence_logps(model, prompts + prompts, chosen + rejected)
    return SeqLogps(out.total[:k], out.count[:k]), SeqLogps(out.total[k:], out.count[k:])


def _packed_logps(model, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]]) -> SeqLogps:
    """The chosen then the rejected log-probs of `pair_logps`, one row per pair."""
    k, device = len(prompts), next(model.parameters()).device
    lengths = [len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected, strict=True)]
    n = max(lengths)
    ids = torch.zeros(k, n, dtype=torch.long)
    positions = torch.zeros(k, n, dtype=torch.long)
    part = torch.zeros(k, n, dtype=torch.long)  # 0 prompt or pad, 1 chosen, 2 rejected
    for i, (p, c, r) in enumerate(zip(prompts, chosen, rejected)):
        ids[i, : lengths[i]] = torch.tensor(p + c + r)
        positions[i, : lengths[i]] = torch.cat([torch.arange(len(p) + len(c)), torch.arange(len(p), len(p) + len(r))])
        part[i, len(p) : len(p) + len(c)] = 1
        part[i, len(p) + len(c) : lengths[i]] = 2
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = (causal & ~((part[:, :, None] == 2) & (part[:, None, :] == 1)))[:, None]  # pads come last: no real token sees them
    # chosen token j (at p+j) is predicted at p+j-1; the first rejected token at p-1 (the prompt's end), the next at p+c+j-1
    rows = torch.cat([torch.full((len(c),), i) for i, c in enumerate(chosen)] + [torch.full((len(r),), i) for i, r in enumerate(rejected)])
    cols = torch.cat([torch.arange(len(p) - 1, len(p) + len(c) - 1) for p, c in zip(prompts, chosen)]
                     + [torch.cat([torch.tensor([len(p) - 1]), torch.arange(len(p) + len(c), len(p) + len(c) + len(r) - 1)])
                        for p, c, r in zip(prompts, chosen, rejected)])
    targets = torch.tensor([t for c in chosen for t in c] + [t for r in rejected for t in r])
    return _completion_logps(model, ids.to(device), rows.to(device), cols.to(device), targets.to(device),
                             [len(c) for c in chosen] + [len(r) for r in rejected], mask.to(device), positions.to(device))


def _no_grad_batches(model, logps, columns: tuple[list, ...], batch_size: int, bf16: bool, progress: str | None) -> list[SeqLogps]:
    """`logps(model, *columns)` over the rows of `columns` in batches, in eval mode without gradients, on the CPU."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for s in tqdm(range(0, len(columns[0]), batch_size), desc=progress, disable=progress is None, leave=False):
            with autocast(bf16, model.device.type):
                out = logps(model, *(c[s : s + batch_size] for c in columns))
            parts.append([o.to("cpu") for o in (out if isinstance(out, tuple) else (out,))])
    model.train(was_training)
    if not parts:
        raise ValueError("nothing to score")
    return [SeqLogps(torch.cat([p[j].total for p in parts]), torch.cat([p[j].count for p in parts])) for j in range(len(parts[0]))]


def score(model, prompts: list[list[int]], completions: list[list[int]], batch_size: int = 16,
          bf16: bool = False, progress: str | None = None) -> SeqLogps:
    """`sequence_logps` over many sequences in batches, without gradients (eval mode)."""
    if not prompts:
        return SeqLogps(torch.empty(0), torch.empty(0))
    return _no_grad_batches(model, sequence_logps, (prompts, completions), batch_size, bf16, progress)[0]


def score_pairs(model, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]], batch_size: int = 8,
                bf16: bool = False, progress: str | None = None) -> tuple[SeqLogps, SeqLogps]:
    """`pair_logps` over many pairs in batches of `batch_size` pairs, without gradients (eval mode)."""
    pc, pr = _no_grad_batches(model, pair_logps, (prompts, chosen, rejected), batch_size, bf16, progress)
    return pc, pr


def pair_shift(pc: SeqLogps, pr: SeqLogps, rc: SeqLogps, rr: SeqLogps) -> dict[str, torch.Tensor]:
    """Per-pair movement from the reference (rc, rr) to the policy (pc, pr): Δ token-mean
    log-prob of the chosen and of the rejected response, and Δ log of their combined probability
    log(π(y_w)+π(y_l)). Both falling means the mass went to other responses. Shared by the
    training probes and the evaluator, so both report the same quantities."""
    return {"dlogp_chosen": pc.mean - rc.mean, "dlogp_rejected": pr.mean - rr.mean,
            "dlog_combined": torch.logaddexp(pc.total, pr.total) - torch.logaddexp(rc.total, rr.total)}
