"""A model's layer table before it trains: each layer's output shape, parameters and
multiply-adds for one image, read by torchinfo from a skeleton on the meta device (no weights
allocated, no arithmetic done)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import nn

from fmnist_core.models.registry import IMAGE_SHAPE


@dataclass(frozen=True)
class LayerTable:
    layers: pd.DataFrame  # one row per leaf layer, in the order the forward pass runs them
    parameters: int
    trainable_parameters: int  # a frozen encoder's weights are not trained
    multiply_adds: int  # per image, forward pass

    def as_text(self) -> str:
        """The table as the command line prints it, totals last."""
        shown = self.layers.assign(
            parameters=self.layers["parameters"].map("{:,}".format),
            multiply_adds=self.layers["multiply_adds"].map("{:,}".format),
        )
        totals = (
            f"total: {self.parameters:,} parameters ({self.trainable_parameters:,} trained), "
            f"{self.multiply_adds:,} multiply-adds per image"
        )
        return f"{shown.to_string(index=False)}\n{totals}"


def layer_table(model: nn.Module) -> LayerTable:
    """Every leaf layer of `model` (best built on the meta device) with its output shape for one
    image, its parameters and multiply-adds; the totals are torchinfo's own sums over the leaves."""
    from torchinfo import summary

    device = next((p.device for p in model.parameters()), None)
    statistics = summary(
        model.eval(), input_size=(1, *IMAGE_SHAPE), device=device, verbose=0, depth=64, col_names=()
    )
    names = {id(module): name for name, module in model.named_modules()}
    rows = [
        {
            "layer": names.get(id(info.module), info.var_name),
            "type": info.class_name,
            "output": " x ".join(str(size) for size in info.output_size[1:]),
            "parameters": info.num_params if info.is_leaf_layer else 0,
            "multiply_adds": info.macs if info.is_leaf_layer else 0,
        }
        for info in statistics.summary_list
        if info.is_leaf_layer and info.depth > 0
    ]
    return LayerTable(
        pd.DataFrame(rows, columns=["layer", "type", "output", "parameters", "multiply_adds"]),
        int(statistics.total_params),
        int(statistics.trainable_params),
        int(statistics.total_mult_adds),
    )
