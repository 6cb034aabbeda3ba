"""Suspect data: training dynamics, near-duplicates, likely mislabels, runs without flagged images."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fmnist_core.analysis import predict_proba, suspects
from fmnist_core.data import exclusions
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import train
from fmnist_core.studies import suspects as suspect_study
from fmnist_core.training.config import RunConfig
from fmnist_core.training.splits import make_splits


def test_an_epoch_packs_to_its_confidences_and_answers():
    generator = np.random.default_rng(0)
    confidence = generator.random(1001).astype(np.float32)
    correct = generator.random(1001) < 0.7
    record = suspects.pack_epoch(confidence, correct)
    json.dumps(record)  # it lives in history.json
    back, answers = suspects.unpack_epoch(record)
    assert back.shape == (1001,) and np.abs(back - confidence).max() <= 0.5 / 255 + 1e-7
    np.testing.assert_array_equal(answers, correct)
    with pytest.raises(ValueError, match="training dynamics"):
        suspects.unpack_epoch({**record, "count": 1002})


def test_the_map_is_the_mean_and_spread_over_epochs():
    epochs = [
        ([1.0, 0.0, 0.2, 0.9], [True, False, False, True]),
        ([1.0, 0.0, 1.0, 0.9], [True, False, True, True]),
        ([1.0, 0.2, 0.0, 0.9], [True, False, False, True]),
    ]
    history = {"train_dynamics": [suspects.pack_epoch(np.array(c), np.array(k)) for c, k in epochs]}
    found = suspects.cartography(history)
    confidence = np.array([c for c, _ in epochs])
    assert found.epochs == 3
    np.testing.assert_allclose(found.confidence, confidence.mean(0), atol=1 / 255)
    np.testing.assert_allclose(found.variability, confidence.std(0), atol=2 / 255)
    np.testing.assert_allclose(found.correctness, [1, 0, 1 / 3, 1])
    assert list(found.regions) == ["easy to learn", "hard to learn", "ambiguous", "easy to learn"]
    assert suspects.cartography({"train_loss": [0.1]}) is None


def test_training_keeps_each_images_confidence_and_the_weights_come_out_the_same():
    plain = RunConfig.for_model("mlp", epochs=2, train_subset=2000)
    mapped = plain.replace(cartography=True)
    assert mapped.run_id != plain.run_id
    run = train(mapped)
    other = train(plain)
    for name, weights in run.model.state_dict().items():
        assert torch.equal(weights, other.model.state_dict()[name]), name
    assert "train_dynamics" not in other.history
    records = run.history["train_dynamics"]
    assert len(records) == 2 and all(r["count"] == 2000 for r in records)
    confidence, correct = suspects.unpack_epoch(records[-1])
    splits = make_splits(mapped)
    probabilities = predict_proba(run.model, splits.train_images, loss=mapped.loss)
    labels = splits.train_labels.numpy()
    np.testing.assert_array_equal(correct, probabilities.argmax(1) == labels)
    np.testing.assert_allclose(confidence, probabilities[np.arange(2000), labels], atol=0.5 / 255 + 1e-6)
    assert 0.5 < correct.mean() < 1.0  # it learnt something, and not everything
    with pytest.raises(ValueError, match="cartography"):
        RunConfig.for_model("conv_autoencoder", cartography=True)


def brute_force_pairs(first: torch.Tensor, second: torch.Tensor, threshold: float, same: bool) -> set:
    a, b = first.flatten(1).double(), second.flatten(1).double()
    rms = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") / a.shape[1] ** 0.5
    found = {(i, j) for i, j in zip(*np.nonzero(rms.numpy() < threshold), strict=True)}
    return {(int(i), int(j)) for i, j in found if not same or i < j}


def test_near_duplicates_are_every_close_pair_and_only_those():
    data = load_data()
    train = data.train_images[:1500].clone()
    test = data.test_images[:500].clone()
    train[100] = test[7]  # a test image copied into train, byte for byte
    train[200] = (test[9] + 0.01).clamp(0, 1)  # and one slightly brightened
    train[300] = train[301]  # a repeat within train
    train_labels, test_labels = data.train_labels[:1500].numpy(), data.test_labels[:500].numpy()
    table = suspects.near_duplicates(train, test, train_labels, test_labels, threshold=0.05)
    for split, first, second, same in (
        ("train", train, train, True),
        ("test", test, test, True),
        ("test-train", test, train, False),
    ):
        rows = table[table["splits"] == split]
        assert set(zip(rows["first"], rows["second"], strict=True)) == brute_force_pairs(
            first, second, 0.05, same
        ), split
    across = table[table["splits"] == "test-train"].set_index("first")
    assert across.loc[7, "second"] == 100 and bool(across.loc[7, "identical"])
    assert across.loc[9, "second"] == 200 and not bool(across.loc[9, "identical"])
    within = table[(table["splits"] == "train") & (table["first"] == 300)]
    assert list(within["second"]) == [301] and within["identical"].all()
    with pytest.raises(ValueError, match="threshold"):
        suspects.near_duplicates(train, test, train_labels, test_labels, threshold=0)


@pytest.mark.slow
def test_the_real_files_hold_near_duplicates_but_no_byte_identical_ones(monkeypatch, tmp_path):
    monkeypatch.setattr(suspects, "KEPT_FOLDER", tmp_path)  # computed here, not read from a kept copy
    suspects.dataset_duplicates.cache_clear()
    table = suspects.dataset_duplicates()
    counts = table.groupby("splits").size()
    assert counts.get("test", 0) == 1  # as zalandoresearch/fashion-mnist#44 found in test
    assert 10 <= counts.get("train", 0) <= 60 and 1 <= counts.get("test-train", 0) <= 20, counts
    assert not table["identical"].any()  # these files hold no byte-for-byte repeat (#44 counted some)
    assert (table["rms"] < suspects.NEAR_DUPLICATE_RMS).all()
    # Kept for the next process (the page, the command): read back as it was computed...
    suspects.dataset_duplicates.cache_clear()
    monkeypatch.setattr(suspects, "near_duplicates", None)  # a second search would fail here
    pd.testing.assert_frame_equal(suspects.dataset_duplicates(), table)
    # ...and never trusted: a label, an index or a distance changed in the file is not used.
    name = f"duplicates-{suspects.NEAR_DUPLICATE_RMS:g}"
    kept = suspects._read_kept(name, suspects.DUPLICATE_COLUMNS)
    for column, value in (("first_label", 10), ("second", 60_000), ("rms", 0.5), ("splits", 3)):
        damaged = {key: array.copy() for key, array in kept.items()}
        damaged[column][0] = value
        assert suspects._checked_duplicates(damaged, suspects.NEAR_DUPLICATE_RMS) is None, column
    path = suspects._kept_path(name)
    path.write_bytes(path.read_bytes()[:-100])  # cut short, as a kill mid-write would (were it not atomic)
    assert suspects._read_kept(name, suspects.DUPLICATE_COLUMNS) is None
    suspects.dataset_duplicates.cache_clear()


def test_the_pixel_label_issues_are_kept_checked_and_computed_again_when_damaged(monkeypatch, tmp_path):
    labels = load_data().train_labels.numpy()
    computed = []

    def issues(features, given):  # the search itself is tested above on 6,000 images; here, keeping
        computed.append(len(given))
        index = np.arange(50, dtype=np.int64)
        return pd.DataFrame(
            {
                "index": index,
                "label": given[index],
                "suggested": (given[index] + 1) % 10,
                "label_confidence": 0.1,
            }
        )

    monkeypatch.setattr(suspects, "KEPT_FOLDER", tmp_path)
    monkeypatch.setattr(suspects, "issues_from_features", issues)
    monkeypatch.setattr(suspects, "pixel_features", lambda images: None)
    suspects.pixel_label_issues.cache_clear()
    first = suspects.pixel_label_issues()
    suspects.pixel_label_issues.cache_clear()
    pd.testing.assert_frame_equal(suspects.pixel_label_issues(), first)
    assert computed == [60_000]  # once: the second came from the kept copy
    path = suspects._kept_path("pixel-label-issues")
    kept = dict(np.load(path, allow_pickle=False))
    kept["label"][0] = (labels[0] + 1) % 10  # a label that is not the image's
    with open(path, "wb") as handle:
        np.savez(handle, **kept)
    suspects.pixel_label_issues.cache_clear()
    pd.testing.assert_frame_equal(suspects.pixel_label_issues(), first)
    assert computed == [60_000, 60_000]  # computed again, not trusted
    suspects.pixel_label_issues.cache_clear()


def test_planted_label_flips_are_found_among_the_likely_mislabels():
    data = load_data()
    images, labels = data.train_images[:6000], data.train_labels[:6000].numpy().copy()
    generator = np.random.default_rng(0)
    flipped = generator.choice(6000, 120, replace=False)
    labels[flipped] = (labels[flipped] + generator.integers(1, 10, 120)) % 10
    probabilities = suspects.out_of_fold_probabilities(suspects.pixel_features(images), labels)
    assert probabilities.shape == (6000, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)
    issues = suspects.label_issues(probabilities, labels)
    found = set(issues["index"])
    assert len(found & set(flipped)) >= 0.8 * len(flipped)
    assert len(found) < 6 * len(flipped)  # not everything is called a mislabel
    index, label, suggested = (int(issues[column].iloc[0]) for column in ("index", "label", "suggested"))
    assert label == labels[index] and suggested != label
    with pytest.raises(ValueError, match="folds"):
        suspects.out_of_fold_probabilities(np.zeros((10, 2)), np.zeros(10), folds=1)


def test_a_run_leaves_out_exactly_the_saved_images(isolated_cache):
    digest = exclusions.save_exclusion(isolated_cache, [5, 3, 3, 59_999])
    assert digest == exclusions.save_exclusion(isolated_cache, [59_999, 5, 3])
    np.testing.assert_array_equal(exclusions.load_exclusion(isolated_cache, digest), [3, 5, 59_999])
    config = RunConfig.for_model("mlp", epochs=1, exclude=digest)
    assert config.run_id != RunConfig.for_model("mlp", epochs=1).run_id
    splits = make_splits(config)
    kept = splits.train_index.numpy()
    assert len(kept) == 59_997 and not {3, 5, 59_999} & set(kept.tolist())
    data = load_data()
    assert torch.equal(splits.train_images, data.train_images[kept])
    for bad, message in (("xyz", "exclude"), ("0" * 15, "exclude"), (3, "exclude")):
        with pytest.raises(ValueError, match=message):
            RunConfig.for_model("mlp", exclude=bad)
    with pytest.raises(ValueError, match="exclude: no list"):
        make_splits(RunConfig.for_model("mlp", exclude="0" * 16))
    path = exclusions.exclusion_folder(isolated_cache) / f"{digest}.json"
    path.write_text("[3, 5]")
    with pytest.raises(ValueError, match="exclude: the list .* was altered"):
        make_splits(config)
    for bad in ([], [-1], [60_000]):
        with pytest.raises(ValueError, match="exclude"):
            exclusions.save_exclusion(isolated_cache, bad)


def test_flagged_images_are_mislabels_later_copies_and_train_images_that_repeat_test_ones():
    pairs = pd.DataFrame(
        {
            "splits": ["train", "test", "test-train"],
            "first": [10, 1, 4],
            "second": [20, 2, 30],
        }
    )
    issues = pd.DataFrame({"index": [7, 20, 40]})
    np.testing.assert_array_equal(suspects.likely_mislabels(issues), [7, 20, 40])
    mislabels = suspects.likely_mislabels(issues, hard=np.array([40, 7, 99]))
    np.testing.assert_array_equal(mislabels, [7, 40])
    np.testing.assert_array_equal(suspects.flagged_images(pairs, mislabels), [7, 20, 30, 40])


class RecordedAccuracies:
    """A cache holding only test accuracies, as a finished study's runs would."""

    def __init__(self, accuracies: dict):
        self.accuracies = accuracies

    def exists(self, run_id):
        return run_id in self.accuracies

    def load_record(self, run_id):
        return {}, {"test_accuracy": self.accuracies[run_id]}


def test_the_retrain_verdict_weighs_the_gain_against_seed_noise():
    digest = "0123456789abcdef"
    pairs = suspect_study.retrain_configs(digest)
    assert [a.seed for a, _ in pairs] == [0, 1, 2] and all(b.exclude == digest for _, b in pairs)
    assert all(a.replace(exclude=digest) == b for a, b in pairs)

    def cache_with(gains, base=(0.880, 0.882, 0.878)):
        accuracies = {}
        for (everything, without), value, gain in zip(pairs, base, gains, strict=True):
            accuracies[everything.run_id] = value
            accuracies[without.run_id] = value + gain
        return RecordedAccuracies(accuracies)

    assert suspect_study.retrain_result(cache_with((0.01, 0.01, 0.01)), digest).verdict == "holds"
    assert suspect_study.retrain_result(cache_with((-0.01, -0.01, -0.01)), digest).verdict == "fails"
    assert (
        suspect_study.retrain_result(cache_with((0.0, 0.001, -0.001)), digest).verdict == "within seed noise"
    )
    partial = RecordedAccuracies({pairs[0][0].run_id: 0.88})
    result = suspect_study.retrain_result(partial, digest)
    assert result.verdict is None and result.table["with_all"].notna().sum() == 1


@pytest.mark.slow
def test_the_command_line_writes_the_study_and_trains_nothing_when_told(isolated_cache, tmp_path, capsys):
    from fmnist_core.cli import main

    assert main(["suspects", "--no-train", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "suspects.md").read_text()
    assert "1 within test" in text and "not trained" in text
    assert "| 0 | not run | not run |" in text and "**" not in text  # no verdict without runs
    assert len(list((isolated_cache / exclusions.EXCLUSIONS).glob("*.json"))) == 1
    assert not any(isolated_cache.glob("[0-9a-f]" * 16))  # nothing trained
    assert text in capsys.readouterr().out
