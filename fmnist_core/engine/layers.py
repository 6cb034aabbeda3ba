"""The engine's stand-ins for three torch layers: the same maths, cheaper on the CPU.

`accelerate` (fmnist_core.engine.rewrite) puts them in place of torch's own in a model being
trained; the models themselves are written with torch's layers.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Module):
    """Dropout whose mask costs one random draw per 8 elements, not one per element, drawn from
    the run's own generator.

    The stock CPU dropout spends most of its time drawing random numbers: it halved the
    S0 autoencoder's training speed. Here each 64-bit draw gives 8 random bytes, and a byte
    below round(256 p) drops its element; p is thus rounded to a multiple of 1/256. A 4-D
    input's mask is drawn in (N, H, W, C) order, the channels_last layout the engine trains in:
    the mask is then a view of the draw in the input's own layout (converting it cost as much
    as drawing it), and it is the same mask in either layout.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__()
        self.p = p
        self.threshold = round(p * 256)
        if self.threshold >= 256:
            raise ValueError(f"dropout: {p} drops every element; the engine takes p below 255/256")
        self.generator = generator  # None: torch's global generator (tests only; training passes one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        mask = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        # Straight into x's dtype: a bool mask and its conversion were 6x slower than this.
        torch.ge(self.random_bytes(x.numel(), x.device), self.threshold, out=mask)
        mask.mul_(self.scale)  # survivors scaled by 1 / (1 - p)
        if x.dim() == 4:
            n, c, h, w = x.shape
            return x * mask.view(n, h, w, c).permute(0, 3, 1, 2)
        return x * mask.view(x.shape)

    @property
    def scale(self) -> float:
        return 256 / (256 - self.threshold)

    def random_bytes(self, count: int, device: torch.device) -> torch.Tensor:
        """`count` fresh random bytes, one per element (a 4-D map's in (N, H, W, C) order); an
        element is kept where its byte is at least `threshold`."""
        words = torch.empty((count + 7) // 8, dtype=torch.int64, device=device)
        words.random_(-(2**63), None, generator=self.generator)
        return words.view(torch.uint8)[:count]

    def keep_bytes(self, n: int, c: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """random_bytes for an (n, c, h, w) map, as the (N, H, W, C) array the kernels read."""
        return self.random_bytes(n * c * h * w, device).view(n, h, w, c)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _FlattenKeepingLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = (
            x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        )
        return x.reshape(len(x), -1)  # (B, C*H*W), in PyTorch's C, H, W order

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


class Flatten(nn.Flatten):
    """nn.Flatten whose gradient goes back in the input's memory layout.

    The stock one hands a channels_last network a contiguous gradient, and the layers below
    then convert it or run mixed-layout kernels: S1's CNN spent 11.6 of its 124 ms a step
    copying one 24x24 map back inside the max-pool's backward. The values are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start_dim != 1 or self.end_dim != -1:
            return super().forward(x)
        return _FlattenKeepingLayout.apply(x)


@functools.cache
def _subpixel_plan(kernel: int, stride: int, padding: int) -> tuple[torch.Tensor, int]:
    """How a transposed convolution splits into `stride` phases per axis, each a plain correlation.

    Output o = stride * a + r gathers input i = a + d - j with tap stride * j + c, where
    d, c = divmod(r + padding, stride). Returns, per phase r and per tap t of one shared correlation
    window of `size` inputs starting at offset `first`, the transposed kernel's tap (`kernel` where
    the phase has none: a zero), and `first`.
    """
    phases = []
    for r in range(stride):
        d, c = divmod(r + padding, stride)
        phases.append((d, c, len(range(c, kernel, stride))))
    first = min(d - taps + 1 for d, _, taps in phases)
    size = max(d for d, _, _ in phases) - first + 1
    index = torch.full((stride, size), kernel, dtype=torch.long)
    for r, (d, c, taps) in enumerate(phases):
        for t in range(size):
            j = d - first - t
            if 0 <= j < taps:
                index[r, t] = stride * j + c
    return index, first


def _transposed_conv_as_subpixel(x, weight, bias, stride: int, padding: int, out_size: int) -> torch.Tensor:
    """A transposed convolution as one convolution with stride*stride times the output channels,
    interleaved by pixel_shuffle: the same sums in another order."""
    c_in, c_out, kernel, _ = weight.shape
    index, first = _subpixel_plan(kernel, stride, padding)
    size = index.shape[1]
    phases = -(-out_size // stride)  # outputs per phase and axis
    zero_tap = F.pad(weight, (0, 1, 0, 1))  # tap `kernel` is a zero
    taps = zero_tap[:, :, index[:, None, :, None], index[None, :, None, :]]  # (in, out, r_y, r_x, t_y, t_x)
    taps = taps.permute(1, 2, 3, 0, 4, 5).reshape(c_out * stride * stride, c_in, size, size)
    after = max(0, phases - 1 + first + size - 1 - (x.shape[-1] - 1))
    if after == -first:  # the convolution pads by itself, without a padded copy of x
        y = F.conv2d(x, taps, padding=after)  # (B, out * stride^2, phases, phases)
    else:
        y = F.conv2d(F.pad(x, (-first, after, -first, after)), taps)
    y = F.pixel_shuffle(y, stride)[..., :out_size, :out_size]
    return y + bias.view(1, -1, 1, 1)


class _TransposedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, out_size):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        if weight.shape[1] == 1:
            return _transposed_conv_as_subpixel(x, weight, bias, stride, padding, out_size)
        # A transposed convolution is the input gradient of the convolution it mirrors; oneDNN
        # computes that one faster than its own transposed forward, and to the same bits.
        layout = torch.channels_last if not x.is_contiguous() else torch.contiguous_format
        like = x.new_empty((len(x), weight.shape[1], out_size, out_size)).contiguous(memory_format=layout)
        y = torch.ops.aten.convolution_backward(
            x,
            like,
            weight,
            None,
            (stride,) * 2,
            (padding,) * 2,
            (1, 1),
            False,
            (0, 0),
            1,
            (True, False, False),
        )[0]
        return y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        # Exactly what nn.ConvTranspose2d's backward computes.
        grads = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            [weight.shape[1]],
            (ctx.stride,) * 2,
            (ctx.padding,) * 2,
            (1, 1),
            True,
            (0, 0),
            1,
            (need[0], need[1], need[2]),
        )
        return (*grads, None, None, None)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with a faster forward on the CPU: the same weights, the same gradients.

    oneDNN's own transposed forward was the slowest part of S0's decoder (16 -> 1 channels, k6:
    2.4 ms for 100 images, 4 times its backward). With one output channel the layer runs as a
    sub-pixel convolution (1.2 ms; the same sums in another order), otherwise as the input
    gradient of the mirrored convolution (32 -> 16, k5: 1.1 -> 0.6 ms, the same bits).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = len(set(self.kernel_size)) == len(set(self.stride)) == len(set(self.padding)) == 1
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or torch.is_autocast_enabled("cpu")
            or not square
            or x.shape[-1] != x.shape[-2]
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.output_padding != (0, 0)
            or self.bias is None
        ):
            return super().forward(x)
        (kernel,), (stride,), (padding,) = set(self.kernel_size), set(self.stride), set(self.padding)
        out_size = (x.shape[-1] - 1) * stride - 2 * padding + kernel
        return _TransposedConv.apply(x, self.weight, self.bias, stride, padding, out_size)
