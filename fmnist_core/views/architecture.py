"""A config's architecture before it trains: its layer table and the time training should take
on this machine."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pandas as pd

from fmnist_core.analysis.architecture import LayerTable, layer_table
from fmnist_core.models import build_skeleton, make_settings
from fmnist_core.runs.trained import resolve_encoder
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.views.explore import Estimate, estimate_seconds

TIMED_RUNS = 12  # the most recent runs of other models whose speed a new model's estimate reads


def skeleton(config: RunConfig, cache: RunCache):
    """The config's model on the meta device; ValueError where its encoder run is not cached."""
    encoder = resolve_encoder(config, cache, weights=False)
    settings = make_settings(config.model, config.settings)
    model = build_skeleton(config.model, settings, encoder and encoder.settings)
    if getattr(model, "set_frozen", None) and settings.freeze_encoder:
        model.set_frozen(True)
    return model


def architecture(config: RunConfig, cache: RunCache) -> LayerTable:
    """The layer table of the model `config` trains (see fmnist_core.analysis.architecture)."""
    return layer_table(skeleton(config, cache))


def _work(config: RunConfig, multiply_adds: int) -> float:
    """Multiply-adds of a whole training: forward and backward (about twice the forward) per image."""
    return 3.0 * multiply_adds * config.epochs * (config.train_subset or 60_000)


@functools.lru_cache(maxsize=4096)
def _multiply_adds(run_id: str, root: str) -> int:
    """A cached run's multiply-adds per image: a run id names one config, so it is read once."""
    cache = RunCache(root)
    return architecture(cache.load_config(run_id), cache).multiply_adds


def expected_seconds(config: RunConfig, runs: pd.DataFrame, cache: RunCache) -> Estimate | None:
    """How long `config` should train here: from cached runs of the same model where there are
    some (views.estimate_seconds), else from the multiply-adds per second that the latest runs of
    other models reached on this machine; None where no run has been timed."""
    same = estimate_seconds(config, runs)
    if same is not None or runs.empty or "train_seconds" not in runs:
        return same
    timed = runs[runs["train_seconds"].notna() & (runs.get("epochs_done", runs["epochs"]) > 0)]
    rates = []
    for row in timed.tail(TIMED_RUNS).itertuples():
        try:
            done = cache.load_config(row.run_id)
            work = _work(done, _multiply_adds(row.run_id, str(cache.root)))
        except (ValueError, OSError):
            continue
        epochs_done = getattr(row, "epochs_done", done.epochs) or done.epochs
        rates.append(row.train_seconds / (work * epochs_done / done.epochs))
    if not rates:
        return None
    rate = sorted(rates)[len(rates) // 2]
    try:
        wanted = _work(config, architecture(config, cache).multiply_adds)
    except ValueError:  # its encoder run is not cached: nothing to count yet
        return None
    count = len(rates)
    return Estimate(
        rate * wanted,
        f"the multiply-adds per second of {count} run{'s' if count > 1 else ''} of other models here",
    )


@dataclass(frozen=True)
class Architecture:
    table: LayerTable
    estimate: Estimate | None


def plan(config: RunConfig, runs: pd.DataFrame, cache: RunCache) -> Architecture:
    """What a page shows before training: the layer table and the expected time."""
    return Architecture(architecture(config, cache), expected_seconds(config, runs, cache))
