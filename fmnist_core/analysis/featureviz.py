"""Feature visualisation by optimisation (after Olah, Mordvintsev and Schubert, "Feature
Visualization", Distill 2017, and tensorflow/lucid): the 28x28 greyscale input a unit responds to
most, found by gradient ascent. Two things make what comes out a pattern rather than noise that
only this network reads: the image is optimised as its Fourier spectrum, each frequency scaled by
1 / frequency (a decorrelated parametrisation: low frequencies move first), and every step looks
at it shifted by a few pixels (transformation robustness). Greyscale-native: one channel, as the
lab's models take it; no colour decorrelation to undo. A whole layer's units are optimised in
one batch, one image each; the result depends on the seed alone (same machine, same images)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fmnist_core.analysis.inside import layer_output, network_layers

SIZE = 28


def frequency_scale(size: int = SIZE, decay: float = 1.0) -> torch.Tensor:
    """1 / frequency ** decay for each coefficient of a real 2-D spectrum (size, size // 2 + 1), the
    zero frequency given the lowest nonzero one's scale (it sets the mean grey)."""
    rows = torch.fft.fftfreq(size)[:, None]
    columns = torch.fft.rfftfreq(size)[None, :]
    frequency = torch.sqrt(rows**2 + columns**2).clamp(min=1.0 / size)
    return 1.0 / frequency**decay


class FourierImages(nn.Module):
    """`count` greyscale images held as their spectra; forward gives them (count, 1, 28, 28) in (0, 1)."""

    def __init__(self, count: int, generator: torch.Generator, size: int = SIZE, spread: float = 0.01):
        super().__init__()
        shape = (count, 1, size, size // 2 + 1, 2)  # real and imaginary parts
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator) * spread)
        self.register_buffer("scale", frequency_scale(size) / size)
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        pixels = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(pixels * 4.0)  # 4: a pixel sweeps most of (0, 1) as its sum moves by 1


def shifted(images: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """The images moved by up to `most` pixels each way (one draw for the batch), wrapping round."""
    if most == 0:
        return images
    dy, dx = torch.randint(-most, most + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


def unit_values(output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Each image's own unit: a channel's mean over its map, or one value of a flat layer."""
    chosen = output[torch.arange(len(units)), units]
    return chosen.flatten(1).mean(1) if chosen.dim() > 1 else chosen


def visualise(
    model: nn.Module,
    layer: str,
    units: list[int] | None = None,
    steps: int = 128,
    lr: float = 0.05,
    shift: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Images (len(units), 28, 28) in [0, 1], each the input its unit of `layer` (a name from
    analysis.inside.network_layers) responds to most after `steps` of Adam; every unit of the
    layer where `units` is None. The model itself is left as it was (a copy is optimised through)."""
    known = {found.name: found for found in network_layers(model)}
    if layer not in known:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(known)}")
    count = known[layer].units
    units = list(range(count)) if units is None else list(units)
    if not units or min(units) < 0 or max(units) >= count:
        raise ValueError(f"unit: {layer} has units 0 to {count - 1}")
    # A copy: its hooks and mode are its own, so another thread's pass over the model (a server's
    # pages share loaded runs) neither sees them nor hands its outputs to this one.
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    images = FourierImages(len(units), generator)
    optimiser = torch.optim.Adam(images.parameters(), lr=lr)
    chosen = torch.tensor(units)
    model.eval()  # batch norm on its running statistics, no dropout
    model.requires_grad_(False)  # gradients for the input alone
    for _ in range(steps):
        output = layer_output(model, layer, shifted(images(), shift, generator))
        (gradient,) = torch.autograd.grad(-unit_values(output, chosen).sum(), [images.spectrum])
        images.spectrum.grad = gradient
        optimiser.step()
    with torch.no_grad():
        return images()[:, 0].numpy()


@torch.no_grad()
def response(model: nn.Module, layer: str, images: torch.Tensor, unit: int) -> np.ndarray:
    """Unit `unit` of `layer` on each of `images` (N, 1, 28, 28): a channel's mean over its map."""
    was_training = model.training
    model.eval()
    try:
        output = layer_output(model, layer, images)
    finally:
        model.train(was_training)
    return unit_values(output, torch.full((len(images),), unit)).numpy()
