"""Layers that compiled kernels (fmnist_core.engine.kernels) train in one or two passes each way.

Each stands for a run of torch layers in a model being trained and falls back to those very
layers wherever the kernels do not run (evaluation, a GPU, a machine without numba).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from fmnist_core.engine.layers import Dropout


@functools.cache
def _kernels():
    """fmnist_core.engine.kernels, imported on first use (numba's import would slow the app's start), or
    None where numba is missing: the fused layers then run torch's own."""
    try:
        from fmnist_core.engine import kernels
    except ImportError:
        return None
    return kernels


def _runs_compiled(module: nn.Module, x: torch.Tensor, under_bf16: bool = False) -> bool:
    """Whether a fused layer trains x with the compiled kernels: fp32 training on the CPU, and
    for the layers that pass `under_bf16`, bf16 autocast too (see `_widened`)."""
    if torch.is_autocast_enabled("cpu"):
        dtypes = (torch.float32, torch.bfloat16) if under_bf16 else ()
    else:
        dtypes = (torch.float32,)
    return (
        module.training
        and x.device.type == "cpu"
        and x.dtype in dtypes
        and x.dim() == 4
        and _kernels() is not None
    )


def _widened(x: torch.Tensor) -> torch.Tensor:
    """A bf16 map in fp32 for the kernels, and its gradient narrowed back: a pass each way, and
    the next conv or linear layer narrows the output again. Worth it before S1's BatchNorms and
    its pooling + dropout (a bf16 step of its CNN 68-70 -> 53-57 ms): torch's bf16 channels_last
    BatchNorm takes 14-15 ms forward and backward on S1's 35- and 50-channel maps, 4 ms on 48 or
    64 channels, which the widened kernel does not beat. Not before PoolReLU (fast_cnn 23 -> 24.5
    ms: torch's bf16 pooling of a conv's output is cheap, widening the full map is not)."""
    return x.float() if x.dtype == torch.bfloat16 else x


class _Pooled(torch.autograd.Function):
    """A compiled 2x2 max-pooling with its neighbours (`kernel`: pool_relu_forward or
    pool_dropout_forward): forward keeps a byte per output, its winner or no gradient, and
    backward sends the gradient, times the dropout's scale, to the winners."""

    @staticmethod
    def forward(ctx, kernel, x, keep, threshold, scale):
        out, code = getattr(_kernels(), kernel)(x, keep, threshold, scale)
        ctx.save_for_backward(code)
        ctx.scale, ctx.shape = scale, x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        (code,) = ctx.saved_tensors
        return None, _kernels().pool_relu_backward(grad, code, ctx.scale, ctx.shape), None, None, None


class PoolReLU(nn.Module):
    """An optional Dropout, a 2x2 max-pool and a ReLU, trained as one compiled pass each way.

    The same masks, outputs and gradients as the three layers (fmnist_core.kernels): the stock
    ones made about eight passes over the map, forward and backward, and this makes two, plus a
    byte per pooled output. Elsewhere (evaluation, a GPU, bf16, a contiguous-format input) the three
    layers run as they are.
    """

    def __init__(self, dropout: Dropout | None, pool: nn.MaxPool2d, relu: nn.ReLU):
        super().__init__()
        self.dropout, self.pool, self.relu = dropout, pool, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_runs_compiled(self, x) and x.is_contiguous(memory_format=torch.channels_last)):
            return self.relu(self.pool(x if self.dropout is None else self.dropout(x)))
        if self.dropout is None or self.dropout.threshold == 0:
            return _Pooled.apply("pool_relu_forward", x, None, 0, 1.0)
        keep = self.dropout.keep_bytes(*x.shape, x.device)
        return _Pooled.apply("pool_relu_forward", x, keep, self.dropout.threshold, self.dropout.scale)


class PoolDropout(nn.Module):
    """A 2x2 max-pool and the dropout after it (S1's CNN), trained as one compiled pass each way,
    with the same masks, outputs and gradients as the two layers (in fp32; under bf16 autocast
    on the map widened to fp32)."""

    def __init__(self, pool: nn.MaxPool2d, dropout: Dropout):
        super().__init__()
        self.pool, self.dropout = pool, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            _runs_compiled(self, x, under_bf16=True) and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return self.dropout(self.pool(x))
        x = _widened(x)
        n, c, h, w = x.shape
        keep = self.dropout.keep_bytes(n, c, h // 2, w // 2, x.device)  # for the pooled map
        return _Pooled.apply("pool_dropout_forward", x, keep, self.dropout.threshold, self.dropout.scale)


class _ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, keep, threshold, scale):
        out, code = _kernels().conv_pool_relu_forward(x, weight, bias, keep, threshold, scale)
        ctx.save_for_backward(x, code)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        x, code = ctx.saved_tensors
        grad_weight, grad_bias = _kernels().conv_pool_relu_backward(x, grad, code, ctx.scale)
        return None, grad_weight, grad_bias, None, None, None


class ConvPoolReLU(nn.Conv2d):
    """A first layer's one-channel 3x3 convolution and the PoolReLU after it, trained as one
    compiled pass each way: the convolution's full-size map (4.3 MB for 100 S0 images) is never
    written, and backward reads only the pooling winners' patches. The weights keep the
    convolution's names. The sums run in another order than oneDNN's (ENGINE_VERSION 4); elsewhere
    (evaluation, a GPU, bf16) the convolution and PoolReLU run as they are.
    """

    @classmethod
    def fuse(cls, conv: nn.Conv2d, after: PoolReLU) -> ConvPoolReLU:
        """The convolution itself becomes the fused layer: its weights stay where they are, and
        nothing new is built (building would draw from torch's global generator)."""
        conv.__class__ = cls
        conv.after = after
        return conv

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d
            and conv.in_channels == 1
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (0, 0)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.bias is not None
            and conv.padding_mode == "zeros"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_runs_compiled(self, x) and self.weight.dtype == torch.float32 and not x.requires_grad):
            return self.after(super().forward(x))
        dropout = self.after.dropout
        if dropout is None or dropout.threshold == 0:
            return _ConvPoolReLU.apply(x, self.weight, self.bias, None, 0, 1.0)
        n, _, h, w = x.shape
        # Drawn for the full-size map, as the dropout layer would: the same random stream.
        keep = dropout.keep_bytes(n, self.out_channels, h - 2, w - 2, x.device)
        return _ConvPoolReLU.apply(x, self.weight, self.bias, keep, dropout.threshold, dropout.scale)


class _ReLUBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, eps):
        y, mean, variance = _kernels().relu_batchnorm_forward(z, weight, bias, eps)
        ctx.save_for_backward(z, weight)
        ctx.mean, ctx.variance, ctx.eps = mean, variance, eps
        return y, torch.from_numpy(mean), torch.from_numpy(variance)

    @staticmethod
    def backward(ctx, grad, _mean_grad, _variance_grad):
        z, weight = ctx.saved_tensors
        grad_z, grad_weight, grad_bias = _kernels().relu_batchnorm_backward(
            z, grad, weight, ctx.mean, ctx.variance, ctx.eps
        )
        return grad_z, grad_weight, grad_bias, None


class ReLUBatchNorm(nn.BatchNorm2d):
    """A ReLU and the BatchNorm2d after it (S1's conv -> ReLU -> BatchNorm), trained by compiled
    kernels: two passes for the batch statistics and one for the output forward, two backward.
    torch's channels_last BatchNorm backward alone took 12 ms a step on S1's 24x24 map. The
    BatchNorm's weights and running statistics keep their names; its sums run in float64, in
    another order than torch's (ENGINE_VERSION 4). Under bf16 autocast it runs on the map widened
    to fp32 where the channel count is not a multiple of 16 (ENGINE_VERSION 5); elsewhere the two
    layers run as they are.
    """

    @classmethod
    def fuse(cls, relu: nn.ReLU, norm: nn.BatchNorm2d) -> ReLUBatchNorm:
        """The BatchNorm itself becomes the fused layer, its weights and statistics in place."""
        norm.__class__ = cls
        norm.relu = relu
        return norm

    @staticmethod
    def fits(relu: nn.Module, norm: nn.Module) -> bool:
        return (
            isinstance(relu, nn.ReLU)
            and type(norm) is nn.BatchNorm2d
            and norm.affine
            and norm.track_running_stats
            and norm.momentum is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            # torch's bf16 BatchNorm is quick where its channels fill whole 16-lane vectors
            _runs_compiled(self, x, under_bf16=self.num_features % 16 != 0)
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[0] > 1
        ):
            return super().forward(self.relu(x))
        y, mean, variance = _ReLUBatchNorm.apply(_widened(x), self.weight, self.bias, self.eps)
        with torch.no_grad():  # as BatchNorm2d does: the unbiased variance in the running one
            count = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((variance * count / (count - 1)).to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        return y


def is_plain_2x2_max_pool(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.MaxPool2d)
        and module.kernel_size in (2, (2, 2))
        and module.stride in (2, (2, 2))
        and module.padding in (0, (0, 0))
        and module.dilation in (1, (1, 1))
        and not module.ceil_mode
        and not module.return_indices
    )


def compiled_kernels_available() -> bool:
    """Whether the compiled kernels run here (numba importable); if not, the fused layers run
    torch's own, whose sums run in another order: a run records which it had."""
    return _kernels() is not None
