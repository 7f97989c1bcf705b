from __future__ import annotations

import json
import math
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from harness import judge as J
from harness.stats import length_controlled_win_rate, mean_ci, paired_diff_ci
from tasks import tldr

SECRET = "sk-test-DO-NOT-LEAK-4242"


# ---------- stats


def test_mean_ci_known_cases():
    assert mean_ci([0.7] * 30) == pytest.approx((0.7, 0.7, 0.7))
    m, lo, hi = mean_ci([0.7] * 30)
    assert hi - lo == 0
    assert mean_ci([3.0]) == (3.0, 3.0, 3.0)
    assert all(math.isnan(v) for v in mean_ci([]))
    values = [float(i % 7) for i in range(50)]
    m, lo, hi = mean_ci(values, seed=1)
    assert m == pytest.approx(sum(values) / 50)
    assert lo < m < hi and hi - lo < 2.0  # std ≈ 2, so the 95% interval of the mean is ≈ ±0.55
    assert mean_ci(values, seed=1) == (m, lo, hi)  # deterministic


def test_paired_diff_ci():
    a = [float(i % 5) for i in range(40)]
    assert paired_diff_ci(a, a) == (0.0, 0.0, 0.0)
    m, lo, hi = paired_diff_ci([x + 1 for x in a], a)
    assert (m, lo, hi) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        paired_diff_ci([1.0, 2.0], [1.0])


def test_length_control_is_exact_when_length_cannot_explain_the_scores():
    scores = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.5, 1.0, 1.0] * 4  # raw 70 %
    raw, lo, hi = mean_ci(scores, n_boot=1000)
    # equal lengths: the length term is 0 on every item and in every resample, so LC is the mean score and
    # its interval the raw one (same seed, same resamples)
    lc = length_controlled_win_rate(scores, [12] * 40, [12] * 40)
    assert 100 * raw == pytest.approx(70.0) and lc["lc_win_rate"] == pytest.approx(100 * raw, abs=1e-9)
    assert lc["lc_ci95"] == pytest.approx([100 * lo, 100 * hi], abs=1e-9)
    assert lc["length_ratio"] == 1.0
    # lengths that differ, but every length difference (−6, +4) carries the same scores: φ = 0 fits best
    lc = length_controlled_win_rate(scores, [6] * 20 + [16] * 20, [12] * 40)
    assert lc["lc_win_rate"] == pytest.approx(70.0, abs=1e-9)
    assert lc["length_ratio"] == pytest.approx(11 / 12)  # mean lengths 11 and 12 words
    # the ratio of the mean lengths (20 / 25), not the mean of the ratios ((2 + 0.5) / 2)
    assert length_controlled_win_rate([1.0, 0.0], [10, 10], [5, 20])["length_ratio"] == 0.8
    # unanimous scores or a single item: nothing to fit, LC is the raw rate, never NaN
    assert length_controlled_win_rate([1.0] * 5, [3, 9, 4, 20, 1], [5] * 5) == {
        "lc_win_rate": 100.0,
        "lc_ci95": [100.0, 100.0],
        "lc_separated": False,
        "length_ratio": 37 / 25,
    }
    assert length_controlled_win_rate([0.5], [4], [0])["lc_win_rate"] == 50.0
    assert length_controlled_win_rate([0.5], [4], [0])["length_ratio"] is None  # empty baseline
    assert length_controlled_win_rate([], [], []) == {
        "lc_win_rate": None,
        "lc_ci95": None,
        "lc_separated": False,
        "length_ratio": None,
    }


def test_length_control_keeps_the_rate_of_a_judge_that_ignores_length():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 40, 200)
    out = base + rng.integers(-3, 13, 200)  # mostly longer than the baseline
    fair = (rng.random(200) < 0.7).astype(float)  # drawn independently of the lengths
    lc = length_controlled_win_rate(fair, out, base)
    assert abs(lc["lc_win_rate"] - 100 * fair.mean()) < 3.0
    assert lc["lc_ci95"][0] < 100 * fair.mean() < lc["lc_ci95"][1]
    # deterministic for a seed; another seed resamples other items
    assert length_controlled_win_rate(fair, out, base) == lc
    assert length_controlled_win_rate(fair, out, base, seed=1)["lc_ci95"] != lc["lc_ci95"]


def test_length_control_is_not_estimable_when_length_separates_the_scores_anywhere():
    # issue 30's case: raw 50 %, every win longer by 16+ words, every loss by 2 or fewer; the old rule saw
    # no separation (all Δ > 0) and reported LC 0.89 % [0.26, 3.1]
    lc = length_controlled_win_rate([1, 1, 1, 0, 0, 0], [20, 18, 16, 2, 1, 1], [0] * 6)
    assert (lc["lc_win_rate"], lc["lc_ci95"], lc["lc_separated"]) == (None, None, True)
    # quasi-separation: a tie (½ counts as a win and a loss) at the boundary Δ = 5, wins above, losses below
    lc = length_controlled_win_rate([0, 0, 0.5, 1, 1], [1, 3, 5, 8, 9], [0] * 5)
    assert lc["lc_separated"] and lc["lc_win_rate"] is None
    # the mirror image: the shorter output always wins
    assert length_controlled_win_rate([0, 0, 1, 1], [30, 25, 3, 1], [10] * 4)["lc_separated"]
    # one loss among the long outputs: overlap, a finite fit
    lc = length_controlled_win_rate([1, 1, 0, 1, 0, 0], [20, 18, 16, 2, 1, 1], [0] * 6)
    assert not lc["lc_separated"] and 0 < lc["lc_win_rate"] < 100


def test_length_controlled_win_rate_equals_a_direct_fit_with_the_sample_std():
    from scipy.optimize import minimize

    from harness.stats import LC_RIDGE

    rng = np.random.default_rng(5)
    base = rng.integers(20, 40, 60)
    out = base + rng.integers(-10, 15, 60)
    scores = np.where(rng.random(60) < 0.4 + 0.02 * (out - base), 1.0, 0.0)
    scores[::7] = 0.5
    lc = length_controlled_win_rate(scores, out, base)

    def direct(ddof: int) -> float:
        delta = (out - base).astype(float)
        x = np.tanh(delta / delta.std(ddof=ddof))

        def objective(w):
            eta = w[0] + w[1] * x
            return (np.logaddexp(0.0, eta) - scores * eta).sum() + LC_RIDGE * w[1] ** 2 / 2

        theta = minimize(objective, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x[0]
        return 100 / (1 + np.exp(-theta))

    assert not lc["lc_separated"] and lc["lc_win_rate"] == pytest.approx(direct(1), abs=1e-4)
    # AlpacaEval standardises by the sample std (pandas); the population std fits another θ
    assert abs(direct(0) - direct(1)) > 1e-3


# ---------- win_rate with scripted judges


@dataclass
class PositionJudge:
    """Always names position A: pure position bias."""

    name: str = "always-a"

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        return 1.0


@dataclass
class LongerJudge:
    """Prefers the longer text (tie when equal) and counts its calls."""

    name: str = "longer"
    calls: int = 0

    def prefer(self, prompt: str, a: str, b: str, reference: str | None = None) -> float:
        self.calls += 1
        return 0.5 if len(a) == len(b) else float(len(a) > len(b))


def make_items(n: int = 20) -> list[dict]:
    return [
        {"id": f"q{i}", "prompt": f"prompt {i}", "output": "x" * (i + 5), "baseline": "y" * 5}
        for i in range(n)
    ]


def test_position_bias_cancels():
    items = make_items(20)
    r = J.win_rate(PositionJudge(), items, progress=None)
    assert (r["n"], r["win_rate"], r["position_consistency"], r["ties"], r["errors"]) == (20, 50.0, 0.0, 0, 0)
    assert r["ci95"] == [50.0, 50.0]
    assert r["verdicts"][3] == {"id": "q3", "ab": 1.0, "ba": 1.0, "score": 0.5}
    assert "retries" not in r


def test_longer_judge_and_ties():
    items = make_items(20)  # item 0 has equal lengths: a tie in both orders
    r = J.win_rate(LongerJudge(), items, progress=None)
    assert r["n"] == 20 and r["ties"] == 2
    assert r["win_rate"] == pytest.approx(100 * (19 + 0.5) / 20)
    assert r["position_consistency"] == pytest.approx(100 * 19 / 20)
    assert r["verdicts"][0] == {"id": "q0", "ab": 0.5, "ba": 0.5, "score": 0.5}
    assert r["verdicts"][5] == {"id": "q5", "ab": 1.0, "ba": 0.0, "score": 1.0}
    r = J.win_rate(LongerJudge(), items[1:], progress=None)
    assert (r["win_rate"], r["position_consistency"], r["ci95"]) == (100.0, 100.0, [100.0, 100.0])


def test_length_controlled_rate_of_a_judge_that_only_counts_words():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 40, 200)
    out = base + rng.integers(-3, 13, 200)  # mostly longer than the baseline, some shorter or as long
    items = [
        {"id": i, "prompt": f"p{i}", "output": " ".join(["word"] * o), "baseline": " ".join(["base"] * b)}
        for i, (o, b) in enumerate(zip(out, base))
    ]
    r = J.win_rate(LongerJudge(), items, progress=None)
    # 152 outputs longer, 10 as long (ties), 38 shorter
    assert r["win_rate"] == pytest.approx(100 * (152 + 10 / 2) / 200)
    # length decides every unequal pair: only the equal-length items speak for θ, and they are ties
    assert r["lc_win_rate"] == 50.0 and r["lc_ci95"] == [50.0, 50.0]
    assert r["length_ratio"] == pytest.approx(out.sum() / base.sum()) and r["length_ratio"] > 1.1
    # without an equal-length item the judge's preference at equal length is not in the data: no LC (a
    # ridge-fitted θ would sit anywhere in the gap between the shortest longer and longest shorter output)
    unequal = [it for it, o, b in zip(items, out, base) if o != b]
    r = J.win_rate(LongerJudge(), unequal, progress=None)
    assert (
        r["win_rate"] == pytest.approx(100 * 152 / 190) and r["lc_win_rate"] is None and r["lc_ci95"] is None
    )


def test_cache_resumes_and_tolerates_truncation(tmp_path):
    items, cache = make_items(10), tmp_path / "judge" / "cache.jsonl"
    first = LongerJudge()
    r1 = J.win_rate(first, items, cache=cache, progress=None)
    assert first.calls == 20 and len(cache.read_text().splitlines()) == 20
    again = LongerJudge()
    assert J.win_rate(again, items, cache=cache, progress=None) == r1 and again.calls == 0
    cache.write_text(cache.read_text()[:-30])  # a run killed mid-write: the last verdict is cut
    resumed = LongerJudge()
    assert J.win_rate(resumed, items, cache=cache, progress=None) == r1 and resumed.calls == 1
    final = LongerJudge()
    assert J.win_rate(final, items, cache=cache, progress=None) == r1 and final.calls == 0
    renamed = LongerJudge(name="longer-v2")  # the judge's name is part of the key
    J.win_rate(renamed, items, cache=cache, progress=None)
    assert renamed.calls == 20


# ---------- offline similarity judges


def test_embedding_judge_prefers_the_human_summary():
    posts = tldr.split(tldr.load())[0][:101]
    items = [
        {
            "id": p["instruction_id"],
            "prompt": tldr.prompt(p)[0]["content"],
            "output": p["gold_response"],
            "baseline": q["gold_response"],
        }
        for p, q in zip(posts[:-1], posts[1:])
    ]
    judge = J.make_judge("embedding")
    r = J.win_rate(judge, items, progress=None)
    assert r["judge"] == "embedding:all-MiniLM-L6-v2" and r["n"] == 100 and r["errors"] == 0
    assert r["win_rate"] >= 95, r["win_rate"]
    assert r["position_consistency"] >= 95  # a symmetric similarity judge has no position bias
    assert r["ci95"][0] <= r["win_rate"] <= r["ci95"][1]


def test_rouge_judge():
    judge = J.make_judge("rouge")
    ref, same, other = "the cat sat on the mat", "the cat sat on the mat", "dogs run fast in parks"
    assert judge.prefer("a source text", same, other, reference=ref) == 1.0
    assert judge.prefer("a source text", other, same, reference=ref) == 0.0
    assert judge.prefer("a source text", same, same, reference=ref) == 0.5
    # no reference: the prompt is the anchor
    assert judge.prefer("dogs run fast in parks today", same, other) == 0.0
    r = J.win_rate(
        judge, [{"prompt": "p", "output": same, "baseline": other, "reference": ref}], progress=None
    )
    assert (r["win_rate"], r["judge"], r["verdicts"][0]["id"]) == (100.0, "rouge", 0)


def test_make_judge_rejects_unknown_kind():
    with pytest.raises(ValueError, match="offline"):
        J.make_judge("gpt")
    with pytest.raises(ValueError):
        J.make_judge("endpoint", url="http://127.0.0.1:1/v1")
    assert J.make_judge("offline").name == "embedding:all-MiniLM-L6-v2"  # the package is installed here


# ---------- endpoint judge against a local OpenAI-style server


class Server:
    """/v1/chat/completions answering the letter of the longer response; failure modes by flag."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode, self.calls, self.auth = mode, 0, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth.append(self.headers.get("Authorization"))
                n, outer.calls = outer.calls, outer.calls + 1
                user = body["messages"][-1]["content"]
                a, b = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\n", user, re.S).groups()
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": "not found"})
                if outer.mode == "down" or "POISON" in user:
                    return self.reply(503, {"error": "down"})
                if outer.mode == "bad-request":
                    return self.reply(400, {"error": "bad"})
                if outer.mode == "flaky" and n == 0:
                    return self.reply(429, {"error": "slow down"}, {"Retry-After": "0"})
                if outer.mode == "flaky" and n % 3 == 2:
                    return self.reply(500, {"error": "oops"})
                letter = "A" if len(a) > len(b) else "B"
                self.reply(
                    200,
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": letter},
                                "finish_reason": "stop",
                            }
                        ]
                    },
                )

            def reply(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                for k, v in {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(data)),
                    **(headers or {}),
                }.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def endpoint_items(n: int = 12) -> list[dict]:
    return [
        {
            "id": i,
            "prompt": f"Summarise post {i}",
            "output": "long summary " * (1 + i % 3),
            "baseline": "short summary " * 2,
        }
        for i in range(n)
    ]


def test_flaky_endpoint_loses_no_judgment(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    items = endpoint_items()
    steady = J.win_rate(J.EndpointJudge(server.url, "judge-model", backoff=0.01), items, progress=None)
    assert steady["retries"] == 0 and steady["n"] == 12 and server.auth[0] is None
    server.mode = "flaky"
    judge = J.EndpointJudge(server.url, "judge-model", backoff=0.01)
    r = J.win_rate(judge, items, progress=None)
    assert (r["errors"], r["n"]) == (0, len(items))
    assert r["retries"] == judge.retried > 0
    assert r["verdicts"] == steady["verdicts"] and r["win_rate"] == steady["win_rate"]
    # the baseline (28 characters) is longer than "long summary " ×1 and ×2, shorter than ×3
    assert r["win_rate"] == pytest.approx(100 * 4 / 12) and r["position_consistency"] == 100.0


def test_failing_endpoint_counts_errors_not_losses(server, tmp_path):
    items = endpoint_items(6)
    for i in (1, 4):
        items[i]["output"] = "POISON " + items[i]["output"]
    cache = tmp_path / "cache.jsonl"
    judge = J.EndpointJudge(server.url, "judge-model", retries=2, backoff=0.001)
    r = J.win_rate(judge, items, cache=cache, progress=None)
    # each failed item: 2 retries on its first order, second never tried
    assert (r["errors"], r["n"], r["retries"]) == (2, 4, 2 * 2)
    assert [v["score"] for v in r["verdicts"]] == [0.0, None, 1.0, 0.0, None, 1.0]
    assert r["win_rate"] == 50.0
    assert len(cache.read_text().splitlines()) == 8  # only the judged items' verdicts are cached
    server.mode = "down"
    r = J.win_rate(
        J.EndpointJudge(server.url, "judge-model", retries=1, backoff=0.001), items[:3], progress=None
    )
    assert (r["errors"], r["n"]) == (3, 0) and r["win_rate"] is None and r["position_consistency"] is None
    assert all(v["score"] is None for v in r["verdicts"])


def test_client_errors_are_not_retried(server):
    server.mode = "bad-request"
    judge = J.EndpointJudge(server.url, "judge-model", backoff=0.001)
    with pytest.raises(J.JudgeError, match="HTTP 400"):
        judge.prefer("p", "a", "b")
    assert judge.retried == 0 and server.calls == 1


def test_unreachable_endpoint_is_retried_then_an_error():
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = J.EndpointJudge(f"http://127.0.0.1:{port}/v1", "judge-model", retries=2, backoff=0.001)
    with pytest.raises(J.JudgeError, match="after 2 retries"):
        judge.prefer("p", "a", "b")
    assert judge.retried == 2


def test_retry_after():
    assert J.retry_after("2", 1.0) == 2.0
    assert J.retry_after("100000", 1.0) == J.RETRY_AFTER_CAP
    assert J.retry_after(None, 1.5) == 1.5
    assert J.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1.5) == 1.5  # HTTP-date form: keep the backoff


def test_parse_verdict():
    assert [J.parse_verdict(s) for s in ("A", "B.", "**B**", "Tie", "Response A", " a tie")] == [
        1.0,
        0.0,
        0.0,
        0.5,
        1.0,
        0.5,
    ]
    with pytest.raises(J.JudgeError):
        J.parse_verdict("I cannot decide")


def test_api_key_never_leaks(server, monkeypatch, tmp_path):
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    server.mode = "flaky"
    judge = J.EndpointJudge(server.url, "judge-model", key_env="JUDGE_KEY", retries=1, backoff=0.001)
    cache = tmp_path / "cache.jsonl"
    items = endpoint_items(4) + [{"prompt": "p", "output": "POISON", "baseline": "b"}]
    r = J.win_rate(judge, items, cache=cache, progress=None)
    assert set(server.auth) == {f"Bearer {SECRET}"}
    assert r["errors"] == 1
    for text in (repr(judge), judge.name, json.dumps(r), cache.read_text()):
        assert SECRET not in text
    with pytest.raises(J.JudgeError) as err:
        judge.prefer("p", "POISON", "b")
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)


# ---------- HF judge


def test_hf_judge_matches_its_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    judge = J.make_judge("hf", model=tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    a_id, b_id = (
        tok("A", add_special_tokens=False)["input_ids"][0],
        tok("B", add_special_tokens=False)["input_ids"][0],
    )
    assert a_id != b_id

    def expected(prompt: str, a: str, b: str) -> float:
        text = tok.apply_chat_template(
            J.judge_messages(prompt, a, b), add_generation_prompt=True, tokenize=False
        )
        with torch.no_grad():
            logits = model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, -1]
        return 0.5 if abs(logits[a_id] - logits[b_id]) <= 1e-6 else float(logits[a_id] > logits[b_id])

    cases = [(f"Summarise post number {i}.", "x " * (i + 1), f"summary {i * i}") for i in range(8)]
    got = [judge.prefer(*c) for c in cases]
    assert got == [expected(*c) for c in cases]
    assert set(got) <= {0.0, 1.0}
    items = [{"prompt": p, "output": a, "baseline": b} for p, a, b in cases]
    r = J.win_rate(judge, items, progress=None)
    assert r["n"] == 8 and r["judge"] == f"hf:{tiny_model_dir}"
    assert [v["ab"] for v in r["verdicts"]] == got
    with torch.no_grad():  # tied embeddings: identical rows for "A" and "B" give identical logits
        judge.model.get_input_embeddings().weight[b_id] = judge.model.get_input_embeddings().weight[a_id]
    assert judge.prefer(*cases[0]) == 0.5
