"""Compiled CPU kernels (numba) for the elementwise work that stock torch spreads over many passes.

A training step of the S0 autoencoder spent about a third of its time outside the convolutions,
mostly in passes over its largest map (100 x 16 x 26 x 26): draw a dropout mask, multiply by it,
max-pool, ReLU, and backward a zero fill, a scatter and another multiply. Those maps come from
memory every time, so the passes, not the arithmetic, set the cost. The kernels below do
dropout -> 2x2 max-pool -> ReLU in one pass forward and one pass backward, with the same numbers
as the stock layers. Arrays are (N, H, W, C): the channels_last layout the engine trains in.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch
from numba import get_num_threads, njit, prange, set_num_threads

# numba's threading layers other than OpenMP and TBB must not be entered from two threads at once
# (the app trains in a thread of its own); the lock costs nothing uncontended.
_KERNEL_LOCK = threading.Lock()
NO_GRADIENT = 4  # a window's code when no gradient flows back through it (ReLU off, winner dropped)


@njit(inline="always")
def _relu(v):
    # torch.relu's: NaN passes.
    return v if (v > np.float32(0.0)) | (v != v) else np.float32(0.0)


@njit(inline="always")
def _take_if_greater(value, kept, best, winner, best_kept, k):
    # max_pool2d's tie rule: a later value wins only if greater (or NaN), so the first maximum stays.
    better = (value > best) | (value != value)
    return (value if better else best), (k if better else winner), (kept if better else best_kept)


@njit(inline="always")
def _pooled(v0, v1, v2, v3, keep, n, r, q, c, dropping, threshold, scale):
    """Dropout, max-pool and ReLU of the window whose top-left element is (r, q): the output and the
    window's code (the winner 0-3, row by row, or NO_GRADIENT)."""
    zero = np.float32(0.0)
    k0 = k1 = k2 = k3 = True
    if dropping:  # the same for every element: no misprediction
        k0, k1 = keep[n, r, q, c] >= threshold, keep[n, r, q + 1, c] >= threshold
        k2, k3 = keep[n, r + 1, q, c] >= threshold, keep[n, r + 1, q + 1, c] >= threshold
        v0 = v0 * (scale if k0 else zero)
        v1 = v1 * (scale if k1 else zero)
        v2 = v2 * (scale if k2 else zero)
        v3 = v3 * (scale if k3 else zero)
    best, winner, kept = v0, 0, k0  # scan order: row by row, as max_pool2d
    best, winner, kept = _take_if_greater(v1, k1, best, winner, kept, 1)
    best, winner, kept = _take_if_greater(v2, k2, best, winner, kept, 2)
    best, winner, kept = _take_if_greater(v3, k3, best, winner, kept, 3)
    on = (best > zero) | (best != best)  # ReLU passes it (and NaN, as torch.relu does)
    return (best if on else zero), (winner if on & kept else NO_GRADIENT)


@njit(parallel=True, cache=True)
def _pool_relu_forward(x, keep, dropping, threshold, scale, out, code):
    # Straight-line code with selects, no branches on the data: the dropout mask is random, and a
    # branch on it was mispredicted often enough to cost 30x (2.8 vs 0.08 ms on 100 x 16 x 26 x 26).
    images, rows, cols, channels = out.shape
    for n in prange(images):
        for i in range(rows):
            r = 2 * i
            for j in range(cols):
                q = 2 * j
                for c in range(channels):
                    out[n, i, j, c], code[n, i, j, c] = _pooled(
                        x[n, r, q, c],
                        x[n, r, q + 1, c],
                        x[n, r + 1, q, c],
                        x[n, r + 1, q + 1, c],
                        keep, n, r, q, c, dropping, threshold, scale,
                    )  # fmt: skip


@njit(inline="always")
def _conv3x3(bias, w, c, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """Output channel c of a one-channel 3x3 convolution at one place: bias, then the taps row by row."""
    return (
        bias[c] + w[0, c] * a0 + w[1, c] * a1 + w[2, c] * a2 + w[3, c] * a3 + w[4, c] * a4
        + w[5, c] * a5 + w[6, c] * a6 + w[7, c] * a7 + w[8, c] * a8
    )  # fmt: skip


@njit(inline="always")
def _patch4x4(x, n, r, q):
    """The 4x4 pixels under a pooling window's four 3x3 convolutions, row by row: loaded once for
    all channels."""
    return (
        x[n, r, q], x[n, r, q + 1], x[n, r, q + 2], x[n, r, q + 3],
        x[n, r + 1, q], x[n, r + 1, q + 1], x[n, r + 1, q + 2], x[n, r + 1, q + 3],
        x[n, r + 2, q], x[n, r + 2, q + 1], x[n, r + 2, q + 2], x[n, r + 2, q + 3],
        x[n, r + 3, q], x[n, r + 3, q + 1], x[n, r + 3, q + 2], x[n, r + 3, q + 3],
    )  # fmt: skip


@njit(parallel=True, cache=True)
def _conv_pool_relu_forward(x, w, bias, keep, dropping, threshold, scale, out, code):
    # x: (N, H, W) one-channel images; w: (9, C) taps row by row; out, code: (N, H', W', C).
    images, rows, cols, channels = out.shape
    for n in prange(images):
        for i in range(rows):
            r = 2 * i
            for j in range(cols):
                q = 2 * j
                p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33 = _patch4x4(
                    x, n, r, q
                )
                for c in range(channels):
                    out[n, i, j, c], code[n, i, j, c] = _pooled(
                        _conv3x3(bias, w, c, p00, p01, p02, p10, p11, p12, p20, p21, p22),
                        _conv3x3(bias, w, c, p01, p02, p03, p11, p12, p13, p21, p22, p23),
                        _conv3x3(bias, w, c, p10, p11, p12, p20, p21, p22, p30, p31, p32),
                        _conv3x3(bias, w, c, p11, p12, p13, p21, p22, p23, p31, p32, p33),
                        keep, n, r, q, c, dropping, threshold, scale,
                    )  # fmt: skip


@njit(parallel=True, cache=True)
def _conv_pool_relu_backward(x, grad, code, scale, partial):
    # partial: (N, 10, C) zeros; gets each image's weight gradient (taps row by row) and bias gradient.
    # Only the windows' winners have a gradient, so only their 3x3 patches are read.
    images, rows, cols, channels = grad.shape
    zero = np.float32(0.0)
    for n in prange(images):
        for i in range(rows):
            r = 2 * i
            for j in range(cols):
                q = 2 * j
                p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33 = _patch4x4(
                    x, n, r, q
                )
                for c in range(channels):
                    k = code[n, i, j, c]
                    g = grad[n, i, j, c] * scale
                    g0 = g if k == 0 else zero
                    g1 = g if k == 1 else zero
                    g2 = g if k == 2 else zero
                    g3 = g if k == 3 else zero
                    partial[n, 0, c] += g0 * p00 + g1 * p01 + g2 * p10 + g3 * p11
                    partial[n, 1, c] += g0 * p01 + g1 * p02 + g2 * p11 + g3 * p12
                    partial[n, 2, c] += g0 * p02 + g1 * p03 + g2 * p12 + g3 * p13
                    partial[n, 3, c] += g0 * p10 + g1 * p11 + g2 * p20 + g3 * p21
                    partial[n, 4, c] += g0 * p11 + g1 * p12 + g2 * p21 + g3 * p22
                    partial[n, 5, c] += g0 * p12 + g1 * p13 + g2 * p22 + g3 * p23
                    partial[n, 6, c] += g0 * p20 + g1 * p21 + g2 * p30 + g3 * p31
                    partial[n, 7, c] += g0 * p21 + g1 * p22 + g2 * p31 + g3 * p32
                    partial[n, 8, c] += g0 * p22 + g1 * p23 + g2 * p32 + g3 * p33
                    partial[n, 9, c] += g0 + g1 + g2 + g3


@njit(parallel=True, cache=True)
def _pool_dropout_forward(x, keep, threshold, scale, out, code):
    # 2x2 max-pool, then dropout on the pooled map (S1's CNN); backward is _pool_relu_backward's.
    images, rows, cols, channels = out.shape
    zero = np.float32(0.0)
    for n in prange(images):
        for i in range(rows):
            r = 2 * i
            for j in range(cols):
                q = 2 * j
                for c in range(channels):
                    best, winner, _ = _take_if_greater(x[n, r, q + 1, c], True, x[n, r, q, c], 0, True, 1)
                    best, winner, _ = _take_if_greater(x[n, r + 1, q, c], True, best, winner, True, 2)
                    best, winner, _ = _take_if_greater(x[n, r + 1, q + 1, c], True, best, winner, True, 3)
                    kept = keep[n, i, j, c] >= threshold
                    out[n, i, j, c] = best * (scale if kept else zero)
                    code[n, i, j, c] = winner if kept else NO_GRADIENT


@njit(parallel=True, cache=True)
def _pool_relu_backward(grad, code, scale, grad_x):
    images, rows, cols, channels = grad_x.shape
    pooled_rows, pooled_cols = grad.shape[1], grad.shape[2]
    zero = np.float32(0.0)
    for n in prange(images):
        for r in range(rows):
            i = r // 2
            for q in range(cols):
                j = q // 2
                k = (r % 2) * 2 + q % 2
                if i < pooled_rows and j < pooled_cols:
                    for c in range(channels):
                        grad_x[n, r, q, c] = grad[n, i, j, c] * scale if code[n, i, j, c] == k else zero
                else:  # the odd last row or column that floor-mode pooling leaves out
                    for c in range(channels):
                        grad_x[n, r, q, c] = zero


def _use_torch_threads() -> None:
    """numba's kernels at torch's thread count. numba's first use starts its OpenMP pool, which
    sets the calling thread's OpenMP count to numba's own (every core) and with it torch's: a
    process kept to one thread (a test worker, a job given its share) then trained on two,
    against its neighbours. torch's count is put back."""
    wanted = max(1, min(torch.get_num_threads(), 2**16))
    if get_num_threads() != wanted:
        with contextlib.suppress(ValueError):  # more than numba started with: keep its count
            set_num_threads(wanted)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """A (N, C, H, W) tensor's (N, H, W, C) array: a view when it is channels_last."""
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def _one_channel(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) images as an (N, H, W) array."""
    return x.detach().reshape(x.shape[0], *x.shape[2:]).contiguous().numpy()


def pool_relu_forward(
    x: torch.Tensor, keep: torch.Tensor | None, threshold: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dropout (keep bytes >= threshold, survivors times scale), 2x2 max-pool, ReLU of a
    channels_last (N, C, H, W) float32 CPU map. Returns the pooled map (channels_last) and the
    uint8 code of each output's winner, for pool_relu_backward."""
    n, c, h, w = x.shape
    out = torch.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    code = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
    dropping = keep is not None
    keep_array = keep.numpy() if dropping else np.zeros((1, 1, 1, 1), dtype=np.uint8)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _pool_relu_forward(
            _nhwc(x),
            keep_array,
            dropping,
            np.uint8(threshold),
            np.float32(scale),
            out.numpy(),
            code.numpy(),
        )
    return out.permute(0, 3, 1, 2), code


def pool_dropout_forward(
    x: torch.Tensor, keep: torch.Tensor, threshold: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 max-pool of a channels_last (N, C, H, W) fp32 CPU map, then dropout of the pooled map
    (keep: its (N, H', W', C) random bytes). Returns the output and the codes for pool_relu_backward."""
    n, c, h, w = x.shape
    out = torch.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    code = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _pool_dropout_forward(
            _nhwc(x), keep.numpy(), np.uint8(threshold), np.float32(scale), out.numpy(), code.numpy()
        )
    return out.permute(0, 3, 1, 2), code


def pool_relu_backward(
    grad: torch.Tensor, code: torch.Tensor, scale: float, shape: torch.Size
) -> torch.Tensor:
    """The gradient of pool_relu_forward's input: grad times scale at each window's winner, else 0."""
    n, c, h, w = shape
    grad_x = torch.empty((n, h, w, c), dtype=grad.dtype)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _pool_relu_backward(_nhwc(grad), code.numpy(), np.float32(scale), grad_x.numpy())
    return grad_x.permute(0, 3, 1, 2)


def conv_pool_relu_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    keep: torch.Tensor | None,
    threshold: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-channel 3x3 convolution without padding, then pool_relu_forward's dropout, 2x2
    max-pool and ReLU, without the convolution's map ever being written out. x: (N, 1, H, W)."""
    n, _, h, w = x.shape
    channels = weight.shape[0]
    shape = (n, (h - 2) // 2, (w - 2) // 2, channels)
    out = torch.empty(shape, dtype=x.dtype)
    code = torch.empty(shape, dtype=torch.uint8)
    dropping = keep is not None
    keep_array = keep.numpy() if dropping else np.zeros((1, 1, 1, 1), dtype=np.uint8)
    taps = weight.detach().reshape(channels, 9).t().contiguous()  # (9, C)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _conv_pool_relu_forward(
            _one_channel(x),
            taps.numpy(),
            bias.detach().contiguous().numpy(),
            keep_array,
            dropping,
            np.uint8(threshold),
            np.float32(scale),
            out.numpy(),
            code.numpy(),
        )
    return out.permute(0, 3, 1, 2), code


def conv_pool_relu_backward(
    x: torch.Tensor, grad: torch.Tensor, code: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight (C, 1, 3, 3) and bias (C,) gradients of conv_pool_relu_forward."""
    n, _, h, w = x.shape
    channels = grad.shape[1]
    partial = torch.zeros((n, 10, channels), dtype=grad.dtype)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _conv_pool_relu_backward(
            _one_channel(x),
            _nhwc(grad),
            code.numpy(),
            np.float32(scale),
            partial.numpy(),
        )
    total = partial.sum(0)  # (10, C), image by image in a fixed order: deterministic
    return total[:9].t().reshape(channels, 1, 3, 3), total[9]


# ---------------------------------------------------------------- ReLU, then BatchNorm (S1's CNN)
# Sums run image by image into (N, C) float64 rows, added in a fixed order: deterministic.


@njit(parallel=True, cache=True)
def _relu_sums(z, mean, partial):
    # partial[n, c] = sum over image n of relu(z) (mean is None) or of (relu(z) - mean)^2.
    images, rows, cols, channels = z.shape
    for n in prange(images):
        for r in range(rows):
            for q in range(cols):
                for c in range(channels):
                    v = z[n, r, q, c]
                    a = np.float64(_relu(v))
                    if mean is None:
                        partial[n, c] += a
                    else:
                        d = a - mean[c]
                        partial[n, c] += d * d


@njit(parallel=True, cache=True)
def _relu_scale_shift(z, scale, shift, y):
    # y = relu(z) * scale + shift, per channel: the normalisation and the affine map in one.
    images, rows, cols, channels = z.shape
    for n in prange(images):
        for r in range(rows):
            for q in range(cols):
                for c in range(channels):
                    v = z[n, r, q, c]
                    a = _relu(v)
                    y[n, r, q, c] = a * scale[c] + shift[c]


@njit(parallel=True, cache=True)
def _relu_batchnorm_grad_sums(z, dy, mean, partial):
    # partial[n, 0, c] = sum of dy, partial[n, 1, c] = sum of dy * (relu(z) - mean), over image n.
    images, rows, cols, channels = z.shape
    for n in prange(images):
        for r in range(rows):
            for q in range(cols):
                for c in range(channels):
                    v = z[n, r, q, c]
                    a = np.float64(_relu(v))
                    g = np.float64(dy[n, r, q, c])
                    partial[n, 0, c] += g
                    partial[n, 1, c] += g * (a - mean[c])


@njit(parallel=True, cache=True)
def _relu_batchnorm_grad(z, dy, k_dy, k_const, k_centred, centre, dz):
    # dz = (z > 0) * (k_dy * dy - k_const - k_centred * (relu(z) - centre)), per channel.
    images, rows, cols, channels = z.shape
    zero = np.float32(0.0)
    for n in prange(images):
        for r in range(rows):
            for q in range(cols):
                for c in range(channels):
                    v = z[n, r, q, c]
                    g = k_dy[c] * dy[n, r, q, c] - k_const[c] - k_centred[c] * (v - centre[c])
                    dz[n, r, q, c] = g if v > zero else zero


def relu_batchnorm_forward(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """BatchNorm2d (batch statistics, affine) of relu(z) for a (N, C, H, W) fp32 CPU map.
    Returns y (channels_last), the batch mean and biased variance (float64, per channel)."""
    n, c, h, w = z.shape
    z_nhwc = _nhwc(z)
    count = n * h * w
    partial = np.zeros((n, c), dtype=np.float64)
    with _KERNEL_LOCK:
        _use_torch_threads()
        _relu_sums(z_nhwc, None, partial)
        mean = partial.sum(0) / count
        partial[:] = 0.0
        _relu_sums(z_nhwc, mean, partial)
        variance = partial.sum(0) / count
        inverse_std = 1.0 / np.sqrt(variance + eps)
        scale = inverse_std * weight.detach().double().numpy()
        shift = bias.detach().double().numpy() - mean * scale
        y = torch.empty((n, h, w, c), dtype=z.dtype)
        _relu_scale_shift(z_nhwc, scale.astype(np.float32), shift.astype(np.float32), y.numpy())
    return y.permute(0, 3, 1, 2), mean, variance


def relu_batchnorm_backward(z, grad, weight, mean, variance, eps: float):
    """Gradients of relu_batchnorm_forward: of z, of the weight and of the bias."""
    n, c, h, w = z.shape
    z_nhwc, dy = _nhwc(z), _nhwc(grad)
    count = n * h * w
    partial = np.zeros((n, 2, c), dtype=np.float64)
    inverse_std = 1.0 / np.sqrt(variance + eps)
    gamma = weight.detach().double().numpy()
    with _KERNEL_LOCK:
        _use_torch_threads()
        _relu_batchnorm_grad_sums(z_nhwc, dy, mean, partial)
        sum_dy, sum_dy_centred = partial.sum(0)
        k_dy = gamma * inverse_std
        k_const = k_dy * sum_dy / count
        k_centred = k_dy * inverse_std**2 * sum_dy_centred / count
        dz = torch.empty((n, h, w, c), dtype=z.dtype)
        f32 = np.float32
        _relu_batchnorm_grad(
            z_nhwc,
            dy,
            k_dy.astype(f32),
            k_const.astype(f32),
            k_centred.astype(f32),
            mean.astype(f32),
            dz.numpy(),
        )
    grad_weight = torch.from_numpy(sum_dy_centred * inverse_std).to(weight.dtype)
    grad_bias = torch.from_numpy(sum_dy).to(weight.dtype)
    return dz.permute(0, 3, 1, 2), grad_weight, grad_bias
