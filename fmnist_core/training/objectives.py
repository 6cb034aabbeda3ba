"""What differs by kind of model in training, one object per kind: the loss of a batch, what an
epoch adds to the history, and the final metrics. The loop itself knows no kind of model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core.analysis import classification_loss
from fmnist_core.models.registry import HasLossTerms
from fmnist_core.training.config import RunConfig


class Classification:
    """Cross-entropy (or the run's loss) on the labels; accuracy and confusion per epoch."""

    history_keys = ("train_accuracy", "val_accuracy", "val_confusion")

    def __init__(self, config: RunConfig):
        self.loss_name, self.label_smoothing = config.loss, config.label_smoothing

    def start_epoch(self, device: torch.device) -> None:
        self.correct = torch.zeros((), device=device, dtype=torch.long)  # summed on device: no sync

    def batch_loss(self, view: nn.Module, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        self.correct += (output.argmax(1) == y).sum()
        return classification_loss(output, y, self.loss_name, self.label_smoothing)

    def end_epoch(self, history: dict, seen: int, validation: dict) -> None:
        history["train_accuracy"].append(self.correct.item() / seen)
        history["val_accuracy"].append(validation["accuracy"])
        history["val_confusion"].append(validation["confusion"])

    def final_metrics(self, test: dict) -> dict:
        return {"test_accuracy": test["accuracy"], "test_confusion": test["confusion"]}


class Reconstruction:
    """Mean squared error against the input, plus the model's own loss terms where it has some (a
    VAE's KL divergence: `loss_terms()` after a forward pass, weighted by `loss_weights()`); each
    term's epoch mean is kept unweighted as `train_<term>` beside `train_mse`, so the curves show
    what the loss is made of."""

    def __init__(self, model: nn.Module):
        self.terms = tuple(model.loss_term_names) if isinstance(model, HasLossTerms) else ()
        self.history_keys = tuple(f"train_{name}" for name in ("mse", *self.terms)) if self.terms else ()

    def start_epoch(self, device: torch.device) -> None:
        self.sums = {name: torch.zeros((), device=device) for name in ("mse", *self.terms)}

    def batch_loss(self, view: nn.Module, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        loss = F.mse_loss(output, x)
        if not self.terms:
            return loss
        self.sums["mse"] += loss.detach() * len(x)
        weights = view.loss_weights()
        for name, value in view.loss_terms().items():
            value = value.float()
            self.sums[name] += value.detach() * len(x)
            loss = loss + weights[name] * value
        return loss

    def end_epoch(self, history: dict, seen: int, validation: dict) -> None:
        if not self.terms:
            return
        for name, total in self.sums.items():
            history[f"train_{name}"].append(total.item() / seen)

    def final_metrics(self, test: dict) -> dict:
        return {"test_mse": test["loss"]}


def objective_for(config: RunConfig, model: nn.Module) -> Classification | Reconstruction:
    """The objective of a run's kind of model."""
    return Reconstruction(model) if config.kind == "autoencoder" else Classification(config)
