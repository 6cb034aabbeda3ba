"""Why a classifier gives its answer: attribution maps (Captum's occlusion, integrated gradients,
SmoothGrad) for a class, and a sanity check that the maps depend on what the model learnt."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

METHODS = ("occlusion", "integrated_gradients", "smoothgrad")


def attribution(model: nn.Module, image: np.ndarray, target: int, method: str, seed: int = 0) -> np.ndarray:
    """How much each pixel of `image` (28x28 in [0, 1]) pushes `model` towards class `target` (28x28;
    positive: towards it). Occlusion greys out 4x4 patches; integrated gradients walks from a black
    image; SmoothGrad averages integrated gradients over noisy copies of the image."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion

    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    if not 0 <= target < 10:
        raise ValueError(f"target: {target} is not a class (0..9)")
    model = model.eval()
    x = torch.as_tensor(np.asarray(image, dtype=np.float32)).reshape(1, 1, 28, 28)
    device = next(model.parameters()).device
    x = x.to(device)
    if method == "occlusion":
        maps = Occlusion(model).attribute(
            x, target=target, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2)
        )
    elif method == "integrated_gradients":
        maps = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=32
        )
    else:
        torch.manual_seed(seed)  # NoiseTunnel draws its noise from torch's generator
        maps = NoiseTunnel(IntegratedGradients(model)).attribute(
            x,
            baselines=torch.zeros_like(x),
            target=target,
            nt_type="smoothgrad",
            nt_samples=8,
            stdevs=0.1,
            n_steps=16,
        )
    return maps.detach().cpu().numpy().reshape(28, 28)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with every weight drawn afresh (the model-randomisation sanity test)."""
    generator = torch.Generator().manual_seed(seed)
    copied = copy.deepcopy(model).cpu()
    with torch.no_grad():
        for parameter in copied.parameters():
            spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
            spread = spread if spread == spread and spread > 1e-3 else 1e-3  # NaN or ~0: a small spread
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * spread)
    return copied.eval()


@dataclass(frozen=True)
class SanityCheck:
    similarity: float  # Spearman rank correlation of |map| for the trained and the randomised model
    trustworthy: bool  # False: the map barely depends on what the model learnt


def sanity_check(
    model: nn.Module, image: np.ndarray, target: int, method: str, limit: float = 0.5
) -> SanityCheck:
    """Adebayo et al.'s test: the same map for the model with its weights randomised. A map that
    stays alike (rank correlation of the magnitudes above `limit`) shows the image, not the model."""
    from scipy.stats import spearmanr

    trained = np.abs(attribution(model, image, target, method))
    random = np.abs(attribution(randomised(model), image, target, method))
    similarity = float(spearmanr(trained.ravel(), random.ravel()).statistic)
    similarity = 0.0 if similarity != similarity else similarity  # a constant map: no correlation
    return SanityCheck(similarity, similarity <= limit)
