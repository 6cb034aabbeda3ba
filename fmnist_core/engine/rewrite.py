"""The engine's rewrite: a model as its report wrote it, turned into a view that trains faster.

`accelerate` is called by training only. The view shares every parameter and buffer with the
model (nothing is copied), so training the view trains the model, and evaluation, saving and
loading see the model as written, with torch's own layers.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from fmnist_core.engine.fused import ConvPoolReLU, PoolDropout, PoolReLU, ReLUBatchNorm, is_plain_2x2_max_pool
from fmnist_core.engine.layers import ConvTranspose2d, Dropout, Flatten


def accelerate(
    model: nn.Module, device: torch.device, generator: torch.Generator, fast_layers: bool | None = None
) -> nn.Module:
    """A training view of `model` (already on `device`): its dropouts and any layer with a
    `generator` to draw noise from use `generator` (the run's own), and where `fast_layers` (default: on the CPU) the engine's layers stand in for
    torch's and the layers that compiled kernels train together are fused. The same maths: bit for
    bit where no sum is involved, up to the order of the sums elsewhere (fmnist_core.engine.fused)."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    view = copy.deepcopy(model, shared)
    on_cpu = torch.device(device).type == "cpu" if fast_layers is None else fast_layers
    for parent in list(view.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, generator))
            elif hasattr(child, "generator") and child.generator is None:
                child.generator = generator  # a layer that draws noise (a VAE's code): the run's stream
            elif on_cpu and type(child) is nn.Flatten:
                child.__class__ = Flatten
            elif on_cpu and type(child) is nn.ConvTranspose2d:
                child.__class__ = ConvTranspose2d
    if on_cpu:
        for sequence in [m for m in view.modules() if isinstance(m, nn.Sequential)]:
            for index, layer in enumerate(fuse_layers(list(sequence))):
                sequence[index] = layer
    return view


def fuse_layers(modules: list[nn.Module]) -> list[nn.Module]:
    """Move each max-pooling before the ReLU / tanh (and dropout that drops nothing) just before it.

    Those layers act on each element and never decrease, so max-pooling first gives the same
    outputs and gradients bit for bit, with the activation on a quarter of the pixels (12 of
    fast_cnn's 93 ms per step went to the full-size ReLU). A dropout that drops stays before
    the pooling, but a ReLU before it moves after both: ReLU commutes with scaling by the mask's
    0 or 1 / (1 - p). Then layers that compiled kernels train together become one: a 2x2 max-pool
    and the ReLU after it, with a dropout just before (PoolReLU), and with a first one-channel conv
    before that (ConvPoolReLU); a max-pool and a dropout after it (PoolDropout); a ReLU and a
    BatchNorm after it (ReLUBatchNorm). Identity layers hold the others' places. Only
    parameterless modules move or vanish, so saved weights keep their names.
    """
    modules = list(modules)
    for i in range(len(modules) - 2):
        relu, dropout, pool = modules[i : i + 3]
        dropping = isinstance(dropout, Dropout) and dropout.threshold > 0
        if isinstance(relu, nn.ReLU) and dropping and isinstance(pool, nn.MaxPool2d):
            modules[i], modules[i + 1] = dropout, relu
    for i, module in enumerate(modules):
        if not isinstance(module, nn.MaxPool2d):
            continue
        start = i
        while start > 0 and (
            isinstance(modules[start - 1], (nn.ReLU, nn.Tanh))
            or (isinstance(modules[start - 1], Dropout) and modules[start - 1].threshold == 0)
        ):
            start -= 1
        modules.insert(start, modules.pop(i))
    for i, module in enumerate(modules):
        if not (
            is_plain_2x2_max_pool(module) and i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
        ):
            continue
        dropout = modules[i - 1] if i > 0 and isinstance(modules[i - 1], Dropout) else None
        start = i if dropout is None else i - 1
        fused = PoolReLU(dropout, module, modules[i + 1])
        modules[start : i + 2] = [fused] + [nn.Identity() for _ in range(start, i + 1)]
    for i in range(len(modules) - 1):
        dropout = modules[i + 1]
        if is_plain_2x2_max_pool(modules[i]) and isinstance(dropout, Dropout) and dropout.threshold > 0:
            modules[i : i + 2] = [PoolDropout(modules[i], dropout), nn.Identity()]
    for i in range(len(modules) - 1):
        if ConvPoolReLU.fits(modules[i]) and isinstance(modules[i + 1], PoolReLU):
            modules[i : i + 2] = [ConvPoolReLU.fuse(modules[i], modules[i + 1]), nn.Identity()]
        elif ReLUBatchNorm.fits(modules[i], modules[i + 1]):
            modules[i : i + 2] = [nn.Identity(), ReLUBatchNorm.fuse(modules[i], modules[i + 1])]
    return modules
