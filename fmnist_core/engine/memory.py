"""Memory tricks of the engine: one buffer for every trainable weight, and a heap that is kept."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch
from torch import nn


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    By default glibc serves each large block (a batch's activation maps, 4-15 MB) with a fresh
    mmap and unmaps it when freed, so every training step pays page faults on every big tensor:
    S1's CNN ran 112 ms a step that way and 90 ms with the memory kept. Done once per process;
    False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 1 << 30),  # blocks up to 1 GiB from the heap, reused
            (m_trim_threshold, (1 << 31) - 1),  # never shrink the heap
            (m_top_pad, 64 << 20),  # grow it 64 MiB at a time
        )
    )


def join_parameters(parameters: list[nn.Parameter]) -> nn.Parameter | None:
    """Make the parameters views into one buffer, and their gradients views into another; return
    one parameter over the whole buffer, with that gradient, for the optimizer to step.

    Adam, SGD and the rest work element by element, so one tensor gets the same numbers bit for bit
    as one per layer, at a fraction of the per-tensor overhead (the S0 autoencoder's Adam step was
    1.2 of its 13 ms). Autograd adds each step's gradients into the existing views in place, so
    `.grad.zero_()` on the joined parameter replaces `zero_grad`. Every trainable weight takes part
    in every step in the registered models; one that did not would get a zero gradient and still be
    moved by momentum, where the per-layer optimizer skips it. None where the dtypes or devices
    differ (nothing is changed then).
    """
    if not parameters or len({(p.dtype, p.device) for p in parameters}) > 1:
        return None
    first = parameters[0]
    values = torch.empty(sum(p.numel() for p in parameters), dtype=first.dtype, device=first.device)
    grads = torch.zeros_like(values)
    offset = 0
    for p in parameters:
        dense = p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last)
        stride = p.stride() if dense else torch.empty(p.shape, device="meta").stride()  # no memory
        view = values.as_strided(p.shape, stride, offset)
        view.copy_(p.detach())
        p.data = view  # keeps channels_last strides where the layer has them
        p.grad = grads.as_strided(p.shape, stride, offset)
        offset += p.numel()
    joined = nn.Parameter(values)
    joined.grad = grads
    return joined


def separate_parameters(parameters: list[nn.Parameter]) -> None:
    """Undo join_parameters: each parameter gets its own memory again, and no gradient."""
    for p in parameters:
        p.data = p.data.clone()  # same strides
        p.grad = None
