"""What a trained model tells us: metrics, confusion matrices, reconstructions, latent maps."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .data import CLASS_NAMES
from .resources import SNAPSHOT_IMAGES, eval_batch

# Evaluation batches: on the CPU a batch's activations should stay in cache; batches of 256 ran
# 1.7-2.7x faster than batches of 2000 (the test set through the S0 autoencoder, S1's CNN, the
# ResNet, fast_cnn). On a GPU larger batches keep it busy.
EVAL_BATCH = {"cpu": 256, "cuda": 2000}


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.inference_mode()
def batched_outputs(model: nn.Module, images: torch.Tensor, fn=None) -> torch.Tensor:
    """Apply `fn` (default: the model) in eval mode over batches; result on the CPU."""
    was_training = model.training
    model.eval()
    fn = fn or model
    device = _device_of(model)
    size = eval_batch(model, EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"]))
    outputs = [fn(images[i : i + size].to(device)).float().cpu() for i in range(0, len(images), size)]
    model.train(was_training)
    return torch.cat(outputs)


def classifier_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits (N, 10); with tta="flip", the mean of the logits of each image and its mirror."""
    if tta == "flip":
        return batched_outputs(model, images, lambda x: (model(x) + model(x.flip(3))) / 2)
    return batched_outputs(model, images)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str, label_smoothing=0.0):
    if loss == "cross_entropy":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    if loss == "mse_onehot":
        return F.mse_loss(logits, one_hot)
    if loss == "kl_div":
        return F.kl_div(F.log_softmax(logits, dim=1), one_hot, reduction="batchmean")
    raise ValueError(f"loss: {loss!r} is not a classification loss")


def test_metrics(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str, tta: str = "none"
) -> dict:
    """Final figures of a run: loss, and for classifiers accuracy and the confusion matrix."""
    if loss == "mse":
        return {"loss": F.mse_loss(batched_outputs(model, images), images.cpu()).item()}
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
    """Class probabilities (N, 10) from a classifier (tta="flip": averaged with the mirror image).

    A classifier trained with `mse_onehot` (S3's MLPs) outputs scores that regress the one-hot
    target, not logits: a softmax of numbers in [0, 1] would call every answer about 10-25% sure.
    Its scores, clipped at zero and divided by their sum, are its probabilities instead."""
    outputs = classifier_logits(model, images, tta)
    if loss != "mse_onehot":
        return torch.softmax(outputs, dim=1).numpy()
    scores = outputs.clamp(min=0)
    total = scores.sum(1, keepdim=True)
    uniform = torch.full_like(scores, 1 / scores.shape[1])
    return torch.where(total > 0, scores / total.clamp(min=1e-12), uniform).numpy()


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


def reconstructions(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """An autoencoder's outputs (N, 28, 28) for the given images."""
    return batched_outputs(model, images)[:, 0].numpy()


def reconstruction_errors(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Per-image mean squared error (N,)."""
    recon = batched_outputs(model, images)
    return ((recon - images.cpu()) ** 2).flatten(1).mean(1).numpy()


@torch.inference_mode()
def mse_with_dropout_on(model: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
    """An autoencoder's mean squared error with its dropout layers left on (every other layer in
    eval mode): the loss as a training loop reports it, and as a validation pass that forgets
    model.eval() would. Dropout draws from a generator forked from `seed`, so the figure repeats
    and the process's own random state is left as it was."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    was_training = model.training
    model.eval()
    for layer in dropouts:
        layer.train()
    device = _device_of(model)
    size = EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(images), size):
            batch = images[i : i + size].to(device)
            total += F.mse_loss(model(batch).float(), batch.float(), reduction="sum").item()
    model.train(was_training)
    return total / images.numel()


def latent_codes(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Codes (N, d): an autoencoder's latent vectors, a classifier's penultimate features."""
    return batched_outputs(model, images, fn=model.encode).flatten(1).numpy()


def decode(model: nn.Module, codes: np.ndarray) -> np.ndarray:
    """Decode latent vectors (N, n) into images (N, 28, 28)."""
    tensor = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    return batched_outputs(model, tensor, fn=model.decode)[:, 0].numpy()


def interpolate(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """Points on the straight line between two codes, ends included (steps, d)."""
    weights = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1 - weights) * start[None] + weights * end[None]


def latent_projection(codes: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D map of codes by PCA, t-SNE or UMAP (when installed)."""
    if codes.shape[1] <= 2:
        return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed).fit_transform(codes)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ValueError("method: umap is not installed (pip install umap-learn)") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(codes)
    raise ValueError(f"method: {method!r} is not one of pca, tsne, umap")


def principal_directions(codes: np.ndarray, count: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean code, the top principal directions (count, d) and their standard deviations."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(count, codes.shape[1], len(codes))).fit(codes)
    return pca.mean_, pca.components_, np.sqrt(pca.explained_variance_)


def image_pca(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image (784,) and every principal direction (784, 784), largest first, in float64 sums."""
    flat = images.flatten(1).double()
    mean = flat.mean(0)
    # Right singular vectors of the centred data = principal directions, largest first.
    _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
    return mean.float(), v.float()


def pca_reconstruction_mse(train_images: torch.Tensor, test_images: torch.Tensor, k: int) -> float:
    """The linear baseline: test MSE of PCA with k components fitted on the train set."""
    from sklearn.decomposition import PCA

    train = train_images.flatten(1).numpy()
    test = test_images.flatten(1).numpy()
    pca = PCA(n_components=k, svd_solver="randomized", random_state=0).fit(train)
    recon = pca.inverse_transform(pca.transform(test))
    return float(np.mean((recon - test) ** 2))


def pca_mse_curve(train_images: torch.Tensor, test_images: torch.Tensor, ks) -> dict[int, float]:
    """PCA's test MSE at each k in `ks`, from one eigendecomposition of the training set's
    covariance (784 x 784: a second, where a fit per k would take one each)."""
    train = train_images.flatten(1).float()
    mean = train.double().mean(0)
    centred = train - mean.float()
    _, vectors = torch.linalg.eigh((centred.T @ centred).double())  # the product in fp32: 5x faster
    vectors = vectors.flip(1)  # largest variance first
    original = test_images.flatten(1).double()
    test = original - mean
    curve = {}
    for k in ks:
        basis = vectors[:, : int(k)]  # (784, k)
        reconstruction = (test @ basis) @ basis.T + mean
        curve[int(k)] = float(((reconstruction - original) ** 2).mean())
    return curve


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


def linear_probe(train_codes: np.ndarray, train_labels, test_codes: np.ndarray, test_labels) -> float:
    """Test accuracy of a logistic regression on standardised codes: what a linear read-out of the
    code knows about the class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    model.fit(train_codes, np.asarray(train_labels))
    return float(model.score(test_codes, np.asarray(test_labels)))


# ---------------------------------------------------------------- per-epoch snapshots


def snapshot_indices(labels: torch.Tensor | np.ndarray, classes: int = 10) -> np.ndarray:
    """The test images a run's per-epoch snapshots show: the first of each class."""
    labels = np.asarray(labels)
    return np.array([np.flatnonzero(labels == c)[0] for c in range(classes)])


def pack_images(images: np.ndarray) -> str:
    """(N, 28, 28) images in [0, 1] as base64 of their bytes (uint8): ~1 KB an image in JSON."""
    pixels = np.clip(np.round(np.asarray(images, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    return base64.b64encode(pixels.tobytes()).decode("ascii")


def unpack_images(text: str, size: int = 28) -> np.ndarray:
    """pack_images undone: (N, size, size) floats in [0, 1]."""
    pixels = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return pixels.reshape(-1, size, size).astype(np.float32) / 255.0


WIDE_CODES = 4 * 1000  # codes wider than this are mapped through their Gram matrix (below)
TIMELAPSE_IMAGES = SNAPSHOT_IMAGES  # the first 1,000 test images: the time-lapse's fixed sample (each costs a
# forward pass per snapshot: 2,000 added 0.3-2.3 s to a one-epoch run on 2,000 images)


def knn_accuracy(codes: np.ndarray, labels: np.ndarray, neighbours: int = 5) -> float:
    """How well the codes separate the classes: 5-nearest-neighbour accuracy, fitted on the even
    rows and scored on the odd ones."""
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    model = KNeighborsClassifier(n_neighbors=neighbours).fit(codes[::2], labels[::2])
    return float(model.score(codes[1::2], labels[1::2]))


def latent_snapshot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, at: float) -> dict:
    """The codes of `images` at one moment of training (`at`: epochs done): their 2-D PCA map,
    packed as float16 (~11 KB for 2,000 images), and their kNN accuracy."""
    codes = latent_codes(model, images)
    if codes.shape[1] > WIDE_CODES:
        # A wide classifier's features (a CNN of 256 channels flattened: 200,704 values an image):
        # float64 copies and an SVD of (1,000, 200,704) took 8 GB. The (N, N) Gram matrix gives the
        # same two coordinates (up to each axis' sign, which the time-lapse aligns anyway).
        centred = codes - codes.mean(0)
        gram = (centred @ centred.T).astype(np.float64)
        values, vectors = np.linalg.eigh(gram)
        top = np.argsort(values)[::-1][:2]
        points = vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
        return {"at": at, "map": pack_points(points), "knn": knn_accuracy(codes, labels.numpy())}
    codes = codes.astype(np.float64)
    centred = codes - codes.mean(0)
    if centred.shape[1] >= 2:
        _, _, directions = np.linalg.svd(centred, full_matrices=False)
        points = centred @ directions[:2].T
    else:
        points = np.pad(centred, ((0, 0), (0, 2 - centred.shape[1])))
    return {"at": at, "map": pack_points(points), "knn": knn_accuracy(codes, labels.numpy())}


def pack_points(points: np.ndarray) -> str:
    """(N, 2) coordinates as base64 of float16 bytes."""
    return base64.b64encode(np.asarray(points, dtype=np.float16).tobytes()).decode("ascii")


def unpack_points(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32).reshape(-1, 2)


def align_maps(maps: list[np.ndarray]) -> list[np.ndarray]:
    """2-D maps of the same points at different times, centred, scaled to unit spread and each
    turned (rotation or mirror: orthogonal Procrustes) to match the last, so a time-lapse does not
    spin or flip between frames."""
    normalised = []
    for points in maps:
        centred = np.asarray(points, dtype=np.float64) - np.mean(points, axis=0)
        spread = np.sqrt((centred**2).sum(1).mean())
        normalised.append(centred / spread if spread > 0 else centred)
    reference = normalised[-1]
    aligned = []
    for points in normalised:
        u, _, vt = np.linalg.svd(points.T @ reference)
        aligned.append(points @ (u @ vt))
    return aligned
