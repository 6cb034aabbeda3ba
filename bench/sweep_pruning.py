"""What the median pruner saves: a sweep of the MLP over lr and dropout (random sampler, 20 trials,
4 epochs on 6,000 training images), then every pruned trial trained to its end, to compare.

    .venv/bin/python bench/sweep_pruning.py [--trials 20]

Prints the trials' states and the seconds spent with the pruner against without it (the pruned
trials' full runs added). Uses its own cache in a temporary folder."""

from __future__ import annotations

import argparse
import tempfile
import time

from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import hpsearch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cache = RunCache(folder)
        plan = hpsearch.SweepPlan(
            "bench",
            "mlp",
            (hpsearch.parse_param("lr=1e-5..3e-2:log"), hpsearch.parse_param("dropout=0..0.6")),
            args.trials,
            sampler="random",
            pruner="median",
            fixed=(("epochs", 4), ("train_subset", 6000)),
        )
        started = time.perf_counter()
        study = hpsearch.sweep(plan, cache)
        pruned_seconds = time.perf_counter() - started
        table = hpsearch.trials_table(study)
        pruned = table[table["state"] == "PRUNED"]
        started = time.perf_counter()
        for trial in study.trials:  # the pruned trials trained on from where they stopped, to their end
            if trial.state.name == "PRUNED":
                get_or_train(plan.config(trial.params), cache=cache)
        rest_seconds = time.perf_counter() - started
        print(table[["number", "state", "value", "lr", "dropout", "pruned_at_epoch"]].to_string(index=False))
        print(f"\n{len(table)} trials, {len(pruned)} pruned")
        print(f"with the median pruner: {pruned_seconds:7.1f} s")
        print(
            f"without it (estimate): {pruned_seconds + rest_seconds:7.1f} s (pruned trials finished: +{rest_seconds:.1f} s)"
        )


if __name__ == "__main__":
    main()
