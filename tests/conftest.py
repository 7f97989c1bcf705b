import pytest

from harness import models


@pytest.fixture(scope="session")
def default_model_path() -> str:
    return models.resolve_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_path) -> str:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer and chat template (the smoke
    preset's model)."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    models.provision_tiny(path)
    return str(path)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke baseline's compare (the smoke preset, training seeds 0 and 1): (work folder, results folder).
    Its cache (work/cache) holds the smoke pairs, so a later smoke compare with that cache samples none;
    work/leaderboard.json keeps its leaderboard as written (tests go on to resume into the results folder)."""
    import shutil

    from harness import baseline

    work = tmp_path_factory.mktemp("smoke")
    results = baseline.run("smoke", work)
    shutil.copy(results / "leaderboard.json", work / "leaderboard.json")
    return work, results
