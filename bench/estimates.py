"""Expected training time before a first run of each model here (views.architecture.probe_seconds:
a few of its own steps timed) against the time it then took, on an otherwise empty cache.

    .venv/bin/python bench/estimates.py [--quick]

--quick: the VAE, ResNet and MLP at small scales only (about 3 minutes on 2 cores); without it the
starter set as it trains on a first start too (about 10 minutes more)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from fmnist_core.runs.recipes import get_recipe
from fmnist_core.runs.starter import starter_set
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.views.architecture import probe_seconds


def quick_configs() -> list[tuple[str, RunConfig]]:
    return [
        ("VAE, 3 epochs on 5,000", RunConfig.for_model("vae", epochs=3, train_subset=5000)),
        ("MLP, 5 epochs", RunConfig.for_model("mlp", epochs=5)),
        ("ResNet, 1 epoch on 10,000", RunConfig.for_model("resnet", epochs=1, train_subset=10_000)),
        ("fast CNN recipe, 1 epoch on 10,000", get_recipe("fast_cnn").config(epochs=1, train_subset=10_000)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configs = quick_configs()
    if not args.quick:
        configs += [(f"starter: {s.name}", s.config) for s in starter_set()]
    with tempfile.TemporaryDirectory() as folder:
        os.environ["FMNIST_CACHE"] = folder
        cache = RunCache(folder)
        print(f"{'run':44s} {'expected':>9s} {'took':>8s} {'ratio':>6s}  (probe's own cost)")
        for name, config in configs:
            began = time.perf_counter()
            estimate = probe_seconds(config, cache)
            cost = time.perf_counter() - began
            began = time.perf_counter()
            get_or_train(config, cache=cache)
            took = time.perf_counter() - began
            expected = estimate.seconds if estimate else float("nan")
            print(
                f"{name:44s} {expected:8.1f}s {took:7.1f}s {expected / took:6.2f}  ({cost:.1f} s)", flush=True
            )


if __name__ == "__main__":
    main()
