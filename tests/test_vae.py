"""The variational autoencoder: registered by its file alone, it trains with its KL term in the
curves, decodes new garments from its prior, and serves encoder classifiers like any autoencoder."""

import numpy as np
import pytest
import torch

from fmnist_core import analysis
from fmnist_core.models import create_model, get_spec, list_models
from fmnist_core.models.vae import GaussianCode
from fmnist_core.runs.trained import get_or_train, train
from fmnist_core.training.config import RunConfig

QUICK = dict(epochs=2, train_subset=3000, test_subset=1000)


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """Two small VAEs, β=0.1 and β=4, trained once for the module (about 5 s each)."""
    from fmnist_core.store.cache import RunCache

    cache = RunCache(tmp_path_factory.mktemp("vae_cache"))
    return cache, {
        beta: get_or_train(RunConfig.for_model("vae", {"n": 8, "beta": beta}, **QUICK), cache=cache)
        for beta in (0.1, 4.0)
    }


def test_the_registry_lists_the_vae_as_an_autoencoder_that_samples():
    spec = get_spec("vae")
    assert "vae" in list_models("autoencoder")
    assert spec.capabilities() == {"reconstructs": True, "classifies": False, "samples": True}
    assert not get_spec("conv_autoencoder").samples


def test_the_code_is_the_mean_in_evaluation_and_drawn_from_the_run_generator_in_training():
    model = create_model("vae", n=4, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(model.encode(x), model.encode(x))  # evaluation: the mean, no noise
    code = model.encoder[-1]
    assert isinstance(code, GaussianCode) and code.kl.item() >= 0  # KL to N(0, I) is never negative
    model.train()
    draws = []
    for _ in range(2):
        code.generator = torch.Generator().manual_seed(7)
        draws.append(model.encode(x))
    assert torch.equal(draws[0], draws[1])  # the same stream, the same codes
    code.generator = torch.Generator().manual_seed(8)
    assert not torch.equal(model.encode(x), draws[0])


@pytest.mark.slow
def test_a_small_vae_learns_records_its_kl_and_a_larger_beta_keeps_the_codes_nearer_the_prior(vaes):
    _, runs = vaes
    for run in runs.values():
        history = run.history
        assert set(history) >= {"train_mse", "train_kl", "latent_maps", "reconstructions"}
        assert len(history["train_kl"]) == 2 and all(kl > 0 for kl in history["train_kl"])
        assert history["val_loss"][-1] < history["val_loss"][0]
        assert run.metrics["test_mse"] < 0.06  # the mean image scores ~0.09
    assert runs[4.0].history["train_kl"][-1] < runs[0.1].history["train_kl"][-1]  # β pulls towards N(0, I)
    # the training loss is the reconstruction plus β times the KL, weighted as the model says
    history, weight = runs[4.0].history, runs[4.0].model.loss_weights()["kl"]
    assert weight == pytest.approx(4.0 * 2 * 0.05 / 784)
    expected = history["train_mse"][-1] + weight * history["train_kl"][-1]
    assert history["train_loss"][-1] == pytest.approx(expected, rel=1e-4)


def test_prior_samples_are_images_and_repeat_for_the_same_seed(vaes):
    _, runs = vaes
    model = runs[4.0].model
    samples = analysis.prior_samples(model, 16, seed=3)
    assert samples.shape == (16, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    assert np.array_equal(samples, analysis.prior_samples(model, 16, seed=3))
    assert not np.array_equal(samples, analysis.prior_samples(model, 16, seed=4))
    assert samples.std(0).mean() > 0.01  # different garments, not one image sixteen times


def test_the_same_vae_config_twice_gives_the_same_weights():
    config = RunConfig.for_model("vae", {"n": 4}, epochs=1, train_subset=1000, test_subset=500)
    first, second = train(config), train(config)
    assert all(torch.equal(v, second.model.state_dict()[k]) for k, v in first.model.state_dict().items())


def test_an_encoder_classifier_trains_on_a_vae_frozen_and_fine_tuned(vaes):
    cache, runs = vaes
    encoder = runs[0.1]
    for frozen in (True, False):
        settings = {"encoder_run": encoder.run_id, "head": "wide", "freeze_encoder": frozen}
        run = get_or_train(RunConfig.for_model("encoder_classifier", settings, **QUICK), cache=cache)
        assert run.metrics["test_accuracy"] > 0.55  # chance is 0.1
        state = run.model.state_dict()
        moved = not torch.equal(state["encoder.0.weight"], encoder.model.state_dict()["encoder.0.weight"])
        assert moved is not frozen  # a frozen encoder keeps the VAE's weights
