"""Feature visualisation by optimisation (after Olah, Mordvintsev and Schubert, "Feature
Visualization", Distill 2017, and tensorflow/lucid): the 28x28 greyscale input a unit responds to
most, found by gradient ascent. Two things make what comes out a pattern rather than noise that
only this network reads: the image is optimised as its Fourier spectrum, each frequency scaled by
1 / frequency (a decorrelated parametrisation: low frequencies move first), and every step looks
at it moved a little (transformation robustness: shifted a few pixels, scaled by a few percent,
turned a few degrees). Greyscale-native: one channel, as the lab's models take it; no colour
decorrelation to undo. An objective is a unit or a direction over a layer's units (units added,
"a + b", or any weights: an NMF feature); several pictures of one objective can be pushed apart
(a diversity term, after lucid's: the pictures' activations at the layer made unlike each other). A whole
layer's units are optimised in one batch; the result depends on the seed alone (same machine)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core.analysis.inside import layer_output, network_layers
from fmnist_core.base.settings import check_int

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


@dataclass(frozen=True)
class Jitter:
    """How much each step moves the pictures (one draw for the batch): a shift of up to `shift`
    pixels, a scale within 1 +- `scale`, a turn within +- `rotate` degrees; uncovered pixels are
    black, as Fashion-MNIST's background is."""

    shift: int = 2  # pixels
    scale: float = 0.05  # fraction
    rotate: float = 10.0  # degrees


STILL = Jitter(0, 0.0, 0.0)


def moved(images: torch.Tensor, jitter: Jitter, generator: torch.Generator) -> torch.Tensor:
    """The images (N, 1, H, W) moved by one random draw within `jitter` (differentiable)."""
    if jitter == STILL:
        return images
    draw = torch.rand(4, generator=generator) * 2 - 1  # each in [-1, 1]
    return transformed(
        images,
        shift=(round(float(draw[0]) * jitter.shift), round(float(draw[1]) * jitter.shift)),
        scale=1 + float(draw[2]) * jitter.scale,
        degrees=float(draw[3]) * jitter.rotate,
    )


def transformed(images: torch.Tensor, shift=(0, 0), scale: float = 1.0, degrees: float = 0.0) -> torch.Tensor:
    """The images turned by `degrees` (anticlockwise), scaled by `scale` about their centre and moved
    by `shift` (down, right) pixels; bilinear, black outside."""
    size = images.shape[-1]
    angle = np.deg2rad(degrees)
    # affine_grid maps output to input coordinates in [-1, 1]: the inverse of the move.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    dy, dx = (2 * shift[0] / size, 2 * shift[1] / size)
    theta = torch.tensor(
        [[cos, -sin, -(cos * dx - sin * dy)], [sin, cos, -(sin * dx + cos * dy)]], dtype=images.dtype
    )
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _RedirectedGradient(torch.autograd.Function):
    """ReLU forward; backward, for an image whose ReLU passes no gradient at all (every place below
    0, as a unit often is on a random start), the gradient as if there were no ReLU, except where
    it would push an input further below 0 (lucid's redirected ReLU gradient). Without it such a
    unit's picture never moves from its grey start."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        (inputs,) = ctx.saved_tensors
        through = torch.where(inputs > 0, gradient, torch.zeros_like(gradient))
        redirected = torch.where((inputs < 0) & (gradient > 0), torch.zeros_like(gradient), gradient)
        passes = through.flatten(1).abs().sum(1) > 0  # per image: does any gradient get through?
        shape = (-1,) + (1,) * (inputs.dim() - 1)
        return torch.where(passes.view(shape), through, redirected)


class RedirectedReLU(nn.ReLU):
    """An nn.ReLU (its name, place and outputs unchanged) whose gradient is redirected as above."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return _RedirectedGradient.apply(inputs)


def redirect_relus(model: nn.Module) -> nn.Module:
    """`model` (a copy made to be optimised through) with each nn.ReLU module's gradient redirected."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.ReLU:
                setattr(module, child_name, RedirectedReLU())
    return model


def unit_means(output: torch.Tensor) -> torch.Tensor:
    """(N, units): a channel's mean over its map, or a flat layer's values."""
    return output.flatten(2).mean(2) if output.dim() > 2 else output


def unit_values(output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Each image's own unit: a channel's mean over its map, or one value of a flat layer."""
    chosen = output[torch.arange(len(units)), units]
    return chosen.flatten(1).mean(1) if chosen.dim() > 1 else chosen


def direction_values(output: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Each image's objective: its unit means weighted by its own row of `directions` (N, units)."""
    return (unit_means(output) * directions).sum(1)


def likeness(output: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean cosine similarity between the pictures of each objective (the batch is `groups` blocks
    of equal size, one block per objective), read from the layer's whole activations (every unit,
    every place): what the diversity term pushes down. (Lucid compares Gram matrices, which ignore
    where things are; here, on 28x28, they stayed alike (cosine 0.99) while the pictures changed,
    and pushing them apart cost the objective before the pictures differed.)"""
    features = F.normalize(output.flatten(1).reshape(groups, -1, output[0].numel()), dim=2)
    per_group = features.shape[1]
    if per_group < 2:
        return output.new_zeros(())
    similarity = features @ features.transpose(1, 2)  # (groups, k, k)
    off_diagonal = similarity.sum((1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(1)
    return (off_diagonal / (per_group * (per_group - 1))).mean()


def objective_directions(layer: str, count: int, units=None, directions=None) -> np.ndarray:
    """(objectives, units) weights: one-hot rows for `units` (every unit where both are None), or
    `directions` as given; a ValueError naming what is wrong."""
    if directions is not None:
        weights = np.atleast_2d(np.asarray(directions, dtype=np.float32))
        if weights.shape[1] != count or not np.isfinite(weights).all() or not np.abs(weights).sum(1).all():
            raise ValueError(f"direction: {layer} has {count} units; give {count} finite weights, not all 0")
        return weights
    units = list(range(count)) if units is None else [int(unit) for unit in units]
    if not units or min(units) < 0 or max(units) >= count:
        raise ValueError(f"unit: {layer} has units 0 to {count - 1}")
    return np.eye(count, dtype=np.float32)[units]


def visualise(
    model: nn.Module,
    layer: str,
    units: list[int] | None = None,
    steps: int = 128,
    lr: float = 0.05,
    jitter: Jitter = Jitter(),
    seed: int = 0,
    directions: np.ndarray | None = None,
    pictures: int = 1,
    diversity: float = 0.0,
    on_step=None,
) -> np.ndarray:
    """Images (objectives x pictures, 28, 28) in [0, 1], each the input its objective on `layer` (a
    name from analysis.inside.network_layers) is highest for after `steps` of Adam: a unit of
    `units` (every unit of the layer where both are None), or a row of `directions` (objectives,
    units) weighting the layer's units ("a + b" is two ones). `pictures` per objective, pushed apart
    by `diversity` (0: none; at 4, measured on a small CNN's units and logits, 4 pictures' pixels
    went from correlating 0.2-0.9 to about 0 while each still drove its unit as hard as the test
    set's best image does). `on_step(step, steps)` is told before each step. The model is
    left as it was (a copy is optimised through)."""
    known = {found.name: found for found in network_layers(model)}
    if layer not in known:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(known)}")
    check_int("pictures", pictures, 1, 16)
    if not 0 <= diversity <= 100:
        raise ValueError(f"diversity: {diversity} is not between 0 and 100")
    weights = objective_directions(layer, known[layer].units, units, directions)
    # A copy: its hooks and mode are its own, so another thread's pass over the model (a server's
    # pages share loaded runs) neither sees them nor hands its outputs to this one.
    model = redirect_relus(copy.deepcopy(model))
    generator = torch.Generator().manual_seed(seed)
    images = FourierImages(len(weights) * pictures, generator)
    optimiser = torch.optim.Adam(images.parameters(), lr=lr)
    rows = torch.from_numpy(weights).repeat_interleave(pictures, dim=0)
    model.eval()  # batch norm on its running statistics, no dropout
    model.requires_grad_(False)  # gradients for the input alone
    for step in range(steps):
        if on_step is not None:
            on_step(step, steps)
        output = layer_output(model, layer, moved(images(), jitter, generator))
        values = direction_values(output, rows)
        loss = -values.sum()
        if diversity and pictures > 1:
            # Scaled by the objective's size, so one weight serves units that fire at 0.1 or at 10.
            loss = loss + diversity * len(weights) * values.detach().abs().mean() * likeness(
                output, len(weights)
            )
        (gradient,) = torch.autograd.grad(loss, [images.spectrum])
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
