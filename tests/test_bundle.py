"""Runs taken away and brought back: bundles (safetensors, no pickle) and ONNX export."""

import bz2
import hashlib
import io
import json
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import torch

from fmnist_core.data.fashion import load_data
from fmnist_core.runs import bundle
from fmnist_core.runs.trained import get_or_train, load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_autoencoder):
    """A small autoencoder and a classifier on its encoder, in a cache of their own."""
    cache = RunCache(tmp_path_factory.mktemp("bundle_cache"))
    encoder = small_autoencoder(cache, train_subset=1000)
    classifier = get_or_train(
        RunConfig.for_model(
            "encoder_classifier",
            {"encoder_run": encoder.run_id},
            epochs=1,
            train_subset=1000,
            test_subset=500,
        ),
        cache=cache,
    )
    return cache, encoder, classifier


def rezip(data: bytes, change, compression=zipfile.ZIP_STORED) -> bytes:
    """The bundle's files passed through `change(files, manifest)`, zipped again."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files.pop("manifest.json"))
    change(files, manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
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
    assert bundle.import_bundle(data, other) == [
        bundle.Imported(encoder.run_id, added=True),
        bundle.Imported(classifier.run_id, added=True),
    ]
    brought = load_run(classifier.run_id, other)
    assert brought.history == classifier.history
    measured = brought.metrics.pop("measured_on_import")
    assert brought.metrics == classifier.metrics
    # Measured on the import's path (a model rebuilt from its weights, in the plain memory layout):
    # the same answers as the lab's own loaded run. Against the training-time figure (the trained
    # model in channels_last: other oneDNN kernels) a near-tie may flip one answer, and the mean
    # loss differ in its last float32 digits.
    reference = bundle._measure(classifier.config, load_run(classifier.run_id, cache).model, cache)
    assert measured["test_accuracy"] == reference["test_accuracy"]
    assert abs(measured["test_accuracy"] - classifier.metrics["test_accuracy"]) <= 2 / 10_000
    assert measured["test_loss"] == pytest.approx(classifier.metrics["test_loss"], rel=1e-5)
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
        rezip(good, lambda f, m: m.update(engine="6")): "engine '6' is not an engine number",
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
    from fmnist_core.data.exclusions import save_exclusion
    from fmnist_core.training.splits import make_splits

    cache = RunCache(tmp_path / "here")
    digest = save_exclusion(cache.root, [3, 14, 15, 92, 653])
    config = RunConfig.for_model("mlp", epochs=1, train_subset=500, test_subset=500, exclude=digest)
    run = get_or_train(config, cache=cache)
    data = bundle.export_bundle(run.run_id, cache)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert json.loads(archive.read("run/exclude.json")) == [3, 14, 15, 92, 653]

    other = RunCache(tmp_path / "other")
    assert bundle.import_bundle(data, other) == [bundle.Imported(run.run_id, added=True)]
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

    def claims_more(files, manifest):  # the right list, a score its weights do not reach
        record = json.loads(files["run/record.json"])
        record["metrics"]["test_accuracy"] = 0.99
        files["run/record.json"] = json.dumps(record).encode()
        manifest["sha256"]["run/record.json"] = hashlib.sha256(files["run/record.json"]).hexdigest()

    cases[rezip(data, claims_more)] = "claims test_accuracy 0.99"
    third = RunCache(tmp_path / "third")
    for bad, reason in cases.items():
        with pytest.raises(bundle.BundleError, match=reason):
            bundle.import_bundle(bad, third)
    # Refused after its list was kept for measuring: the list went with it (it stayed behind).
    assert third.run_ids() == [] and not list((third.root / "exclusions").glob("*.json"))


def forged_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip written by hand, each entry (name, method, data, declared size, flags) declaring what
    it likes: what an attacker's zip can say and zipfile would never write."""
    out, central = io.BytesIO(), []
    for name, method, data, size, flags in entries:
        offset = out.tell()
        head = (20, flags, method, 0, 0, 0, len(data), size, len(name))
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", *head, 0) + name.encode() + data)
        record = struct.pack("<4sH5H3L5H2L", b"PK\x01\x02", 20, *head, 0, 0, 0, 0, 0, offset)
        central.append(record + name.encode())
    start = out.tell()
    out.write(b"".join(central))
    size = out.tell() - start
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), size, start, 0))
    return out.getvalue()


def zeros_compressed(compressor, mebibytes: int) -> bytes:
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(mebibytes)) + compressor.flush()


def test_a_zip_bomb_is_refused_without_unpacking_it(runs):
    cache, encoder, classifier = runs
    manifest = json.dumps({"format": bundle.FORMAT, "engine": 6, "run_id": "0" * 16, "sha256": {}}).encode()
    bzip2 = zeros_compressed(bz2.BZ2Compressor(9), 256)  # 256 MiB of zeros in ~300 bytes
    deflate = zeros_compressed(zlib.compressobj(9, zlib.DEFLATED, -15), 256)
    cases = {
        "compressed with method 12": forged_zip([("run/model.safetensors", 12, bzip2, 1000, 0)]),
        "does not unpack": forged_zip([("run/exclude.json", 8, deflate, 1000, 0)]),
        "more than 64,000": forged_zip([("run/config.json", 8, deflate, 256 << 20, 0)]),
        "encrypted": forged_zip([("manifest.json", 0, manifest, len(manifest), 1)]),
        "compressed with method 99": forged_zip([("manifest.json", 99, manifest, len(manifest), 0)]),
        "holds a file twice": forged_zip([("manifest.json", 0, manifest, len(manifest), 0)] * 2),
    }
    for reason, data in cases.items():
        tracemalloc.start()
        with pytest.raises(bundle.BundleError, match=reason):
            bundle.import_bundle(data, RunCache(cache.root / "never"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 20_000_000, f"{reason}: {peak:,} bytes at the peak"
    assert not (cache.root / "never").exists()


def resum(files, manifest, name):
    manifest["sha256"][name] = hashlib.sha256(files[name]).hexdigest()


def zeroed_weights(files, manifest):
    from safetensors.torch import load, save

    state = load(files["run/model.safetensors"])
    files["run/model.safetensors"] = save({key: torch.zeros_like(value) for key, value in state.items()})
    resum(files, manifest, "run/model.safetensors")


def test_an_import_never_replaces_a_run_and_its_claims_are_measured(tmp_path):
    cache = RunCache(tmp_path / "here")
    run = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300), cache=cache)
    weights = (cache.folder(run.run_id) / "model.pt").read_bytes()
    created = cache.verify(run.run_id)["created"]
    good = bundle.export_bundle(run.run_id, cache)
    zeroed = rezip(good, zeroed_weights)

    with pytest.raises(bundle.BundleError, match="already in this lab with other weights"):
        bundle.import_bundle(zeroed, cache)
    assert (cache.folder(run.run_id) / "model.pt").read_bytes() == weights
    assert get_or_train(run.config, cache=cache).metrics["test_accuracy"] == run.metrics["test_accuracy"]
    assert bundle.import_bundle(good, cache) == [bundle.Imported(run.run_id, added=False)]
    assert cache.verify(run.run_id)["created"] == created  # the same bundle again changes nothing

    elsewhere = RunCache(tmp_path / "other")
    with pytest.raises(bundle.BundleError, match=r"claims test_accuracy 0\.\d+, its weights score 0\.\d+"):
        bundle.import_bundle(zeroed, elsewhere)

    def claims(value):
        def change(files, manifest):
            record = json.loads(files["run/record.json"])
            record["metrics"]["test_accuracy"] = value
            files["run/record.json"] = json.dumps(record).encode()
            resum(files, manifest, "run/record.json")

        return change

    with pytest.raises(bundle.BundleError, match="claims test_accuracy 0.99"):
        bundle.import_bundle(rezip(good, claims(0.99)), elsewhere)
    assert elsewhere.run_ids() == []


def test_every_malformed_bundle_is_one_line_and_writes_nothing(runs, tmp_path):
    cache, encoder, classifier = runs
    good = bundle.export_bundle(encoder.run_id, cache)

    def replaced(name, content):
        def change(files, manifest):
            files[name] = content if isinstance(content, bytes) else json.dumps(content).encode()
            resum(files, manifest, name)

        return change

    def record_without(key, value=None):
        def change(files, manifest):
            record = json.loads(files["run/record.json"])
            if value is None:
                del record["metrics"][key]
            else:
                record["metrics"][key] = value
            replaced("run/record.json", record)(files, manifest)

        return change

    def weights(change_state):
        def change(files, manifest):
            from safetensors.torch import load, save

            state = load(files["run/model.safetensors"])
            change_state(state)
            replaced("run/model.safetensors", save(state))(files, manifest)

        return change

    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        config, record = (json.loads(archive.read(f"run/{name}.json")) for name in ("config", "record"))
    first = next(iter(encoder.model.state_dict()))
    matrix = next(k for k, v in encoder.model.state_dict().items() if v.ndim == 2)
    cases = {
        replaced("run/config.json", b"[" * 50_000): "nested more than 32 deep",
        replaced("run/config.json", b"[" * 100_000): "unpacks to 100,000 bytes, more than 64,000",
        replaced("run/record.json", b"{" * 50_000): "nested more than 32 deep",
        # 200,000 {} (~13 MB of Python): more than a 1-epoch run's record can hold.
        replaced("run/record.json", b"[" + b"{}," * 200_000 + b"{}]"): "record.json unpacks to 600,004 bytes",
        replaced("run/config.json", []): "a config is a mapping of settings, not list",
        replaced("run/config.json", None): "not NoneType",
        replaced("run/config.json", {"model": "mlp", "settings": [1]}): "settings: a mapping",
        record_without("epochs_done"): "epochs_done is 'None'",
        record_without("train_seconds", "3"): "train_seconds is '3', not a number",
        weights(lambda s: s.update({first: s[first].to(torch.int8)})): "is torch.int8",
        weights(lambda s: s.update({first: s[first].bool()})): "is torch.bool",
        weights(lambda s: s.pop(first)): f"{first} is missing",
        weights(lambda s: s.update(extra=torch.zeros(1))): "extra is not part of the model",
        weights(lambda s: s.update({matrix: s[matrix].T.contiguous()})): "the model's is torch.float32",
        # json.loads reads UTF-16, where the byte of a quote can be half of another character (the
        # scan miscounted: 11 million {} were let in); UTF-8 JSON never holds a NUL byte.
        replaced("run/record.json", json.dumps(record).encode("utf-16-le")): "NUL byte",
        record_without("test_loss", float("inf")): "claims test_loss inf",  # |x - inf| <= inf held
        # A hostile value is quoted in a few words, not whole (4 KB messages before); a 400-digit
        # integer where a float goes is refused, not an OverflowError.
        replaced("run/config.json", {**config, "model": "x" * 5000}): r"model: 'x{30,40}\.\.\. is not one of",
        replaced(
            "run/config.json", {**config, "settings": {"dropout": 10**400}}
        ): "dropout: a 401-digit number",
    }
    other = RunCache(tmp_path / "other")
    for change, reason in cases.items():
        with pytest.raises(bundle.BundleError, match=reason) as refused:
            bundle.import_bundle(rezip(good, change), other)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 300
    with pytest.raises(bundle.BundleError, match="made by engine a 4300-digit number; this lab is engine"):
        bundle.import_bundle(rezip(good, lambda files, manifest: manifest.update(engine=10**4299)), other)
    huge = b'{"history": {}, "metrics": {"epochs_done": 1' + b"0" * 100_000 + b"}}"
    with pytest.raises(bundle.BundleError, match=r"not JSON \(Exceeds the limit \(4300 digits\)"):
        bundle.import_bundle(rezip(good, replaced("run/record.json", huge)), other)
    assert other.run_ids() == []


def test_a_cache_that_cannot_be_written_refuses_the_bundle_in_one_line(runs, tmp_path):
    cache, encoder, classifier = runs
    good = bundle.export_bundle(encoder.run_id, cache)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(bundle.BundleError, match="cannot write into the cache"):
        bundle.import_bundle(good, RunCache(tmp_path / "a-file"))


def test_a_bundle_whose_encoder_is_no_autoencoder_is_refused_and_writes_nothing(runs, tmp_path):
    """The encoder part swapped for an MLP run, the classifier's config pointed at it and every
    checksum mended: refused in one line before any part is written (it raised AttributeError
    after writing the MLP)."""
    cache, encoder, classifier = runs
    mlp = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300), cache=cache)
    mlp_files = bundle._run_files(mlp.run_id, cache)

    def swap(files, manifest):
        config = json.loads(files["run/config.json"])
        config["settings"]["encoder_run"] = mlp.run_id
        files["run/config.json"] = json.dumps(config).encode()
        for name, content in mlp_files.items():
            files[f"encoder/{name}"] = content
        for name in files:
            resum(files, manifest, name)
        manifest["run_id"] = RunConfig.from_dict(config).run_id
        manifest["encoder_run"] = mlp.run_id

    other = RunCache(tmp_path / "other")
    with pytest.raises(bundle.BundleError, match=f"encoder: run {mlp.run_id} is a mlp, not an autoencoder"):
        bundle.import_bundle(rezip(bundle.export_bundle(classifier.run_id, cache), swap), other)
    assert not other.root.exists() or other.run_ids() == []


def refused_before_unpacking(runs, name: str, content: bytes, refusal: str, epochs: int = 0) -> None:
    """The encoder's bundle with `name` swapped for `content` (its checksum mended, and its config's
    epochs set to `epochs` where given), deflated to under 2 MB: refused with `refusal`, at a traced
    peak under 20 MB (it never unpacks whole), and nothing written."""
    cache, encoder, _ = runs

    def swap(files, manifest):
        files[name] = content
        resum(files, manifest, name)
        if epochs:
            config = json.loads(files["run/config.json"])
            config["epochs"] = epochs
            files["run/config.json"] = json.dumps(config).encode()
            resum(files, manifest, "run/config.json")
            manifest["run_id"] = RunConfig.from_dict(config).run_id

    data = rezip(bundle.export_bundle(encoder.run_id, cache), swap, zipfile.ZIP_DEFLATED)
    assert len(data) < 2_000_000
    tracemalloc.start()
    with pytest.raises(bundle.BundleError, match=refusal):
        bundle.import_bundle(data, RunCache(cache.root / "never"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000, f"{peak:,} bytes at the peak"
    assert not (cache.root / "never").exists() or RunCache(cache.root / "never").run_ids() == []


def test_a_record_of_a_quarter_gigabyte_is_refused_before_it_unpacks(runs):
    """250 MB of `[` deflate to ~250 KB: its checksum right, the record refused by the size its
    config allows (a 1-epoch run: 384 KB), without unpacking it or parsing it."""
    refused_before_unpacking(
        runs,
        "run/record.json",
        b"[" * 250_000_000,
        r"run/record.json unpacks to 250,000,000 bytes, more than 384,000",
    )


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (b"[" + b"1," * 49_999_999 + b"1]", "more than 410,000 values"),
        (b'["' + b"a" * 99_999_996 + b'"]', "holds a text of more than 1,000,000 bytes"),
    ],
    ids=["numbers", "text"],
)
def test_a_record_of_millions_of_numbers_or_a_long_text_is_refused_as_it_unpacks(runs, content, refusal):
    """A run of 780 epochs may have a 100 MB record; 100 MB of `1,` (50 million numbers, gigabytes
    once parsed: 3.4 GB at the peak before) or of one text are refused by what such a record holds
    (~150 values an epoch, its longest text an epoch's cartography), at the unpacking's second MB."""
    refused_before_unpacking(runs, "run/record.json", content, f"run/record.json: {refusal}", epochs=780)


def test_a_record_larger_than_the_epochs_it_ran_is_refused(runs, tmp_path):
    """A config of 780 epochs allows 100 MB; its record says 1 epoch ran and holds 2.7 MB of text."""
    cache, encoder, _ = runs

    def padded(files, manifest):
        record = json.loads(files["run/record.json"])
        record["history"]["padding"] = ["a" * 900_000] * 3
        config = json.loads(files["run/config.json"])
        config["epochs"] = 780
        files["run/record.json"], files["run/config.json"] = (
            json.dumps(record).encode(),
            json.dumps(config).encode(),
        )
        for name in ("run/record.json", "run/config.json"):
            resum(files, manifest, name)
        manifest["run_id"] = RunConfig.from_dict(config).run_id

    other = RunCache(tmp_path / "other")
    with pytest.raises(
        bundle.BundleError, match=r"record.json: 2,7\d\d,\d{3} bytes, more than 1 epochs' record"
    ):
        bundle.import_bundle(rezip(bundle.export_bundle(encoder.run_id, cache), padded), other)
    assert other.run_ids() == []


def test_weights_far_larger_than_the_model_are_refused_before_they_unpack(runs):
    """A 99-million-float tensor of zeros deflates to ~400 KB: its checksum right, the weights file
    refused by the size the part's config allows (the encoder's own weights and a header), without
    unpacking it (it was unpacked, 396 MB, before its shapes were compared)."""
    from safetensors.torch import save

    refused_before_unpacking(
        runs,
        "run/model.safetensors",
        save({"weight": torch.zeros(99_000_000)}),
        r"run/model.safetensors unpacks to 396,000,\d+ bytes, more than",
    )
