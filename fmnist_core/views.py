"""What the app's pages ask of a trained run, in numpy: the pages hold no torch code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import analysis
from .data import load_data
from .runs import TrainedRun, untrained_model


def _batch(image: np.ndarray) -> torch.Tensor:
    """One 28x28 image in [0, 1] as a (1, 1, 28, 28) float tensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(1, 1, 28, 28))


def reconstruction_rows(run: TrainedRun, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Test images (N, 28, 28) at `indices`, as the autoencoder reconstructs them before training
    (the very start its run had) and after."""
    images = load_data().test_images[torch.as_tensor(indices)]
    return {
        "original": images[:, 0].numpy(),
        "untrained": analysis.reconstructions(untrained_model(run.config), images),
        "trained": analysis.reconstructions(run.model, images),
    }


def test_reconstructions(run: TrainedRun, indices: np.ndarray) -> np.ndarray:
    """The autoencoder's reconstructions (N, 28, 28) of the test images at `indices`."""
    return analysis.reconstructions(run.model, load_data().test_images[torch.as_tensor(indices)])


def classify(run: TrainedRun, image: np.ndarray) -> np.ndarray:
    """A classifier's class probabilities (10,) for one 28x28 image."""
    return run.predict_proba(_batch(image))[0]


@dataclass(frozen=True)
class Reconstruction:
    image: np.ndarray  # (28, 28): the autoencoder's output
    error: float  # its mean squared error against the input
    code: np.ndarray  # (n,): the input's latent code


def reconstruct(run: TrainedRun, image: np.ndarray) -> Reconstruction:
    """One image through an autoencoder: its reconstruction, error and code."""
    batch = _batch(image)
    output = analysis.reconstructions(run.model, batch)[0]
    error = float(((output - batch[0, 0].numpy()) ** 2).mean())
    return Reconstruction(output, error, analysis.latent_codes(run.model, batch)[0])


def nearest(codes: np.ndarray, code: np.ndarray, count: int = 8) -> np.ndarray:
    """Indices of the `count` codes closest to `code` (Euclidean), nearest first."""
    return np.argsort(((codes - code) ** 2).sum(1))[:count]


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # what it was measured on, for the page


def estimate_seconds(config, runs: pd.DataFrame) -> Estimate | None:
    """How long `config` should train here: the seconds per image and epoch that cached runs of
    the same model (the same batch size where there are some) took on this machine; None where
    no such run has been timed."""
    if runs.empty or "train_seconds" not in runs:
        return None
    same = runs[(runs["model"] == config.model) & runs["train_seconds"].notna()]
    if "epochs_done" in same:
        same = same[same["epochs_done"] > 0]
    if same.empty:
        return None
    if "batch_size" in same and (same["batch_size"] == config.batch_size).any():
        same = same[same["batch_size"] == config.batch_size]
    images = (
        same["train_subset"].where(same["train_subset"] > 0, 60_000) if "train_subset" in same else 60_000
    )
    epochs = same["epochs_done"] if "epochs_done" in same else same["epochs"]
    rate = float(np.median(same["train_seconds"] / (epochs * images)))
    wanted = config.epochs * (config.train_subset or 60_000)
    count = len(same)
    return Estimate(rate * wanted, f"{count} {config.model} run{'s' if count > 1 else ''} on this machine")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
