import pytest
from transformers import AutoTokenizer

from harness.generation import HFGenerator, Sampling, make_generator
from tasks import gsm8k
from trainers.tokens import prompt_ids

QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def test_hf_backend_greedy_on_the_default_model(default_model_path):
    gen = HFGenerator(default_model_path, dtype="float32", batch_size=2)
    tok = AutoTokenizer.from_pretrained(default_model_path)
    prompts = [
        prompt_ids(tok, q)
        for q in (QUESTION, gsm8k.prompt("Ann has 2 cats and 3 dogs. How many pets?"), QUESTION)
    ]
    out = gen.generate(prompts, Sampling(max_tokens=16))
    assert out[0][0].text == "2 + 3 = 5" and out[0][0].finished
    assert tok.decode(out[0][0].token_ids) == "2 + 3 = 5"
    assert out[2][0] == out[0][0]  # batched with a longer, left-padded prompt: same greedy answer
    assert len(out[1][0].token_ids) == 16 and not out[1][0].finished  # cut at max_tokens
    answer_tokens = len(tok("2 + 3 = 5", add_special_tokens=False)["input_ids"])
    assert gen.stats["tokens"] == 2 * (answer_tokens + 1) + 16  # answer + end of turn, twice; 16 cut tokens


def test_sampling_n_returns_n_different_completions(default_model_path):
    gen = HFGenerator(default_model_path, dtype="float32")
    tok = AutoTokenizer.from_pretrained(default_model_path)
    [out] = gen.generate(
        [prompt_ids(tok, [{"role": "user", "content": "Name an animal."}])],
        Sampling(max_tokens=12, temperature=1.0, n=4, seed=1),
    )
    assert len(out) == 4 and len({c.text for c in out}) > 1


def test_unknown_backend_is_an_error(default_model_path):
    with pytest.raises(ValueError, match="valid: auto, vllm, hf"):
        make_generator(default_model_path, "tgi")


GROUPS_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
from harness.generation import Sampling, make_generator
from tasks import gsm8k
from trainers.tokens import prompt_ids
path, backend = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
questions = [r["question"] for r in gsm8k.load("test")[:9]]
prompts = [prompt_ids(tok, gsm8k.prompt(q)) for q in questions]
# three groups of different length caps and samplings, generated together and split back
groups = [
    (prompts[:3], Sampling(max_tokens=8)),
    (prompts[3:6], Sampling(max_tokens=24)),
    (prompts[6:], Sampling(max_tokens=16, temperature=1.0, seed=3)),
]
gen = make_generator(path, backend, "float32")
together = gen.generate_groups(groups)
apart = [gen.generate(p, s) for p, s in groups]
# per call: per group, per prompt, its one completion
print(json.dumps([[[[o[0].text, o[0].token_ids] for o in g] for g in r] for r in (together, apart)]))
"""


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_generate_groups_gives_each_group_what_its_own_call_gives(backend, default_model_path):
    """One engine call for groups of different length caps and samplings: each prompt's greedy completion is
    the one its group's own call gives, in the group's order and within its cap (HF: seeded per group, so
    its sampled group is the same too)."""
    import json
    import subprocess
    import sys

    if backend == "vllm":
        pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    proc = subprocess.run(
        [sys.executable, "-c", GROUPS_SCRIPT, default_model_path, backend], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    together, apart = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [len(g) for g in together] == [3, 3, 3]
    assert together[:2] == apart[:2]  # greedy, fp32
    assert [max(len(ids) for _, ids in g) for g in together[:2]] == [8, 24]  # each group's own cap
    if backend == "hf":
        assert together[2] == apart[2]
    assert all(len(ids) <= 16 for _, ids in together[2])


@pytest.fixture(scope="module")
def emulated_base(default_model_path, tmp_path_factory):
    """The default model's weights behind a base checkpoint's conventions (Qwen2.5 base's, say): its
    tokenizer's EOS is <|endoftext|> while a chat turn ends with <|im_end|>, generation_config.json declares
    both as end ids, and it sets sampling defaults that would make "greedy" and "samples" something else:
    a repetition penalty, no repeated bigram, min-p, top-k 1 and top-p."""
    from families import ENDOFTEXT, IM_END, tokenizer
    from transformers import GenerationConfig

    path = tmp_path_factory.mktemp("emulated") / "model"
    path.mkdir()
    for name in ("config.json", "model.safetensors"):
        (path / name).symlink_to(f"{default_model_path}/{name}")
    tokenizer(default_model_path, bos=False, eos=ENDOFTEXT).save_pretrained(path)
    defaults = dict(do_sample=True, temperature=0.3, repetition_penalty=1.5, no_repeat_ngram_size=2)
    defaults |= dict(min_p=0.5, top_k=1, top_p=0.1)
    GenerationConfig(eos_token_id=[IM_END, ENDOFTEXT], pad_token_id=IM_END, **defaults).save_pretrained(path)
    return str(path)


EMULATED_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
from harness.generation import Sampling, make_generator
from tasks import gsm8k
from trainers.tokens import prompt_ids
if __name__ == "__main__":
    path, backend = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(path)
    chats = [[{"role": "user", "content": "What is 2+3?"}], [{"role": "user", "content": "Say hi."}]]
    chats += [gsm8k.prompt(r["question"]) for r in gsm8k.load("test")[:2]]
    prompts = [prompt_ids(tok, c) for c in chats]
    gen = make_generator(path, backend, "float32")
    greedy = gen.generate(prompts, Sampling(max_tokens=24))
    sampled = gen.generate(prompts[2:], Sampling(max_tokens=12, temperature=1.0, n=3, seed=1))
    print(json.dumps({
        "prompts": prompts,
        "greedy": [[o[0].token_ids, o[0].stop_token, o[0].finished, o[0].scored_ids()] for o in greedy],
        "sampled": [[c.token_ids for c in o] for o in sampled],
    }))
"""


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_greedy_is_the_argmax_and_a_sample_ends_on_the_stop_id_it_sampled(backend, emulated_base):
    """On a checkpoint whose tokenizer EOS (<|endoftext|>) is not the id the model ends a turn with
    (<|im_end|>) and whose generation_config sets sampling defaults: greedy output is the argmax chain of the
    model's own forward, a finished sample ends on the stop id the model sampled (scored with it, nothing
    appended), a cut one on none, and temperature-1 samples are not top-k 1's copies of each other."""
    import json
    import subprocess
    import sys

    import torch
    from families import IM_END
    from transformers import AutoModelForCausalLM

    if backend == "vllm":
        pytest.importorskip("vllm", reason="vLLM not installed (make install EXTRAS=dev,cpu)")
    proc = subprocess.run(
        [sys.executable, "-c", EMULATED_SCRIPT, emulated_base, backend], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    model = AutoModelForCausalLM.from_pretrained(emulated_base, dtype=torch.float32).eval()
    for prompt, (ids, stop, finished, scored) in zip(out["prompts"], out["greedy"]):
        chain, past, step = [], None, torch.tensor([prompt])
        with torch.no_grad():
            while len(chain) < 24 and (not chain or chain[-1] not in (IM_END, 0)):
                result = model(step, past_key_values=past, use_cache=True)
                past, chain = result.past_key_values, chain + [int(result.logits[0, -1].argmax())]
                step = torch.tensor([chain[-1:]])
        assert scored == chain and finished == (stop is not None) and scored == ids + [stop] * finished
    # "What is 2+3?" and "Say hi." end on <|im_end|>, the model's end of turn, not the tokenizer's EOS (0)
    assert [g[1] for g in out["greedy"][:2]] == [IM_END, IM_END] and not out["greedy"][3][2]
    assert all(len({tuple(s) for s in samples}) > 1 for samples in out["sampled"])
