"""A layer's dictionary for the inside page (analysis.dictionary): its NMF features over the first
2,000 test images, each with the test images it is strongest on, the units it weighs and its
feature picture; computed once per run and layer and kept beside the cache."""

from __future__ import annotations

import hashlib

import numpy as np

from fmnist_core.analysis.dictionary import Dictionary, layer_dictionary
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.store.cache import RunCache, keep_derived, read_derived
from fmnist_core.views.inside import kept_pictures, layers

IMAGES = 2000  # test images the features are found on and ranked over


def dictionary(run: TrainedRun, cache: RunCache, layer: str, features: int, seed: int = 0) -> Dictionary:
    """`features` NMF features of `layer` (analysis.dictionary.layer_dictionary), kept beside the
    cache; a kept one of another shape, with negative or non-finite values, is computed again."""
    known = {found.name: found for found in layers(run)}
    units = known[layer].units if layer in known else 0
    path = cache.derived_path(run.run_id, f"dictionary-{layer}-{features}-s{seed}.npz")
    expected = {
        "components": ((features, units), np.float32),
        "strengths": ((IMAGES, features), np.float32),
        "explained": ((), np.float64),
    }
    kept = read_derived(path, expected) if units else None
    if kept is not None and _plausible(kept):
        return Dictionary(layer, kept["components"], kept["strengths"], float(kept["explained"]))
    found = layer_dictionary(run.model, layer, load_data().test_images[:IMAGES], features, seed)
    keep_derived(
        path,
        {
            "components": found.components,
            "strengths": found.strengths,
            "explained": np.float64(found.explained),
        },
    )
    return found


def _plausible(kept: dict[str, np.ndarray]) -> bool:
    arrays = (kept["components"], kept["strengths"])
    return (
        all(np.isfinite(a).all() and a.min() >= 0 for a in arrays)
        and np.isclose(kept["components"].max(1), 1).all()
        and 0 <= float(kept["explained"]) <= 1
    )


def dictionary_pictures(run: TrainedRun, cache: RunCache, found: Dictionary, seed: int = 0) -> np.ndarray:
    """(features, 28, 28): the input each feature's direction over the units responds to most."""
    digest = hashlib.sha256(found.components.tobytes()).hexdigest()[:12]  # another fit, other pictures
    name = f"{found.layer}-nmf{found.features}-{digest}-s{seed}"
    return kept_pictures(run, cache, name, found.layer, found.components, 1, seed)
