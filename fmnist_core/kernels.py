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
def _take_if_greater(value, kept, best, winner, best_kept, k):
    # max_pool2d's tie rule: a later value wins only if greater (or NaN), so the first maximum stays.
    better = (value > best) | (value != value)
    return (value if better else best), (k if better else winner), (kept if better else best_kept)


@njit(parallel=True, cache=True)
def _pool_relu_forward(x, keep, dropping, threshold, scale, out, code):
    # Straight-line code with selects, no branches on the data: the dropout mask is random, and a
    # branch on it was mispredicted often enough to cost 30x (2.8 vs 0.08 ms on 100 x 16 x 26 x 26).
    images, rows, cols, channels = out.shape
    zero = np.float32(0.0)
    for n in prange(images):
        for i in range(rows):
            r = 2 * i
            for j in range(cols):
                q = 2 * j
                for c in range(channels):
                    v0, v1 = x[n, r, q, c], x[n, r, q + 1, c]
                    v2, v3 = x[n, r + 1, q, c], x[n, r + 1, q + 1, c]
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
                    out[n, i, j, c] = best if on else zero
                    code[n, i, j, c] = winner if on & kept else NO_GRADIENT


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
    wanted = max(1, min(torch.get_num_threads(), 2**16))
    if get_num_threads() != wanted:
        with contextlib.suppress(ValueError):  # more than numba started with: keep its count
            set_num_threads(wanted)


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
            x.detach().permute(0, 2, 3, 1).numpy(),
            keep_array,
            dropping,
            np.uint8(threshold),
            np.float32(scale),
            out.numpy(),
            code.numpy(),
        )
    return out.permute(0, 3, 1, 2), code


def pool_relu_backward(
    grad: torch.Tensor, code: torch.Tensor, scale: float, shape: torch.Size
) -> torch.Tensor:
    """The gradient of pool_relu_forward's input: grad times scale at each window's winner, else 0."""
    n, c, h, w = shape
    grad_x = torch.empty((n, h, w, c), dtype=grad.dtype)
    grad = grad.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C); a view when grad is channels_last
    with _KERNEL_LOCK:
        _use_torch_threads()
        _pool_relu_backward(grad.numpy(), code.numpy(), np.float32(scale), grad_x.numpy())
    return grad_x.permute(0, 3, 1, 2)
