"""What the microscope costs (issue 38's goals): on S1's CNN (the lab's `cnn` at its defaults, the
report's best row), one unit's feature picture, a whole layer's, reading a layer's kept pictures
back, the units that feed a unit (over 1,000 test images) and a layer's NMF dictionary (over
2,000). Goals: one unit <= 2 s, a conv layer <= 60 s then read back in milliseconds, upstream
units <= 1 s.

    .venv/bin/python bench/microscope.py

Weights: S1's CNN trained here for one epoch on 5,000 images into a temporary cache (the costs are
those of a fully trained run)."""

from __future__ import annotations

import tempfile
import time

import torch

from fmnist_core.analysis.dictionary import layer_dictionary
from fmnist_core.analysis.featureviz import visualise
from fmnist_core.analysis.inside import network_layers
from fmnist_core.analysis.upstream import FEEDING_IMAGES, feeding_layer, upstream_shares
from fmnist_core.base.device import cpu_kind
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.views import inside


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:  # what is kept is measured apart from what is found
        cache = RunCache(folder)
        run = get_or_train(RunConfig.for_model("cnn", {}, epochs=1, train_subset=5000), cache=cache)
        measure(run, cache, "S1's CNN, one epoch on 5,000 images")


def measure(run, cache: RunCache, weights: str) -> None:
    test = load_data().test_images
    layers = [layer for layer in network_layers(run.model) if layer.rectified or layer.name == "head"]
    print(f"CPU: {cpu_kind()}, {torch.get_num_threads()} threads; weights: {weights}")
    print(
        f"{'layer':12s} {'units':>5s} {'one unit':>9s} {'whole layer':>12s} {'read back':>10s} {'upstream':>9s} {'NMF (6)':>8s}"
    )
    for layer in layers:
        visualise(run.model, layer.name, [0], steps=8)  # warm: the first pass pays for the kernels
        one, _ = timed(lambda layer=layer: visualise(run.model, layer.name, [0], steps=inside.FEATURE_STEPS))
        whole, _ = timed(lambda layer=layer: inside.layer_pictures(run, cache, layer.name))
        back, _ = timed(lambda layer=layer: inside.kept_layer_pictures(run, cache, layer.name))
        below = feeding_layer(run.model, layer.name)
        feeding = (
            timed(
                lambda layer=layer, below=below: upstream_shares(
                    run.model, layer.name, 0, below, test[:FEEDING_IMAGES]
                )
            )[0]
            if below
            else float("nan")
        )
        nmf = (
            timed(lambda layer=layer: layer_dictionary(run.model, layer.name, test[:2000], 6))[0]
            if layer.rectified and layer.units >= 6
            else float("nan")
        )
        print(
            f"{layer.name:12s} {layer.units:5d} {one:7.2f} s {whole:10.1f} s {back * 1000:7.1f} ms "
            f"{feeding:7.2f} s {nmf:6.1f} s"
        )


if __name__ == "__main__":
    main()
