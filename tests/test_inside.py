"""The inside of a network: layer outputs checked by hand, top-activating images against a full
sort of the test set, dead units, weights, the kept activity file, and the layer table."""

import copy
import io
import os
import pickle
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmnist_core.analysis.architecture import layer_table
from fmnist_core.analysis.inside import (
    Recording,
    driving_boxes,
    layer_outputs,
    network_layers,
    unit_activity,
    unit_peaks,
    unit_weights,
    weights_behind,
)
from fmnist_core.base.files import remove_path
from fmnist_core.data.fashion import load_data
from fmnist_core.models import build_skeleton, create_model, list_models, make_settings
from fmnist_core.runs.trained import get_or_train, load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.views import inside

TINY_LAYERS = ("conv:4:3:valid:relu", "maxpool:2", "conv:6:3:same:tanh", "bn", "dense:8:relu")


def tiny_cnn(seed: int = 0):
    return create_model("cnn", layers=TINY_LAYERS, generator=torch.Generator().manual_seed(seed)).eval()


def test_a_conv_layers_output_is_the_hand_computed_convolution_of_the_layer_before():
    model = tiny_cnn()
    images = load_data().test_images[:5]
    outputs = layer_outputs(model, images)
    assert list(outputs) == [f"features.{i}" for i in (0, 1, 2, 3, 4, 5, 7, 8)] + ["head"]
    conv = model.features[3]
    expected = F.conv2d(outputs["features.2"], conv.weight, conv.bias, padding=1)
    assert outputs["features.3"].shape == (5, 6, 13, 13)
    torch.testing.assert_close(outputs["features.3"], expected)
    torch.testing.assert_close(outputs["features.1"], torch.relu(outputs["features.0"]))
    first = model.features[0]
    torch.testing.assert_close(outputs["features.0"], F.conv2d(images, first.weight, first.bias))
    dense = model.features[7]
    torch.testing.assert_close(
        outputs["features.7"], F.linear(outputs["features.5"].flatten(1), dense.weight, dense.bias)
    )
    torch.testing.assert_close(outputs["head"], model(images))


def test_the_top_activating_images_of_a_unit_are_the_true_argmax_over_the_test_set():
    model = tiny_cnn(seed=3)
    test = load_data().test_images
    activity = unit_activity(model, test, top=7)
    assert activity.images == 10_000
    outputs = layer_outputs(model, test)  # every output of every image at once: the slow, sure way
    # The two sides run other batch sizes, so oneDNN may round near-equal peaks apart in the last
    # bits (images 30 and 6485 swapped ranks on an AMX CPU): ranks are compared by value, tie-aware.
    close = {"rtol": 1e-5, "atol": 1e-6}
    for name in ("features.1", "features.3", "features.8"):
        peaks, _ = unit_peaks(outputs[name])
        flat = outputs[name].reshape(*peaks.shape, -1).numpy()  # (images, units, positions)
        for unit in range(peaks.shape[1]):
            column = peaks[:, unit].numpy()
            order = np.argsort(-column, kind="stable")[:7]
            chosen = activity.top_index[name][:, unit]
            assert len(set(chosen.tolist())) == 7
            # The chosen images are, rank by rank, as high as the true top 7 (a near-tie may swap).
            np.testing.assert_allclose(column[chosen], column[order], **close)
            np.testing.assert_allclose(activity.top_value[name][:, unit], column[chosen], **close)
            # Each one's peak sits where the activity says (a tie between positions: either is right).
            at_peak = flat[chosen, unit, activity.top_where[name][:, unit]]
            np.testing.assert_allclose(at_peak, column[chosen], **close)
            # Firing counted the same way, up to peaks within rounding of 0.
            sure = int((column > close["atol"]).sum()), int((column > -close["atol"]).sum())
            assert sure[0] <= activity.firing[name][unit] <= sure[1], sure
            # The bottom 7, rank by rank as low as the true bottom 7 (features.3 is a tanh: below 0).
            lowest = np.argsort(column, kind="stable")[:7]
            below = activity.bottom_index[name][:, unit]
            assert len(set(below.tolist())) == 7
            np.testing.assert_allclose(column[below], column[lowest], **close)
            np.testing.assert_allclose(activity.bottom_value[name][:, unit], column[below], **close)


def test_a_unit_that_never_fires_is_dead_and_one_that_rarely_fires_is_dying():
    model = tiny_cnn()
    test = load_data().test_images[:2000]
    before = unit_activity(model, test, top=11)
    layers = {layer.name: layer for layer in before.layers}
    assert layers["features.8"].rectified and layers["features.8"].role == "code"
    assert not layers["features.3"].rectified  # a tanh conv cannot die
    alive = np.flatnonzero(before.firing["features.8"] > 20)
    killed, rare = alive[:2]
    with torch.no_grad():
        model.features[7].bias[killed] = -1e6  # can never pass its ReLU
        # Its threshold just under its 10th largest peak: it fires on 10 of the 2,000 images.
        model.features[7].bias[rare] -= float(before.top_value["features.8"][10, rare]) + 1e-4
    after = unit_activity(model, test)
    dead_before = set(np.flatnonzero(before.dead("features.8")))
    assert set(np.flatnonzero(after.dead("features.8"))) == dead_before | {killed}
    assert after.firing["features.8"][rare] == 10 and after.dying("features.8")[rare]
    assert not after.dying("features.8")[killed]  # dead, not dying
    table = inside.dead_units(after).set_index("layer")
    assert table.index.tolist() == ["features.1", "features.8"]
    assert table.loc["features.8", "dead"] == len(dead_before) + 1
    assert table.loc["features.8", "dying"] == after.dying("features.8").sum() >= 1


def test_a_units_weights_are_its_own_conv_filter_or_the_conv_under_its_relu():
    model = tiny_cnn()
    layers = network_layers(model)
    assert weights_behind(model, layers, "features.1") == "features.0"  # a ReLU shows its conv's filter
    assert weights_behind(model, layers, "features.2") == "features.0"  # and so does the pool above it
    np.testing.assert_array_equal(
        unit_weights(model, layers, "features.1", 3), model.features[0].weight[3].detach().numpy()
    )
    assert unit_weights(model, layers, "features.3", 1).shape == (4, 3, 3)
    assert unit_weights(model, layers, "features.8", 0).shape == (6 * 13 * 13,)
    autoencoder = create_model("conv_autoencoder", n=4)
    ae_layers = network_layers(autoencoder)
    transposed = autoencoder.decoder[4]  # ConvTranspose2d(32 -> 16): weights stored (in, out, k, k)
    np.testing.assert_array_equal(
        unit_weights(autoencoder, ae_layers, "decoder.4", 7), transposed.weight[:, 7].detach().numpy()
    )


def test_the_driving_box_of_a_first_conv_unit_is_its_3x3_window():
    model = tiny_cnn()
    images = load_data().test_images[:3]
    where = np.array([0, 26 * 5 + 7, 26 * 26 - 1])  # (0, 0), (5, 7), (25, 25) in its 26x26 map
    boxes = driving_boxes(model, "features.0", images, unit=1, where=where, width=26)
    assert boxes.tolist() == [[0, 0, 3, 3], [5, 7, 8, 10], [25, 25, 28, 28]]
    dense = driving_boxes(model, "features.7", images, unit=0, where=np.zeros(3, int), width=1)
    assert all(bottom - top > 3 for top, _, bottom, _ in dense)  # a dense unit sees past any 3x3 window


def test_a_recording_keeps_only_its_own_threads_passes_over_a_shared_model():
    """A cached run's model is shared by a server's sessions and its background work (a layer's
    pictures optimise a copy of it): another thread's pass over the model, or over a copy made while
    the recording's hooks were on, is not recorded (it was: the page's driving boxes then indexed a
    batch of 1 from the background's pass, an IndexError on the page)."""
    model = tiny_cnn().eval()
    images = load_data().test_images[:3]
    seen: list[torch.Tensor] = []
    with torch.no_grad(), Recording(model, lambda _name, output: seen.append(output), names=["features.0"]):
        copied = copy.deepcopy(model)  # as a background job copies the shared model

        def elsewhere() -> None:
            with torch.no_grad():
                model(images[:1])
                copied(images[:1])

        other = threading.Thread(target=elsewhere)
        other.start()
        other.join()
        assert seen == []
        model(images)
    assert [tuple(output.shape) for output in seen] == [(3, *tuple(seen[0].shape[1:]))]
    assert len(seen[0]) == 3


@pytest.mark.parametrize("model", list_models())
def test_every_model_shows_its_layers_with_the_shapes_they_output_and_a_code(model):
    network = create_model(model)
    layers = network_layers(network)
    outputs = layer_outputs(network, torch.rand(2, 1, 28, 28))
    assert [layer.name for layer in layers] == list(outputs)
    assert all(outputs[layer.name].shape[1:] == layer.shape for layer in layers)
    assert sum(layer.role == "code" for layer in layers) == 1
    assert any(layer.rectified for layer in layers)


@pytest.mark.parametrize("model", list_models())
def test_the_layer_table_totals_match_the_built_models_parameters(model):
    settings = make_settings(model)
    table = layer_table(build_skeleton(model, settings))
    built = create_model(model)
    assert table.parameters == sum(p.numel() for p in built.parameters())
    assert table.layers["parameters"].sum() == table.parameters
    assert table.layers["multiply_adds"].sum() == table.multiply_adds > 0


def test_the_layer_tables_multiply_adds_are_the_hand_count():
    table = layer_table(build_skeleton("cnn", make_settings("cnn", {"layers": TINY_LAYERS})))
    rows = table.layers.set_index("layer")
    assert rows.loc["features.0", "output"] == "4 x 26 x 26"
    # torchinfo counts a bias as one multiply-add per output value
    assert rows.loc["features.0", "multiply_adds"] == 4 * 26 * 26 * (1 * 3 * 3 + 1)
    assert rows.loc["features.3", "multiply_adds"] == 6 * 13 * 13 * (4 * 3 * 3 + 1)
    assert rows.loc["features.7", "multiply_adds"] == 8 * (6 * 13 * 13 + 1)
    assert rows.loc["features.0", "parameters"] == 4 * 9 + 4


def test_a_frozen_encoders_weights_are_not_counted_as_trained():
    from fmnist_core.views.architecture import architecture

    config = RunConfig.for_model("encoder_classifier", {"freeze_encoder": True})
    table = architecture(config, RunCache())
    head = table.layers[table.layers["layer"].str.startswith("head")]["parameters"].sum()
    assert table.trainable_parameters == head < table.parameters


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    cache = RunCache(tmp_path_factory.mktemp("inside") / "cache")
    config = RunConfig.for_model(
        "cnn", {"layers": TINY_LAYERS}, epochs=1, train_subset=2000, test_subset=1000
    )
    return get_or_train(config, cache=cache), cache


def test_a_runs_activity_is_computed_once_kept_and_a_damaged_copy_is_computed_again(trained_cnn):
    run, cache = trained_cnn
    path = cache.derived_path(run.run_id, inside.ACTIVITY_FILE)
    path.unlink(missing_ok=True)
    first = inside.activity(run, cache)
    assert path.is_file() and inside.has_activity(run.run_id, cache)
    stamp = path.stat().st_mtime_ns
    again = inside.activity(load_run(run.run_id, cache), cache)
    assert path.stat().st_mtime_ns == stamp  # read, not computed
    for name in first.top_index:
        np.testing.assert_array_equal(first.top_index[name], again.top_index[name])
        np.testing.assert_array_equal(first.firing[name], again.firing[name])
    path.write_bytes(path.read_bytes()[:200])  # cut short
    repaired = inside.activity(run, cache)
    np.testing.assert_array_equal(repaired.top_value["features.1"], first.top_value["features.1"])
    assert path.stat().st_size > 200


def test_a_unit_up_close_has_its_filter_its_top_images_and_their_patches(trained_cnn):
    run, cache = trained_cnn
    activity = inside.activity(run, cache)
    detail = inside.unit_detail(run, activity, "features.1", 2)
    test = load_data().test_images
    assert detail.weights.shape == (1, 3, 3)
    assert detail.images.shape == (inside.TOP, 28, 28)
    np.testing.assert_array_equal(detail.images[0], test[detail.indices[0], 0].numpy())
    assert all(values >= later for values, later in zip(detail.values, detail.values[1:], strict=False))
    assert all(patch.shape == (3, 3) for patch in inside.patches(detail) if patch.size < 784)
    # and the images that move it least, lowest first, below every top image
    assert detail.bottom_images.shape == (inside.TOP, 28, 28)
    np.testing.assert_array_equal(detail.bottom_images[0], test[detail.bottom_indices[0], 0].numpy())
    assert (np.diff(detail.bottom_values) >= 0).all() and detail.bottom_values.max() <= detail.values.min()
    with pytest.raises(ValueError, match="unit"):
        inside.unit_detail(run, activity, "features.1", 4)
    with pytest.raises(ValueError, match="layer"):
        inside.unit_detail(run, activity, "features.99", 0)


def test_a_run_that_loses_classes_is_warned_about_in_words(trained_cnn):
    run, cache = trained_cnn
    confusion = np.eye(10, dtype=int) * 50
    confusion[:, 2] = 0
    confusion[2, 0] = 50  # Pullover is never answered
    lost = type(run)(**{**vars(run), "metrics": {**run.metrics, "test_confusion": confusion.tolist()}})
    said = inside.warnings(lost, None)
    assert len(said) == 1 and "Pullover" in said[0] and "1 of 10 classes" in said[0]
    # The reason read from the run's own layers: a CNN's plain Linear head has no ReLU on its logits.
    assert "not learned them yet" in said[0] and "ReLU" not in said[0]
    s0 = create_model("encoder_classifier", head="s0")
    assert inside.ends_with_relu(s0) and not inside.ends_with_relu(
        create_model("encoder_classifier", head="fc")
    )
    assert (
        "ends with a ReLU on the logits" in inside.warnings(type(run)(**{**vars(lost), "model": s0}), None)[0]
    )


def test_two_runs_of_one_architecture_pair_layers_by_name_and_others_by_position():
    cnn, mlp = network_layers(tiny_cnn()), network_layers(create_model("mlp"))
    same = inside.aligned(cnn, network_layers(tiny_cnn(seed=1)))
    assert all(a.name == b.name for a, b in same) and len(same) == len(cnn)
    mixed = inside.aligned(mlp, cnn)  # names like features.1 mean other layers there
    assert len(mixed) == len(cnn) and mixed[-1][0] is None and mixed[0] == (mlp[0], cnn[0])
    wide, fc = (network_layers(create_model("encoder_classifier", head=head)) for head in ("wide", "fc"))
    heads = inside.aligned(wide, fc)  # the encoder's layers side by side, each head's own apart
    assert [(a and a.name, b and b.name) for a, b in heads][-4:] == [
        ("encoder.10", "encoder.10"),
        ("head.0", "head.0"),
        ("head.1", None),
        ("head.3", None),
    ]


def test_a_model_never_trained_here_is_timed_by_the_multiply_adds_per_second_of_other_runs(trained_cnn):
    from fmnist_core.store.table import list_runs
    from fmnist_core.views.architecture import architecture, expected_seconds

    run, cache = trained_cnn
    runs = list_runs(cache)
    wanted = RunConfig.for_model("mlp", epochs=3, train_subset=6000)
    estimate = expected_seconds(wanted, runs, cache)
    done = runs.set_index("run_id").loc[run.run_id]
    rate = done["train_seconds"] / (3 * architecture(run.config, cache).multiply_adds * 1 * 2000)
    assert estimate.seconds == pytest.approx(rate * 3 * architecture(wanted, cache).multiply_adds * 3 * 6000)
    assert "multiply-adds per second of 1 run of other models" in estimate.basis
    same = expected_seconds(run.config.replace(epochs=2), runs, cache)  # its own model: its own speed
    assert same.seconds == pytest.approx(2 * done["train_seconds"]) and "cnn run" in same.basis


def test_a_kind_of_config_is_timed_once_and_any_length_of_it_follows():
    """A probe times a few real steps; another number of epochs, images or a seed is the same kind
    of config (moving the epochs slider timed the model again), another batch size is not."""
    from fmnist_core.views.architecture import probe_seconds, probe_timing

    cache = RunCache()
    config = RunConfig.for_model("mlp", epochs=2, train_subset=2000, test_subset=500)
    timing = probe_timing(config, cache)
    assert timing.start > 0 and timing.step > 0 and timing.per_image > 0 and timing.snapshot >= 0
    assert probe_timing(config.replace(epochs=7, train_subset=4000, seed=3), cache) is timing
    assert probe_timing(config.replace(batch_size=50), cache) is not timing
    one, two, four = (probe_seconds(config.replace(epochs=n), cache).seconds for n in (1, 2, 4))
    assert four - two == pytest.approx(2 * (two - one)) and two > one  # each epoch costs the same
    snapshot = timing.snapshot_seconds(config)  # of 500 images: twice the probe's
    assert snapshot == pytest.approx(2 * timing.snapshot)
    steps_and_forward = (two - one) - snapshot - 500 * timing.per_image  # 2,000 images a step of 100
    assert steps_and_forward == pytest.approx(20 * timing.step)


def test_an_encoder_models_timing_holds_in_every_folder_that_holds_its_encoder(tmp_path):
    """The encoder run's id names its architecture: a classifier on it is timed once, in whichever
    cache folder asks first (each test's and each class's folder timed it again); a folder without
    that encoder gets no timing (it cannot train there)."""
    from fmnist_core.views.architecture import probe_timing

    here, there, empty = (RunCache(tmp_path / name) for name in ("here", "there", "empty"))
    encoder = RunConfig.for_model(
        "conv_autoencoder", {"n": 8, "dropout": 0.0}, epochs=1, train_subset=500, test_subset=250
    )
    encoder_id = get_or_train(encoder, cache=here).run_id
    shutil.copytree(here.root, there.root)
    config = RunConfig.for_model("encoder_classifier", {"encoder_run": encoder_id, "head": "fc"}, epochs=2)
    assert probe_timing(config, empty) is None
    timing = probe_timing(config, here)
    assert timing is not None and timing.step > 0
    assert probe_timing(config.replace(train_subset=3000), there) is timing
    assert probe_timing(config, empty) is None


# --- The kept activity file, damaged or out of place ---------------------------------------------


def rewrite_members(path, change) -> None:
    """The kept file's arrays, changed by `change(arrays)`, written back as an .npz."""
    with np.load(path, allow_pickle=False) as kept:
        arrays = dict(kept)
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def with_member(path, name: str, header: dict, body: bytes, compress=zipfile.ZIP_STORED) -> None:
    """The kept file with one member replaced by a hand-written .npy header and body."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    members[f"{name}.npy"] = npy.getvalue() + body
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content, compress_type=compress if member == f"{name}.npy" else 0)


def index_set_to(value):
    def change(arrays):
        arrays["top_index:features.1"][0, 1] = value

    return change


def no_unit_fires(arrays):
    arrays["firing:features.1"][:] = 0
    arrays["firing:features.8"][:] = 0


HOSTILE = {
    "an index past the test set": lambda path, other: rewrite_members(path, index_set_to(10_005)),
    "a -1 index": lambda path, other: rewrite_members(path, index_set_to(-1)),
    "all-zero firing counts": lambda path, other: rewrite_members(path, no_unit_fires),
    "another run's file": lambda path, other: shutil.copyfile(other, path),
    "an older lab's file, without the bottom images": lambda path, other: rewrite_members(
        path, lambda arrays: [arrays.pop(key) for key in list(arrays) if key.startswith("bottom_")]
    ),
    "bottom values out of order": lambda path, other: rewrite_members(
        path,
        lambda arrays: [
            arrays.__setitem__(k, v[::-1].copy())
            for k, v in list(arrays.items())
            if k.startswith("bottom_value")
        ],
    ),
    "a FIFO": lambda path, other: (path.unlink(), os.mkfifo(path)),
    "a folder": lambda path, other: (path.unlink(), path.mkdir(), (path / "x").write_text("x")),
    "a link to another run's file": lambda path, other: (path.unlink(), path.symlink_to(other)),
    "an 8 GB file": lambda path, other: os.truncate(path, 8 << 30),
    "a header claiming 10^12 names": lambda path, other: with_member(
        path, "names", {"descr": "<U12", "fortran_order": False, "shape": (10**12,)}, b"\0" * 48
    ),
    "a deflated member whose header claims 8 GB": lambda path, other: with_member(
        path,
        "firing:features.1",
        {"descr": "<i8", "fortran_order": False, "shape": (10**9,)},
        bytes(1 << 20),
        zipfile.ZIP_DEFLATED,
    ),
    "a pickle": lambda path, other: with_member(
        path, "names", {"descr": "|O", "fortran_order": False, "shape": (9,)}, pickle.dumps(["x"] * 9)
    ),
}


def assert_same_activity(got, fresh) -> None:
    assert got.images == fresh.images and [layer.name for layer in got.layers] == list(fresh.top_index)
    for field in inside.FIELDS:
        for name, values in getattr(fresh, field).items():
            np.testing.assert_array_equal(getattr(got, field)[name], values)


def in_a_thread(work, seconds: float = 120):
    """work() run in a thread, asserted to have returned within `seconds` (a FIFO's open waits forever)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting"
    assert result, "raised (see the thread's traceback above)"
    return result[0]


@pytest.fixture(scope="module")
def two_cnns_with_activity(trained_cnn):
    run, cache = trained_cnn
    other = get_or_train(run.config.replace(seed=1), cache=cache)
    fresh = unit_activity(run.model, load_data().test_images, top=inside.TOP)
    inside.activity(other, cache)
    return run, other, cache, fresh


@pytest.mark.parametrize("damage", list(HOSTILE))
def test_a_damaged_or_foreign_activity_file_is_computed_again_and_kept_whole(two_cnns_with_activity, damage):
    run, other, cache, fresh = two_cnns_with_activity
    path = cache.derived_path(run.run_id, inside.ACTIVITY_FILE)
    remove_path(path)
    inside.activity(run, cache)
    HOSTILE[damage](path, cache.derived_path(other.run_id, inside.ACTIVITY_FILE))
    got = in_a_thread(lambda: inside.activity(run, cache))
    assert_same_activity(got, fresh)
    assert path.is_file() and not path.is_symlink()  # kept again, whole: the next read uses it
    assert_same_activity(inside.activity(run, cache), fresh)
    detail = inside.unit_detail(run, got, "features.1", 1)  # was an IndexError on a kept 10,005
    np.testing.assert_array_equal(detail.indices, fresh.top_index["features.1"][:, 1])


def test_an_activity_that_cannot_be_kept_is_computed_each_time_with_a_warning(two_cnns_with_activity, caplog):
    run, _, cache, fresh = two_cnns_with_activity
    derived = cache.root / ".derived"
    shutil.move(derived, cache.root / "derived-aside")
    try:
        derived.write_text("not a folder")
        assert_same_activity(in_a_thread(lambda: inside.activity(run, cache)), fresh)
        assert derived.read_text() == "not a folder" and not inside.has_activity(run.run_id, cache)
        assert "not kept" in caplog.text
    finally:
        derived.unlink()
        shutil.move(cache.root / "derived-aside", derived)


def test_dead_code_units_are_named_by_what_the_code_is(trained_cnn, monkeypatch):
    """An autoencoder's code is its code; a classifier's 'code' is its last hidden layer, the
    features its head reads (an MLP was told of 'code units')."""
    import pandas as pd

    from fmnist_core.training.config import RunConfig

    run, _ = trained_cnn
    rows = pd.DataFrame([dict(layer="features.7", type="ReLU (code)", units=64, dead=6, dead_share=6 / 64)])
    monkeypatch.setattr(inside, "dead_units", lambda activity: rows)
    assert inside.warnings(run, object())[-1] == (
        "6 of 64 units of features.7, the last hidden layer (the features the head reads), never fire "
        "on the test set: they are dead."
    )
    autoencoder = type(run)(**{**vars(run), "config": RunConfig.for_model("conv_autoencoder")})
    assert (
        inside.warnings(autoencoder, object())[-1]
        == "6 of 64 code units never fire on the test set: they are dead."
    )
