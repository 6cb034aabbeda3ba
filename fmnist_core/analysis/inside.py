"""The inside of a network: every layer's output for an image, what each unit responds to across
a set of images (its top-activating images, whether it ever fires), and its learned weights.

Everything comes from forward hooks on the model as written (never the engine's fused view), so
a layer here is a module a reader finds in the model's file."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmnist_core.analysis.metrics import EVAL_BATCH
from fmnist_core.base.resources import eval_batch

# Modules that show nothing new at test time: a dropout is the identity in eval mode, a flatten
# only reshapes. The layer before them already shows the same numbers.
PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten, nn.Unflatten)
WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
DYING_SHARE = 0.01  # a unit that fires on fewer than 1% of the images is dying


@dataclass(frozen=True)
class Layer:
    name: str  # the module's path in the model, e.g. "features.0"
    kind: str  # its class: Conv2d, ReLU, ResidualBlock...
    shape: tuple[int, ...]  # its output for one image: (C, H, W) or (units,)
    rectified: bool  # its outputs are >= 0 by construction, so a unit can die (output 0 everywhere)
    role: str = ""  # "code": the encoder's output (the latent code or the classifier's features)

    @property
    def units(self) -> int:
        return self.shape[0]

    @property
    def spatial(self) -> bool:
        """Whether each unit is a map (a channel) rather than one number."""
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1


def _composite(module: nn.Module) -> bool:
    """A module whose forward does more than run its children in order (a residual block)."""
    return any(True for _ in module.children()) and not isinstance(module, (nn.Sequential, nn.ModuleList))


def _ends_rectified(module: nn.Module) -> bool:
    if isinstance(module, nn.ReLU):
        return True
    # A residual block returns relu(body + shortcut); its last child is the shortcut, so ask the model.
    return getattr(module, "output_rectified", False)


def _watched(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs the inside shows: leaves that change the numbers, and composite
    modules (their output is not any child's), by path."""
    watched = {}
    for name, module in model.named_modules():
        if not name or isinstance(module, PASS_THROUGH):
            continue
        if not any(True for _ in module.children()) or _composite(module):
            watched[name] = module
    return watched


def _code_part(model: nn.Module) -> str | None:
    """The path of the part whose output is the code: an autoencoder's encoder, a classifier's features."""
    for part in ("encoder", "features"):
        if isinstance(getattr(model, part, None), nn.Module):
            return part
    return None


class Recording:
    """Forward hooks on the watched modules, in the order they run; each output of a pass made by
    the thread that records is handed to `keep(name, output)`. A cached run's model is shared by a
    server's sessions and its background work: another thread's pass over it (or over a copy made
    while the hooks were on, which copies them) is not this recording's."""

    def __init__(self, model: nn.Module, keep, names: list[str] | None = None):
        watched = _watched(model)
        thread = threading.get_ident()

        def hook(name: str, output) -> None:
            if threading.get_ident() == thread:
                keep(name, output)

        self.handles = [
            module.register_forward_hook(lambda _m, _i, output, name=name: hook(name, output))
            for name, module in watched.items()
            if names is None or name in names
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def layer_output(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """`layer`'s output for `images` (the whole model runs: its later layers' outputs are dropped)."""
    seen: list[torch.Tensor] = []
    with Recording(model, lambda _name, output: seen.append(output), names=[layer]):
        model(images)
    return seen[0]


@torch.no_grad()
def layer_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every watched layer's output for `images` (B, 1, 28, 28), in the order the layers ran, on
    the CPU (eval mode)."""
    was_training = model.training
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    device = next(model.parameters()).device
    with Recording(model, lambda name, output: outputs.__setitem__(name, output.detach().float().cpu())):
        model(images.to(device))
    model.train(was_training)
    return outputs


def network_layers(model: nn.Module) -> list[Layer]:
    """The watched layers in the order they run, with each output's shape for one image."""
    device = next(model.parameters()).device
    outputs = layer_outputs(model, torch.zeros(1, 1, 28, 28, device=device))
    modules = dict(model.named_modules())
    code = _code_part(model)
    in_code = [name for name in outputs if code and name.startswith(code + ".")]
    return [
        Layer(
            name,
            type(modules[name]).__name__,
            tuple(output.shape[1:]),
            _ends_rectified(modules[name]),
            "code" if in_code and name == in_code[-1] else "",
        )
        for name, output in outputs.items()
    ]


def unit_peaks(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's largest value per image (B, units) and where in its map it is (B, units, flat
    position; 0 for a dense unit)."""
    flat = output.flatten(2) if output.dim() == 4 else output.unsqueeze(-1)  # (B, units, positions)
    return flat.max(dim=2)


@dataclass(frozen=True)
class UnitActivity:
    """What each unit of each layer did over a set of images (the test set)."""

    layers: list[Layer]
    images: int  # how many images were seen
    top_index: dict[str, np.ndarray]  # (k, units): the images with the largest peak, largest first
    top_value: dict[str, np.ndarray]  # (k, units): those peaks
    top_where: dict[str, np.ndarray]  # (k, units): the flat position of each peak in the unit's map
    firing: dict[str, np.ndarray]  # (units,): on how many images the unit's peak is above 0
    bottom_index: dict[str, np.ndarray]  # (k, units): the images with the smallest peak, smallest first
    bottom_value: dict[str, np.ndarray]  # (k, units): those peaks

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"layer: {name[:60]!r} is not a layer of this model with units to show (those: "
            f"{', '.join(layer.name for layer in self.layers)}; dropout and flatten layers only pass "
            "their input on)"
        )

    def dead(self, name: str) -> np.ndarray:
        """The units of a rectified layer that are 0 on every image (boolean, (units,))."""
        return self.firing[name] == 0

    def dying(self, name: str) -> np.ndarray:
        """Units that fire, but on fewer than DYING_SHARE of the images."""
        firing = self.firing[name]
        return (firing > 0) & (firing < DYING_SHARE * self.images)


@torch.no_grad()
def unit_activity(model: nn.Module, images: torch.Tensor, top: int = 9, on_batch=None) -> UnitActivity:
    """One pass over `images`: for every unit of every watched layer its `top` images (by the
    unit's peak value, largest first) and how many images make it fire. Running top lists keep
    the memory at (top + batch) x units per layer, whatever the image count."""
    layers = network_layers(model)
    state: dict[str, list[torch.Tensor]] = {}
    offset = [0]

    def keep(name: str, output: torch.Tensor) -> None:
        peaks, where = unit_peaks(output.float())
        index = torch.arange(offset[0], offset[0] + len(peaks), device=peaks.device)[:, None].expand_as(peaks)
        fires = (peaks > 0).sum(0)
        low, low_index = peaks, index
        if name in state:
            values, indices, places, firing, low_values, low_indices = state[name]
            peaks, index, where = (
                torch.cat([values, peaks]),
                torch.cat([indices, index]),
                torch.cat([places, where]),
            )
            low, low_index = torch.cat([low_values, low]), torch.cat([low_indices, low_index])
            fires = fires + firing
        count = min(top, len(peaks))
        # Stable sorts: among equal peaks the earlier image comes first, as in a full argsort.
        order = torch.sort(peaks, dim=0, descending=True, stable=True).indices[:count]
        lowest = torch.sort(low, dim=0, stable=True).indices[:count]
        state[name] = [
            peaks.gather(0, order),
            index.gather(0, order),
            where.gather(0, order),
            fires,
            low.gather(0, lowest),
            low_index.gather(0, lowest),
        ]

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    size = eval_batch(model, EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"]))
    with Recording(model, keep):
        for start in range(0, len(images), size):
            batch = images[start : start + size].to(device)
            model(batch)
            offset[0] += len(batch)
            if on_batch is not None:
                on_batch(offset[0], len(images))
    model.train(was_training)
    numpy = {name: [part.cpu().numpy() for part in parts] for name, parts in state.items()}
    return UnitActivity(
        layers,
        len(images),
        {name: parts[1].astype(np.int64) for name, parts in numpy.items()},
        {name: parts[0].astype(np.float32) for name, parts in numpy.items()},
        {name: parts[2].astype(np.int64) for name, parts in numpy.items()},
        {name: parts[3].astype(np.int64) for name, parts in numpy.items()},
        {name: parts[5].astype(np.int64) for name, parts in numpy.items()},
        {name: parts[4].astype(np.float32) for name, parts in numpy.items()},
    )


def weights_behind(model: nn.Module, layers: list[Layer], name: str) -> str | None:
    """The layer whose weights make the units of layer `name`: itself where it has weights, else
    the nearest weighted layer before it with as many units (the conv under a ReLU or a pool)."""
    modules = dict(model.named_modules())
    position = [layer.name for layer in layers].index(name)
    units = layers[position].units
    for layer in reversed(layers[: position + 1]):
        if isinstance(modules[layer.name], WEIGHTED):
            return layer.name if layer.units == units else None
    return None


def unit_weights(model: nn.Module, layers: list[Layer], name: str, unit: int) -> np.ndarray | None:
    """The learned weights of one unit: a conv's filter (inputs, k, k), a dense unit's weights on
    its inputs (inputs,); None where no weighted layer makes the unit."""
    source = weights_behind(model, layers, name)
    if source is None:
        return None
    module = dict(model.named_modules())[source]
    weight = module.weight.detach().float().cpu()
    if isinstance(module, nn.ConvTranspose2d):
        return weight[:, unit].numpy()  # (inputs, k, k): a transposed conv stores (in, out, k, k)
    return weight[unit].numpy()


def driving_boxes(
    model: nn.Module, name: str, images: torch.Tensor, unit: int, where: np.ndarray, width: int
) -> np.ndarray:
    """For each image, the box (top, left, bottom, right; bottom and right excluded) of the input
    pixels that move unit `unit` of layer `name` at flat position `where` (its map is `width`
    wide): the bounding box of the nonzero gradient of that one value. The whole image where the
    gradient is zero (a unit at 0 is moved by nothing)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device).clone().requires_grad_(True)
    seen: list[torch.Tensor] = []
    with torch.enable_grad(), Recording(model, lambda _name, output: seen.append(output), names=[name]):
        model(x)
        output = seen[0]
        rows = torch.arange(len(x), device=device)
        spots = torch.as_tensor(where, device=device)
        if output.dim() == 4:
            picked = output[rows, unit, spots // width, spots % width]
        else:
            picked = output[rows, unit]
        (gradient,) = torch.autograd.grad(picked.sum(), x, allow_unused=True)
    model.train(was_training)
    boxes = np.tile(np.array([0, 0, 28, 28]), (len(x), 1))
    if gradient is None:
        return boxes
    moved = (gradient[:, 0] != 0).cpu().numpy()
    for i, mask in enumerate(moved):
        rows_hit, columns_hit = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(rows_hit):
            boxes[i] = [rows_hit[0], columns_hit[0], rows_hit[-1] + 1, columns_hit[-1] + 1]
    return boxes
