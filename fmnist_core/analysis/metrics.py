"""Metrics of a trained model on a set of images: outputs in bounded batches, losses, accuracy,
confusion matrices, per-class reports and calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core.analysis.losses import get_loss
from fmnist_core.base.resources import eval_batch
from fmnist_core.data.fashion import CLASS_NAMES

# Evaluation batches: on the CPU a batch's activations should stay in cache; batches of 256 ran
# 1.7-2.7x faster than batches of 2000 (the test set through the S0 autoencoder, S1's CNN, the
# ResNet, fast_cnn). On a GPU larger batches keep it busy.
EVAL_BATCH = {"cpu": 256, "cuda": 2000}


def device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.inference_mode()
def batched_outputs(model: nn.Module, images: torch.Tensor, fn=None) -> torch.Tensor:
    """Apply `fn` (default: the model) in eval mode over batches; result on the CPU."""
    was_training = model.training
    model.eval()
    fn = fn or model
    device = device_of(model)
    size = eval_batch(model, EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"]))
    outputs = [fn(images[i : i + size].to(device)).float().cpu() for i in range(0, len(images), size)]
    model.train(was_training)
    return torch.cat(outputs)


# Test-time augmentation: the views of each image whose logits are averaged, as (mirrored, rows,
# columns moved). flip_shift is airbench's multi-crop on 28x28: each view also moved one pixel
# up-left and one down-right.
TTA_VIEWS = {
    "none": ((False, 0, 0),),
    "flip": ((False, 0, 0), (True, 0, 0)),
    "flip_shift": tuple((mirror, d, d) for mirror in (False, True) for d in (0, -1, 1)),
}


def translated(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Images (N, C, H, W) moved `rows` down and `cols` right (negative: up, left); zeros come in."""
    if rows == cols == 0:
        return images
    most = max(abs(rows), abs(cols))
    height, width = images.shape[-2:]
    padded = F.pad(images, (most, most, most, most))
    return padded[..., most - rows : most - rows + height, most - cols : most - cols + width]


def view_of(images: torch.Tensor, mirrored: bool, rows: int, cols: int) -> torch.Tensor:
    return translated(images.flip(3) if mirrored else images, rows, cols)


def classifier_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits (N, 10); with test-time augmentation, the mean of the logits of TTA_VIEWS[tta]."""
    views = TTA_VIEWS[tta]
    if len(views) == 1:
        return batched_outputs(model, images)
    return batched_outputs(
        model, images, lambda x: sum(model(view_of(x, *view)) for view in views) / len(views)
    )


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str, label_smoothing=0.0):
    """The batch's loss by the table of losses (analysis.losses)."""
    found = get_loss(loss)
    if found.kind != "classifier":
        raise ValueError(f"loss: {loss!r} is not a classification loss")
    return found.compute(logits, labels, label_smoothing)


def test_metrics(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str, tta: str = "none"
) -> dict:
    """Final figures of a run: loss, and for classifiers accuracy and the confusion matrix."""
    if get_loss(loss).kind == "autoencoder":
        return {"loss": get_loss(loss).compute(batched_outputs(model, images), images.cpu(), 0.0).item()}
    outputs = classifier_logits(model, images, tta)
    labels = labels.cpu()
    predictions = outputs.argmax(1)
    return {
        "loss": classification_loss(outputs, labels, loss).item(),
        "accuracy": (predictions == labels).float().mean().item(),
        "confusion": confusion_matrix(labels.numpy(), predictions.numpy()).tolist(),
    }


def predict_proba(
    model: nn.Module, images: torch.Tensor, tta: str = "none", loss: str = "cross_entropy"
) -> np.ndarray:
    """Class probabilities (N, 10) from a classifier (tta="flip": averaged with the mirror image),
    as its loss reads its outputs (a softmax of logits; analysis.losses.scores_as_probabilities
    for scores that regress the one-hot target)."""
    return get_loss(loss).probabilities(classifier_logits(model, images, tta)).numpy()


def classes_never_predicted(confusion) -> list[str]:
    """The classes a classifier never answered on its test images (a column of zeros): S0's ReLU
    on the logits can leave a class's score at 0 for every image, where no gradient reaches it."""
    columns = np.asarray(confusion).sum(axis=0)
    return [CLASS_NAMES[i] for i in np.flatnonzero(columns == 0)]


def confusion_matrix(labels, predictions, num_classes: int = 10) -> np.ndarray:
    """Counts (true class rows, predicted class columns)."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def row_percent(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    return 100.0 * matrix / np.maximum(totals, 1)


def per_class_report(matrix: np.ndarray, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Precision, recall (= per-class accuracy), F1 and support from a confusion matrix."""
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = true_positive / np.maximum(predicted, 1)
    recall = true_positive / np.maximum(actual, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return pd.DataFrame(
        {"class": list(class_names), "precision": precision, "recall": recall, "f1": f1, "support": actual}
    )


def calibration(probabilities: np.ndarray, labels, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """A reliability table of a classifier's answers: per confidence bin (equal widths over [0, 1]),
    how many answers fall there, their mean confidence and how many are right; and the expected
    calibration error, the bins' |accuracy - confidence| weighted by their share of answers."""
    if not 2 <= bins <= 100:
        raise ValueError(f"bins: {bins} is outside 2..100")
    confidence = probabilities.max(1)
    right = probabilities.argmax(1) == np.asarray(labels)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to bin 0.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else np.nan,
                "accuracy": float(right[inside].mean()) if count else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    filled = table[table["count"] > 0]
    error = float(
        (filled["count"] * (filled["accuracy"] - filled["confidence"]).abs()).sum() / len(confidence)
    )
    return table, error
