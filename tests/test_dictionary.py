"""A layer's dictionary (fmnist_core.analysis.dictionary): NMF finds parts planted in activations,
ranks images by them, refuses layers that can be negative, and is kept beside the cache."""

import numpy as np
import pytest

from fmnist_core.analysis import dictionary
from fmnist_core.data.fashion import load_data
from fmnist_core.training.config import RunConfig

LAYERS = ("conv:8:3:same:relu", "maxpool:2", "conv:16:3:same:relu", "maxpool:2")


@pytest.fixture
def cnn(pooled):
    return pooled(
        RunConfig.for_model("cnn", {"layers": LAYERS}, epochs=1, train_subset=2000, test_subset=1000)
    )


def test_parts_planted_in_a_layers_rows_are_found():
    """Rows made of 4 non-negative parts over 12 units (each part 3 units, overlapping by one), mixed
    by sparse non-negative weights: the factorisation's 4 components are those parts (cosine > 0.95
    after pairing each with its closest) and account for nearly all of the rows (noise 1%)."""
    generator = np.random.default_rng(0)
    parts = np.zeros((4, 12))
    for k in range(4):
        parts[k, 3 * k : 3 * k + 4 if k < 3 else 12] = generator.uniform(0.5, 1.0, 4 if k < 3 else 3)
    mixing = generator.exponential(1.0, (3000, 4)) * (generator.random((3000, 4)) < 0.4)
    rows = mixing @ parts + generator.uniform(0, 0.01, (3000, 12))
    components, explained = dictionary.factorise(rows, 4)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    cosines = unit(parts) @ unit(components).T
    assert sorted(cosines.argmax(1).tolist()) == [0, 1, 2, 3], cosines  # each part its own component
    assert cosines.max(1).min() > 0.95, cosines
    assert 0.99 < explained <= 1


def test_a_layers_dictionary_ranks_images_by_its_features_and_refuses_what_nmf_cannot_read(cnn):
    images = load_data().test_images[:500]
    found = dictionary.layer_dictionary(cnn.model, "features.4", images, features=4)
    assert found.components.shape == (4, 16) and found.strengths.shape == (500, 4)
    assert (found.components >= 0).all() and np.allclose(found.components.max(1), 1)
    assert 0.5 < found.explained <= 1
    for feature in range(4):  # the top images are those with the largest peak loading
        top = found.top_images(feature, 5)
        assert (found.strengths[top, feature] >= np.sort(found.strengths[:, feature])[-5] - 1e-6).all()
        assert found.top_units(feature)[0][1] == pytest.approx(1.0)
    more = dictionary.layer_dictionary(cnn.model, "features.4", images, features=8)
    assert more.explained > found.explained  # more features say more of the layer
    np.testing.assert_array_equal(  # seeded: the same features again
        dictionary.layer_dictionary(cnn.model, "features.4", images, features=4).components, found.components
    )
    with pytest.raises(
        ValueError,
        match=r"^layer: head can be negative; NMF needs a rectified layer \(features.1, features.4\)",
    ):
        dictionary.layer_dictionary(cnn.model, "head", images)
    with pytest.raises(ValueError, match="^layer: 'nope' is not one of"):
        dictionary.layer_dictionary(cnn.model, "nope", images)
    with pytest.raises(ValueError, match="^features: "):
        dictionary.layer_dictionary(cnn.model, "features.1", images, features=9)  # 8 units


def test_a_dictionary_and_its_pictures_are_kept_beside_the_cache_and_a_damaged_one_is_computed_again(
    cnn, monkeypatch
):
    from fmnist_core.base.files import write_arrays_atomic
    from fmnist_core.store.cache import RunCache
    from fmnist_core.views import dictionary as view

    cache = RunCache()
    first = view.dictionary(cnn, cache, "features.4", 3)
    path = cache.derived_path(cnn.run_id, "dictionary-features.4-3-s0.npz")
    assert path.is_file() and first.strengths.shape == (view.IMAGES, 3)
    calls = []
    computed = view.layer_dictionary
    monkeypatch.setattr(view, "layer_dictionary", lambda *a, **k: calls.append(a) or computed(*a, **k))
    np.testing.assert_array_equal(view.dictionary(cnn, cache, "features.4", 3).components, first.components)
    assert calls == []
    source = np.array(path.parent.name)
    write_arrays_atomic(
        path,
        {
            "components": -first.components,
            "strengths": first.strengths,
            "explained": np.float64(0.5),
            "source": source,
        },
    )
    np.testing.assert_array_equal(view.dictionary(cnn, cache, "features.4", 3).components, first.components)
    assert len(calls) == 1  # negative components: not trusted
    pictures = view.dictionary_pictures(cnn, cache, first)
    assert pictures.shape == (3, 28, 28) and 0 <= pictures.min() <= pictures.max() <= 1
    import torch

    from fmnist_core.analysis import featureviz

    real = load_data().test_images[:2000]
    with torch.no_grad():  # each picture drives its feature's direction as hard as the best test image
        on_pictures = featureviz.unit_means(
            featureviz.layer_output(cnn.model.eval(), "features.4", torch.from_numpy(pictures[:, None]))
        )
        on_real = featureviz.unit_means(featureviz.layer_output(cnn.model.eval(), "features.4", real))
    for feature in range(3):
        direction = torch.from_numpy(first.components[feature])
        assert (on_pictures[feature] @ direction) > 0.9 * (on_real @ direction).max()
