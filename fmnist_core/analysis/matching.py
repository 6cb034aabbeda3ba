"""The same unit across runs (the Circuits thread's universality): for each unit of a layer of one
network, the unit of a layer of another whose activations over the same images correlate with
its own the most. Two seeds of one architecture, a frozen and a fine-tuned encoder, or a run and
its copy with its channels shuffled: a unit with a partner near 1 computes the same feature."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from fmnist_core.analysis.inside import layer_output, network_layers

BATCH = 500


@torch.no_grad()
def unit_values(model: nn.Module, layer: str, images: torch.Tensor) -> np.ndarray:
    """(N, units): each unit of `layer` on each image, a channel as its mean over its map (eval mode)."""
    names = [found.name for found in network_layers(model)]
    if layer not in names:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(names)}")
    model = copy.deepcopy(model).eval()  # its own hooks: a server's pages share loaded runs between threads
    parts = [layer_output(model, layer, images[i : i + BATCH]).float() for i in range(0, len(images), BATCH)]
    values = torch.cat(parts)
    return (values.flatten(2).mean(2) if values.dim() > 2 else values).numpy()


def correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson correlations (units of first, units of second) over the rows (images); NaN for a unit
    that does not vary (a dead unit has no partner)."""
    if len(first) != len(second):
        raise ValueError("images: both networks must see the same images")
    centred_a, centred_b = first - first.mean(0), second - second.mean(0)
    spread_a, spread_b = np.linalg.norm(centred_a, axis=0), np.linalg.norm(centred_b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred_a.T @ centred_b) / np.outer(spread_a, spread_b)


def match_units(
    model_a: nn.Module, layer_a: str, model_b: nn.Module, layer_b: str, images: torch.Tensor
) -> pd.DataFrame:
    """Per unit of `layer_a`: its best partner among the units of `layer_b` (by correlation over
    `images`), that correlation, and the runner-up's (how clear the match is). A unit that does
    not vary on these images has no partner (NaN)."""
    table = correlations(unit_values(model_a, layer_a, images), unit_values(model_b, layer_b, images))
    rows = []
    for unit, row in enumerate(table):
        if np.isnan(row).all():
            rows.append({"unit": unit, "match": None, "correlation": np.nan, "runner_up": np.nan})
            continue
        order = np.argsort(np.nan_to_num(row, nan=-np.inf))[::-1]
        rows.append(
            {
                "unit": unit,
                "match": int(order[0]),
                "correlation": float(row[order[0]]),
                "runner_up": float(row[order[1]])
                if len(order) > 1 and not np.isnan(row[order[1]])
                else np.nan,
            }
        )
    return pd.DataFrame(rows)
