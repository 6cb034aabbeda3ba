import pytest

from fmnist_core.runs.trained import get_or_train
from fmnist_core.training.config import RunConfig


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty models_cache."""
    root = tmp_path / "models_cache"
    monkeypatch.setenv("FMNIST_CACHE", str(root))
    monkeypatch.setenv("FMNIST_DEBUG", "1")  # a page's failure is a test's exception, not a message
    monkeypatch.setenv("FMNIST_STARTER", "0")  # no starter set training behind the tests' backs
    return root


@pytest.fixture
def tiny_autoencoder_config():
    # Scored on 1,000 test images: on all 10,000, scoring took 60% of such a run (1.0 of 1.7 s).
    return RunConfig.for_model(
        "conv_autoencoder",
        {"dropout": 0.0, "output_dropout": False},
        epochs=1,
        train_subset=2000,
        test_subset=1000,
    )


@pytest.fixture(scope="session")
def small_autoencoder():
    """Train (or find) a small autoencoder (n=8, one epoch) in a cache: the shared start of the
    module fixtures that need a trained encoder."""

    def trained(cache, train_subset: int):
        config = RunConfig.for_model(
            "conv_autoencoder", {"n": 8, "dropout": 0.0}, epochs=1, train_subset=train_subset
        )
        return get_or_train(config, cache=cache)

    return trained
