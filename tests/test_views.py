"""What the pages ask of trained runs: the boundary walk and its flip points, the confusion pair."""

import numpy as np
import pytest
import torch

from fmnist_core import analysis, views
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig


def test_a_flip_point_is_where_the_new_class_overtakes_the_old():
    weights = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    probabilities = np.zeros((5, 10))
    probabilities[:, 0] = [0.9, 0.7, 0.4, 0.2, 0.1]  # class 0 fades
    probabilities[:, 3] = [0.05, 0.2, 0.5, 0.7, 0.85]  # class 3 grows: it leads from step 2
    weight, new = views.flip_point(weights, probabilities)
    # Between steps 1 and 2 the gap p3 - p0 goes from -0.5 to +0.1: zero at 5/6 of the way.
    assert new == 3 and weight == pytest.approx(0.25 + 0.25 * 5 / 6)
    steady = np.tile(np.eye(10)[4], (5, 1))
    assert views.flip_point(weights, steady) is None


def test_a_confusion_pair_stands_on_either_side_of_the_boundary_near_the_surest_mistake():
    labels = np.array([6, 6, 6, 0, 0, 0])
    predictions = np.array([0, 0, 6, 0, 0, 6])
    confidence = np.array([0.6, 0.9, 0.8, 0.9, 0.9, 0.5])
    codes = np.array([[0.0], [5.0], [1.0], [9.0], [4.0], [5.0]])
    # Shirts taken for T-shirts: the surest is image 1 (code 5). From the shirt it gets right (2) to
    # the surest right T-shirts (3 and 4, 0.9), the one nearer that mistake: 4.
    pair = views.confusion_pair(labels, predictions, confidence, codes, 6, 0)
    assert pair == (2, 4) and predictions[pair[0]] != predictions[pair[1]]  # its answer must change
    surer = confidence.copy()
    surer[3] = 0.99  # a surer right answer wins over a nearer one
    assert views.confusion_pair(labels, predictions, surer, codes, 6, 0) == (2, 3)
    # T-shirts taken for shirts: mistake 5 (code 5); the right T-shirt nearest it: 4; the shirt: 2.
    assert views.confusion_pair(labels, predictions, confidence, codes, 0, 6) == (4, 2)
    assert views.confusion_pair(labels, predictions, confidence, codes, 0, 3) is None  # an empty cell
    assert views.confusion_pair(labels, predictions, confidence, codes, 6, 6) is None  # not a mistake
    none_right = np.array([0, 0, 0, 0, 0, 6])
    assert views.confusion_pair(labels, none_right, confidence, codes, 6, 0) is None  # no right shirt


@pytest.fixture(scope="module")
def models(tmp_path_factory, small_autoencoder):
    """A small autoencoder and an MLP, trained once for this file's tests."""
    cache = RunCache(tmp_path_factory.mktemp("views_cache"))
    autoencoder = small_autoencoder(cache, train_subset=3000)
    return autoencoder, get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=5000), cache=cache)


def test_a_boundary_walk_on_real_models_goes_from_one_image_to_the_other(models):
    autoencoder, classifier = models
    data = load_data()
    first, second = (int(np.flatnonzero(data.test_labels == c)[0]) for c in (6, 0))  # a shirt, a T-shirt
    shirt, tshirt = data.test_images[first, 0].numpy(), data.test_images[second, 0].numpy()
    walk = views.boundary_walk(autoencoder, shirt, tshirt, {"mlp": classifier}, steps=9)
    assert walk.decoded.shape == walk.blended.shape == (9, 28, 28)
    assert np.allclose(walk.blended[0], shirt) and np.allclose(walk.blended[-1], tshirt)
    # The code path starts and ends at the two images' codes: its ends are their reconstructions.
    ends = analysis.reconstructions(autoencoder.model, data.test_images[[first, second]])
    assert np.allclose(walk.decoded[[0, -1]], ends, atol=1e-5)
    for probabilities in (walk.decoded_probabilities["mlp"], walk.blended_probabilities["mlp"]):
        assert probabilities.shape == (9, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    own = classifier.predict_proba(data.test_images[[first]])[0]
    assert np.allclose(walk.blended_probabilities["mlp"][0], own, atol=1e-5)  # step 0 is the shirt itself
    with pytest.raises(ValueError, match="steps"):
        views.boundary_walk(autoencoder, shirt, tshirt, {}, steps=1)


def test_aligned_maps_neither_spin_nor_flip_nor_drift():
    points = np.random.default_rng(0).normal(size=(200, 2))
    turn = np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    frames = [3 * points @ turn + 5, points * [1, -1], points]  # turned, scaled, moved; mirrored; as is
    aligned = analysis.align_maps(frames)
    expected = (points - points.mean(0)) / np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean())
    for frame in aligned:
        assert np.allclose(frame, expected, atol=1e-9)
    packed = analysis.unpack_points(analysis.pack_points(points))
    assert packed.shape == (200, 2) and np.allclose(packed, points, atol=2e-3)  # float16


def test_knn_accuracy_is_high_for_separated_codes_and_chance_for_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    separated = np.eye(10)[labels] * 10 + rng.normal(size=(1000, 10))
    assert analysis.knn_accuracy(separated, labels) > 0.99
    assert analysis.knn_accuracy(rng.normal(size=(1000, 10)), labels) < 0.2


def test_an_atlas_cell_holds_its_images_and_shows_their_mean_code_decoded(models):
    autoencoder, classifier = models
    images = load_data().test_images[:4]
    codes = analysis.latent_codes(autoencoder.model, images)
    points = np.array([[0.0, 0.0], [0.0, 0.1], [1.0, 1.0], [0.5, 0.5]])  # two cells of a 2x2 grid
    atlas = views.latent_atlas(autoencoder, points, codes, size=2, classifier=classifier)
    assert atlas.cells[["row", "column", "count"]].values.tolist() == [[0, 0, 2], [1, 1, 2]]
    assert [m.tolist() for m in atlas.members] == [[0, 1], [2, 3]]
    assert np.allclose(atlas.cells[["x", "y"]].values, [[0.25, 0.25], [0.75, 0.75]])
    expected = analysis.decode(autoencoder.model, np.stack([codes[:2].mean(0), codes[2:].mean(0)]))
    assert np.allclose(atlas.images, expected, atol=1e-6)
    answers = classifier.predict_proba(torch.from_numpy(expected[:, None]))
    assert atlas.cells["class"].tolist() == answers.argmax(1).tolist()
    assert np.allclose(atlas.cells["confidence"], answers.max(1))
    bare = views.latent_atlas(autoencoder, points, codes, size=2)
    assert (bare.cells["class"] == -1).all()
    with pytest.raises(ValueError, match="size"):
        views.latent_atlas(autoencoder, points, codes, size=1)


def test_calibration_bins_and_error_match_a_hand_computation():
    # Four answers: confidences 0.95 (right), 0.92 (wrong), 0.55 (right), 0.35 (wrong); 5 bins of 0.2.
    probabilities = np.zeros((4, 10))
    probabilities[0, 1], probabilities[1, 2], probabilities[2, 3], probabilities[3, 4] = (
        0.95,
        0.92,
        0.55,
        0.35,
    )
    labels = np.array([1, 7, 3, 0])
    table, error = analysis.calibration(probabilities, labels, bins=5)
    assert table["count"].tolist() == [0, 1, 1, 0, 2]
    top = table.iloc[4]
    assert top["confidence"] == pytest.approx(0.935) and top["accuracy"] == pytest.approx(0.5)
    # ECE: (2 * |0.5 - 0.935| + 1 * |1 - 0.55| + 1 * |0 - 0.35|) / 4
    assert error == pytest.approx((2 * 0.435 + 0.45 + 0.35) / 4)
    with pytest.raises(ValueError, match="bins"):
        analysis.calibration(probabilities, labels, bins=1)


def test_calibration_of_a_real_classifier_against_torchmetrics(models):
    from torchmetrics.functional.classification import multiclass_calibration_error

    _, classifier = models
    data = load_data()
    probabilities = classifier.predict_proba(data.test_images[:3000])
    labels = data.test_labels[:3000]
    table, error = analysis.calibration(probabilities, labels.numpy(), bins=15)
    expected = multiclass_calibration_error(
        torch.from_numpy(probabilities), labels, num_classes=10, n_bins=15
    )
    assert error == pytest.approx(float(expected), abs=1e-4) and table["count"].sum() == 3000


def test_the_quiz_draws_three_of_each_class_the_same_for_everyone():
    labels = load_data().test_labels.numpy()
    quiz = views.quiz_images(labels, per_class=3, seed=0)
    assert len(quiz) == 30 and len(set(quiz.tolist())) == 30
    assert np.bincount(labels[quiz], minlength=10).tolist() == [3] * 10
    assert np.array_equal(quiz, views.quiz_images(labels, per_class=3, seed=0))  # the same for everyone
    assert not np.array_equal(quiz, views.quiz_images(labels, per_class=3, seed=1))


def test_a_quiz_result_scores_you_and_the_model_on_the_same_images():
    labels = np.array([0, 1, 2, 3, 4, 5])
    indices = np.array([0, 1, 2, 3])
    answers = [0, 1, 6, 6]  # right, right, wrong, wrong
    predictions = np.array([0, 7, 6, 3, 9, 9])  # right, wrong, wrong (as you), right
    result = views.quiz_result(indices, answers, predictions, labels)
    assert result.yours == 0.5 and result.model == 0.5
    assert result.both_wrong.tolist() == [2]
    assert result.your_confusion[2, 6] == 1 and result.model_confusion[1, 7] == 1
    assert result.your_confusion.sum() == result.model_confusion.sum() == 4
    with pytest.raises(ValueError, match="answers"):
        views.quiz_result(indices, [0], predictions, labels)


def test_a_wide_codes_time_lapse_map_is_the_same_pca_through_its_gram_matrix():
    """Codes wider than analysis.WIDE_CODES are mapped through their (N, N) Gram matrix (an SVD of
    (1,000, 200,704) took 8 GB): the same two coordinates as the SVD, up to each axis' sign."""

    class Wide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Linear(784, analysis.WIDE_CODES + 100)
            torch.nn.init.normal_(self.features.weight, generator=torch.Generator().manual_seed(0))

        def encode(self, x):
            return self.features(x.flatten(1))

        forward = encode

    data = load_data()
    images, labels = data.test_images[:300], data.test_labels[:300]
    model = Wide()
    moment = analysis.latent_snapshot(model, images, labels, 1.0)
    codes = analysis.latent_codes(model, images).astype(np.float64)
    centred = codes - codes.mean(0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ directions[:2].T
    points = analysis.unpack_points(moment["map"])
    signs = np.sign((points * expected).sum(0))
    assert np.allclose(points * signs, expected, rtol=2e-2, atol=2e-2 * np.abs(expected).max())
