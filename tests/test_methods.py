import pytest

from harness.methods import MethodSpec, base_of, method_of, parse_spec, parse_specs


def test_a_spec_is_a_method_with_typed_overrides_and_a_filesystem_safe_label():
    assert parse_spec("dpo") == MethodSpec("dpo", "dpo", {})
    assert parse_spec("spo:spo_lambda=10") == MethodSpec("spo@spo_lambda=10", "spo", {"spo_lambda": 10.0})
    spec = parse_spec(" simpo+spo : spo_lambda=0.5 : lr=2e-5 : epochs=2 : spo_anchor=lookahead ")
    assert spec.label == "simpo+spo@spo_lambda=0.5@lr=2e-5@epochs=2@spo_anchor=lookahead"
    assert spec.overrides == {"spo_lambda": 0.5, "lr": 2e-5, "epochs": 2, "spo_anchor": "lookahead"}
    assert type(spec.overrides["epochs"]) is int and parse_spec("dpo:bf16=false").overrides == {"bf16": False}
    assert "/" not in spec.label and ":" not in spec.label


@pytest.mark.parametrize(
    "spec, message",
    [
        ("dpx", r"method spec 'dpx': unknown method 'dpx'; valid: dpo, "),
        ("spo:seed=1", r"method spec 'spo:seed=1': field 'seed' cannot vary per method; valid: .*spo_lambda"),
        ("spo:lambda=1", r"field 'lambda' cannot vary per method; valid: "),
        ("spo:spo_lambda=ten", r"method spec 'spo:spo_lambda=ten': field 'spo_lambda': expected a number"),
        ("spo:epochs=1.5", r"field 'epochs': expected an integer"),
        ("spo:spo_anchor=median", r"field 'spo_anchor': unknown value 'median'; valid: reference, lookahead"),
        ("spo:spo_lambda", r"'spo_lambda' is not field=value"),
        ("spo:lr=1e-5:lr=2e-5", r"field 'lr' given twice"),
        ("spo:deepspeed=configs/z.json", r"would not fit a run folder's name"),
    ],
)
def test_a_bad_spec_names_itself_the_field_and_what_is_valid(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_variants_of_one_method_are_distinct_and_a_duplicate_is_an_error():
    specs = parse_specs("dpo,spo,spo:spo_lambda=10,spo:spo_lambda=0.1")
    assert [s.label for s in specs] == ["dpo", "spo", "spo@spo_lambda=10", "spo@spo_lambda=0.1"]
    with pytest.raises(ValueError, match=r"method spec 'spo': the same runs as 'spo' \(a duplicate\)"):
        parse_specs(["spo", "dpo", "spo"])
    # another spelling or order of the same overrides is the same runs
    with pytest.raises(ValueError, match=r"'spo:spo_lambda=10.0'.*'spo@spo_lambda=10'"):
        parse_specs("spo:spo_lambda=10,spo:spo_lambda=10.0")
    with pytest.raises(ValueError, match="a duplicate"):
        parse_specs("spo:lr=1e-5:epochs=2,spo:epochs=2:lr=1e-5")
    with pytest.raises(ValueError, match=r"'dpo\+spo': the same runs as 'spo'"):
        parse_specs("spo,dpo+spo")


def test_each_method_is_compared_with_its_base():
    assert base_of("spo") == "dpo" and base_of("simpo+spo") == "simpo" and base_of("ipo+spo") == "ipo"
    assert base_of("spo@spo_lambda=10") == "spo" and base_of("simpo+spo@lr=2e-5@epochs=2") == "simpo+spo"
    assert [base_of(m) for m in ("dpo", "simpo", "sft", "reference")] == [None] * 4
    assert (
        method_of("spo@spo_lambda=10-seed12") == "spo@spo_lambda=10" and method_of("reference") == "reference"
    )
    assert base_of(method_of(parse_spec("sft:lr=1e-4").label + "-seed0")) == "sft"
