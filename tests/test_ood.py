"""The garment check: real test images pass, pictures that are no garment are flagged."""

import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from fmnist_core.data.fashion import load_data
from fmnist_core.data.preprocess import fashion_style
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.views import ood


def non_garments(seed: int = 0) -> dict[str, np.ndarray]:
    """Each kind of picture a user might try, as the page prepares it (cropped, scaled, centred)."""
    rng = np.random.default_rng(seed)

    def text(i: int) -> np.ndarray:
        image = Image.new("L", (220, 80), 255)
        words = ["hello", "Fashion", "MNIST lab", "42 apples", "the quick brown", "fox", "zebra", "Qx"]
        font = ImageFont.load_default(size=22 + i % 20)
        ImageDraw.Draw(image).text((5, 20), f"{words[i % len(words)]} {i}", fill=0, font=font)
        return np.asarray(image) / 255.0

    def checkerboard(cell: int) -> np.ndarray:
        y, x = np.indices((112, 112))
        return ((x // cell + y // cell) % 2).astype(np.float32)

    def smooth_field(i: int) -> np.ndarray:  # cloud-like textures, the closest to a photo we can make here
        field = ndimage.gaussian_filter(rng.random((128, 128)), sigma=2 + i % 10)
        return (field - field.min()) / (np.ptp(field) + 1e-9)

    kinds = {
        "uniform noise": [rng.random((100, 100)) for _ in range(40)],
        "gaussian noise": [np.clip(0.5 + 0.2 * rng.standard_normal((100, 100)), 0, 1) for _ in range(40)],
        "text": [text(i) for i in range(40)],
        "checkerboard": [checkerboard(cell) for cell in range(2, 30)],
        "solid colour": [np.full((60, 60), value) for value in np.linspace(0, 1, 20)],
        "smooth random field": [smooth_field(i) for i in range(40)],
    }
    return {
        name: np.stack([fashion_style(np.asarray(p, np.float32)) for p in pictures])
        for name, pictures in kinds.items()
    }


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    config = RunConfig.for_model(
        "conv_autoencoder", {"dropout": 0.0, "output_dropout": False}, epochs=2, train_subset=10_000
    )
    run = get_or_train(config, cache=RunCache(tmp_path_factory.mktemp("ood_cache")))  # trained here
    return ood.fit_detector(run, load_data().train_images[-5000:, 0].numpy())


@pytest.mark.slow
def test_real_test_images_pass_and_non_garments_are_flagged(detector):
    real = load_data().test_images[:, 0].numpy()
    false_alarms = detector.flagged(real).mean()
    rates = {name: detector.flagged(images).mean() for name, images in non_garments().items()}
    print(f"real test images flagged: {false_alarms:.4f}; non-garments flagged: {rates}")
    assert false_alarms <= 0.01  # the test set was not used to calibrate
    assert rates["uniform noise"] == rates["gaussian noise"] == rates["solid colour"] == 1.0
    # Measured here: text 0.75, checkerboards 0.64, smooth fields 0.73 (was 0 for noise and text
    # with one autoencoder's 99th percentile); the bounds leave room for another CPU's sums.
    assert rates["text"] >= 0.6 and rates["checkerboard"] >= 0.5 and rates["smooth random field"] >= 0.6


def test_a_verdict_says_why_and_only_autoencoders_can_check(detector):
    board = non_garments()["checkerboard"][0]
    verdict = detector.check(board)
    assert verdict.flagged and verdict.reasons and set(verdict.scores) == set(detector.calibration)
    assert any(name in " ".join(verdict.reasons) for name in verdict.scores)
    real = detector.check(load_data().test_images[0, 0].numpy())
    assert not real.flagged and real.reasons == []
    classifier = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300))
    with pytest.raises(ValueError, match="needs an autoencoder"):
        ood.fit_detector(classifier, board[None])


def test_uploads_that_are_no_garments_are_mostly_flagged_as_uploaded(detector):
    from fmnist_core.data.preprocess import prepare_upload

    rates = {}
    for kind, uploads in ood.not_garments(30, seed=1).items():
        images = np.stack([prepare_upload(upload) for upload in uploads])
        rates[kind] = detector.flagged(images).mean()
    print(rates)
    for kind in ("noise", "solid colours", "checkerboards"):
        assert rates[kind] == 1.0, (kind, rates)
    assert rates["stripes"] >= 0.85, rates  # 0.9 measured here (the starter's autoencoder: 1.0)
    # On this small autoencoder (2 epochs, 10,000 images); the starter's gives 88-92% on text
    # (bench/garment_check.py). Photos of scenes stay hard: the Try it page says so.
    assert rates["text, dark on white"] >= 0.7 and rates["text, white on black"] >= 0.7, rates


def test_a_calibration_kept_on_disk_reads_back_the_same_and_a_damaged_one_is_refused(detector, tmp_path):
    path = tmp_path / "garment_check.npz"
    ood.save_detector(detector, path)
    again = ood.load_detector(detector.run, path)
    images = load_data().test_images[:200, 0].numpy()
    assert np.array_equal(again.flagged(images), detector.flagged(images))
    assert again.combined_limit == detector.combined_limit
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert ood.load_detector(detector.run, path) is None
    path.write_bytes(b"\x80\x04not numpy at all")  # a pickle's first bytes: never unpickled
    assert ood.load_detector(detector.run, path) is None


def wider_codes(detector, path):
    codes = np.concatenate([detector.reference_codes, detector.reference_codes[:, :1]], axis=1)
    ood.save_detector(ood.Detector(detector.run, codes, detector.calibration, detector.combined_limit), path)


KEPT_CHECKS = {
    "reference codes of another width": wider_codes,
    "another run's file": lambda detector, path: ood.save_detector(
        detector, path.parent.parent / "b" / path.name
    ),
    "a FIFO": lambda detector, path: os.mkfifo(path),
    "a folder": lambda detector, path: path.mkdir(),
    "codes that are not numbers": lambda detector, path: ood.save_detector(
        ood.Detector(detector.run, detector.reference_codes * np.nan, detector.calibration, 1.0), path
    ),
    "too few codes for a neighbour": lambda detector, path: ood.save_detector(
        ood.Detector(
            detector.run,
            detector.reference_codes[:3],
            {name: values[:3] for name, values in detector.calibration.items()},
            detector.combined_limit,
        ),
        path,
    ),
}


@pytest.mark.parametrize("damage", list(KEPT_CHECKS))
def test_a_kept_check_of_another_shape_or_run_or_no_file_is_made_again(detector, tmp_path, damage):
    path = tmp_path / "a" / "garment_check.npz"
    path.parent.mkdir()
    KEPT_CHECKS[damage](detector, path)
    if damage == "another run's file":
        shutil.copyfile(path.parent.parent / "b" / path.name, path)
    loaded = []
    thread = threading.Thread(
        target=lambda: loaded.append(ood.load_detector(detector.run, path)), daemon=True
    )
    thread.start()
    thread.join(120)
    assert not thread.is_alive() and loaded == [
        None
    ]  # was a RuntimeError (mat1 and mat2 shapes) on wider codes
    ood.save_detector(detector, path)  # made again, kept whole over whatever was there
    images = load_data().test_images[:200, 0].numpy()
    assert np.array_equal(ood.load_detector(detector.run, path).flagged(images), detector.flagged(images))


def test_a_check_that_cannot_be_kept_is_not_an_error(detector, tmp_path, caplog):
    (tmp_path / ".derived").write_text("a file, not a folder")
    ood.save_detector(detector, tmp_path / ".derived" / "run" / "garment_check.npz")
    assert ood.load_detector(detector.run, tmp_path / ".derived" / "run" / "garment_check.npz") is None
    assert "not kept" in caplog.text
