"""The training loop: preloaded tensors, index batches, progress callbacks, a cooperative stop.

`fit` trains a model that runs.trained has built; every random draw of the run comes from
its own generators (`RunGenerators`), never from torch's global one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core import engine
from fmnist_core.analysis import test_metrics
from fmnist_core.analysis.metrics import TTA_VIEWS
from fmnist_core.base.device import describe_device, pick_device, resolve_precision
from fmnist_core.base.resources import takes_single_images
from fmnist_core.data.fashion import load_data
from fmnist_core.training import tricks
from fmnist_core.training.config import RunConfig
from fmnist_core.training.objectives import objective_for
from fmnist_core.training.recorders import (
    Cartography,
    Checkpoints,
    TimeLapse,
    make_checkpoint,
    unusable_checkpoint,
)
from fmnist_core.training.splits import RunGenerators, Splits

PROGRESS_INTERVAL = 0.25  # seconds between progress callbacks within an epoch
SHIFT = 2  # pixels, for augment="flip_shift"


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
    eta: float | None = None  # seconds left, from the run's own pace (Clock.eta); None: from the fraction
    kept: bool = False  # a continued run's epoch from before its stop, reported again as it starts

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) + self.step / max(self.steps, 1)) / self.epochs

    @property
    def eta_seconds(self) -> float:
        if self.eta is not None:
            return self.eta
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


@dataclass
class Controls:
    """How a caller steers a run: progress reports, a cooperative stop, and a stopped run's
    checkpoint (make_checkpoint) to go on from, to the same result."""

    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    resume: dict | None = None

    def report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()


@dataclass
class Session:
    """One run's training state, built by `start` and advanced an epoch at a time."""

    config: RunConfig
    model: nn.Module  # as written: validation, the test and the caller see it
    view: nn.Module  # the engine's view of it, which trains (shares every weight)
    device: torch.device
    ran: dict
    train_images: torch.Tensor
    train_labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: object
    joined: torch.Tensor | None  # the engine's one tensor of all trainable weights (None: per layer)
    trainable: list
    steps: int
    generators: RunGenerators
    objective: object
    history: dict
    first_epoch: int = 1
    recorders: dict = field(default_factory=dict)  # by name: recorders_for
    seen: int = 0  # images the last epoch trained on
    average: nn.Module | None = None  # the weights' moving average (config.ema), evaluated in their place
    mirrored_first: torch.Tensor | None = None  # alternating flips: each image's parity

    @property
    def evaluated(self) -> nn.Module:
        """What validation and the test see: the moving average where the run keeps one."""
        return self.average.module if self.average is not None else self.model

    @property
    def final_pass(self) -> bool:
        """Whether a test pass follows the last epoch (not where validation is the test set)."""
        return self.config.validation != "test" or self.config.validation_tta != self.config.tta


def start(
    config: RunConfig, model: nn.Module, splits: Splits, generators: RunGenerators, device, resume
) -> Session:
    """Model on its device, the engine's view, optimizer and schedule, the history (a stopped run's
    where `resume`), and the recorders."""
    ran = execution(config, device)
    if device.type == "cpu":
        engine.keep_freed_memory()
    # channels_last measured 6-25% faster for these conv nets on the CPU; no effect on the maths.
    model = model.to(device).to(memory_format=torch.channels_last)
    tricks.prepare(model, config, splits.train_images)
    average = tricks.moving_average(model, config.ema) if config.ema else None  # before the engine joins
    if resume is not None:
        with unusable_checkpoint(config):
            model.load_state_dict(resume["model"])
            if average is not None:
                average.load_state_dict(resume["average"])
            generators.data.set_state(resume["data_generator"])
            generators.dropout.set_state(resume["dropout_generator"])
    view = engine.accelerate(model, device, generators.dropout)
    train_images, train_labels = splits.train_images.to(device), splits.train_labels.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.bn_bias_lr != 1.0:  # two learning rates: the weights stay apart
        joined = None
        optimizer = make_optimizer(config, tricks.parameter_groups(model, config))
    else:
        joined = engine.join_parameters(trainable)
        optimizer = make_optimizer(config, trainable if joined is None else [joined])
    steps = (len(train_images) + config.batch_size - 1) // config.batch_size
    if len(train_images) % config.batch_size == 1 and steps > 1 and not takes_single_images(model):
        steps -= 1  # a last batch of one image would stop batch norm: that image sits the epoch out
    scheduler = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=config.epochs * steps,
        )
    objective = objective_for(config, model)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    history.update({key: [] for key in objective.history_keys})
    session = Session(
        config,
        model,
        view,
        device,
        ran,
        train_images,
        train_labels,
        optimizer,
        scheduler,
        joined,
        trainable,
        steps,
        generators,
        objective,
        history,
    )
    if resume is not None:
        with unusable_checkpoint(config):
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
        session.history = {key: list(values) for key, values in resume["history"].items()}
        session.first_epoch = resume["epoch"] + 1
    session.average = average
    if config.augment.startswith("alt_"):
        session.mirrored_first = tricks.flip_parity(config, len(train_images))
    session.recorders = recorders_for(session)
    return session


def recorders_for(session: Session) -> dict:
    """The run's recorders by name, called in this order (training.recorders)."""
    config, history = session.config, session.history
    recorders = {
        "time_lapse": TimeLapse(
            session.model, history, session.steps, config.kind == "autoencoder", images=config.test_subset
        )
    }
    if config.cartography:
        recorders["cartography"] = Cartography(
            session.model, session.train_images, session.train_labels, config.loss, history
        )
    recorders["checkpoints"] = Checkpoints(config.epochs, lambda epoch: checkpoint_of(session, epoch))
    return recorders


def checkpoint_of(session: Session, epoch: int) -> dict:
    s = session
    checkpoint = make_checkpoint(
        s.config, epoch, s.model, s.optimizer, s.scheduler, s.generators, s.history, s.ran
    )
    if s.average is not None:
        checkpoint["average"] = {
            k: v.detach().to("cpu", copy=True) for k, v in s.average.state_dict().items()
        }
    return checkpoint


@dataclass
class Clock:
    """A run's time and where it goes, for its ETA: the training steps alone, each epoch's end
    (validation, snapshots, checkpoint) and the snapshot before the first step. Measured: seconds
    over fraction done, the page's first estimate, was 2-10x off where those ends weigh as much as
    the steps (bench/eta_accuracy.py)."""

    start: float  # perf_counter() when training started (earlier for a continued run)
    reported: float = 0.0
    step_seconds: float = 0.0
    steps: int = 0
    end_seconds: float = 0.0
    ends: int = 0
    snapshot_seconds: float = 0.0  # the latest snapshot within epoch 1 (the first one warms up too)
    validation_images: int = 0  # images an epoch's end passes forward (twice with flip TTA)
    batch_size: int = 1

    def eta(self, steps_left: int, ends_left: int, final_pass: bool) -> float | None:
        """Seconds left: the steps at their pace, the epochs' ends and the test pass at theirs (before
        an epoch has ended: a snapshot, and the validation images at a third of a step's time each)."""
        if not self.steps:
            return None
        per_step = self.step_seconds / self.steps
        per_end = (
            self.end_seconds / self.ends
            if self.ends
            else (self.snapshot_seconds + self.validation_images * per_step / self.batch_size / 3)
        )
        return steps_left * per_step + (ends_left + final_pass) * per_end


def train_one_epoch(session: Session, epoch: int, controls: Controls, clock: Clock) -> float | None:
    """One pass over the training images in the run's order; the mean training loss, or None
    where a stop was asked for (the epoch is then dropped)."""
    s = session
    s.view.train()
    order = torch.randperm(len(s.train_images), generator=s.generators.data).to(s.device)
    loss_sum = torch.zeros((), device=s.device)  # summed on device: no sync per step
    s.objective.start_epoch(s.device)
    seen = 0
    for step in range(s.steps):
        if controls.stop_requested():
            return None
        stepping = time.perf_counter()
        x, y = batch(s, order, step, epoch)
        loss_sum += train_step(s, x, y) * len(x)
        seen += len(x)
        clock.step_seconds += time.perf_counter() - stepping
        after_step(s, epoch, step, controls, clock, loss_sum, seen)
    s.seen = seen
    return loss_sum.item() / seen


def batch(s: Session, order: torch.Tensor, step: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's images (augmented as the run says) and labels."""
    index = order[step * s.config.batch_size : (step + 1) * s.config.batch_size]
    x = s.train_images[index]  # (B, 1, 28, 28)
    if s.mirrored_first is not None:
        x = tricks.alternating_flip(x, s.mirrored_first[index.cpu()], epoch)
    return augmented(x, s.config.augment, s.generators.data), s.train_labels[index]


def train_step(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, loss, backward, step: every run's step (through the engine's view, in bf16 where the
    run trains in it; the weights' average and the learning-rate schedule follow the step)."""
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.ran["precision"] == "bf16"):
        output = s.view(x)
    loss = s.objective.batch_loss(s.view, output.float(), x, y)  # the loss in fp32
    if s.joined is None:
        s.optimizer.zero_grad(set_to_none=True)
    else:
        s.joined.grad.zero_()  # the engine keeps the gradients in one flat tensor
    loss.backward()
    s.optimizer.step()
    if s.average is not None:
        s.average.update_parameters(s.model)
    if s.scheduler is not None:
        s.scheduler.step()
    return loss.detach()


def after_step(
    s: Session, epoch: int, step: int, controls: Controls, clock: Clock, loss_sum: torch.Tensor, seen: int
) -> None:
    """The recorders' turn, then the progress line (at most every PROGRESS_INTERVAL seconds: the
    running loss is read off the device only then)."""
    clock.steps += 1
    looking = time.perf_counter()
    if any([recorder.on_step(epoch, step + 1) for recorder in s.recorders.values()]):
        s.view.train()
        clock.snapshot_seconds = time.perf_counter() - looking
    now = time.perf_counter()
    if now - clock.reported >= PROGRESS_INTERVAL:
        clock.reported = now
        left = clock.eta(
            (s.config.epochs - epoch) * s.steps + s.steps - step - 1,
            s.config.epochs - epoch + 1,
            s.final_pass,
        )
        controls.report(
            Progress(
                epoch, s.config.epochs, step + 1, s.steps, loss_sum.item() / seen, now - clock.start, eta=left
            )
        )


def augmented(images: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """A batch as the run's augmentation draws it (mirror images; shifts of up to SHIFT pixels;
    alternating flips are drawn before, by the epoch)."""
    x = images.contiguous(memory_format=torch.channels_last)
    if augment in ("flip", "flip_shift"):
        flip = torch.rand(len(x), 1, 1, 1, generator=generator).to(x.device) < 0.5
        x = torch.where(flip, x.flip(3), x)
    if augment in ("flip_shift", "alt_flip_shift"):
        x = random_shift(x, SHIFT, generator).contiguous(memory_format=torch.channels_last)
    return x


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: RunConfig, tta: str | None = None
) -> dict:
    """Loss (and accuracy, confusion) of the model as written on a set of images (with the run's
    test-time augmentation, or `tta`)."""
    return test_metrics(model, images, labels, config.loss, config.tta if tta is None else tta)


def end_epoch(session: Session, epoch: int, train_loss: float, validation: dict, seconds: float) -> None:
    history = session.history
    history["epoch"].append(epoch)
    history["train_loss"].append(train_loss)
    history["val_loss"].append(validation["loss"])
    history["seconds"].append(seconds)
    session.objective.end_epoch(history, session.seen, validation)
    for recorder in session.recorders.values():
        recorder.on_epoch_end(epoch, history)


def fit(
    config: RunConfig,
    model: nn.Module,
    splits: Splits,
    generators: RunGenerators,
    controls: Controls | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train `model` (freshly built for `config` by runs.trained) on `splits`; never prints.

    The engine's view of the model (fmnist_core.engine.accelerate) trains; the model as written
    is what validation, the test and the caller see.
    """
    controls = controls or Controls()
    session = start(config, model, splits, generators, pick_device(device), controls.resume)
    history = session.history
    clock = Clock(time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0))
    clock.reported, clock.batch_size = clock.start, config.batch_size
    clock.validation_images = len(splits.val_images) * len(TTA_VIEWS[config.validation_tta])
    stopped, validation = False, None
    packed = {key for recorder in session.recorders.values() for key in recorder.packed_keys}
    for index in range(len(history["epoch"])):  # a continued run: whoever watches sees its kept epochs
        kept = {key: values[index] for key, values in history.items() if key not in packed}
        loss = kept.get("train_loss", float("nan"))
        seconds = history["seconds"][index]
        controls.report(Progress(index + 1, config.epochs, 1, 1, loss, seconds, True, kept, kept=True))
    for epoch in range(session.first_epoch, config.epochs + 1):
        starting = time.perf_counter()
        for recorder in session.recorders.values():
            recorder.on_epoch_start(epoch)
        clock.snapshot_seconds = clock.snapshot_seconds or time.perf_counter() - starting
        train_loss = train_one_epoch(session, epoch, controls, clock)
        if train_loss is None:
            stopped = True
            break
        ending = time.perf_counter()
        validation = evaluate(
            session.evaluated, splits.val_images, splits.val_labels, config, config.validation_tta
        )
        end_epoch(session, epoch, train_loss, validation, time.perf_counter() - clock.start)
        clock.end_seconds, clock.ends = clock.end_seconds + time.perf_counter() - ending, clock.ends + 1
        metrics = {key: values[-1] for key, values in history.items() if key not in packed}
        seconds = time.perf_counter() - clock.start
        left = clock.eta((config.epochs - epoch) * session.steps, config.epochs - epoch, session.final_pass)
        steps = session.steps
        controls.report(
            Progress(epoch, config.epochs, steps, steps, train_loss, seconds, True, metrics, left)
        )
    train_seconds = time.perf_counter() - clock.start
    if session.joined is not None:
        engine.separate_parameters(session.trainable)
    if not session.final_pass and history["epoch"] and not stopped and validation is not None:
        test = validation  # the last validation pass was on the test set: no second pass
    else:
        test = evaluate(session.evaluated, splits.test_images, splits.test_labels, config)
    metrics = {
        "epochs_done": len(history["epoch"]),
        "train_seconds": train_seconds,
        "test_loss": test["loss"],
        "device": describe_device(session.device),
        "validation": splits.validation_note,
        "train_images": len(session.train_images),
        "torch": torch.__version__,
        "execution": session.ran,
        **session.objective.final_metrics(test),
    }
    if session.average is not None and not stopped:  # the run's weights are the ones tested
        session.model.load_state_dict(session.average.module.state_dict())
    session.model.eval()
    checkpoint = session.recorders["checkpoints"].latest if stopped else None
    return TrainResult(session.model, history, metrics, completed=not stopped, checkpoint=checkpoint)
