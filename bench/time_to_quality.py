"""Wall time for the fast recipes to reach a quality bar, epoch by epoch on the test set.

(a) a classifier (fast_cnn) to 0.93 test accuracy; (b) an n=64 autoencoder (fast_autoencoder)
below PCA-64's test MSE of 0.0104. Run: .venv/bin/python bench/time_to_quality.py
"""

from __future__ import annotations

import os
import tempfile

from fmnist_core.recipes import get_recipe
from fmnist_core.train import train

BARS = {"fast_cnn": ("val_accuracy", 0.93, "above"), "fast_autoencoder": ("val_loss", 0.0104, "below")}


def first_crossing(recipe_name: str) -> tuple[float | None, int | None, float, float]:
    """Seconds and epoch at which the bar was first passed (None if never), final value, total seconds."""
    metric, bar, side = BARS[recipe_name]
    result = train(get_recipe(recipe_name).config())
    values, seconds = result.history[metric], result.history["seconds"]
    for epoch, (value, elapsed) in enumerate(zip(values, seconds, strict=True), start=1):
        if (value >= bar) if side == "above" else (value < bar):
            return elapsed, epoch, values[-1], seconds[-1]
    return None, None, values[-1], seconds[-1]


def main() -> None:
    os.environ.setdefault("FMNIST_CACHE", tempfile.mkdtemp(prefix="fmnist_ttq_"))
    print(f"{'recipe':18s} {'bar':>16s} {'reached at':>12s} {'epoch':>6s} {'final':>8s} {'total s':>8s}")
    reached = {}
    for name, (metric, bar, side) in BARS.items():
        seconds, epoch, final, total = first_crossing(name)
        reached[name] = seconds
        shown = f"{seconds:.0f} s" if seconds is not None else "not reached"
        print(
            f"{name:18s} {metric + (' >= ' if side == 'above' else ' < ') + str(bar):>16s} {shown:>12s} {epoch or '-':>6} {final:8.4f} {total:8.0f}"
        )
    value = reached["fast_cnn"]
    print(
        f"seconds_to_0.93_accuracy: {value:.0f}"
        if value is not None
        else "seconds_to_0.93_accuracy: not reached"
    )


if __name__ == "__main__":
    main()
