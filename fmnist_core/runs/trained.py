"""Runs: a config resolved into a model (its encoder's settings and weights, its PCA start),
trained, or found in the cache. The layer between the registry, the training loop and the cache.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmnist_core import analysis
from fmnist_core.base.device import pick_device
from fmnist_core.base.resources import refuse_over_limit, takes_single_images, training_bytes
from fmnist_core.data.fashion import load_data
from fmnist_core.models import (
    build_skeleton,
    create_model,
    get_spec,
    make_settings,
    start_at_pca,
)
from fmnist_core.store.cache import CorruptRunError, MissingRunError, RunCache
from fmnist_core.store.entries import read_once, verified_stamps
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import Controls, Progress, execution, fit
from fmnist_core.training.splits import RunGenerators, Splits, make_splits

log = logging.getLogger("fmnist_core")


class ForeignRunError(CorruptRunError):
    """A cached run computed with another precision, device or kernels than this machine would use."""


@dataclass
class TrainedRun:
    config: RunConfig
    model: nn.Module
    history: dict
    metrics: dict
    cached: bool  # True: loaded from disk, not trained now
    completed: bool = True  # False: stopped early, and so not cached (its last epoch kept apart)
    note: str = ""  # e.g. that a corrupted entry was replaced
    checkpoint: dict | None = None  # stopped: the state at its last finished epoch, to continue from

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities (N, 10), with the test-time augmentation the run was evaluated with."""
        return analysis.predict_proba(self.model, images, self.config.tta, self.config.loss)


@dataclass(frozen=True)
class Encoder:
    """What an encoder classifier starts from: the autoencoder run's settings and weights."""

    run_id: str
    settings: object  # the autoencoder's settings dataclass (the registry knows its model)
    state: dict[str, torch.Tensor] | None  # None: the architecture only (loading a classifier)


def frozen_sibling(config: RunConfig) -> RunConfig | None:
    """An encoder classifier's twin: the same encoder and head with the encoder frozen where this
    one fine-tunes it, and the other way round; None for a model without an encoder to freeze."""
    if "freeze_encoder" not in config.settings:
        return None
    return config.replace(
        settings={**config.settings, "freeze_encoder": not config.settings["freeze_encoder"]}
    )


def resolve_encoder(config: RunConfig, cache: RunCache, weights: bool = True) -> Encoder | None:
    """The encoder a config builds on (None where it names none); its weights too if `weights`."""
    if not get_spec(config.model).needs_encoder or not config.settings.get("encoder_run"):
        return None
    run_id = config.settings["encoder_run"]
    try:
        encoder_config = cache.load_config(run_id)
        state = cache.load_state(run_id) if weights else None
    except (MissingRunError, CorruptRunError) as error:
        # A damaged or pruned entry's config may still say truly what it was: then train it again.
        encoder_config = cache.recover_config(run_id)
        if encoder_config is None and isinstance(error, MissingRunError):
            raise ValueError(f"encoder_run: no cached run {run_id} in {cache.root}") from None
        if encoder_config is None:
            raise ValueError(f"encoder_run: run {run_id} is damaged beyond retraining ({error})") from None
        log.warning(
            "encoder %s %s: retrained", run_id, "removed" if isinstance(error, MissingRunError) else error
        )
        state = get_or_train(encoder_config, cache=cache).model.state_dict() if weights else None
    if not get_spec(encoder_config.model).reconstructs:
        raise ValueError(f"encoder_run: run {run_id} is a {encoder_config.model}, not an autoencoder")
    settings = make_settings(encoder_config.model, encoder_config.settings)
    return Encoder(run_id, settings, state)


_PCA: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def training_set_pca(config: RunConfig, exclusions_root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image and principal directions of the run's own training images (never its holdout),
    computed once per split per process (an SVD of up to 60,000 x 784: seconds)."""
    key = (
        load_data().fingerprint,
        config.validation,
        config.holdout_fraction,
        config.train_subset,
        config.exclude,
    )
    if key not in _PCA:
        _PCA[key] = analysis.image_pca(make_splits(config, exclusions_root).train_images)
    return _PCA[key]


def initial_model(config: RunConfig, generator: torch.Generator, encoder: Encoder | None = None) -> nn.Module:
    """The model a run of `config` starts from: weights drawn from `generator`, then the encoder's
    weights (encoder classifiers) or PCA of the run's training images (the PCA path)."""
    model = create_model(
        config.model, encoder=encoder.settings if encoder else None, generator=generator, **config.settings
    )
    if encoder is not None and encoder.state is not None:
        prefix = "encoder."
        model.encoder.load_state_dict(
            {key[len(prefix) :]: value for key, value in encoder.state.items() if key.startswith(prefix)}
        )
    if config.settings.get("pca_path"):
        start_at_pca(model, *training_set_pca(config))
    return model


def untrained_model(config: RunConfig, cache: RunCache | None = None) -> nn.Module:
    """The model exactly as a run of `config` starts training (eval mode)."""
    encoder = resolve_encoder(config, cache or RunCache())
    return initial_model(config, RunGenerators.from_seed(config.seed).weights, encoder).eval()


def on_loaded_data(config: RunConfig) -> RunConfig:
    """`config` naming the data this process loads: the original files, or (FMNIST_OTHER_DATA=1)
    another data set's fingerprint, so that its run id never names runs on two data sets."""
    fingerprint = load_data().fingerprint
    return config if config.data == fingerprint else config.replace(data=fingerprint)


def training_indices(config: RunConfig, cache: RunCache | None = None) -> np.ndarray:
    """The training images (indices among the 60,000) a run of `config` trains on, in its order."""
    return make_splits(config, (cache or RunCache()).root).train_index.numpy()


def check_resources(config: RunConfig, cache: RunCache | None = None, device=None) -> int:
    """Refuse, before any work, a run that cannot train here: its estimated peak memory over the
    lab's limit (ValueError naming batch_size, with the estimate). Returns the estimate in bytes;
    0 for a classifier whose encoder is not cached yet (queued before it: checked when it trains)."""
    cache = cache or RunCache()
    encoder_run = config.settings.get("encoder_run")
    if encoder_run and not cache.exists(encoder_run) and cache.recover_config(encoder_run) is None:
        return 0
    images = config.train_subset or 60_000
    skeleton = _meta_model(config, cache)
    if (config.batch_size == 1 or images == 1) and not takes_single_images(skeleton):
        raise ValueError(
            "batch_size: a batch of 1 image cannot train this model: its batch norm needs at least "
            "2 values per channel (after a dense layer, or on a 1x1 map); use batches of 2 or more"
        )
    needed = training_bytes(skeleton, config.batch_size, config.optimizer, images)
    return refuse_over_limit(needed, config.batch_size, pick_device(device))


# check_resources' model on the meta device, built once per config in this process (a run id
# names one model, its encoder's included); never handed out.
_META_MODELS: dict[str, nn.Module] = {}


def _meta_model(config: RunConfig, cache: RunCache) -> nn.Module:
    if config.run_id not in _META_MODELS:
        if len(_META_MODELS) >= 64:
            _META_MODELS.pop(next(iter(_META_MODELS)))
        encoder = resolve_encoder(config, cache, weights=False)
        settings = make_settings(config.model, config.settings)
        _META_MODELS[config.run_id] = build_skeleton(config.model, settings, encoder and encoder.settings)
    return _META_MODELS[config.run_id]


def train(
    config: RunConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    cache: RunCache | None = None,
    resume: dict | None = None,
) -> TrainedRun:
    """Train a run as `config` says (its encoder read from `cache`), from scratch or from a stopped
    run's checkpoint (`resume`); never prints, caches nothing (`get_or_train` does)."""
    device = pick_device(device)
    config = on_loaded_data(config)
    check_resources(config, cache, device)
    encoder = resolve_encoder(config, cache or RunCache())
    generators = RunGenerators.from_seed(config.seed, device)
    splits: Splits = make_splits(config, (cache or RunCache()).root)
    model = initial_model(config, generators.weights, encoder)
    result = fit(config, model, splits, generators, Controls(on_progress, should_stop, resume), device)
    run = TrainedRun(config, result.model, result.history, result.metrics, False, result.completed)
    run.checkpoint = result.checkpoint
    return run


def load_run(
    run_id: str, cache: RunCache | None = None, device: torch.device | str | None = None
) -> TrainedRun:
    """A verified cached run with its model rebuilt and its weights loaded (eval mode): loaded once
    per change of its files in this process for the latest few runs, so a finished job's run is
    the one its page shows next. Shared: read it, do not train or edit it (TrainedRun copies with
    dataclasses.replace where a caller sets its own flags)."""
    cache = cache or RunCache()
    folder, where = cache.folder(run_id), str(pick_device(device))
    verified = verified_stamps(folder, run_id)
    return read_once(folder, f"run on {where}", verified, lambda: _load_run(run_id, cache, device))


def _load_run(run_id: str, cache: RunCache, device: torch.device | str | None) -> TrainedRun:
    config = cache.load_config(run_id)
    history, metrics = cache.load_record(run_id)
    model = model_with_weights(config, cache.load_state(run_id), cache, device)
    return TrainedRun(config, model, history, metrics, cached=True)


def model_skeleton(config: RunConfig, cache: RunCache, encoder: RunConfig | None = None) -> nn.Module:
    """`config`'s model, untrained (its tensors' names, shapes and dtypes); CorruptRunError where
    its encoder cannot be used. `encoder`: as model_with_weights takes it."""
    try:
        if encoder is not None:
            encoder_settings = make_settings(encoder.model, encoder.settings)
        else:
            resolved = resolve_encoder(config, cache, weights=False)
            encoder_settings = resolved.settings if resolved else None
    except ValueError as error:
        raise CorruptRunError(f"run {config.run_id}: its encoder cannot be used ({error})") from None
    return build_skeleton(config.model, make_settings(config.model, config.settings), encoder_settings)


def model_with_weights(
    config: RunConfig,
    state: dict[str, torch.Tensor],
    cache: RunCache,
    device: torch.device | str | None = None,
    encoder: RunConfig | None = None,
) -> nn.Module:
    """`config`'s model holding `state` (eval mode); CorruptRunError, in one line, where a tensor
    is missing, extra, or of another shape or dtype (load_state_dict would cast a dtype silently).
    `encoder`: the config of the autoencoder it builds on, where that is not cached (yet)."""
    skeleton = model_skeleton(config, cache, encoder)
    expected = skeleton.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        which = f"{missing[0]} is missing" if missing else f"{extra[0]} is not part of the model"
        raise CorruptRunError(f"run {config.run_id}: the weights do not fit a {config.model}: {which}")
    for name, tensor in expected.items():
        if state[name].dtype != tensor.dtype or state[name].shape != tensor.shape:
            raise CorruptRunError(
                f"run {config.run_id}: the weights do not fit a {config.model}: {name} is "
                f"{state[name].dtype} {tuple(state[name].shape)}, the model's is {tensor.dtype} "
                f"{tuple(tensor.shape)}"
            )
    # Uninitialised memory, not drawn weights: the strict load below fills every tensor.
    model = skeleton.to_empty(device="cpu")
    model.load_state_dict(state)
    return model.to(pick_device(device)).eval()


def _served(config: RunConfig, cache: RunCache, device: torch.device) -> TrainedRun:
    """The cached run of `config`, if it computed what a run here would (else ForeignRunError)."""
    encoder_run = config.settings.get("encoder_run")
    if encoder_run and cache.folder(config.run_id).is_dir() and not cache.usable(encoder_run):
        raise CorruptRunError(f"run {config.run_id}: its encoder {encoder_run} is gone or damaged")
    run = load_run(config.run_id, cache, device)
    expected = execution(config, device)
    if run.metrics.get("execution") != expected:
        raise ForeignRunError(
            f"run {config.run_id} was trained with {run.metrics.get('execution')}, here it would be {expected}"
        )
    return run


def get_or_train(
    config: RunConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    cache: RunCache | None = None,
) -> TrainedRun:
    """Load the run from the cache, or train it once (other processes wait and load)."""
    cache = cache or RunCache()
    device = pick_device(device)
    config = on_loaded_data(config)
    note = ""
    try:
        return _served(config, cache, device)
    except MissingRunError:
        pass
    except CorruptRunError as error:
        note = f"{error}; retrained"
        log.warning("cache entry not served: %s", error)
    with cache.lock_if_writable(config.run_id):
        try:
            return _served(config, cache, device)  # trained by another process while we waited
        except MissingRunError:
            pass
        except CorruptRunError as error:
            note = f"{error}; retrained"
        resume = _stopped_run(config, cache, device)
        try:
            run = train(config, on_progress, should_stop, device, cache, resume)
        except CorruptRunError as error:  # only a checkpoint that does not load raises it here
            log.warning("%s: the run starts afresh", error)
            cache.stopped.discard(config.run_id)
            resume = None
            run = train(config, on_progress, should_stop, device, cache)
        if run.completed:
            note = "; ".join(filter(None, [note, _save(cache, run)]))
            cache.stopped.discard(config.run_id)
        elif run.checkpoint is not None:  # kept to continue from: a Train of this config goes on
            note = "; ".join(filter(None, [note, _keep_stopped(cache, run)]))
    if resume is not None:
        note = "; ".join(filter(None, [f"continued from epoch {resume['epoch']}", note]))
    run.note = note
    return run


def _stopped_run(config: RunConfig, cache: RunCache, device: torch.device) -> dict | None:
    """The checkpoint of `config`'s stopped run, where one was kept and computes as a run here would."""
    try:
        checkpoint = cache.stopped.load(config.run_id)
    except CorruptRunError as error:
        log.warning("%s: the run starts afresh", error)
        cache.stopped.discard(config.run_id)
        return None
    if checkpoint is None:
        return None
    if checkpoint.get("execution") != execution(config, device):
        log.warning("stopped run %s was trained with other settings of this machine: afresh", config.run_id)
        return None
    problem = checkpoint_problem(config, checkpoint)
    if problem:
        log.warning("stopped run %s: %s; the run starts afresh", config.run_id, problem)
        cache.stopped.discard(config.run_id)
        return None
    return checkpoint


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "data_generator", "dropout_generator", "history")


def checkpoint_problem(config: RunConfig, checkpoint: dict) -> str:
    """What makes a stopped run's checkpoint unusable for `config` ("" when nothing does)."""
    epoch = checkpoint.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch < config.epochs:
        return f"its checkpoint says epoch {str(epoch)[:20]} of {config.epochs}"
    missing = [key for key in CHECKPOINT_KEYS + (("average",) if config.ema else ()) if key not in checkpoint]
    if missing:
        return f"its checkpoint has no {missing[0]}"
    history = checkpoint["history"]
    if not isinstance(history, dict) or any(
        not isinstance(values, list) or len(values) != epoch for values in history.values()
    ):
        return f"its checkpoint's history is not {epoch} epochs long"
    return ""


def _keep_stopped(cache: RunCache, run: TrainedRun) -> str:
    """Save a stopped run's last finished epoch; a failure to write says why and loses nothing else."""
    epochs = run.checkpoint["epoch"]
    history = {key: values[:epochs] for key, values in run.history.items()}
    summary = {"epochs_done": epochs, "epochs": run.config.epochs, "history": history}
    try:
        cache.stopped.save(run.run_id, run.checkpoint, summary)
    except OSError as error:
        return f"stopped; its {epochs} finished epoch(s) could not be kept ({type(error).__name__}: {error})"
    return f"stopped after {epochs} of {run.config.epochs} epochs, kept: training this run again continues it"


def _save(cache: RunCache, run: TrainedRun) -> str:
    """Save a finished run, trying twice; a save that fails leaves the run in memory and says why."""
    for attempt in (1, 2):
        try:
            cache.save(run.config, run.model, run.history, run.metrics)
            return ""
        except OSError as error:
            failure = f"not saved to {cache.folder(run.run_id)} ({type(error).__name__}: {error})"
            log.warning("save %d of run %s failed: %s", attempt, run.run_id, failure)
    return f"trained, but {failure}"


def summarise(run: TrainedRun, cache_root: str) -> dict:
    """What a job's process sends back: the run's record, and its weights where the cache lacks them."""
    saved = run.completed and RunCache(cache_root).exists(run.run_id)
    state = None
    if not saved:  # as bytes: torch's own tensor pickling shares memory that dies with this process
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in run.model.state_dict().items()}, buffer)
        state = buffer.getvalue()
    return {
        "config": run.config.to_dict(),
        "state": state,
        "history": run.history,
        "metrics": run.metrics,
        "cached": run.cached,
        "completed": run.completed,
        "note": run.note,
    }
