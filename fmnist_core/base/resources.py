"""What a run needs in memory, estimated from its shapes before it trains, and the lab's limit.

The parameter limits of the layer lists bound the weights only; a batch of 512 through two
1,024-channel convolutions holds 6.6 GB of activations (issue 27). Every run is checked here
before it trains, and evaluation picks its batch from the same per-image figure.
"""

from __future__ import annotations

import copy
import os
import weakref

import torch
from torch import nn

from fmnist_core.base import environment

BYTES = 4  # per value: weights, activations and data are fp32 (bf16 autocast keeps fp32 copies)
# Per weight, beside the weight itself and its gradient.
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "adamax": 2, "rmsprop": 1, "sgd": 1}
# Activations are kept for the backward pass, which makes a gradient of each, and oneDNN's
# convolutions take workspace beside them: 3x their size matched the peaks measured (bench/RESULTS.md).
BACKWARD_FACTOR = 3
# The time-lapse's codes: the batches' outputs, their concatenation, the centred copy, the Gram.
SNAPSHOT_FACTOR = 4
MEMORY_FRACTION = 0.5  # of the machine's (or the GPU's) memory, unless FMNIST_MEMORY_LIMIT_GB says
EVAL_BYTES = 1_000_000_000  # one evaluation batch's activations (every default model: 256 a batch)
IMAGE_VALUES = 28 * 28
SNAPSHOT_IMAGES = 1000  # fmnist_core.analysis.TIMELAPSE_IMAGES: the codes mapped after each epoch


def activation_values(model: nn.Module, batch: int) -> int:
    """Values every leaf layer outputs for a batch of `batch` images, summed: what training keeps
    for the backward pass. Run on the meta device (no memory, no arithmetic) where the model is."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [module for module in model.modules() if next(module.children(), None) is None]
    hooks = [module.register_forward_hook(count) for module in leaves]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(torch.zeros(batch, 1, 28, 28, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def code_values(model: nn.Module) -> int:
    """Values in one image's code (an autoencoder's latent vector, a classifier's features)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        return int(model.encode(torch.zeros(1, 1, 28, 28, device=device)).numel())


def training_bytes(skeleton: nn.Module, batch_size: int, optimizer: str, train_images: int) -> int:
    """Peak memory of a training run, estimated: weights with gradients and optimizer state, one
    batch's activations kept for backward and their gradients, the training images on the device,
    and the time-lapse's codes of its 1,000 test images (and their centred copy)."""
    parameters = sum(p.numel() for p in skeleton.parameters())
    weights = parameters * BYTES * (2 + OPTIMIZER_STATES.get(optimizer, 2))
    was_training = skeleton.training
    skeleton.train()
    activations = activation_values(skeleton, batch_size) * BYTES * BACKWARD_FACTOR
    skeleton.eval()
    snapshot = SNAPSHOT_IMAGES * code_values(skeleton) * BYTES * SNAPSHOT_FACTOR
    skeleton.train(was_training)
    return weights + activations + snapshot + train_images * IMAGE_VALUES * BYTES


def memory_limit(device: torch.device) -> int:
    """Bytes a run may use: $FMNIST_MEMORY_LIMIT_GB, else MEMORY_FRACTION of the device's memory."""
    configured = environment.memory_limit_gb()
    if configured:
        return int(configured * 1e9)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * MEMORY_FRACTION)


def refuse_over_limit(needed: int, batch_size: int, device) -> int:
    """`needed` (a training's estimated peak bytes), or a ValueError naming batch_size with the
    estimate and the limit (read now: FMNIST_MEMORY_LIMIT_GB may have changed)."""
    limit = memory_limit(torch.device(device))
    if needed > limit:
        raise ValueError(
            f"batch_size: {batch_size} images a step through this model need about {needed / 1e9:.1f} GB "
            f"(activations, weights, optimizer, data), over the lab's limit of {limit / 1e9:.1f} GB "
            f"(half the {torch.device(device).type} memory; FMNIST_MEMORY_LIMIT_GB sets it): "
            "use a smaller batch or fewer channels"
        )
    return needed


_PER_IMAGE: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def eval_batch(model: nn.Module, most: int) -> int:
    """An evaluation batch (at most `most`) whose activations stay under EVAL_BYTES."""
    if model not in _PER_IMAGE:
        was_training = model.training
        model.eval()
        _PER_IMAGE[model] = max(1, activation_values(model, 1))
        model.train(was_training)
    return max(1, min(most, EVAL_BYTES // (_PER_IMAGE[model] * BYTES)))


def takes_single_images(model: nn.Module) -> bool:
    """Whether training can take a batch of one image: batch norm over a single value per channel
    (after a dense layer, or on a 1x1 map) cannot. Tried on a meta-device copy: no arithmetic."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return True
    probe = copy.deepcopy(model).to("meta").train()
    try:
        probe(torch.zeros(1, 1, 28, 28, device="meta"))
    except ValueError:  # "Expected more than 1 value per channel when training"
        return False
    return True
