import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.logprobs import pair_logps
from trainers.losses import SeqLogps, preference_loss
from trainers.probes import KINDS, ProbeSet, fixed_responses, probe_terms
from trainers.tokens import encode
from trainers.trainer import TrainConfig, Trainer

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
        "chosen": f"{a}+{b} = {a + b}. #### {a + b}",
        "rejected": f"The answer is {a * b + 1}.",
        "rephrased": f"Adding gives {a + b}.\n#### {a + b}" if a != 5 else None,
    }
    for a, b in [(1, 2), (3, 4), (5, 6)]
]


def forward_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Summed log-prob of a completion by a plain, unpacked forward of the whole sequence."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].double(), -1)
    start = len(prompt_ids)
    return sum(logps[start - 1 + i, t].item() for i, t in enumerate(completion_ids))


def test_fixed_responses_take_the_next_pairs_chosen_as_unrelated():
    r = fixed_responses(PAIRS)
    assert r["unrelated"] == [PAIRS[1]["chosen"], PAIRS[2]["chosen"], PAIRS[0]["chosen"]]
    assert r["rephrased"][2] is None and fixed_responses(PAIRS[:1])["unrelated"] == [None]


def test_probe_log_probs_equal_an_independent_forward(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    probe = ProbeSet(tok, PAIRS)
    scores = probe.score_fixed(model, batch_size=2)
    for kind, texts in fixed_responses(PAIRS).items():
        for i, (pair, text) in enumerate(zip(PAIRS, texts)):
            if text is None:
                assert torch.isnan(scores[kind].total[i])
                continue
            x, y = encode(tok, pair["prompt"], text)
            assert scores[kind].total[i].item() == pytest.approx(forward_logp(model, x, y), abs=1e-3)
            assert scores[kind].count[i].item() == len(y)
    greedy = probe.greedy(model, max_new_tokens=6, batch_size=2)
    # the left-padded batch gives each prompt's own greedy continuation
    for i, g in enumerate(greedy):
        alone = model.generate(torch.tensor([probe.prompts[i]]), max_new_tokens=6, do_sample=False)
        assert g == alone[0, len(probe.prompts[i]) :].tolist()[: len(g)] and len(g) >= 1


def test_bf16_greedy_decodes_a_copy_and_leaves_the_fp32_policy_as_it_was(tiny_model_dir, monkeypatch):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).train()
    probe = ProbeSet(tok, PAIRS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decoded, generate = [], type(model).generate
    monkeypatch.setattr(type(model), "generate", lambda m, **kw: decoded.append(m.dtype) or generate(m, **kw))
    greedy = probe.greedy(model, max_new_tokens=6, batch_size=2, bf16=True)
    assert decoded == [torch.bfloat16, torch.bfloat16]  # 3 prompts in batches of 2
    monkeypatch.undo()
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    half = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    for i, g in enumerate(greedy):
        alone = half.generate(torch.tensor([probe.prompts[i]]), max_new_tokens=6, do_sample=False)
        assert g == alone[0, len(probe.prompts[i]) :].tolist()[: len(g)] and len(g) >= 1


def test_probe_terms_on_hand_values():
    def S(total, count):
        return SeqLogps(torch.tensor(total), torch.tensor(count))

    nan = float("nan")
    policy = {"chosen": S([-8.0, -12.0], [4.0, 4.0]), "rejected": S([-6.0, -6.0], [2.0, 2.0])}
    policy["rephrased"] = S([-3.0, nan], [3.0, nan])
    reference = {"chosen": S([-10.0, -10.0], [4.0, 4.0]), "rejected": S([-4.0, -4.0], [2.0, 2.0])}
    reference["rephrased"] = S([-6.0, nan], [3.0, nan])
    t = probe_terms(policy, reference, delta=0.0)
    assert t["dlogp_chosen"].tolist() == [0.5, -0.5] and t["dsum_rejected"].tolist() == [-2.0, -2.0]
    assert t["dlogp_rephrased"][0].item() == 1.0 and torch.isnan(t["dlogp_rephrased"][1])
    assert t["outside_safe_region"].tolist() == [0.0, 1.0]
    # a δ > 0 asks the chosen to rise by δ per token
    assert probe_terms(policy, reference, delta=0.6)["outside_safe_region"].tolist() == [1.0, 1.0]
    combined = torch.logaddexp(torch.tensor(-8.0), torch.tensor(-6.0)) - torch.logaddexp(
        torch.tensor(-10.0), torch.tensor(-4.0)
    )
    assert t["dlog_combined"][0].item() == pytest.approx(combined.item())


def test_sft_gradient_touches_only_the_chosen_tokens(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    x, c = encode(tok, PAIRS[0]["prompt"], PAIRS[0]["chosen"])

    def grads(rejected: str) -> list[torch.Tensor]:
        model.zero_grad()
        r = encode(tok, PAIRS[0]["prompt"], rejected)[1]
        pc, pr = pair_logps(model, [x], [c], [r])
        zero = SeqLogps(torch.zeros(1), torch.ones(1))
        preference_loss("sft", pc, pr, zero, zero)[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    # the chosen NLL alone, by an independent forward
    model.zero_grad()
    ids = torch.tensor([x + c])
    logps = torch.log_softmax(model(ids).logits[0], -1)
    (-sum(logps[len(x) - 1 + i, t] for i, t in enumerate(c)) / len(c)).backward()
    alone = [p.grad.clone() for p in model.parameters()]
    for a, b, g in zip(grads("no"), grads("a much longer and different rejected response"), alone):
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, g, atol=1e-5)


def probed_run(model_dir: str, tmp_path) -> TrainConfig:
    """A dpo run on PAIRS twice, its own pairs as the probe set, probed at steps 0 and 3."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 2))
    return TrainConfig(
        model=model_dir,
        pairs=str(path),
        output_dir=str(tmp_path / "run"),
        method="dpo",
        lr=1e-2,
        batch_pairs=2,
        micro_pairs=2,
        bf16=False,
        probe_pairs=str(path),
        probe_every=3,
    )


def test_training_probes_log_every_kind_and_start_at_zero(tiny_model_dir, tmp_path):
    cfg = probed_run(tiny_model_dir, tmp_path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    Trainer(cfg, model, AutoTokenizer.from_pretrained(tiny_model_dir)).train()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    probes = [r for r in rows if "probe_dlogp_chosen" in r]
    assert [r["step"] for r in probes] == [0, 3]
    assert all(probes[0][f"probe_dlogp_{k}"] == 0.0 for k in KINDS)
    assert all(f"probe_dsum_{k}" in probes[-1] and f"probe_logp_{k}" in probes[-1] for k in KINDS)
    assert 0.0 <= probes[-1]["probe_outside_safe_region"] <= 1.0


def test_the_step_zero_probe_reuses_the_reference_scores_and_equals_an_independent_forward(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Step 0 scores nothing beyond the probe set's reference terms, and another method from the same init
    reads both from the cache (`Trainer.initial_probe`): its step-0 row is the first run's, bit for bit."""
    cfg = replace(probed_run(tiny_model_dir, tmp_path), ref_cache=str(tmp_path / "cache"))
    calls = {"score_fixed": 0, "score": 0, "greedy": 0}
    for name in calls:
        method = getattr(ProbeSet, name)

        def counted(self, *args, _method=method, _name=name, **kwargs):
            calls[_name] += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(ProbeSet, name, counted)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def probes(run: TrainConfig) -> list[dict]:
        Trainer(run, AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok).train()
        rows = map(json.loads, open(Path(run.output_dir) / "metrics.jsonl"))
        return [r for r in rows if "probe_logp_chosen" in r]

    first = probes(cfg)
    assert [r["step"] for r in first] == [0, 3]
    # fixed responses: the reference once and step 3 (step 0 reuses the reference's); greedy responses:
    # generated and scored once at step 0 (the same under the initial model), scored twice at step 3
    assert calls == {"score_fixed": 2, "score": 3, "greedy": 2}
    chosen = [encode(tok, p["prompt"], p["chosen"]) for p in PAIRS * 2]
    expected = sum(forward_logp(initial, p, c) / len(c) for p, c in chosen) / len(chosen)
    assert first[0]["probe_logp_chosen"] == pytest.approx(expected, abs=1e-5)
    assert first[0]["probe_dlogp_greedy"] == 0.0 and first[1]["probe_dlogp_chosen"] != 0.0
    calls.update(score_fixed=0, score=0, greedy=0)
    second = probes(replace(cfg, method="ipo", output_dir=str(tmp_path / "ipo")))
    # from the cache: only step 3's work
    assert calls == {"score_fixed": 1, "score": 2, "greedy": 1}
    assert second[0] == first[0] and second[1] != first[1]
