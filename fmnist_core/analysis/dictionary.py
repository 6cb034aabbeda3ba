"""A layer's dictionary: its activations factorised into a few non-negative features (NMF,
scikit-learn), each a direction over the layer's units. A psychophysics study of 560 people
(Zimmermann et al., arXiv 2411.03993) found the features of such sparse dictionaries easier to
interpret than single units, above all in deeper layers; on 28x28 images NMF is cheap enough to
run on a click. A conv layer is factorised over its places (a row per image and place: what the
layer says there), a flat layer over its images; an image's strength on a feature is its peak
loading over the places, as a unit's is its peak."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmnist_core.analysis.inside import layer_output, network_layers
from fmnist_core.base.settings import check_int

FITTED_ROWS = 20_000  # places the factorisation is fitted on (drawn from all); the rest are only read
BATCH = 500


@dataclass(frozen=True)
class Dictionary:
    layer: str
    components: np.ndarray  # (features, units) >= 0, each scaled to a largest weight of 1
    strengths: np.ndarray  # (images, features): each image's peak loading over the places
    explained: float  # 1 - |X - WH|^2 / |X|^2 on the fitted rows: how much of the layer k features say

    @property
    def features(self) -> int:
        return len(self.components)

    def top_images(self, feature: int, count: int = 9) -> np.ndarray:
        """The images on which `feature` is strongest, strongest first (ties by index)."""
        return np.argsort(-self.strengths[:, feature], kind="stable")[:count]

    def top_units(self, feature: int, count: int = 4) -> list[tuple[int, float]]:
        """The units `feature` weighs most, with their weights (of 1 at most)."""
        weights = self.components[feature]
        return [
            (int(u), float(weights[u])) for u in np.argsort(-weights, kind="stable")[:count] if weights[u] > 0
        ]


def factorise(rows: np.ndarray, features: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Non-negative (features, columns) components of `rows` (n, columns) >= 0, and the share of the
    rows' squared size they account for."""
    from sklearn.decomposition import NMF

    model = NMF(n_components=features, init="nndsvda", max_iter=400, random_state=seed)
    with warnings.catch_warnings():  # a slow convergence still gives usable features
        warnings.simplefilter("ignore")
        loadings = model.fit_transform(rows)
    residual = np.linalg.norm(rows - loadings @ model.components_) ** 2
    return model.components_.astype(np.float32), float(1 - residual / max(np.linalg.norm(rows) ** 2, 1e-12))


def loadings(rows: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Each row's non-negative loadings on fixed `components` (non-negative least squares)."""
    from sklearn.decomposition import non_negative_factorization

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found, _, _ = non_negative_factorization(
            rows, H=components.astype(rows.dtype), n_components=len(components), update_H=False, max_iter=200
        )
    return found


@torch.no_grad()
def layer_rows(model: nn.Module, layer: str, images: torch.Tensor) -> np.ndarray:
    """(images, places, units): the layer's output at each place (a flat layer has one place)."""
    model = copy.deepcopy(model).eval()  # its own hooks: a server's pages share loaded runs
    parts = []
    for start in range(0, len(images), BATCH):
        output = layer_output(model, layer, images[start : start + BATCH]).float()
        parts.append(output.flatten(2).transpose(1, 2) if output.dim() > 2 else output[:, None])
    return torch.cat(parts).numpy()


def layer_dictionary(
    model: nn.Module, layer: str, images: torch.Tensor, features: int = 6, seed: int = 0
) -> Dictionary:
    """`features` NMF features of `layer`'s activations over `images` (a ValueError where the layer
    is not there or its outputs can be negative: NMF needs a rectified layer)."""
    known = {found.name: found for found in network_layers(model)}
    if layer not in known:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(known)}")
    units = known[layer].units
    check_int("features", features, 2, min(32, units))
    if not known[layer].rectified:
        rectified = ", ".join(name for name, found in known.items() if found.rectified) or "none"
        raise ValueError(f"layer: {layer} can be negative; NMF needs a rectified layer ({rectified})")
    values = layer_rows(model, layer, images)  # (N, places, units)
    rows = values.reshape(-1, units)
    generator = np.random.default_rng(seed)
    fitted = (
        rows if len(rows) <= FITTED_ROWS else rows[generator.choice(len(rows), FITTED_ROWS, replace=False)]
    )
    components, explained = factorise(fitted, features, seed)
    scale = components.max(1, keepdims=True)
    scale[scale == 0] = 1
    components = components / scale
    strengths = loadings(rows, components).reshape(len(values), values.shape[1], features).max(1)
    # C order: sklearn's arrays may be Fortran's, which the cache's reader refuses
    return Dictionary(
        layer, np.ascontiguousarray(components), np.ascontiguousarray(strengths, np.float32), explained
    )
