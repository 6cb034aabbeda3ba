"""What a run trains on and with: its splits of the data (holdout, left-out images, subsets) and
its own random streams."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from fmnist_core.base.files import default_root
from fmnist_core.data.exclusions import load_exclusion
from fmnist_core.data.fashion import load_data
from fmnist_core.training.config import RunConfig

SPLIT_SEED = 20_240_501  # fixed, so every run of any seed sees the same holdout and subset


@dataclass(frozen=True)
class Splits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    validation_note: str
    train_index: torch.Tensor | None = None  # the training images' indices among the 60,000
    test_index: torch.Tensor | None = None  # the test images' among the 10,000 (None: all of them)


def make_splits(config: RunConfig, exclusions_root: str | os.PathLike | None = None) -> Splits:
    """Train / validation / test tensors as the config asks (holdout, left-out images, subset);
    a config's `exclude` list is read from `exclusions_root` (default: the cache's folder)."""
    data = load_data()
    images, labels = data.train_images, data.train_labels
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(images), generator=generator)
    if config.validation == "holdout":
        held = int(round(len(images) * config.holdout_fraction))
        val_index, train_index = order[:held], order[held:]
        val_images, val_labels = images[val_index], labels[val_index]
        note = f"holdout: {held} training images kept out of training"
    else:
        train_index = order
        val_images, val_labels = data.test_images, data.test_labels
        note = "test set (the seed reports' practice)"
    if config.exclude:
        left_out = load_exclusion(exclusions_root or default_root(), config.exclude)
        kept = ~torch.isin(train_index, torch.from_numpy(left_out))
        note += f"; {int((~kept).sum())} flagged training images left out"
        train_index = train_index[kept]
        if len(train_index) < config.batch_size:
            raise ValueError(
                f"exclude: the list {config.exclude} leaves {len(train_index)} training images, "
                f"fewer than one batch of {config.batch_size}"
            )
    if config.train_subset:
        train_index = train_index[: config.train_subset]
    train_index = train_index.sort().values
    test_images, test_labels, test_index = data.test_images, data.test_labels, None
    if config.test_subset:
        test_index = torch.randperm(len(test_images), generator=generator)[: config.test_subset].sort().values
        test_images, test_labels = test_images[test_index], test_labels[test_index]
        note += f"; test on a fixed subset of {config.test_subset} images"
        if config.validation == "test":
            val_images, val_labels = test_images, test_labels
    return Splits(
        images[train_index],
        labels[train_index],
        val_images,
        val_labels,
        test_images,
        test_labels,
        note,
        train_index,
        test_index,
    )


@dataclass(frozen=True)
class RunGenerators:
    """A run's own random streams, all from its seed: the initial weights, the data's order and
    augmentation, the dropout masks (on the training device)."""

    weights: torch.Generator
    data: torch.Generator
    dropout: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> RunGenerators:
        # Independent streams: three generators seeded alike would draw the same numbers.
        weights, data, dropout = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
        return cls(
            torch.Generator().manual_seed(weights),
            torch.Generator().manual_seed(data),
            torch.Generator(device=torch.device(device)).manual_seed(dropout),
        )
