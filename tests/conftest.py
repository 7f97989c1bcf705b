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
