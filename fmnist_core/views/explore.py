"""What the app's pages ask of a trained run, in numpy: the pages hold no torch code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fmnist_core import analysis
from fmnist_core.data.fashion import CLASS_NAMES, load_data
from fmnist_core.runs.trained import TrainedRun, untrained_model


def _batch(image: np.ndarray) -> torch.Tensor:
    """One 28x28 image in [0, 1] as a (1, 1, 28, 28) float tensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(1, 1, 28, 28))


def reconstruction_rows(run: TrainedRun, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Test images (N, 28, 28) at `indices`, as the autoencoder reconstructs them before training
    (the very start its run had) and after."""
    images = load_data().test_images[torch.as_tensor(indices)]
    return {
        "original": images[:, 0].numpy(),
        "untrained": analysis.reconstructions(untrained_model(run.config), images),
        "trained": analysis.reconstructions(run.model, images),
    }


def test_reconstructions(run: TrainedRun, indices: np.ndarray) -> np.ndarray:
    """The autoencoder's reconstructions (N, 28, 28) of the test images at `indices`."""
    return analysis.reconstructions(run.model, load_data().test_images[torch.as_tensor(indices)])


def classify(run: TrainedRun, image: np.ndarray) -> np.ndarray:
    """A classifier's class probabilities (10,) for one 28x28 image."""
    return run.predict_proba(_batch(image))[0]


@dataclass(frozen=True)
class Reconstruction:
    image: np.ndarray  # (28, 28): the autoencoder's output
    error: float  # its mean squared error against the input
    code: np.ndarray  # (n,): the input's latent code


def reconstruct(run: TrainedRun, image: np.ndarray) -> Reconstruction:
    """One image through an autoencoder: its reconstruction, error and code."""
    batch = _batch(image)
    output = analysis.reconstructions(run.model, batch)[0]
    error = float(((output - batch[0, 0].numpy()) ** 2).mean())
    return Reconstruction(output, error, analysis.latent_codes(run.model, batch)[0])


def nearest(codes: np.ndarray, code: np.ndarray, count: int = 8) -> np.ndarray:
    """Indices of the `count` codes closest to `code` (Euclidean), nearest first."""
    return np.argsort(((codes - code) ** 2).sum(1))[:count]


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # what it was measured on, for the page


def estimate_seconds(config, runs: pd.DataFrame) -> Estimate | None:
    """How long `config` should train here: the seconds per image and epoch that cached runs of
    the same model (the same batch size where there are some) took on this machine; None where
    no such run has been timed."""
    if runs.empty or "train_seconds" not in runs:
        return None
    same = runs[(runs["model"] == config.model) & runs["train_seconds"].notna()]
    if "epochs_done" in same:
        same = same[same["epochs_done"] > 0]
    if same.empty:
        return None
    if "batch_size" in same and (same["batch_size"] == config.batch_size).any():
        same = same[same["batch_size"] == config.batch_size]
    images = (
        same["train_subset"].where(same["train_subset"] > 0, 60_000) if "train_subset" in same else 60_000
    )
    epochs = same["epochs_done"] if "epochs_done" in same else same["epochs"]
    rate = float(np.median(same["train_seconds"] / (epochs * images)))
    wanted = config.epochs * (config.train_subset or 60_000)
    count = len(same)
    return Estimate(rate * wanted, f"{count} {config.model} run{'s' if count > 1 else ''} on this machine")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class BoundaryWalk:
    """Two images' path in code space (decoded) and in pixel space (blended), each step classified."""

    weights: np.ndarray  # (S,): 0 at the first image, 1 at the second
    decoded: np.ndarray  # (S, 28, 28): the decoder's image of each point on the straight code path
    blended: np.ndarray  # (S, 28, 28): the plain pixel blend (1 - w) * first + w * second
    decoded_probabilities: dict[str, np.ndarray]  # classifier name -> (S, 10)
    blended_probabilities: dict[str, np.ndarray]


def boundary_walk(
    autoencoder: TrainedRun,
    first: np.ndarray,
    second: np.ndarray,
    classifiers: dict[str, TrainedRun],
    steps: int = 13,
) -> BoundaryWalk:
    """Walk from image `first` to `second` (28x28 each) through the autoencoder's code space and
    through pixel space, and ask each classifier what every step is."""
    if steps < 2:
        raise ValueError(f"steps: {steps} is fewer than the walk's two ends")
    images = torch.from_numpy(np.stack([first, second]).astype(np.float32)[:, None])
    codes = analysis.latent_codes(autoencoder.model, images)
    decoded = analysis.decode(autoencoder.model, analysis.interpolate(codes[0], codes[1], steps))
    weights = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    blended = (1 - weights[:, None, None]) * images[0, 0].numpy() + weights[:, None, None] * images[
        1, 0
    ].numpy()

    def classify_all(batch: np.ndarray) -> dict[str, np.ndarray]:
        tensor = torch.from_numpy(batch[:, None].astype(np.float32))
        return {name: run.predict_proba(tensor) for name, run in classifiers.items()}

    return BoundaryWalk(weights, decoded, blended, classify_all(decoded), classify_all(blended))


def commonest_mistakes(
    labels: np.ndarray, predictions: np.ndarray, count: int = 8
) -> list[tuple[int, int, int]]:
    """The `count` commonest (true class, predicted class, images) off the confusion matrix's diagonal."""
    matrix = analysis.confusion_matrix(labels, predictions)
    np.fill_diagonal(matrix, 0)
    cells = [divmod(int(flat), matrix.shape[1]) for flat in np.argsort(-matrix, axis=None)[:count]]
    return [
        (true, predicted, int(matrix[true, predicted]))
        for true, predicted in cells
        if matrix[true, predicted]
    ]


def flip_table(walk: BoundaryWalk) -> pd.DataFrame:
    """Per classifier, where its answer first changes along the code path and the pixel blend."""
    rows = []
    for name in walk.decoded_probabilities:
        row = {"classifier": name}
        for path, probabilities in (
            ("code path", walk.decoded_probabilities[name]),
            ("pixel blend", walk.blended_probabilities[name]),
        ):
            flip = flip_point(walk.weights, probabilities)
            row[path] = f"at {flip[0]:.2f} → {CLASS_NAMES[flip[1]]}" if flip else "no flip"
        rows.append(row)
    return pd.DataFrame(rows)


def flip_point(weights: np.ndarray, probabilities: np.ndarray) -> tuple[float, int] | None:
    """Where along a walk the answer first changes from the one at its start: the weight at which
    the new class overtakes the old (linear between the two steps), and the new class; None if never."""
    answers = probabilities.argmax(1)
    changed = np.flatnonzero(answers != answers[0])
    if len(changed) == 0:
        return None
    step, old = int(changed[0]), int(answers[0])
    new = int(answers[step])
    before = probabilities[step - 1, new] - probabilities[step - 1, old]  # < 0: the old class led
    after = probabilities[step, new] - probabilities[step, old]  # > 0: the new one leads
    share = float(-before / (after - before)) if after != before else 1.0
    return float(weights[step - 1] + share * (weights[step] - weights[step - 1])), new


def confusion_pair(
    labels: np.ndarray,
    predictions: np.ndarray,
    confidence: np.ndarray,
    codes: np.ndarray,
    true: int,
    predicted: int,
) -> tuple[int, int] | None:
    """Two test images for a walk across a confusion cell, on either side of the classifier's
    boundary: a `true` image it gets right, the nearest in code space to its surest mistake of the
    cell, and the `predicted` image it is surest of (the nearest to that mistake among equally
    sure ones). The walk between them passes where the mistake lies, and its answer must change
    on the way (from the mistake itself it would not: both ends would be `predicted`). None where
    the cell is empty or either class has no right answer."""
    wrong = np.flatnonzero((labels == true) & (predictions == predicted))
    right_true = np.flatnonzero((labels == true) & (predictions == true))
    right = np.flatnonzero((labels == predicted) & (predictions == predicted))
    if len(wrong) == 0 or len(right) == 0 or len(right_true) == 0 or true == predicted:
        return None
    mistake = codes[int(wrong[np.argmax(confidence[wrong])])]
    start = int(right_true[np.argmin(((codes[right_true] - mistake) ** 2).sum(1))])
    surest = right[confidence[right] >= confidence[right].max() - 1e-6]
    end = int(surest[np.argmin(((codes[surest] - mistake) ** 2).sum(1))])
    return start, end


@dataclass(frozen=True)
class Timelapse:
    """A run's latent snapshots in order, their maps aligned to the last one."""

    at: list[float]  # epochs done at each frame (0 = before training)
    maps: list[np.ndarray]  # (N, 2) each, centred, unit spread, turned to match the last frame
    knn: list[float]  # kNN accuracy of the codes at each frame
    reconstructions: list[str | None]  # an autoencoder's packed reconstructions at each frame (None: none)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """x min, x max, y min, y max over every frame (the 0.5 and 99.5 percentiles: a stray point
        does not shrink the picture): axes that hold still while scrubbing."""
        every = np.concatenate(self.maps)
        low, high = np.percentile(every, [0.5, 99.5], axis=0)
        return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def timelapse(history: dict) -> Timelapse | None:
    """The time-lapse a run's history holds (None for runs trained before the lab kept one)."""
    moments = [moment for epoch in history.get("latent_maps") or [] for moment in epoch]
    if not moments:
        return None
    maps = analysis.align_maps([analysis.unpack_points(moment["map"]) for moment in moments])
    ends = history.get("reconstructions") or []

    def reconstructions(moment: dict) -> str | None:
        at = float(moment["at"])
        if "reconstructions" in moment:
            return moment["reconstructions"]
        return ends[int(at) - 1] if at.is_integer() and 1 <= at <= len(ends) else None

    return Timelapse(
        [float(m["at"]) for m in moments],
        maps,
        [float(m["knn"]) for m in moments],
        [reconstructions(m) for m in moments],
    )


@dataclass(frozen=True)
class Atlas:
    """A grid laid over a 2-D latent map: per occupied cell, its test images, the decoder's image of
    their mean code, and what a classifier makes of that image."""

    cells: pd.DataFrame  # row, column, x, y (the cell's centre), count, class, confidence (-1/NaN: none)
    images: np.ndarray  # (cells, 28, 28): the decoded mean code of each cell
    members: list[np.ndarray]  # per cell: the indices (into the map's points) of its images


def latent_atlas(
    autoencoder: TrainedRun,
    points: np.ndarray,
    codes: np.ndarray,
    size: int = 12,
    classifier: TrainedRun | None = None,
) -> Atlas:
    """Cut the map of `points` (N, 2) into size x size cells; decode each occupied cell's mean code
    (`codes`, (N, n), the autoencoder's codes of the same images) and classify it."""
    if not 2 <= size <= 40:
        raise ValueError(f"size: {size} cells a side is outside 2..40")
    low, high = points.min(0), points.max(0)
    width = np.where(high > low, (high - low) / size, 1.0)
    grid = np.clip(((points - low) / width).astype(int), 0, size - 1)  # (N, 2): column, row
    flat = grid[:, 1] * size + grid[:, 0]
    occupied = np.unique(flat)
    members = [np.flatnonzero(flat == cell) for cell in occupied]
    means = np.stack([codes[m].mean(0) for m in members])
    images = analysis.decode(autoencoder.model, means)
    rows, columns = np.divmod(occupied, size)
    cells = pd.DataFrame(
        {
            "row": rows,
            "column": columns,
            "x": low[0] + (columns + 0.5) * width[0],
            "y": low[1] + (rows + 0.5) * width[1],
            "count": [len(m) for m in members],
        }
    )
    if classifier is not None:
        probabilities = classifier.predict_proba(torch.from_numpy(images[:, None].astype(np.float32)))
        cells["class"] = probabilities.argmax(1)
        cells["confidence"] = probabilities.max(1)
    else:
        cells["class"], cells["confidence"] = -1, np.nan
    return Atlas(cells, images, members)


HUMAN_ACCURACY = 0.835  # people labelling Fashion-MNIST, as Zalando's README reports it


def quiz_images(labels: np.ndarray, per_class: int = 3, seed: int = 0) -> np.ndarray:
    """Test images for you-against-the-model: `per_class` of every class drawn with `seed` (the
    same for everyone with that seed), in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(10)]
    )
    return rng.permutation(picked)


@dataclass(frozen=True)
class QuizResult:
    yours: float  # your accuracy on the quiz images
    model: float  # the model's, on the same images
    your_confusion: np.ndarray  # (10, 10), true rows
    model_confusion: np.ndarray
    both_wrong: np.ndarray  # indices (into the test set) that you and the model both got wrong


def quiz_result(
    indices: np.ndarray, answers: list[int], predictions: np.ndarray, labels: np.ndarray
) -> QuizResult:
    """Your answers and a model's predictions on the quiz's test images, side by side."""
    if len(answers) != len(indices):
        raise ValueError(f"answers: {len(answers)} given for {len(indices)} images")
    truth = np.asarray(labels)[indices]
    yours = np.asarray(answers)
    theirs = np.asarray(predictions)[indices]
    return QuizResult(
        float((yours == truth).mean()),
        float((theirs == truth).mean()),
        analysis.confusion_matrix(truth, yours),
        analysis.confusion_matrix(truth, theirs),
        np.asarray(indices)[(yours != truth) & (theirs != truth)],
    )
