"""The losses a run may train with, in one table: a new loss is one entry, which the config's
check, the training step, the test metrics, the class probabilities, the form's options and
Compare runs' titles all read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (outputs, targets, label smoothing) -> the batch's loss; targets: the input for an autoencoder,
# the labels for a classifier.
LossFunction = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    name: str  # the run setting's value
    words: str  # its name in the forms and in Compare runs' titles
    kind: str  # the models it trains: "autoencoder" or "classifier"
    compute: LossFunction
    # A classifier's outputs -> class probabilities (its softmax, unless the outputs are no logits).
    probabilities: Callable[[torch.Tensor], torch.Tensor] = lambda outputs: torch.softmax(outputs, dim=1)
    smoothing: bool = False  # whether it takes the run's label smoothing


LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss) -> Loss:
    LOSSES[loss.name] = loss
    return loss


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise ValueError(f"loss: {name!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[name]


def losses_for(kind: str) -> tuple[str, ...]:
    """The losses that train a kind of model ("autoencoder"; any other kind classifies)."""
    wanted = "autoencoder" if kind == "autoencoder" else "classifier"
    return tuple(name for name, loss in LOSSES.items() if loss.kind == wanted)


def one_hot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, logits.shape[1]).to(logits.dtype)


def scores_as_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Scores that regress the one-hot target (S3's MLPs), not logits: a softmax of numbers in
    [0, 1] would call every answer about 10-25% sure. Clipped at zero and divided by their sum."""
    scores = scores.clamp(min=0)
    total = scores.sum(1, keepdim=True)
    uniform = torch.full_like(scores, 1 / scores.shape[1])
    return torch.where(total > 0, scores / total.clamp(min=1e-12), uniform)


register_loss(Loss("mse", "MSE", "autoencoder", lambda outputs, images, _: F.mse_loss(outputs, images)))
register_loss(
    Loss(
        "cross_entropy",
        "cross-entropy",
        "classifier",
        lambda logits, labels, smoothing: F.cross_entropy(logits, labels, label_smoothing=smoothing),
        smoothing=True,
    )
)
register_loss(
    Loss(
        "mse_onehot",
        "MSE on one-hot",
        "classifier",
        lambda scores, labels, _: F.mse_loss(scores, one_hot(scores, labels)),
        probabilities=scores_as_probabilities,
    )
)
register_loss(
    Loss(
        "kl_div",
        "KL divergence",
        "classifier",
        lambda logits, labels, _: F.kl_div(
            F.log_softmax(logits, dim=1), one_hot(logits, labels), reduction="batchmean"
        ),
    )
)
