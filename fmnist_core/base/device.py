"""The one place that decides where tensors live and in which precision a run trains."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from fmnist_core.base import environment

PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the hardware does it natively, else fp32


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else the CPU; `$FMNIST_DEVICE` or `name` overrides."""
    if isinstance(name, torch.device):
        return name
    name = name or environment.device_name()
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_threads(count: int) -> None:
    """A process's compute at `count` threads: torch's (numba's kernels follow it) and the BLAS and
    OpenMP pools numpy and scikit-learn reach (a latent map's SVD, a kNN), which otherwise take
    every core: a job given one core ran its maps on two, against its neighbour."""
    from threadpoolctl import threadpool_limits

    count = max(1, int(count))
    torch.set_num_threads(count)
    threadpool_limits(limits=count)


def describe_device(device: torch.device | None = None) -> str:
    device = device or pick_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def native_bf16(device_type: str) -> bool:
    """Whether bfloat16 matrix work runs natively here: a CUDA GPU that has it, a CPU with AVX-512
    BF16 or AMX (emulated bf16 is slower than fp32). `$FMNIST_BF16=0` or `=1` says so instead, to
    see the lab as another machine would. Asked when a run trains, never at import."""
    override = environment.optional_flag("FMNIST_BF16")
    if override is not None:
        return override
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has_bf16()


@functools.cache
def cpu_kind() -> str:
    """The CPU's model and its widest matrix path, for reports: "AMD EPYC 9R14 (AVX-512 bf16)"."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    flags = set(text.split())
    if "amx_bf16" in flags:
        path = "AMX"
    elif "avx512_bf16" in flags:
        path = "AVX-512 bf16"
    elif "avx512f" in flags:
        path = "AVX-512"
    elif "avx2" in flags:
        path = "AVX2"
    else:
        path = "no AVX2"
    return f"{names[0] if names else 'unknown CPU'} ({path}), {os.cpu_count()} cores"


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_precision(precision: str, device_type: str) -> str:
    """fp32 or bf16: what a run asking for `precision` trains in on this device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return precision
