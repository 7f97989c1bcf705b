"""Batched completion log-probs: the one scorer shared by training, training probes and evaluation.

Sequences are packed into one row without padding, each attending only to itself: the model's attention is
switched, for that forward, to SDPA run segment by segment (`_segment_attention`), so no work is spent on pad
tokens or on token pairs from different sequences. Models whose attention cannot be switched (eager, sliding
window, no attention interface) get right-padded rows instead: with right padding every real token sits before
every pad, so the causal mask alone keeps pads out of attention. Scores come from the model's own forward, its
logit post-processing included; its LM head runs only at the positions that predict completion tokens, so the
(large-vocabulary) logits are never materialised for prompt or pad positions. HF `generate` (training probes,
the HF backend) runs with `decoding`: each decode step's attention computed directly in fp32 instead of by
SDPA's kernel.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from trainers.losses import SeqLogps

# the attention implementations of packed rows and of decoding, registered with transformers at first use
SEGMENTS = "spo_harness_segments"
DECODE = "spo_harness_decode"


def _segment_attention(
    module, query, key, value, attention_mask, segments: list[tuple[int, torch.Tensor | None]], **kwargs
):
    """SDPA on each segment of a packed row alone, `segments` being (length, 4D boolean mask or None = causal)
    in row order. transformers builds no row mask for an implementation without a mask function, so
    `attention_mask` is None."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = [n for n, _ in segments]
    parts = zip(
        query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), segments, strict=True
    )
    return torch.cat(
        [sdpa_attention_forward(module, q, k, v, m, **kwargs)[0] for q, k, v, (_, m) in parts], 1
    ), None


def _decode_attention(module, query, key, value, attention_mask, scaling: float | None = None, **kwargs):
    """SDPA, except at a decode step (one new token per row), where the new token's attention over the
    cache is computed directly in fp32: on a CPU, SDPA's kernel costs about 0.9 ms a call at that size (27
    of a ~60 ms decode step at batch 16 on the default model) for microseconds of products, and fp32
    rounds less than a bf16 model's SDPA. `attention_mask`: SDPA's boolean mask (True = attend) or None."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    # grouped-query attention: key/value head j serves the query heads j·g … j·g + g − 1
    grouped = query.float().reshape(batch, key.shape[1], heads // key.shape[1], dim)
    scores = grouped @ key.float().transpose(2, 3) * (dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask[..., -1:, : key.shape[2]], float("-inf"))
    out = (scores.softmax(-1) @ value.float()).reshape(batch, heads, 1, dim)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    # here, not at import: transformers' modeling code takes ~3 s to import, and compare, which only reads
    # configs and starts the stages, never loads a model
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SEGMENTS, _segment_attention)
    AttentionInterface.register(DECODE, _decode_attention)
    AttentionMaskInterface.register(DECODE, sdpa_mask)


def native_bf16(device_type: str | None = None) -> bool:
    """Whether bf16 runs natively on `device_type` (default: cuda if there is a GPU, else cpu): a GPU with
    bf16 units, or a CPU with AVX-512 bf16 or AMX. Elsewhere bf16 is emulated (an AVX2-only CPU here: 0.2
    GFLOP/s bf16 against 64.9 fp32 for a 2048² matmul)."""
    if (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(dtype: str) -> str:
    """`auto` → bfloat16 where it is native (`native_bf16`), else float32; other names pass through."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16() else "float32"


def autocast(bf16: bool, device_type: str = "cpu"):
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _core(model):
    return getattr(model, "module", model)  # a DDP or DeepSpeed wrapper's module; peft models forward .config


@contextmanager
def _attention(model, implementation: str):
    """The model's attention implementation set to `implementation` for one forward (the backward does not
    read it)."""
    cfg = _core(model).config
    before, cfg._attn_implementation = cfg._attn_implementation, implementation
    try:
        yield
    finally:
        cfg._attn_implementation = before


@contextmanager
def decoding(model):
    """For a `generate`: the attention of a model that runs SDPA switched to `_decode_attention` (the same
    SDPA for the prompt, a faster fp32 product at each decode step); other models as they are."""
    if _core(model).config._attn_implementation != "sdpa":
        yield
        return
    _register_attention()
    with _attention(model, DECODE):
        yield


def _completion_logps(
    model,
    ids: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    counts: list[int],
    params: dict | None = None,
    **forward,
) -> SeqLogps:
    """Summed log-prob of `targets`, predicted at (rows, cols) of the batch `ids`, per sequence: the targets
    are the sequences' tokens one after another, `counts` long each. `forward` goes to the model (position
    ids, segments); `params` evaluates other weights functionally.

    The model's own forward runs (all positions kept, transformers' default), so whatever it does to its
    logits after the LM head (Gemma-2's final soft-capping, Granite's logit scaling, Cohere's logit scale) is
    in the scores; the LM head itself sees only the hidden states at (rows, cols) (`_head_at`), so the
    large-vocabulary logits are never computed for prompt or pad positions."""
    seq = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]).to(ids.device)
    kwargs = {"input_ids": ids, **forward}
    with _head_at(model, rows, cols):
        out = model(**kwargs) if params is None else torch.func.functional_call(model, params, (), kwargs)
    if out.logits.shape[:2] != (1, len(targets)):
        raise RuntimeError(
            f"{type(_core(model)).__name__}: its logits ({tuple(out.logits.shape)}) are not the LM head's "
            "output at the scored positions; this family needs its own scoring path"
        )
    token_logps = -F.cross_entropy(out.logits[0].float(), targets, reduction="none")
    total = torch.zeros(len(counts), device=ids.device, dtype=token_logps.dtype).index_add(
        0, seq, token_logps
    )
    return SeqLogps(total, torch.tensor(counts, device=ids.device, dtype=total.dtype))


@contextmanager
def _head_at(model, rows: torch.Tensor, cols: torch.Tensor):
    """During one forward, the output embedding (LM head) gets the hidden states at (rows, cols) only, as
    one row: its input [batch, length, hidden] becomes [1, len(rows), hidden]. Everything the model's forward
    does after the head then applies to those logits alone. A model that never calls its output embedding
    module is an error, not a silent fallback."""
    called = []

    def gather(_module, args):
        called.append(True)
        return (args[0][rows, cols][None], *args[1:])

    handle = _core(model).get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
    if not called:
        raise RuntimeError(f"{type(_core(model)).__name__}: its forward does not call its output embedding")


# decoders made only of attention and per-token layers (tested packed = padded)
PACKABLE = ("llama", "mistral", "qwen2", "qwen3")


def packable(model) -> bool:
    """Whether sequences may be packed into one row (`_segment_attention`): a model family whose only token
    mixing is its attention (hybrid convolution, state-space or linear-attention layers would run across the
    whole row), with SDPA, full attention in every layer (no sliding window, which the segments would not
    apply), and no gradient checkpointing (its recomputation in the backward would run the model's own
    attention)."""
    core = _core(model)
    text = core.config.get_text_config()
    layers = getattr(text, "layer_types", None)
    full = set(layers) == {"full_attention"} if layers else not getattr(text, "sliding_window", None)
    return (
        core.config._attn_implementation == "sdpa"
        and text.model_type in PACKABLE
        and full
        and not getattr(core, "is_gradient_checkpointing", False)
    )


def _starts(lengths: list[int]) -> list[int]:
    return [sum(lengths[:i]) for i in range(len(lengths))]


def _packed(
    model,
    segments: list[tuple[list[int], torch.Tensor, torch.Tensor | None]],
    cols: torch.Tensor,
    targets: list[int],
    counts: list[int],
    params: dict | None,
) -> SeqLogps:
    """`_completion_logps` of one row holding the segments (tokens, position ids, 4D mask or None = causal)
    one after another, each attending only to itself; `cols` are positions in that row."""
    device = next(model.parameters()).device
    ids = torch.tensor([[t for s in segments for t in s[0]]], device=device)
    positions = torch.cat([s[1] for s in segments])[None].to(device)
    attention = [(len(s[0]), None if s[2] is None else s[2].to(device)) for s in segments]
    _register_attention()
    with _attention(model, SEGMENTS):
        return _completion_logps(
            model,
            ids,
            torch.zeros_like(cols).to(device),
            cols.to(device),
            torch.tensor(targets, device=device),
            counts,
            params,
            position_ids=positions,
            segments=attention,
        )


def sequence_logps(
    model, prompts: list[list[int]], completions: list[list[int]], params: dict | None = None
) -> SeqLogps:
    """Summed log-prob of each completion given its prompt, and its length, in one forward.
    `params` (name → tensor) evaluates the model at other weights through `torch.func.functional_call`."""
    if any(len(c) == 0 for c in completions):
        raise ValueError("empty completion: nothing to score")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: no position predicts the first completion token")
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    counts, targets = [len(c) for c in completions], [t for c in completions for t in c]
    # position t predicts token t+1: completion tokens p..p+c-1 are predicted at p-1..p+c-2
    if packable(model):
        cols = torch.cat(
            [torch.arange(s + len(p) - 1, s + n - 1) for s, n, p in zip(_starts(lengths), lengths, prompts)]
        )
        return _packed(
            model,
            [(p + c, torch.arange(n), None) for p, c, n in zip(prompts, completions, lengths)],
            cols,
            targets,
            counts,
            params,
        )
    device = next(model.parameters()).device
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : lengths[i]] = torch.tensor(p + c)
    rows = torch.cat([torch.full((len(c),), i) for i, c in enumerate(completions)])
    cols = torch.cat([torch.arange(len(p) - 1, n - 1) for p, n in zip(prompts, lengths)])
    return _completion_logps(
        model,
        ids.to(device),
        rows.to(device),
        cols.to(device),
        torch.tensor(targets, device=device),
        counts,
        params,
    )


def shared_logps(
    model, prompts: list[list[int]], *completions: list[list[int] | None]
) -> tuple[SeqLogps, ...]:
    """Log-probs of several completions of each prompt in one forward, the prompt encoded once: one SeqLogps
    per list in `completions` (each a completion per prompt; None: that prompt has none, NaN in the result).

    A prompt and its completions are one segment: the prompt, then each completion in turn. Every completion
    takes the positions that follow the prompt, and the segment's mask lets its tokens attend to the prompt
    and to its own earlier tokens, never to another completion's, so each log-prob equals `sequence_logps` of
    that sequence alone while the prompt costs one pass instead of one per completion. Models it cannot pack
    (`packable`) get one padded sequence per completion."""
    if any(len(kind) != len(prompts) for kind in completions):
        raise ValueError(f"each completion list needs one entry per prompt ({len(prompts)})")
    # the scored sequences, list by list: (list, prompt) indices
    present = [(j, i) for j, kind in enumerate(completions) for i, c in enumerate(kind) if c is not None]
    if any(len(completions[j][i]) == 0 for j, i in present):
        raise ValueError("empty completion: nothing to score")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: no position predicts the first completion token")
    if not present:
        flat = SeqLogps(torch.empty(0), torch.empty(0))
    elif packable(model):
        flat = _shared_packed(model, prompts, completions, present)
    else:
        sequences = [completions[j][i] for j, i in present]
        flat = sequence_logps(model, [prompts[i] for _, i in present], sequences)
    out, at = [], 0
    for kind in completions:
        have = [i for i, c in enumerate(kind) if c is not None]
        total, count = flat.total[at : at + len(have)], flat.count[at : at + len(have)]
        at += len(have)
        if len(have) < len(kind):
            where = torch.tensor(have, dtype=torch.long, device=total.device)
            total, count = (
                torch.full((len(kind),), float("nan"), dtype=x.dtype, device=x.device).index_copy(0, where, x)
                for x in (total, count)
            )
        out.append(SeqLogps(total, count))
    return tuple(out)


def _shared_packed(
    model, prompts: list[list[int]], completions: tuple[list, ...], present: list[tuple[int, int]]
) -> SeqLogps:
    """`shared_logps`' packed row: one segment per prompt; the sequences `present` in that order."""
    segments, first, begin, row = [], {}, {}, 0  # first, begin: columns in the row
    for i, p in enumerate(prompts):
        own = [j for j, kind in enumerate(completions) if kind[i] is not None]
        if not own:
            continue
        n = len(p) + sum(len(completions[j][i]) for j in own)
        mask, positions, at = torch.ones(n, n, dtype=torch.bool).tril(), [torch.arange(len(p))], len(p)
        for j in own:
            c = completions[j][i]
            mask[at + len(c) :, at : at + len(c)] = False  # the later completions never see this one
            positions.append(torch.arange(len(p), len(p) + len(c)))
            begin[j, i], at = row + at, at + len(c)
        segments.append(
            (p + [t for j in own for t in completions[j][i]], torch.cat(positions), mask[None, None])
        )
        first[i], row = row + len(p) - 1, row + n
    sequences = [completions[j][i] for j, i in present]
    # a completion's first token is predicted at its prompt's end, its token k > 0 at its own column k - 1
    cols = torch.cat(
        [
            torch.cat(
                [
                    torch.tensor([first[i]]),
                    torch.arange(begin[j, i], begin[j, i] + len(c) - 1),
                ]
            )
            for (j, i), c in zip(present, sequences, strict=True)
        ]
    )
    return _packed(model, segments, cols, [t for c in sequences for t in c], list(map(len, sequences)), None)


def pair_logps(
    model, prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]]
) -> tuple[SeqLogps, SeqLogps]:
    """(chosen, rejected) log-probs of each pair in one forward with the prompt encoded once (`shared_logps`:
    the rejected tokens never attend to the chosen ones)."""
    pc, pr = shared_logps(model, prompts, chosen, rejected)
    return pc, pr


def _no_grad_batches(
    model,
    logps,
    columns: tuple[list, ...],
    batch_size: int,
    bf16: bool,
    progress: str | None,
    groups: list[list[int]] | None = None,
) -> list[SeqLogps]:
    """`logps(model, *columns)` over the rows of `columns` in batches, in eval mode without gradients, on the
    CPU. `groups`: the rows of each batch, in order (default: `batch_size` consecutive rows each); the
    results follow the groups' order."""
    from tqdm.auto import tqdm

    if groups is None:
        groups = [
            list(range(s, min(s + batch_size, len(columns[0]))))
            for s in range(0, len(columns[0]), batch_size)
        ]
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for rows in tqdm(groups, desc=progress, disable=progress is None, leave=False):
            with autocast(bf16, model.device.type):
                out = logps(model, *([c[i] for i in rows] for c in columns))
            parts.append([o.to("cpu") for o in (out if isinstance(out, tuple) else (out,))])
    model.train(was_training)
    if not parts:
        raise ValueError("nothing to score")
    return [
        SeqLogps(torch.cat([p[j].total for p in parts]), torch.cat([p[j].count for p in parts]))
        for j in range(len(parts[0]))
    ]


def score(
    model,
    prompts: list[list[int]],
    completions: list[list[int]],
    batch_size: int = 16,
    bf16: bool = False,
    progress: str | None = None,
) -> SeqLogps:
    """`sequence_logps` over many sequences in batches, without gradients (eval mode)."""
    if not prompts:
        return SeqLogps(torch.empty(0), torch.empty(0))
    return _no_grad_batches(model, sequence_logps, (prompts, completions), batch_size, bf16, progress)[0]


def score_shared(
    model,
    prompts: list[list[int]],
    *completions: list[list[int] | None],
    batch_size: int = 8,
    bf16: bool = False,
    progress: str | None = None,
    groups: list[list[int]] | None = None,
) -> tuple[SeqLogps, ...]:
    """`shared_logps` over many prompts in batches of `batch_size` prompts (or the rows of each of `groups`,
    in their order), without gradients (eval mode)."""
    columns = (prompts, *completions)
    return tuple(_no_grad_batches(model, shared_logps, columns, batch_size, bf16, progress, groups))


def score_pairs(
    model,
    prompts: list[list[int]],
    chosen: list[list[int]],
    rejected: list[list[int]],
    batch_size: int = 8,
    bf16: bool = False,
    progress: str | None = None,
    groups: list[list[int]] | None = None,
) -> tuple[SeqLogps, SeqLogps]:
    """`pair_logps` over many pairs in batches of `batch_size` pairs (or the rows of each of `groups`, in
    their order), without gradients (eval mode)."""
    pc, pr = score_shared(
        model, prompts, chosen, rejected, batch_size=batch_size, bf16=bf16, progress=progress, groups=groups
    )
    return pc, pr
