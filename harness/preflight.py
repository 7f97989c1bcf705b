"""Checks of what a compare depends on outside itself, run before its first stage: the judge answers, the
model names a folder or a hub id that resolves. (Executors check their cluster: harness.executors.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import models
from harness.judge import EndpointJudge, JudgeError


def check_judge(a: argparse.Namespace) -> None:
    """A judge kind with what it needs: hf a checkpoint folder, endpoint an http(s) URL and a model name."""
    if a.judge == "hf":
        if not a.judge_model:
            raise ValueError("--judge hf needs --judge-model PATH (a local HF checkpoint folder)")
        check_model(a.judge_model, "--judge-model")
    if a.judge == "endpoint":
        if not (a.judge_url and a.judge_model):
            raise ValueError("--judge endpoint needs --judge-url http://HOST:PORT/v1 and --judge-model NAME")
        if not a.judge_url.startswith(("http://", "https://")):
            raise ValueError(f"--judge-url {a.judge_url!r}: expected an http:// or https:// base URL")
        # one request now: a judge that does not answer would otherwise surface at evaluation, after training
        key_env = a.judge_key_env or "OPENAI_API_KEY"
        judge = EndpointJudge(a.judge_url, a.judge_model, key_env=key_env, timeout=30, retries=1)
        try:
            judge.prefer("Which answer is better?", "4", "5", "2 + 2 = 4")
        except JudgeError as e:
            raise ValueError(
                f"--judge-url {a.judge_url} --judge-model {a.judge_model}: a one-item judge request failed "
                f"({e}); start the server (docs/evaluation.md) or fix the URL, model name or key"
            ) from None


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local hub cache holds `repo_id`'s config.json (an invalid id: no)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except HFValidationError:
        return False


def check_model(name: str, flag: str) -> None:
    """A provisioned name, a checkpoint folder (config.json inside), or a hub id: owner/name, or a
    single-name id (gpt2) that the local hub cache holds (else it is more likely a mistyped folder);
    anything else is an error naming `flag`."""
    if name in models.PROVISIONERS:
        return
    path = Path(name)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{flag} {name}: a folder without config.json, not a Hugging Face checkpoint")
    if path.exists():
        return
    owner_name = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    single = "/" not in name and not name.startswith((".", "~"))
    if not owner_name and not (single and in_hub_cache(name)):
        raise ValueError(
            f"{flag} {name}: no such folder (nor an owner/name hub id, nor a single-name one in the local "
            "hub cache)"
        )
    if owner_name and not in_hub_cache(name):
        from huggingface_hub import model_info

        try:  # the one network call a hub id asks for: a typo fails now, not in the first stage
            model_info(name, timeout=30)
        except Exception as e:  # no such repo, gated, offline (HF_HUB_OFFLINE) or no network
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(
                f"{flag} {name}: not a folder, not in the local hub cache, and the hub did not resolve it "
                f"({type(e).__name__}: {reason}); check the id and your network, or give a local folder"
            ) from None
