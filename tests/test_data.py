import json

import datasets
import pytest

import common
from tasks import data, gsm8k


@pytest.fixture()
def no_local(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "SHARED", tmp_path / "shared")
    monkeypatch.setenv("SPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPO_DATA_DIR", raising=False)
    return tmp_path


def test_env_var_comes_before_shared_data(monkeypatch, tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q?", "answer": "#### 3"}) + "\n")
    monkeypatch.setenv("SPO_DATA_DIR", str(tmp_path))
    assert gsm8k.load("test") == [{"question": "q?", "answer": "#### 3"}]


def test_offline_hub_failure_is_reported_with_every_local_path(no_local, monkeypatch):
    # fail fast, as on a machine without internet
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as e:
        data.resolve("gsm8k", "test.jsonl")
    msg = str(e.value)
    assert str(no_local / "shared" / "gsm8k" / "test.jsonl") in msg and "hub openai/gsm8k failed" in msg


def test_file_without_hub_source_says_so(no_local):
    with pytest.raises(FileNotFoundError, match="no hub source is known"):
        data.resolve("tldr", "dove_tldr_test.jsonl")


def test_hub_download_is_written_once_as_jsonl(no_local, monkeypatch):
    calls = []

    def fake_load_dataset(repo, config, split):  # stands in for the hub, which this machine cannot reach
        calls.append((repo, config, split))
        return [{"question": "1+1?", "answer": "#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    path = data.resolve("gsm8k", "train.jsonl")
    assert path == no_local / "cache" / "data" / "gsm8k" / "train.jsonl"
    assert data.resolve("gsm8k", "train.jsonl") == path and calls == [("openai/gsm8k", "main", "train")]
    assert gsm8k.load("train") == [{"question": "1+1?", "answer": "#### 2"}]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"x.jsonl:3: invalid JSON"):
        common.read_jsonl(bad)
