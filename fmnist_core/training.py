"""The training loop: preloaded tensors, index batches, progress callbacks, a cooperative stop.

`fit` trains a model that fmnist_core.runs has built; every random draw of the run comes from
its own generators (`RunGenerators`), never from torch's global one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import analysis, engine, suspects
from .analysis import classification_loss, test_metrics
from .cache import CorruptRunError, default_root
from .config import RunConfig
from .data import load_data
from .device import describe_device, pick_device, resolve_precision
from .resources import takes_single_images

PROGRESS_INTERVAL = 0.25  # seconds between progress callbacks within an epoch
SHIFT = 2  # pixels, for augment="flip_shift"
SPLIT_SEED = 20_240_501  # fixed, so every run of any seed sees the same holdout and subset


@dataclass(frozen=True)
class Progress:
    """One progress report: where training is and what it has measured so far."""

    epoch: int  # 1-based epoch in progress (or just finished, when epoch_done)
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    train_loss: float  # running mean over this epoch's steps
    seconds: float  # since training started
    epoch_done: bool = False
    metrics: dict = field(default_factory=dict)  # the finished epoch's metrics, when epoch_done

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) + self.step / max(self.steps, 1)) / self.epochs

    @property
    def eta_seconds(self) -> float:
        done = self.fraction
        return self.seconds * (1 - done) / done if done > 0 else float("nan")

    @property
    def eta_words(self) -> str:
        """The ETA to show: before a tenth has run, start-up and the first steps dominate (an
        estimate then was 2-10x off), so none is given."""
        return f"ETA {self.eta_seconds:.0f} s" if self.fraction >= 0.1 else "timing it..."


@dataclass
class TrainResult:
    model: nn.Module
    history: dict  # per-epoch lists: epoch, train_loss, val_loss, (train_/val_accuracy), seconds
    metrics: dict  # final test metrics and run facts
    completed: bool  # False when stopped early
    checkpoint: dict | None = None  # stopped: the state at the last finished epoch (None: none finished)


@dataclass(frozen=True)
class Splits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    validation_note: str
    train_index: torch.Tensor | None = None  # the training images' indices among the 60,000


def make_splits(config: RunConfig, exclusions_root: str | os.PathLike | None = None) -> Splits:
    """Train / validation / test tensors as the config asks (holdout, left-out images, subset);
    a config's `exclude` list is read from `exclusions_root` (default: the cache's folder)."""
    data = load_data()
    images, labels = data.train_images, data.train_labels
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(images), generator=generator)
    if config.validation == "holdout":
        held = int(round(len(images) * config.holdout_fraction))
        val_index, train_index = order[:held], order[held:]
        val_images, val_labels = images[val_index], labels[val_index]
        note = f"holdout: {held} training images kept out of training"
    else:
        train_index = order
        val_images, val_labels = data.test_images, data.test_labels
        note = "test set (the seed reports' practice)"
    if config.exclude:
        left_out = suspects.load_exclusion(exclusions_root or default_root(), config.exclude)
        kept = ~torch.isin(train_index, torch.from_numpy(left_out))
        note += f"; {int((~kept).sum())} flagged training images left out"
        train_index = train_index[kept]
        if len(train_index) < config.batch_size:
            raise ValueError(
                f"exclude: the list {config.exclude} leaves {len(train_index)} training images, "
                f"fewer than one batch of {config.batch_size}"
            )
    if config.train_subset:
        train_index = train_index[: config.train_subset]
    train_index = train_index.sort().values
    test_images, test_labels = data.test_images, data.test_labels
    if config.test_subset:
        test_index = torch.randperm(len(test_images), generator=generator)[: config.test_subset].sort().values
        test_images, test_labels = test_images[test_index], test_labels[test_index]
        note += f"; test on a fixed subset of {config.test_subset} images"
        if config.validation == "test":
            val_images, val_labels = test_images, test_labels
    return Splits(
        images[train_index],
        labels[train_index],
        val_images,
        val_labels,
        test_images,
        test_labels,
        note,
        train_index,
    )


def random_shift(images: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by its own whole number of pixels (-most..most) each way; zeros come in."""
    count, _, height, width = images.shape
    padded = F.pad(images, (most, most, most, most))
    offsets = torch.randint(0, 2 * most + 1, (2, count), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # (N, W)
    batch = torch.arange(count, device=images.device)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def make_optimizer(config: RunConfig, parameters) -> torch.optim.Optimizer:
    kwargs = dict(lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, momentum=config.momentum, **kwargs)
    optimizers = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adamax": torch.optim.Adamax,
    }
    return optimizers[config.optimizer](parameters, **kwargs)


@dataclass(frozen=True)
class RunGenerators:
    """A run's own random streams, all from its seed: the initial weights, the data's order and
    augmentation, the dropout masks (on the training device)."""

    weights: torch.Generator
    data: torch.Generator
    dropout: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> RunGenerators:
        # Independent streams: three generators seeded alike would draw the same numbers.
        weights, data, dropout = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))
        return cls(
            torch.Generator().manual_seed(weights),
            torch.Generator().manual_seed(data),
            torch.Generator(device=torch.device(device)).manual_seed(dropout),
        )


def execution(config: RunConfig, device: torch.device) -> dict[str, str]:
    """What a run of `config` computes with on `device`: what changes its numbers beyond the
    config. Recorded in every run's metrics; a cached run is served only where this matches."""
    kernels = "compiled" if device.type == "cpu" and engine.compiled_kernels_available() else "torch"
    return {
        "device": device.type,
        "precision": resolve_precision(config.precision, device.type),
        "kernels": kernels,
        "data": load_data().fingerprint,  # a run on other files is never served for the real ones
    }


def fit(
    config: RunConfig,
    model: nn.Module,
    splits: Splits,
    generators: RunGenerators,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    resume: dict | None = None,
) -> TrainResult:
    """Train `model` (freshly built for `config` by fmnist_core.runs) on `splits`; never prints.
    `resume`: a stopped run's checkpoint (make_checkpoint) to go on from, to the same result.

    The engine's view of the model (fmnist_core.engine.accelerate) trains; the model as written
    is what validation, the test and the caller see.
    """
    device = pick_device(device)
    ran = execution(config, device)
    if device.type == "cpu":
        engine.keep_freed_memory()
    # channels_last measured 6-25% faster for these conv nets on the CPU; no effect on the maths.
    model = model.to(device).to(memory_format=torch.channels_last)
    if resume is not None:
        with unusable_checkpoint(config):
            model.load_state_dict(resume["model"])
            generators.data.set_state(resume["data_generator"])
            generators.dropout.set_state(resume["dropout_generator"])
    view = engine.accelerate(model, device, generators.dropout)
    is_autoencoder = config.kind == "autoencoder"
    bf16 = ran["precision"] == "bf16"
    train_images = splits.train_images.to(device)
    train_labels = splits.train_labels.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    joined = engine.join_parameters(trainable)
    optimizer = make_optimizer(config, trainable if joined is None else [joined])
    steps = (len(train_images) + config.batch_size - 1) // config.batch_size
    if len(train_images) % config.batch_size == 1 and steps > 1 and not takes_single_images(model):
        steps -= 1  # a last batch of one image would stop batch norm: that image sits the epoch out
    scheduler = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=config.epochs * steps
        )
    generator = generators.data
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    data = load_data()  # the test images the per-epoch snapshots show
    if not is_autoencoder:
        history.update(train_accuracy=[], val_accuracy=[], val_confusion=[])
    else:  # what the model makes of one test image per class, after each epoch (small: ~10 KB)
        history["reconstructions"] = []
        shown = data.test_images[analysis.snapshot_indices(data.test_labels)]
    # The latent time-lapse: codes of fixed test images after each epoch, and in epoch 1 also at
    # its start and half-way (the map changes most then).
    history["latent_maps"] = []
    if config.cartography:  # each training image's confidence in its label, after each epoch
        history["train_dynamics"] = []
    sample = data.test_images[: analysis.TIMELAPSE_IMAGES]
    sample_labels = data.test_labels[: analysis.TIMELAPSE_IMAGES]
    early = {max(1, steps // 2): 0.5} if steps >= 2 else {}

    def early_snapshot(at: float) -> dict:
        """A moment inside epoch 1; an autoencoder's also holds its reconstructions then (each
        epoch's end has them in history["reconstructions"])."""
        moment = analysis.latent_snapshot(model, sample, sample_labels, at)
        if is_autoencoder:
            moment["reconstructions"] = analysis.pack_images(analysis.reconstructions(model, shown))
        return moment

    first_epoch = 1
    if resume is not None:
        with unusable_checkpoint(config):
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
        history = {key: list(values) for key, values in resume["history"].items()}
        first_epoch = resume["epoch"] + 1

    start = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)
    last_report = start
    stopped = False
    checkpoint = None
    for epoch in range(first_epoch, config.epochs + 1):
        moments = []  # this epoch's latent snapshots
        if epoch == 1:
            moments.append(early_snapshot(0.0))
        view.train()
        order = torch.randperm(len(train_images), generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)  # summed on device: no sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step in range(steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = train_images[index].contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
            if config.augment in ("flip", "flip_shift"):
                flip = torch.rand(len(x), 1, 1, 1, generator=generator).to(device) < 0.5
                x = torch.where(flip, x.flip(3), x)
            if config.augment == "flip_shift":
                x = random_shift(x, SHIFT, generator).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = view(x)
            output = output.float()  # the loss in fp32
            if is_autoencoder:
                loss = F.mse_loss(output, x)
            else:
                y = train_labels[index]
                loss = classification_loss(output, y, config.loss, config.label_smoothing)
                correct += (output.argmax(1) == y).sum()
            if joined is None:
                optimizer.zero_grad(set_to_none=True)
            else:
                joined.grad.zero_()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(x)
            seen += len(x)
            if epoch == 1 and step + 1 in early:
                moments.append(early_snapshot(early[step + 1]))
                view.train()
            now = time.perf_counter()
            if on_progress is not None and now - last_report >= PROGRESS_INTERVAL:
                last_report = now
                on_progress(
                    Progress(epoch, config.epochs, step + 1, steps, loss_sum.item() / seen, now - start)
                )
        if stopped:
            break
        validation = test_metrics(model, splits.val_images, splits.val_labels, config.loss, config.tta)
        history["epoch"].append(epoch)
        history["train_loss"].append(loss_sum.item() / seen)
        history["val_loss"].append(validation["loss"])
        history["seconds"].append(time.perf_counter() - start)
        if not is_autoencoder:
            history["train_accuracy"].append(correct.item() / seen)
            history["val_accuracy"].append(validation["accuracy"])
            history["val_confusion"].append(validation["confusion"])
        else:
            history["reconstructions"].append(analysis.pack_images(analysis.reconstructions(model, shown)))
        moments.append(analysis.latent_snapshot(model, sample, sample_labels, float(epoch)))
        history["latent_maps"].append(moments)
        if config.cartography:
            confidence, correct = suspects.label_confidence(model, train_images, train_labels, config.loss)
            history["train_dynamics"].append(suspects.pack_epoch(confidence, correct))
        if epoch < config.epochs:  # what a Stop in the next epoch keeps, to continue from
            checkpoint = make_checkpoint(config, epoch, model, optimizer, scheduler, generators, history, ran)
        if on_progress is not None:
            metrics = {key: values[-1] for key, values in history.items() if key != "train_dynamics"}
            on_progress(
                Progress(
                    epoch,
                    config.epochs,
                    steps,
                    steps,
                    history["train_loss"][-1],
                    time.perf_counter() - start,
                    epoch_done=True,
                    metrics=metrics,
                )
            )
    train_seconds = time.perf_counter() - start
    if joined is not None:
        engine.separate_parameters(trainable)

    if config.validation == "test" and history["epoch"] and not stopped:
        test = validation  # the last validation pass was on the test set: no second pass
    else:
        test = test_metrics(model, splits.test_images, splits.test_labels, config.loss, config.tta)
    metrics = {
        "epochs_done": len(history["epoch"]),
        "train_seconds": train_seconds,
        "test_loss": test["loss"],
        "device": describe_device(device),
        "validation": splits.validation_note,
        "train_images": len(train_images),
        "torch": torch.__version__,
        "execution": ran,
    }
    if is_autoencoder:
        metrics["test_mse"] = test["loss"]
    else:
        metrics["test_accuracy"] = test["accuracy"]
        metrics["test_confusion"] = test["confusion"]
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        metrics=metrics,
        completed=not stopped,
        checkpoint=checkpoint if stopped else None,
    )


@contextlib.contextmanager
def unusable_checkpoint(config: RunConfig):
    """A stopped run's checkpoint that does not load into its run is a CorruptRunError (the
    caller starts afresh), not torch's multi-line text."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split())[:120]
        raise CorruptRunError(
            f"the stopped run {config.run_id}'s checkpoint does not fit it ({reason})"
        ) from None


def make_checkpoint(
    config: RunConfig,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generators: RunGenerators,
    history: dict,
    ran: dict,
) -> dict:
    """Everything a run needs to go on after `epoch` exactly as if it had never stopped: weights,
    optimizer and schedule state, the data and dropout streams (copies, on the CPU)."""

    def copied(value):
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {key: copied(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(copied(item) for item in value)
        return value

    return {
        "run_id": config.run_id,
        "epoch": epoch,
        "execution": dict(ran),
        "model": copied(model.state_dict()),
        "optimizer": copied(optimizer.state_dict()),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data_generator": generators.data.get_state(),
        "dropout_generator": generators.dropout.get_state().cpu(),
        "history": copied(history),
    }
