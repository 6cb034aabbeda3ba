"""The speedrun's tricks (after airbench, KellerJordan/cifar10-airbench), each a run setting:
a whitened first conv, identity-initialised convs, a faster learning rate for BatchNorm biases,
alternating flips and a moving average of the weights. Multi-crop test-time augmentation lives
with the metrics (analysis.metrics.TTA_VIEWS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core.training.config import RunConfig

WHITENING_IMAGES = 5000  # the training images whose patches the whitening is fitted on
WHITENING_EPS = 5e-4  # added to each eigenvalue: the border pixels hardly vary


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor) -> None:
    """The first conv's filters made the eigenvectors of its patches' covariance over `images`
    (the first WHITENING_IMAGES), each scaled by 1 / sqrt(its eigenvalue): its outputs on those
    patches come out with a covariance near the identity and, through the bias, a mean of zero.
    Filters past the patch's size take the same directions negated (a ReLU keeps both signs).
    The filters are then frozen; the bias trains."""
    conv = convs(model)[0]
    size = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    if conv.out_channels > 2 * size:
        raise ValueError(
            f"whiten: the first conv has {conv.out_channels} filters; its {size}-pixel patches give at "
            f"most {2 * size} (their directions and their negatives)"
        )
    patches = F.unfold(images[:WHITENING_IMAGES].float().cpu(), conv.kernel_size, padding=conv.padding)
    patches = patches.transpose(1, 2).reshape(-1, size).double()
    mean = patches.mean(0)
    covariance = torch.cov(patches.T)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    order = torch.argsort(values, descending=True)
    filters = vectors[:, order].T / torch.sqrt(values[order, None].clamp(min=0) + WHITENING_EPS)
    filters = torch.cat([filters, -filters])[: conv.out_channels]
    conv.weight.copy_(filters.reshape(conv.weight.shape).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.copy_((-(filters @ mean)).to(conv.bias.dtype))
    conv.weight.requires_grad_(False)


@torch.no_grad()
def dirac_convs(model: nn.Module) -> None:
    """Each conv after the first whose outputs are at least its inputs starts, on its first
    input-count filters, as the identity (torch.nn.init.dirac_), the rest as drawn."""
    for conv in convs(model)[1:]:
        if conv.groups == 1 and conv.in_channels <= conv.out_channels:
            nn.init.dirac_(conv.weight[: conv.in_channels])


def prepare(model: nn.Module, config: RunConfig, train_images: torch.Tensor) -> None:
    """The tricks that change a freshly built model before its first step."""
    if config.whiten:
        whiten_first_conv(model, train_images)
    if config.dirac:
        dirac_convs(model)


def parameter_groups(model: nn.Module, config: RunConfig) -> list[dict]:
    """The trainable weights, BatchNorm biases apart at `bn_bias_lr` times the learning rate."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, norms) and m.bias is not None}
    trainable = [p for p in model.parameters() if p.requires_grad]
    rest = [p for p in trainable if id(p) not in biases]
    norm_biases = [p for p in trainable if id(p) in biases]
    groups = [{"params": rest, "lr": config.lr}]
    if norm_biases:
        groups.append({"params": norm_biases, "lr": config.lr * config.bn_bias_lr})
    return groups


def flip_parity(config: RunConfig, count: int) -> torch.Tensor:
    """For alternating flips: which of `count` training images are mirrored in odd epochs (the
    others in even ones); drawn from the run's seed alone, so a continued run draws the same."""
    generator = torch.Generator().manual_seed(config.seed)
    return torch.randint(0, 2, (count,), generator=generator, dtype=torch.bool)


def alternating_flip(images: torch.Tensor, mirrored_first: torch.Tensor, epoch: int) -> torch.Tensor:
    """Images (B, 1, H, W) mirrored where `mirrored_first` (their parity) matches the epoch's:
    each image is seen both ways every two epochs."""
    flip = (mirrored_first ^ (epoch % 2 == 0)).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(3), images)


def moving_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the model's weights and BatchNorm statistics, updated
    after each step (torch.optim.swa_utils): average = decay * average + (1 - decay) * weights."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
