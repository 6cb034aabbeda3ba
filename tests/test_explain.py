"""Attribution maps and their sanity check (fmnist_core.analysis.explain)."""

import numpy as np
import pytest
import torch
from torch import nn

from fmnist_core.analysis import explain
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig


def corner_model() -> nn.Module:
    """Class 3's score is the sum of the top-left 8x8 pixels; every other score is 0."""
    weights = torch.zeros(10, 1, 28, 28)
    weights[3, 0, :8, :8] = 1.0
    linear = nn.Linear(784, 10, bias=False)
    linear.weight.data = weights.reshape(10, 784)
    return nn.Sequential(nn.Flatten(), linear)


def test_integrated_gradients_of_a_linear_model_are_its_weights_times_the_input():
    image = np.full((28, 28), 0.5, dtype=np.float32)
    maps = explain.attribution(corner_model(), image, 3, "integrated_gradients")
    expected = np.zeros((28, 28))
    expected[:8, :8] = 0.5  # (x - black) * weight
    assert np.allclose(maps, expected, atol=1e-5)
    assert np.allclose(explain.attribution(corner_model(), image, 5, "integrated_gradients"), 0)


def test_occlusion_finds_the_pixels_the_answer_rests_on():
    image = np.ones((28, 28), dtype=np.float32)
    maps = explain.attribution(corner_model(), image, 3, "occlusion")
    assert maps[:8, :8].min() > 0 and np.allclose(maps[12:, 12:], 0)
    with pytest.raises(ValueError, match="method"):
        explain.attribution(corner_model(), image, 3, "saliency")
    with pytest.raises(ValueError, match="target"):
        explain.attribution(corner_model(), image, 10, "occlusion")


def test_a_trained_models_maps_and_their_sanity_check(tmp_path):
    run = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=3000), cache=RunCache(tmp_path))
    image = load_data().test_images[0, 0].numpy()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    for method in explain.METHODS:
        maps = explain.attribution(run.model, image, 9, method)
        assert maps.shape == (28, 28) and np.isfinite(maps).all() and np.abs(maps).max() > 0
    shuffled = explain.randomised(run.model)
    assert not torch.equal(next(shuffled.parameters()), next(run.model.parameters()))
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())  # the model untouched
    check = explain.sanity_check(run.model, image, 9, "occlusion")
    assert -1 <= check.similarity <= 1 and check.trustworthy == (check.similarity <= 0.5)
