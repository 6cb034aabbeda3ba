"""The one place that decides where tensors live."""

from __future__ import annotations

import os

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
