"""What the training loop records besides the loss, each a small object called at `on_step` and
`on_epoch_end`: the latent time-lapse (with an autoencoder's reconstructions), the dataset
cartography, and the checkpoint a Stop keeps to continue from."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from fmnist_core import analysis
from fmnist_core.analysis import suspects
from fmnist_core.base.files import CorruptRunError
from fmnist_core.data.fashion import load_data
from fmnist_core.training.config import RunConfig
from fmnist_core.training.splits import RunGenerators


class Recorder:
    """Called by the loop at each epoch's start, after each step (True: it used the model, which
    the loop then puts back in training mode) and at each epoch's end; a recorder overrides what
    it needs. The loop holds its recorders by name (training.loop.recorders_for): a new one is one
    class here and one line there."""

    # History keys it writes that hold a packed array per epoch, not a figure: left out of the
    # figures each epoch's progress reports.
    packed_keys: tuple[str, ...] = ()

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step(self, epoch: int, step: int) -> bool:
        return False

    def on_epoch_end(self, epoch: int, history: dict) -> None:
        pass


class TimeLapse(Recorder):
    """Codes of fixed test images after each epoch, and in epoch 1 also at its start and half-way
    (the map changes most then); an autoencoder's reconstructions of one test image per class
    beside them (small: ~10 KB an epoch). The images: the first 1,000 of the test set, or of the
    run's scored ones (`images`) where it scores fewer (a small run's maps cost it more than its
    training: 1.0 of a 500-image CNN's 1.7 s)."""

    def __init__(self, model: nn.Module, history: dict, steps: int, reconstructs: bool, images: int = 0):
        data = load_data()
        self.model, self.reconstructs = model, reconstructs
        count = min(analysis.TIMELAPSE_IMAGES, images or analysis.TIMELAPSE_IMAGES)
        self.sample = data.test_images[:count]
        self.sample_labels = data.test_labels[:count]
        self.shown = data.test_images[analysis.snapshot_indices(data.test_labels)]
        self.early = {max(1, steps // 2): 0.5} if steps >= 2 else {}
        history.setdefault("latent_maps", [])
        if reconstructs:
            history.setdefault("reconstructions", [])

    def _moment(self, at: float, with_reconstructions: bool) -> dict:
        moment = analysis.latent_snapshot(self.model, self.sample, self.sample_labels, at)
        if with_reconstructions:
            moment["reconstructions"] = self._reconstructions()
        return moment

    def _reconstructions(self) -> str:
        return analysis.pack_images(analysis.reconstructions(self.model, self.shown))

    def on_epoch_start(self, epoch: int) -> None:
        self.moments = [self._moment(0.0, self.reconstructs)] if epoch == 1 else []

    def on_step(self, epoch: int, step: int) -> bool:
        """Whether it looked at the model (the loop puts the training view back in training mode)."""
        if epoch != 1 or step not in self.early:
            return False
        self.moments.append(self._moment(self.early[step], self.reconstructs))
        return True

    def on_epoch_end(self, epoch: int, history: dict) -> None:
        if self.reconstructs:  # an epoch's end keeps them in history["reconstructions"]
            history["reconstructions"].append(self._reconstructions())
        self.moments.append(self._moment(float(epoch), False))
        history["latent_maps"].append(self.moments)


class Cartography(Recorder):
    packed_keys = ("train_dynamics",)

    """Each training image's confidence in its label after each epoch (dataset cartography)."""

    def __init__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str, history: dict
    ):
        self.model, self.images, self.labels, self.loss = model, images, labels, loss
        history.setdefault("train_dynamics", [])

    def on_epoch_end(self, epoch: int, history: dict) -> None:
        confidence, correct = suspects.label_confidence(self.model, self.images, self.labels, self.loss)
        history["train_dynamics"].append(suspects.pack_epoch(confidence, correct))


class Checkpoints(Recorder):
    """After each epoch but the last: what a Stop in the next epoch keeps, to continue from."""

    def __init__(self, epochs: int, make: Callable[[int], dict]):
        self.epochs, self.make, self.latest = epochs, make, None

    def on_epoch_end(self, epoch: int, history: dict) -> None:
        if epoch < self.epochs:
            self.latest = self.make(epoch)


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
