"""What looking inside costs: for each model at its defaults, the one pass over the 10,000 test
images that finds every unit's top images and dead units (done once per run, then read from
disk), one image through every layer, and one unit's driving boxes (each click on the page).

    .venv/bin/python bench/inside_cost.py

Weights are untrained: the cost is the same as a trained run's."""

from __future__ import annotations

import time

import torch

from fmnist_core.analysis.inside import driving_boxes, layer_outputs, network_layers, unit_activity
from fmnist_core.data.fashion import load_data
from fmnist_core.models import create_model, list_models


def measure(name: str, test: torch.Tensor) -> tuple[int, int, float, float, float]:
    """(layers, units, seconds of the test-set pass, of one image, of one unit's boxes)."""
    model = create_model(name, generator=torch.Generator().manual_seed(0)).eval()
    layers = network_layers(model)
    first = next(layer for layer in layers if layer.rectified)
    started = time.perf_counter()
    activity = unit_activity(model, test)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(5):
        layer_outputs(model, test[:1])
    image = (time.perf_counter() - started) / 5
    top, where = activity.top_index[first.name][:, 0], activity.top_where[first.name][:, 0]
    width = first.shape[-1] if len(first.shape) == 3 else 1
    started = time.perf_counter()
    for _ in range(3):
        driving_boxes(model, first.name, test[top], 0, where, width)
    unit = (time.perf_counter() - started) / 3
    return len(layers), sum(layer.units for layer in layers), whole, image, unit


def main() -> None:
    test = load_data().test_images
    print(
        f"{'model':20s} {'layers':>6s} {'units':>6s} {'test-set pass':>14s} {'one image':>10s} {'one unit':>9s}"
    )
    for name in list_models():
        layers, units, whole, image, unit = measure(name, test)
        print(
            f"{name:20s} {layers:6d} {units:6d} {whole:12.1f} s {image * 1000:7.1f} ms {unit * 1000:6.1f} ms"
        )


if __name__ == "__main__":
    main()
