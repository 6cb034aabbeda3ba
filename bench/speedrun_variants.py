"""Variants of the speedrun's top rung (every trick on), trained side by side on this machine:
another layout of the network or another length, each a cached run of the lab (its id follows from
its config), its test accuracy and its wall seconds printed in one table. For issue 36's search for
0.95 in a third of long_cnn's time.

    .venv/bin/python bench/speedrun_variants.py base pool e14 [--seed 0] [--cache DIR]

A variant already in the cache costs nothing (its seconds are those of the run that trained it):
time on a fresh --cache, with the machine otherwise quiet."""

from __future__ import annotations

import argparse
import time

from fmnist_core.base.device import cpu_kind
from fmnist_core.runs.recipes import SPEEDRUN_BASE, SPEEDRUN_LAYERS, SPEEDRUN_TRICKS
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig


def pooled_first(widths: tuple[int, int, int]) -> tuple[str, ...]:
    """The whitened first conv, then a pool at once: every later conv at 14x14 or less, wider."""
    a, b, c = widths
    return (
        "conv:18:3:same:relu",
        "maxpool:2",
        "bn",
        *(f"conv:{a}:3:same:relu", "bn", f"conv:{a}:3:same:relu", "maxpool:2", "bn"),
        *(f"conv:{b}:3:same:relu", "bn", f"conv:{b}:3:same:relu", "maxpool:2", "bn"),
        *(f"conv:{c}:3:same:relu", "bn"),
    )


VARIANTS = {  # name: (layers, run settings over the top rung's), what it tries
    "base": (SPEEDRUN_LAYERS, {}, "the top rung as the ladder trains it (10 epochs)"),
    "e14": (SPEEDRUN_LAYERS, {"epochs": 14}, "the top rung, 14 epochs"),
    "e20": (SPEEDRUN_LAYERS, {"epochs": 20}, "the top rung, 20 epochs"),
    "b256": (SPEEDRUN_LAYERS, {"batch_size": 256}, "the top rung in batches of 256"),
    "pool": (pooled_first((64, 128, 256)), {}, "pool after the whitened conv, then 64/128/256"),
    "poolnarrow": (pooled_first((48, 96, 192)), {}, "pool after the whitened conv, then 48/96/192"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="the run store to train into (default: the lab's)")
    args = parser.parse_args()
    cache = RunCache(args.cache) if args.cache else RunCache()
    print(f"CPU: {cpu_kind()}; seed {args.seed}; cache {cache.root}")
    print(f"{'variant':<12} {'run id':<17} {'test acc':>8} {'train s':>8} {'wall s':>7}  what")
    for name in args.variants:
        layers, extra, what = VARIANTS[name]
        config = RunConfig.for_model(
            "cnn", {"layers": layers}, seed=args.seed, **{**SPEEDRUN_BASE, **SPEEDRUN_TRICKS, **extra}
        )
        started = time.perf_counter()
        run = get_or_train(config, cache=cache)
        wall = time.perf_counter() - started
        metrics = run.metrics
        print(
            f"{name:<12} {config.run_id:<17} {metrics['test_accuracy']:>8.4f} "
            f"{metrics['train_seconds']:>8.0f} {wall:>7.0f}  {what}",
            flush=True,
        )


if __name__ == "__main__":
    main()
