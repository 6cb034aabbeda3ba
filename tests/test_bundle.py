"""Runs taken away and brought back: bundles (safetensors, no pickle) and ONNX export."""

import hashlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from fmnist_core import bundle
from fmnist_core.cache import RunCache
from fmnist_core.config import RunConfig
from fmnist_core.data import load_data
from fmnist_core.runs import get_or_train, load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_autoencoder):
    """A small autoencoder and a classifier on its encoder, in a cache of their own."""
    cache = RunCache(tmp_path_factory.mktemp("bundle_cache"))
    encoder = small_autoencoder(cache, train_subset=1000)
    classifier = get_or_train(
        RunConfig.for_model(
            "encoder_classifier", {"encoder_run": encoder.run_id}, epochs=1, train_subset=1000
        ),
        cache=cache,
    )
    return cache, encoder, classifier


def rezip(data: bytes, change) -> bytes:
    """The bundle's files passed through `change(files, manifest)`, zipped again."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files.pop("manifest.json"))
    change(files, manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_bundle_brings_a_classifier_and_its_encoder_into_another_lab(runs, tmp_path):
    cache, encoder, classifier = runs
    data = bundle.export_bundle(classifier.run_id, cache)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    assert not any(name.endswith((".pt", ".pkl")) for name in names) and "run/model.safetensors" in names
    other = RunCache(tmp_path / "other")
    assert bundle.import_bundle(data, other) == [encoder.run_id, classifier.run_id]
    brought = load_run(classifier.run_id, other)
    assert brought.history == classifier.history and brought.metrics == classifier.metrics
    original = load_run(classifier.run_id, cache).model.state_dict()
    assert all(torch.equal(value, original[key]) for key, value in brought.model.state_dict().items())
    images = load_data().test_images[:50]
    assert np.array_equal(
        brought.predict_proba(images), load_run(classifier.run_id, cache).predict_proba(images)
    )


def test_a_bad_bundle_is_refused_with_a_reason_and_leaves_the_cache_alone(runs, tmp_path):
    cache, encoder, classifier = runs
    good = bundle.export_bundle(classifier.run_id, cache)
    lone = bundle.export_bundle(encoder.run_id, cache)

    def edited_config(files, manifest):  # a setting changed, the checksum made to match
        config = json.loads(files["run/config.json"])
        config["settings"]["dropout"] = 0.45
        files["run/config.json"] = json.dumps(config).encode()
        manifest["sha256"]["run/config.json"] = hashlib.sha256(files["run/config.json"]).hexdigest()

    def pickled_weights(files, manifest):  # a pickle where the safetensors should be
        files["run/model.safetensors"] = pickle.dumps({"x": 1})
        manifest["sha256"]["run/model.safetensors"] = hashlib.sha256(
            files["run/model.safetensors"]
        ).hexdigest()

    def wrong_shapes(files, manifest):  # the encoder's weights in the classifier's place
        with zipfile.ZipFile(io.BytesIO(lone)) as archive:
            files["run/model.safetensors"] = archive.read("run/model.safetensors")
        manifest["sha256"]["run/model.safetensors"] = hashlib.sha256(
            files["run/model.safetensors"]
        ).hexdigest()

    cases = {
        b"not a zip at all": "not a .zip",
        rezip(good, lambda f, m: f.update({"run/evil.pkl": b"x"})): "does not have: 'run/evil.pkl'",
        rezip(good, lambda f, m: f.update({"run/config.json": f["run/config.json"] + b" "})): "checksum",
        rezip(good, lambda f, m: m.update(engine=1)): "made by engine 1",
        rezip(good, lambda f, m: m.update(format="other")): "manifest is not",
        rezip(good, edited_config): "names run",
        rezip(good, pickled_weights): "do not read as safetensors",
        rezip(good, wrong_shapes): "weights do not fit",
    }
    other = RunCache(tmp_path / "other")
    for data, reason in cases.items():
        with pytest.raises(bundle.BundleError, match=reason):
            bundle.import_bundle(data, other)
    assert [r for r in other.run_ids() if r == classifier.run_id] == []  # nothing of it was kept


def test_a_classifier_exported_to_onnx_answers_as_torch_does(runs):
    import onnxruntime

    cache, encoder, classifier = runs
    session = onnxruntime.InferenceSession(bundle.export_onnx(classifier.run_id, cache))
    images = load_data().test_images[:5]
    [logits] = session.run(["logits"], {"images": images.numpy()})  # 5 images: the batch size is free
    with torch.no_grad():
        expected = classifier.model.eval()(images).numpy()
    assert logits.shape == (5, 10) and np.allclose(logits, expected, atol=1e-4)
    with pytest.raises(ValueError, match="run_id"):
        bundle.export_onnx(encoder.run_id, cache)


def test_a_run_that_left_images_out_carries_their_list_and_trains_again_elsewhere(tmp_path):
    from fmnist_core.suspects import save_exclusion
    from fmnist_core.training import make_splits

    cache = RunCache(tmp_path / "here")
    digest = save_exclusion(cache.root, [3, 14, 15, 92, 653])
    config = RunConfig.for_model("mlp", epochs=1, train_subset=500, test_subset=500, exclude=digest)
    run = get_or_train(config, cache=cache)
    data = bundle.export_bundle(run.run_id, cache)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert json.loads(archive.read("run/exclude.json")) == [3, 14, 15, 92, 653]

    other = RunCache(tmp_path / "other")
    assert bundle.import_bundle(data, other) == [run.run_id]
    splits = make_splits(config, other.root)  # the other lab can train the run again
    assert len(splits.train_images) == 500
    assert not set(splits.train_index.tolist()) & {3, 14, 15, 92, 653}

    def listed(indices):
        def change(files, manifest):
            files["run/exclude.json"] = json.dumps(indices).encode()
            manifest["sha256"]["run/exclude.json"] = hashlib.sha256(files["run/exclude.json"]).hexdigest()

        return change

    def dropped(files, manifest):
        del files["run/exclude.json"]
        del manifest["sha256"]["run/exclude.json"]

    cases = {
        rezip(data, dropped): "their list is missing",
        rezip(data, listed([3, 14, 15, 92])): "is not the list",
        rezip(data, listed([3, 14, 15, 92, 60_000])): "is not the list",
        rezip(data, listed("3,14")): "is not the list",
    }
    third = RunCache(tmp_path / "third")
    for bad, reason in cases.items():
        with pytest.raises(bundle.BundleError, match=reason):
            bundle.import_bundle(bad, third)
    assert third.run_ids() == [] and not (third.root / "exclusions").exists()
