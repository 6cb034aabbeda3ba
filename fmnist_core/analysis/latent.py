"""What an autoencoder's code tells: reconstructions, codes, projections, PCA baselines, linear
probes and the per-epoch snapshots of its map."""

from __future__ import annotations

import base64
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmnist_core.analysis.metrics import EVAL_BATCH, batched_outputs, device_of
from fmnist_core.base.resources import SNAPSHOT_IMAGES


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
    and the process's own random state is left as it was. A copy is switched (a cached run's model
    is shared with other threads, which must not see its dropout on)."""
    model = copy.deepcopy(model).eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for layer in dropouts:
        layer.train()
    device = device_of(model)
    size = EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(images), size):
            batch = images[i : i + size].to(device)
            total += F.mse_loss(model(batch).float(), batch.float(), reduction="sum").item()
    return total / images.numel()


def latent_codes(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Codes (N, d): an autoencoder's latent vectors, a classifier's penultimate features."""
    return batched_outputs(model, images, fn=model.encode).flatten(1).numpy()


def decode(model: nn.Module, codes: np.ndarray) -> np.ndarray:
    """Decode latent vectors (N, n) into images (N, 28, 28)."""
    tensor = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    return batched_outputs(model, tensor, fn=model.decode)[:, 0].numpy()


def prior_samples(model: nn.Module, count: int, seed: int = 0) -> np.ndarray:
    """New images (count, 28, 28): codes drawn from N(0, I) with their own generator, decoded (a VAE's
    prior; for another autoencoder the codes land where its training never put any)."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(count, model.latent_size, generator=generator)
    return decode(model, codes.numpy())


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
