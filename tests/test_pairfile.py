"""The user-pairs loader: a corpus of malformed files with the expected report for each, both policies,
the conversational forms, and property tests (no input crashes it; valid rows round-trip)."""

import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import write_jsonl
from tasks import gsm8k
from trainers.pairfile import BOM, REASONS, load_pairs

BAD = Path(__file__).parent / "data" / "bad"
CORPUS = sorted(p.name.removesuffix(".jsonl") for p in BAD.glob("*.jsonl"))


def test_the_corpus_covers_every_reason_of_the_loader():
    seen = {
        s[2] for name in CORPUS for s in json.loads((BAD / f"{name}.expected.json").read_text())["skipped"]
    }
    # truncated is the trainer's (token lengths), tested in test_trainer
    assert seen == set(REASONS) - {"truncated"}


@pytest.mark.parametrize("name", CORPUS)
def test_malformed_file_gives_its_expected_report(name):
    expected = json.loads((BAD / f"{name}.expected.json").read_text())
    rows, report = load_pairs(str(BAD / f"{name}.jsonl"), max_chars=expected.get("max_chars", 200_000))
    assert [[s["line"], s["field"], s["reason"]] for s in report.skipped] == expected["skipped"]
    assert (report.rows, report.kept, len(rows)) == (expected["rows"], expected["kept"], expected["kept"])
    assert all(isinstance(r["chosen"], str) and isinstance(r["rejected"], str) for r in rows)
    assert report.summary().startswith(
        f"{BAD / name}.jsonl: {expected['rows']} rows, {expected['kept']} kept, "
        f"{len(expected['skipped'])} skipped"
    )


def test_error_policy_stops_at_the_first_bad_row_naming_file_line_and_field():
    with pytest.raises(ValueError, match=r"missing_fields.jsonl:1 field 'rejected': missing$"):
        load_pairs(str(BAD / "missing_fields.jsonl"), "error")
    with pytest.raises(ValueError, match=r"duplicates.jsonl:3 field 'id': id 'a' already used on line 1$"):
        load_pairs(str(BAD / "duplicates.jsonl"), "error")
    with pytest.raises(ValueError, match=r"encoding.jsonl:2: not UTF-8 \(byte 15: b'\\xe9'\)$"):
        load_pairs(str(BAD / "encoding.jsonl"), "error")


def test_summary_counts_reasons_and_names_the_first_bad_rows():
    _, report = load_pairs(str(BAD / "invalid_json.jsonl"))
    assert report.summary() == (
        f"{BAD}/invalid_json.jsonl: 5 rows, 2 kept, 3 skipped "
        "[invalid JSON: 2, not a JSON object: 1]; first: "
        f"{BAD}/invalid_json.jsonl:2: invalid JSON (Expecting value); "
        f"{BAD}/invalid_json.jsonl:3: invalid JSON (Expecting value); "
        f"{BAD}/invalid_json.jsonl:4: expected a JSON object, got list"
    )
    assert report.lines == [1, 5]


def test_conversational_forms_become_the_plain_form():
    rows, _ = load_pairs(str(BAD / "conversational.jsonl"))
    user = [{"role": "user", "content": "What is 2+3?"}]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [(user, "5", "6")] * 3
    assert all("messages" not in r for r in rows)


def test_other_keys_are_kept(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(
        path,
        [
            {
                "id": 3,
                "task": "arith",
                "prompt": "p",
                "chosen": "a",
                "rejected": "b",
                "chosen_source": "sample",
            }
        ],
    )
    rows, report = load_pairs(str(path))
    assert (
        rows
        == [
            {
                "id": 3,
                "task": "arith",
                "prompt": "p",
                "chosen": "a",
                "rejected": "b",
                "chosen_source": "sample",
            }
        ]
        and report.skipped == []
    )


TEXT = st.text(min_size=1, max_size=40).filter(str.strip)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
PAIR = st.fixed_dictionaries(
    {"prompt": st.one_of(TEXT, MESSAGES), "chosen": TEXT, "rejected": TEXT},
    optional={"id": st.integers(), "task": st.text(max_size=5)},
).filter(lambda r: r["chosen"].strip() != r["rejected"].strip())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_no_byte_sequence_crashes_the_loader(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    lines = [line.replace(b"\n", b" ") for line in lines]
    path.write_bytes(b"\n".join(lines))
    rows, report = load_pairs(str(path))
    # a byte-order mark starting the file is not content
    lines[:1] = [lines[0].removeprefix(BOM)] if lines else []
    assert report.rows == sum(bool(line.strip()) for line in lines) == report.kept + len(report.skipped)
    assert len(rows) == report.kept and all(s["reason"] in REASONS for s in report.skipped)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            PAIR,
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                lambda c: (
                    st.lists(c, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(["prompt", "chosen", "rejected", "id", "x"]), c, max_size=4
                    )
                ),
                max_leaves=8,
            ),
        ),
        max_size=8,
    )
)
def test_any_json_rows_are_kept_or_reported_never_raised(tmp_path, rows):
    path = tmp_path / "fuzz.jsonl"
    write_jsonl(path, rows)
    kept, report = load_pairs(str(path))
    assert report.rows == len(rows) == report.kept + len(report.skipped)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PAIR, max_size=6, unique_by=lambda r: r.get("id", object())))
def test_valid_rows_round_trip(tmp_path, rows):
    path = tmp_path / "ok.jsonl"
    write_jsonl(path, rows)
    kept, report = load_pairs(str(path))
    assert kept == rows and report.skipped == [] and report.lines == list(range(1, len(rows) + 1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_gsm8k_extraction_never_raises(text):
    answer = gsm8k.extract_answer(text)
    assert answer is None or gsm8k.to_number(answer) is not None
    assert isinstance(gsm8k.is_correct(text, "3"), bool)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-(10**9), 10**9),
    st.sampled_from(["", "$"]),
    st.booleans(),
    st.text(alphabet="abc .:!?\n", max_size=20),
)
def test_gsm8k_answer_written_any_usual_way_round_trips(n, dollar, commas, prose):
    written = (
        f"{'-' if n < 0 else ''}{dollar}{abs(n):,}" if commas else f"{'-' if n < 0 else ''}{dollar}{abs(n)}"
    )
    assert gsm8k.to_number(gsm8k.extract_answer(f"{prose} 12 steps later\n#### {written}.")) == Fraction(n)
    assert gsm8k.is_correct(f"{prose} so the total is {written}", str(n))


PAIRS = [
    {"id": 1, "prompt": "What is 2+3?", "chosen": "5", "rejected": "6"},
    {"id": 2, "prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."},
]


def test_a_byte_order_mark_keeps_the_first_row_and_is_reported(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + "\n".join(json.dumps(p) for p in PAIRS).encode())
    rows, report = load_pairs(str(path))
    assert rows == PAIRS and report.bom and report.skipped == [] and report.lines == [1, 2]
    assert report.summary() == f"{path}: 2 rows, 2 kept, 0 skipped (UTF-8 byte-order mark stripped)"
    assert report.record()["bom_stripped"] is True


def test_json_array_parquet_and_datasets_folder_load_like_jsonl_with_rows_numbered(tmp_path):
    import datasets

    bad = {"id": 3, "prompt": "Q", "chosen": "same", "rejected": "same"}
    missing = {"id": 4, "prompt": "Q", "chosen": "a"}
    table = [{**p, "prompt": json.dumps(p["prompt"])} for p in PAIRS]  # one column type for Arrow
    (tmp_path / "a.json").write_bytes(BOM + json.dumps([*PAIRS, bad]).encode())
    datasets.Dataset.from_list([*table, bad, missing]).to_parquet(str(tmp_path / "a.parquet"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([*table, missing]),
            "test": datasets.Dataset.from_list(table[:1]),
        }
    ).save_to_disk(str(tmp_path / "folder"))
    rows, report = load_pairs(str(tmp_path / "a.json"))
    assert rows == PAIRS and report.bom and report.unit == "row"
    assert [(s["line"], s["field"], s["reason"]) for s in report.skipped] == [(3, "rejected", "identical")]
    rows, report = load_pairs(str(tmp_path / "a.parquet"))
    # a null cell of a table is a missing field, reported by row number
    assert rows == table and [(s["line"], s["reason"]) for s in report.skipped] == [
        (3, "identical"),
        (4, "missing"),
    ]
    assert report.summary().endswith(
        f"first: {tmp_path}/a.parquet row 3 field 'rejected': chosen and "
        f"rejected are the same text; {tmp_path}/a.parquet row 4 field 'rejected': missing"
    )
    rows, report = load_pairs(str(tmp_path / "folder"))
    assert rows == table and report.rows == 3 and report.counts() == {"missing": 1}
    assert load_pairs(str(tmp_path / "folder"), split="test")[0] == table[:1]
    with pytest.raises(ValueError, match=r"folder: no split 'dev'; splits: train, test"):
        load_pairs(str(tmp_path / "folder"), split="dev")
    with pytest.raises(
        ValueError, match=r"a.parquet row 3 field 'rejected': chosen and rejected are the same text$"
    ):
        load_pairs(str(tmp_path / "a.parquet"), "error")


def test_a_source_that_is_neither_a_file_nor_a_dataset_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"nope.jsonl: no such file or folder \(nor a hub dataset id\)"):
        load_pairs(str(tmp_path / "nope.jsonl"))
    # offline as this machine is, without datasets' five retries (23 s): the flags are read at import
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ValueError, match=r"^someone/no-such-pairs: not a local file and not loadable as a hub"
    ):
        load_pairs("someone/no-such-pairs")


def test_a_json_file_is_an_array_or_json_lines_and_anything_else_is_one_error(tmp_path):
    (tmp_path / "lines.json").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (tmp_path / "one.json").write_text(json.dumps(PAIRS[0]))
    (tmp_path / "object.json").write_text(json.dumps({"data": PAIRS}, indent=2))
    rows, report = load_pairs(str(tmp_path / "lines.json"))
    assert rows == PAIRS and report.unit == "line"
    assert load_pairs(str(tmp_path / "one.json"))[0] == PAIRS[:1]
    with pytest.raises(ValueError, match=r"object.json: expected a JSON array of pairs .* got a dict$"):
        load_pairs(str(tmp_path / "object.json"))
    with pytest.raises(ValueError, match=r"gone.parquet: no such file or folder"):
        load_pairs(str(tmp_path / "gone.parquet"))
