"""The garment check (fmnist_core.views.ood) on the starter set's autoencoder: the share of real test
images it flags, beside the share of each kind of picture that is no garment.

Run: .venv/bin/python bench/garment_check.py [--count 100]
(trains the starter's fast autoencoder into the cache if it is not there: a few minutes)
"""

from __future__ import annotations

import argparse

import numpy as np

from fmnist_core.data.fashion import load_data
from fmnist_core.data.preprocess import ImageError, prepare_upload
from fmnist_core.runs.recipes import get_recipe
from fmnist_core.runs.trained import get_or_train
from fmnist_core.views import ood

CALIBRATION = 5000  # the last training images, as the app calibrates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100, help="pictures of each kind")
    args = parser.parse_args()
    data = load_data()
    run = get_or_train(get_recipe("fast_autoencoder").config())
    detector = ood.fit_detector(run, data.train_images[-CALIBRATION:, 0].numpy())
    rows = [("real test images (10,000)", detector.flagged(data.test_images[:, 0].numpy()).mean())]
    for kind, uploads in ood.not_garments(args.count).items():
        images = []
        for upload in uploads:
            try:
                images.append(prepare_upload(upload))
            except ImageError:  # refused before the check: counts as caught
                images.append(None)
        shown = np.stack([image for image in images if image is not None])
        caught = detector.flagged(shown).sum() + sum(image is None for image in images)
        rows.append((f"{kind} ({len(images)})", caught / len(images)))
    print(f"autoencoder {run.run_id} (test MSE {run.metrics['test_mse']:.4f})")
    print(f"{'pictures':36s} flagged")
    for name, share in rows:
        print(f"{name:36s} {share:7.1%}")


if __name__ == "__main__":
    main()
