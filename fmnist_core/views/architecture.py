"""A config's architecture before it trains: its layer table and the time training should take
on this machine."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import pandas as pd

from fmnist_core.analysis.architecture import LayerTable, layer_table
from fmnist_core.analysis.latent import TIMELAPSE_IMAGES
from fmnist_core.analysis.metrics import TTA_VIEWS
from fmnist_core.models import build_skeleton, get_spec, make_settings
from fmnist_core.models.registry import Freezes
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
    if isinstance(model, Freezes) and settings.freeze_encoder:
        model.set_frozen(True)
    return model


# Layer tables by run id: a run id names one model (its encoder's config included), so each is
# built once per process; read-only, as every caller only shows or sums them.
_TABLES: dict[str, LayerTable] = {}


def architecture(config: RunConfig, cache: RunCache) -> LayerTable:
    """The layer table of the model `config` trains (see fmnist_core.analysis.architecture)."""
    if config.run_id not in _TABLES:
        if len(_TABLES) >= 512:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[config.run_id] = layer_table(skeleton(config, cache))
    return _TABLES[config.run_id]


def _work(config: RunConfig, multiply_adds: int) -> float:
    """Multiply-adds of a whole training: forward and backward (about twice the forward) per image."""
    return 3.0 * multiply_adds * config.epochs * (config.train_subset or 60_000)


@functools.lru_cache(maxsize=4096)
def _multiply_adds(run_id: str, root: str) -> int:
    """A cached run's multiply-adds per image: a run id names one config, so it is read once."""
    cache = RunCache(root)
    return architecture(cache.load_config(run_id), cache).multiply_adds


PROBE_STEPS = 4  # training steps timed, after one that warms up (allocations, kernels chosen)
# The test pass that follows them (what a forward costs an image), and the time-lapse's snapshots
# within them: a quarter of the 1,000 a run's snapshot maps (the forward passes over 2,000 test
# images were most of a CNN's probe, ~8 s of a core for a ResNet).
PROBE_TEST_IMAGES = 250


@dataclass(frozen=True)
class StepTiming:
    """A config's speed here, timed by probe_timing: what any length of it costs follows."""

    start: float  # seconds before the first step (building the model, the engine's rewrite)
    step: float  # one training step at the config's batch size
    snapshot: float  # the time-lapse's snapshot of PROBE_TEST_IMAGES images
    per_image: float  # a forward pass, per image (validation, the test)

    def estimate(self, config: RunConfig) -> Estimate:
        """How long `config` (of the timed kind, any length) should train here."""
        images = config.train_subset or 60_000
        steps = -(-images // config.batch_size)
        validation = images // 10 if config.validation == "holdout" else (config.test_subset or 10_000)
        passes = validation * len(TTA_VIEWS[config.validation_tta])
        forward = passes * self.per_image + self.snapshot_seconds(config)
        if config.cartography:
            forward += images * self.per_image
        last_pass = (
            config.validation != "test" or config.validation_tta != config.tta
        )  # a test after training
        test = (
            (config.test_subset or 10_000) * self.per_image * len(TTA_VIEWS[config.tta]) if last_pass else 0.0
        )
        seconds = self.start + config.epochs * (steps * self.step + forward) + test
        return Estimate(seconds, f"{PROBE_STEPS} of its steps timed here just now")

    def snapshot_seconds(self, config: RunConfig) -> float:
        """The snapshot an epoch of `config` takes: its images' forward pass and map grow with them."""
        images = min(TIMELAPSE_IMAGES, config.test_subset or TIMELAPSE_IMAGES)
        return self.snapshot * images / PROBE_TEST_IMAGES


def timed_part(config: RunConfig) -> RunConfig:
    """What a step's speed depends on: the config with its length and seed set aside (moving the
    epochs or images slider timed the model again, 1-2 s of a core each time)."""
    return dataclasses.replace(config, epochs=1, train_subset=0, test_subset=0, seed=0)


def probe_seconds(config: RunConfig, cache: RunCache) -> Estimate | None:
    """How long `config` should train here, timed (probe_timing); None where it cannot train
    here (memory, no encoder)."""
    timing = probe_timing(config, cache)
    return None if timing is None else timing.estimate(config)


_TIMINGS: dict[str, StepTiming | None] = {}


def probe_timing(config: RunConfig, cache: RunCache) -> StepTiming | None:
    """A few of the config's own training steps on real images at its batch size, through the
    same engine and precision, and a forward pass over test images, timed; kept per kind of config
    (timed_part: an encoder run's id names its architecture, so a timing holds in any cache folder
    that holds the encoder). None where it cannot train here (memory, its encoder not in `cache`)."""
    if get_spec(config.model).needs_encoder and _encoder_missing(config, cache):
        return None
    kind = timed_part(config)
    key = kind.to_json()
    if key not in _TIMINGS:
        _TIMINGS[key] = _probe(kind, cache)
    return _TIMINGS[key]


def _encoder_missing(config: RunConfig, cache: RunCache) -> bool:
    try:
        resolve_encoder(config, cache, weights=False)
    except ValueError:
        return True
    return False


def _probe(config: RunConfig, cache: RunCache) -> StepTiming | None:
    import time

    from fmnist_core.runs.trained import train

    # Steps enough that the time-lapse's half-epoch snapshot comes after the timed ones: it is
    # timed on its own (in a 6-step epoch it sat among them and made an MLP's estimate 5x).
    half = PROBE_STEPS + 2
    probe = dataclasses.replace(
        config,
        train_subset=min(60_000, 2 * half * config.batch_size),
        test_subset=PROBE_TEST_IMAGES,
        cartography=False,
    )
    looks: list[float] = []

    def should_stop() -> bool:  # asked once before each step
        looks.append(time.perf_counter())
        return len(looks) > half + 2

    began = time.perf_counter()
    try:
        train(probe, should_stop=should_stop, cache=cache)
    except ValueError:
        return None
    ended = time.perf_counter()
    if len(looks) < half + 3:  # fewer steps than asked for: too few images to time by
        return None
    gaps = [b - a for a, b in zip(looks, looks[1:], strict=False)]
    step = sorted(gaps[1 : PROBE_STEPS + 1])[PROBE_STEPS // 2]  # the median: a busy machine's hiccups aside
    snapshot = max(0.0, max(gaps[PROBE_STEPS + 1 :]) - step)
    return StepTiming(looks[0] - began, step, snapshot, (ended - looks[-1]) / PROBE_TEST_IMAGES)


def expected_seconds(
    config: RunConfig, runs: pd.DataFrame, cache: RunCache, probe: bool = False
) -> Estimate | None:
    """How long `config` should train here: from cached runs of the same model where there are
    some (views.estimate_seconds); else, with `probe`, a few of its own steps timed (probe_seconds:
    seconds of work); else from the multiply-adds per second that the latest runs of other models
    reached on this machine (rough: their fixed costs weigh in); None where nothing was timed."""
    same = estimate_seconds(config, runs)
    if same is not None:
        return same
    if probe:
        return probe_seconds(config, cache)
    if runs.empty or "train_seconds" not in runs:
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
    refusal: str = ""  # why it cannot train here (its memory estimate over the limit), in one line


def plan(config: RunConfig, runs: pd.DataFrame, cache: RunCache, probe: bool = False) -> Architecture:
    """What a page or `summary` shows before training: the layer table, why it would be refused
    here if it would, else the expected time (`probe`: timed on a few steps where no run says)."""
    from fmnist_core.runs.trained import check_resources

    try:
        check_resources(config, cache)
    except ValueError as error:
        return Architecture(
            architecture(config, cache), None, f"refused here: {' '.join(str(error).split())}"
        )
    return Architecture(architecture(config, cache), expected_seconds(config, runs, cache, probe))
