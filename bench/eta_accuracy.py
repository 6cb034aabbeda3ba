"""How far off the live view's ETA is: each run trained once in this process, every progress
report's ETA (Progress.eta_seconds, from the job's own progress) against the time that was in
fact left to its end, once a tenth of the run had gone (before that the page shows none).
Goal (issue 27): within 25%.

Run: .venv/bin/python bench/eta_accuracy.py
"""

from __future__ import annotations

import time

from fmnist_core.runs.recipes import get_recipe
from fmnist_core.runs.trained import train
from fmnist_core.training.config import RunConfig

RUNS = {
    "MLP, 5 epochs, 20,000 images": RunConfig.for_model("mlp", epochs=5, train_subset=20_000),
    "conv autoencoder, 3 epochs, 20,000 images": RunConfig.for_model(
        "conv_autoencoder", epochs=3, train_subset=20_000
    ),
    "VAE, 3 epochs, 20,000 images": RunConfig.for_model("vae", epochs=3, train_subset=20_000),
    "fast CNN, 2 epochs, 10,000 images": get_recipe("fast_cnn").config(epochs=2, train_subset=10_000),
}


def errors(config: RunConfig) -> tuple[list[float], float]:
    """Relative ETA errors of the reports past a tenth, and the run's seconds."""
    reports = []
    started = time.perf_counter()
    train(config, on_progress=lambda p: reports.append((p.fraction, p.eta_seconds, time.perf_counter())))
    ended = time.perf_counter()
    found = []
    for fraction, eta, at in reports:
        left = ended - at
        if fraction >= 0.1 and left > 0.5:  # the last half second: noise against nothing
            found.append((eta - left) / left)
    return found, ended - started


def main() -> None:
    print(f"{'run':45s} {'reports':>8s} {'worst':>8s} {'median':>8s} {'seconds':>8s}")
    for name, config in RUNS.items():
        found, seconds = errors(config)
        found.sort(key=abs)
        worst, median = max(found, key=abs), found[len(found) // 2]
        print(f"{name:45s} {len(found):8d} {worst:+8.0%} {median:+8.0%} {seconds:8.1f}")


if __name__ == "__main__":
    main()
