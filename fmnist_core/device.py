"""The one place that decides where tensors live."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

import torch


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else the CPU; `$FMNIST_DEVICE` or `name` overrides."""
    if isinstance(name, torch.device):
        return name
    name = name or os.environ.get("FMNIST_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device | None = None) -> str:
    device = device or pick_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


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


@functools.cache
def fast_precision(device_type: str | None = None) -> str:
    """The precision that trains conv nets fastest here: bf16 where bfloat16 matrix work runs
    natively (a CUDA GPU that has it, a CPU with AVX-512 BF16 or AMX), else fp32, since emulated
    bf16 is slower than fp32."""
    device_type = device_type or pick_device().type
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "fp32"
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "fp32"
