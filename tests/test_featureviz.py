"""Feature visualisation by optimisation (fmnist_core.analysis.featureviz) on a small trained CNN."""

import numpy as np
import pytest
import torch

from fmnist_core.analysis import featureviz
from fmnist_core.data.fashion import load_data
from fmnist_core.training.config import RunConfig

LAYERS = ("conv:8:3:same:relu", "maxpool:2", "conv:16:3:same:relu", "maxpool:2")


@pytest.fixture
def cnn(pooled):
    return pooled(
        RunConfig.for_model("cnn", {"layers": LAYERS}, epochs=1, train_subset=2000, test_subset=1000)
    )


def test_each_units_picture_drives_it_harder_than_any_real_test_image(cnn):
    real = load_data().test_images[:2000]
    for layer, units in (("features.4", 16), ("head", 10)):  # the second conv's rectified maps; the logits
        pictures = featureviz.visualise(cnn.model, layer, seed=0)
        assert pictures.shape == (units, 28, 28) and pictures.min() >= 0 and pictures.max() <= 1
        beaten = [
            featureviz.response(cnn.model, layer, torch.from_numpy(pictures[unit : unit + 1, None]), unit)[0]
            > featureviz.response(cnn.model, layer, real, unit).max()
            for unit in range(units)
        ]
        # Measured here: 15 of 16 maps (one unit is at 0 on everything) and 10 of 10 logits.
        assert sum(beaten) >= 0.8 * units, (layer, beaten)


def test_the_same_seed_gives_the_same_pictures_and_the_model_is_left_as_it_was(cnn):
    before = {name: value.clone() for name, value in cnn.model.state_dict().items()}
    cnn.model.train()
    first = featureviz.visualise(cnn.model, "features.4", units=[3, 5], steps=32, seed=1)
    assert cnn.model.training and all(p.grad is None for p in cnn.model.parameters())
    assert all(torch.equal(before[name], value) for name, value in cnn.model.state_dict().items())
    np.testing.assert_array_equal(
        first, featureviz.visualise(cnn.model, "features.4", units=[3, 5], steps=32, seed=1)
    )
    assert not np.allclose(
        first, featureviz.visualise(cnn.model, "features.4", units=[3, 5], steps=32, seed=2)
    )


def test_a_picture_is_smooth_where_a_pixel_basis_would_be_noise():
    """The 1 / frequency scale: a random start's energy sits in the low frequencies."""
    scale = featureviz.frequency_scale()
    assert scale.shape == (28, 15) and scale[0, 0] == scale.max() and scale[14, 14] < scale[0, 1] / 10


def test_a_layer_or_unit_that_is_not_there_is_one_line(cnn):
    with pytest.raises(ValueError, match=r"layer: 'features.9' is not one of features.0, "):
        featureviz.visualise(cnn.model, "features.9")
    with pytest.raises(ValueError, match=r"unit: features.4 has units 0 to 15"):
        featureviz.visualise(cnn.model, "features.4", units=[16])


def test_a_network_with_its_channels_shuffled_is_matched_unit_for_unit(cnn):
    """The same unit across runs: a copy of the network whose second conv's filters are permuted
    computes the same features at that layer in another order, so each unit finds its moved self at
    a correlation of 1 (what follows the layer is not looked at); against itself, each finds itself."""
    import copy

    from fmnist_core.analysis import matching

    images = load_data().test_images[:1000]
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffled = copy.deepcopy(cnn.model)
    conv = shuffled.features[3]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[permutation])
        conv.bias.copy_(conv.bias[permutation])
    table = matching.match_units(cnn.model, "features.4", shuffled, "features.4", images)
    alive = table.dropna(subset=["match"])
    assert len(alive) >= 14  # at most a dead unit or two has no partner
    inverse = torch.argsort(permutation).tolist()
    assert all(row.match == inverse[row.unit] for row in alive.itertuples())
    assert np.allclose(alive["correlation"], 1.0, atol=1e-5) and (alive["runner_up"] < 0.999).all()
    itself = matching.match_units(cnn.model, "head", cnn.model, "head", images)
    assert list(itself["match"]) == list(range(10))
    with pytest.raises(ValueError, match="layer: 'features.9' is not one of"):
        matching.match_units(cnn.model, "features.9", shuffled, "features.4", images)


def test_a_units_picture_is_kept_beside_the_cache_and_a_damaged_one_is_found_again(cnn, monkeypatch):
    from fmnist_core.analysis import featureviz
    from fmnist_core.base.files import write_arrays_atomic
    from fmnist_core.store.cache import RunCache
    from fmnist_core.views import inside

    cache = RunCache()
    first = inside.feature_picture(cnn, cache, "features.1", 2)
    path = cache.derived_path(cnn.run_id, f"featureviz-features.1-2-s0-{inside.FEATURE_STEPS}.npz")
    assert path.is_file() and first.shape == (28, 28) and first.dtype == np.float32
    calls = []
    found = featureviz.visualise
    monkeypatch.setattr(featureviz, "visualise", lambda *a, **k: calls.append(a) or found(*a, **k))
    np.testing.assert_array_equal(inside.feature_picture(cnn, cache, "features.1", 2), first)
    assert calls == []  # read back, not optimised again
    source = np.array(path.parent.name)
    for damaged in (
        {"picture": np.full((28, 28), 7.0, np.float32), "source": source},  # out of [0, 1]
        {"picture": np.zeros((14, 14), np.float32), "source": source},  # another shape
        {"picture": first, "source": np.array("another-run")},  # another run's, copied here
    ):
        write_arrays_atomic(path, damaged)
        np.testing.assert_array_equal(inside.feature_picture(cnn, cache, "features.1", 2), first)
    path.write_bytes(b"not an npz")
    np.testing.assert_array_equal(inside.feature_picture(cnn, cache, "features.1", 2), first)
    assert len(calls) == 4  # each damaged copy found again, the same picture (same seed)
    with pytest.raises(ValueError, match="^unit: 'features.1' has no unit 99"):
        inside.feature_picture(cnn, cache, "features.1", 99)
    with pytest.raises(ValueError, match="^layer: 'nope' is not one of"):
        inside.feature_picture(cnn, cache, "nope", 0)
