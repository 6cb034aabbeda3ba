"""Wall time for the fast recipes to reach a quality bar, epoch by epoch on the test set.

(a) a classifier (fast_cnn) to 0.93 test accuracy; (b) an n=64 autoencoder (fast_autoencoder)
below PCA-64's test MSE (0.0104) and below 0.0085; (c) with --long, the lab's best classifier
(long_cnn, about 15 minutes) to 0.945; (d) with --sweep, fast_autoencoder at every latent size
n in {2, 16, 32, 64, 128} beside PCA with k=n.
Run: .venv/bin/python bench/time_to_quality.py [--long] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from fmnist_core.analysis import pca_reconstruction_mse
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.recipes import get_recipe
from fmnist_core.runs.trained import train

BARS = [  # recipe, metric, bar, side
    ("fast_cnn", "val_accuracy", 0.93, "above"),
    ("fast_autoencoder", "val_loss", 0.0104, "below"),  # PCA-64
    ("fast_autoencoder", "val_loss", 0.0085, "below"),
]
LONG_BARS = [("long_cnn", "val_accuracy", 0.945, "above")]
SWEEP = (2, 16, 32, 64, 128)


def first_crossing(history: dict, metric: str, bar: float, side: str) -> tuple[float | None, int | None]:
    """Seconds and epoch at which the bar was first passed (None if never)."""
    for epoch, (value, elapsed) in enumerate(zip(history[metric], history["seconds"], strict=True), 1):
        if (value >= bar) if side == "above" else (value < bar):
            return elapsed, epoch
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep", action="store_true", help="also every latent size against PCA")
    parser.add_argument("--long", action="store_true", help="also long_cnn against 0.945 (15 minutes)")
    args = parser.parse_args()
    os.environ.setdefault("FMNIST_CACHE", tempfile.mkdtemp(prefix="fmnist_ttq_"))
    bars = BARS + (LONG_BARS if args.long else [])
    histories = {name: train(get_recipe(name).config()).history for name in dict.fromkeys(b[0] for b in bars)}
    print(f"{'recipe':18s} {'bar':>20s} {'reached at':>11s} {'epoch':>6s} {'final':>8s} {'total s':>8s}")
    reached = {}
    for name, metric, bar, side in bars:
        history = histories[name]
        seconds, epoch = first_crossing(history, metric, bar, side)
        reached[(name, bar)] = seconds
        shown = f"{seconds:.0f} s" if seconds is not None else "not reached"
        condition = f"{metric} {'>=' if side == 'above' else '<'} {bar}"
        print(
            f"{name:18s} {condition:>20s} {shown:>11s} {epoch or '-':>6} "
            f"{history[metric][-1]:8.4f} {history['seconds'][-1]:8.0f}"
        )
    if args.sweep:
        data = load_data()
        print(f"\n{'n':>4s} {'PCA k=n':>9s} {'fast_autoencoder':>17s} {'seconds':>8s}")
        for n in SWEEP:
            pca = pca_reconstruction_mse(data.train_images, data.test_images, n)
            result = train(get_recipe("fast_autoencoder").config({"n": n}))
            ours = result.metrics["test_mse"]
            print(f"{n:4d} {pca:9.4f} {ours:17.4f} {result.metrics['train_seconds']:8.0f}")
    value = reached[("fast_cnn", 0.93)]
    print(
        f"seconds_to_0.93_accuracy: {value:.0f}"
        if value is not None
        else "seconds_to_0.93_accuracy: not reached"
    )


if __name__ == "__main__":
    main()
