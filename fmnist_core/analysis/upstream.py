"""Which units feed this one (Distill's "Building Blocks", the Circuits thread): each unit of an
earlier layer's share in a unit's value, as its activation times the value's gradient with respect
to it, summed over its map. Where the unit comes straight out of a conv or dense layer fed by the
earlier layer, the shares are exactly that layer's sum split by input (weight x activation, the
bias left over); further up they are the first-order estimate the Building Blocks use."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fmnist_core.analysis.inside import WEIGHTED, Recording, network_layers

BATCH = 250
FEEDING_IMAGES = 1000  # the test images the page and the unit sheet average shares over


def feeding_layer(model: nn.Module, layer: str) -> str | None:
    """The layer whose output feeds the weighted layer at or just before `layer` (for a ReLU after
    a conv: the conv's input), or None where that is the image itself."""
    names = [found.name for found in network_layers(model)]
    modules = dict(model.named_modules())
    at = _index(names, layer, "layer")
    for index in range(at, -1, -1):
        if isinstance(modules[names[index]], WEIGHTED):
            return names[index - 1] if index > 0 else None
    return None


def _index(names: list[str], name: str, setting: str) -> int:
    if name not in names:
        raise ValueError(f"{setting}: {name!r} is not one of {', '.join(names)}")
    return names.index(name)


def upstream_shares(
    model: nn.Module, layer: str, unit: int, upstream: str, images: torch.Tensor
) -> np.ndarray:
    """(units of `upstream`,): each upstream unit's share in `unit` of `layer` (its value: a
    channel's mean over its map, a dense unit itself), activation x gradient summed over the
    upstream unit's map, averaged over `images` (one image, or the test set). Eval mode, on a copy
    of the model (a server's pages share loaded runs between threads)."""
    found = network_layers(model)
    names = [each.name for each in found]
    target, source = _index(names, layer, "layer"), _index(names, upstream, "upstream")
    if source >= target:
        raise ValueError(f"upstream: {upstream!r} does not run before {layer!r}")
    if not 0 <= unit < found[target].units:
        raise ValueError(f"unit: {unit} is outside 0..{found[target].units - 1} of {layer!r}")
    model = copy.deepcopy(model).eval()
    total = torch.zeros(found[source].units, dtype=torch.float64)
    for start in range(0, len(images), BATCH):
        seen: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), Recording(model, seen.__setitem__, names=[upstream, layer]):
            model(images[start : start + BATCH].float())
            held, output = seen[upstream], seen[layer][:, unit]
            value = output.flatten(1).mean(1) if output.dim() > 1 else output
            (gradient,) = torch.autograd.grad(value.sum(), held)
        shares = (held * gradient).detach().double()
        total += shares.flatten(2).sum(2).sum(0) if shares.dim() > 2 else shares.sum(0)
    return (total / len(images)).numpy()
