"""Suspect data: how each training image was learnt (dataset cartography), likely mislabels,
and near-duplicates within and across the splits.

Cartography follows Swayamdipta et al. (2020): an image's mean confidence in its own label
over the epochs, against how much that confidence moved (its standard deviation). Images the
model never believed sit at the bottom: hard to learn, often mislabelled.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fmnist_core import analysis
from fmnist_core.analysis import predict_proba
from fmnist_core.base.files import arrays_size_bound, read_arrays, read_regular, write_arrays_atomic
from fmnist_core.data.fashion import DOWNLOAD_FOLDER, load_data

log = logging.getLogger("fmnist_lab")

NEAR_DUPLICATE_RMS = 0.02  # pixel RMS difference (images in [0, 1]): under it, two images are one
SEARCH_DIMENSIONS = 32  # the PCA space the duplicate search prunes candidates in
SEARCH_BLOCK = 1024  # images compared with all others at a time (a 1024 x 60,000 float block)
HARD_CONFIDENCE = 0.25  # mean confidence in the label under which an image is "hard to learn"
AMBIGUOUS_VARIABILITY = 0.3  # variability over which an image is "ambiguous"
REGIONS = ("easy to learn", "ambiguous", "hard to learn")


# --- Training dynamics ----------------------------------------------------------------------


def label_confidence(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str):
    """Each image's probability of its own label (N,) and whether the model's answer is it (N,)."""
    probabilities = predict_proba(model, images, loss=loss)
    labels = labels.cpu().numpy()
    rows = np.arange(len(labels))
    return probabilities[rows, labels], probabilities.argmax(1) == labels


def pack_epoch(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """One epoch's confidences (to 1/255) and answers as base64: ~88 KB for 60,000 images."""
    quantised = np.clip(np.round(np.asarray(confidence) * 255), 0, 255).astype(np.uint8)
    return {
        "confidence": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "correct": base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii"),
        "count": int(len(quantised)),
    }


def unpack_epoch(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """pack_epoch undone: confidences (float32) and answers (bool)."""
    count = record["count"]
    confidence = np.frombuffer(base64.b64decode(record["confidence"]), dtype=np.uint8)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(record["correct"]), dtype=np.uint8))
    if len(confidence) != count or len(bits) < count:
        raise ValueError("training dynamics: a packed epoch does not hold the images it says")
    return confidence.astype(np.float32) / 255.0, bits[:count].astype(bool)


@dataclass(frozen=True)
class Cartography:
    confidence: np.ndarray  # (N,) mean probability of the given label over the epochs
    variability: np.ndarray  # (N,) its standard deviation over the epochs
    correctness: np.ndarray  # (N,) the fraction of epochs the model's answer was the label
    epochs: int

    @property
    def regions(self) -> np.ndarray:
        """'hard to learn', 'ambiguous' or 'easy to learn' for each image."""
        region = np.full(len(self.confidence), "easy to learn", dtype=object)
        region[self.variability >= AMBIGUOUS_VARIABILITY] = "ambiguous"
        region[self.confidence < HARD_CONFIDENCE] = "hard to learn"
        return region

    def region_counts(self) -> dict[str, int]:
        """How many images each region holds, in REGIONS' order."""
        regions = self.regions
        return {name: int((regions == name).sum()) for name in REGIONS}


def cartography(history: dict) -> Cartography | None:
    """The map from a run trained with `cartography=True` (None for any other run)."""
    epochs = history.get("train_dynamics") or []
    if not epochs:
        return None
    unpacked = [unpack_epoch(record) for record in epochs]
    confidence = np.stack([c for c, _ in unpacked])  # (E, N)
    correct = np.stack([k for _, k in unpacked])
    return Cartography(confidence.mean(0), confidence.std(0), correct.mean(0), len(epochs))


# --- Near-duplicates ------------------------------------------------------------------------


def _flat(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    return images.reshape(len(images), -1).float()


def _close_pairs(
    queries: torch.Tensor,
    keys: torch.Tensor,
    basis: torch.Tensor,
    mean: torch.Tensor,
    threshold: float,
    same: bool,
) -> list[tuple[int, int, float]]:
    """(query, key, rms) for every pair under `threshold` in pixel RMS; same=True: query < key.

    Projection onto an orthonormal basis never lengthens a difference, so a pair under the
    threshold in pixels is under it in the PCA space too: pruning there loses no pair."""
    limit = threshold**2 * queries.shape[1] * 1.01 + 1e-6  # on the summed squares, with float slack
    projected_queries = (queries - mean) @ basis
    projected_keys = (keys - mean) @ basis
    query_norms = (projected_queries**2).sum(1)
    key_norms = (projected_keys**2).sum(1)
    # One reused block: a fresh 1024 x 60,000 array per block spent most of the time (measured
    # 36 s -> 10 s for train against itself); within one split only keys from the block on count.
    buffer = torch.empty(SEARCH_BLOCK * len(keys))
    pairs = []
    for start in range(0, len(queries), SEARCH_BLOCK):
        block = projected_queries[start : start + SEARCH_BLOCK]
        first_key = start if same else 0
        distances = buffer[: len(block) * (len(keys) - first_key)].view(len(block), -1)
        torch.addmm(
            key_norms[None, first_key:].expand(len(block), -1),
            block,
            projected_keys[first_key:].T,
            beta=1,
            alpha=-2,
            out=distances,
        )
        distances.add_(query_norms[start : start + len(block), None])
        rows, cols = torch.nonzero(distances <= limit, as_tuple=True)
        rows, cols = rows + start, cols + first_key
        if same:
            keep = rows < cols
            rows, cols = rows[keep], cols[keep]
        if len(rows) == 0:
            continue
        exact = ((queries[rows] - keys[cols]) ** 2).mean(1).sqrt()
        for row, col, rms in zip(rows.tolist(), cols.tolist(), exact.tolist(), strict=True):
            if rms < threshold:
                pairs.append((row, col, rms))
    return pairs


def near_duplicates(
    train_images, test_images, train_labels, test_labels, threshold: float = NEAR_DUPLICATE_RMS
) -> pd.DataFrame:
    """Every pair of images within `threshold` pixel RMS of each other: within train, within
    test and across (test image, train image), with its distance, byte-identity and labels."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold: {threshold} is not in (0, 1]")
    train, test = _flat(train_images), _flat(test_images)
    mean = train.mean(0)
    # The top principal directions of the training images, as an orthonormal (784, k) basis.
    _, _, vectors = torch.linalg.svd(train[:: max(1, len(train) // 20_000)] - mean, full_matrices=False)
    basis = vectors[:SEARCH_DIMENSIONS].T.contiguous()
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    rows = []
    for split, queries, keys, query_labels, key_labels, same in (
        ("train", train, train, train_labels, train_labels, True),
        ("test", test, test, test_labels, test_labels, True),
        ("test-train", test, train, test_labels, train_labels, False),
    ):
        for first, second, rms in _close_pairs(queries, keys, basis, mean, threshold, same):
            rows.append(
                {
                    "splits": split,
                    "first": first,
                    "second": second,
                    "rms": rms,
                    "identical": bool(torch.equal(queries[first], keys[second])),
                    "first_label": int(query_labels[first]),
                    "second_label": int(key_labels[second]),
                }
            )
    columns = ["splits", "first", "second", "rms", "identical", "first_label", "second_label"]
    table = pd.DataFrame(rows, columns=columns)
    table["same_label"] = table["first_label"] == table["second_label"]
    return table.sort_values(["splits", "rms"], kind="stable").reset_index(drop=True)


# --- Likely mislabels -----------------------------------------------------------------------


def out_of_fold_probabilities(features: np.ndarray, labels, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N, 10) class probabilities of a logistic regression on `features`, each image's from the
    fold that did not train on it (cleanlab needs predictions made without the image's label)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 2 <= folds <= 20:
        raise ValueError(f"folds: {folds} is not between 2 and 20")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # The folds in worker processes: the same numbers, 9.3 s instead of 17.9 s for the whole
    # training set on 2 cores (threads gained little: 15.6 s).
    return cross_val_predict(
        model,
        np.asarray(features),
        np.asarray(labels),
        cv=splitter,
        method="predict_proba",
        n_jobs=min(folds, os.cpu_count() or 1),
    )


def label_issues(probabilities: np.ndarray, labels) -> pd.DataFrame:
    """Images whose label looks wrong (cleanlab's confident learning), worst first: the index,
    the given label, the label the probabilities suggest, and the confidence in the given one."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels)
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    return pd.DataFrame(
        {
            "index": ranked,
            "label": labels[ranked],
            "suggested": probabilities[ranked].argmax(1),
            "label_confidence": probabilities[ranked, labels[ranked]],
        }
    )


RETRAIN_SEEDS = 3


def pixel_features(images: torch.Tensor, components: int = 64) -> np.ndarray:
    """Images as their first `components` principal components (fitted on these images)."""
    mean, directions = analysis.image_pca(images)
    return ((images.flatten(1) - mean) @ directions[:components].T).numpy()


def encoder_features(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Images as an autoencoder's codes."""
    return analysis.latent_codes(model, images)


def likely_mislabels(issues: pd.DataFrame, hard: np.ndarray | None = None) -> np.ndarray:
    """The training images whose label is doubted: cleanlab's issues, and where a training map
    exists only those its classifier also never learnt ("hard to learn"): models that never saw
    the label and a model that saw it every epoch both disagree with it."""
    doubted = issues["index"].to_numpy().astype(np.int64)
    return np.unique(doubted if hard is None else np.intersect1d(doubted, hard))


def flagged_images(duplicates: pd.DataFrame, mislabels: np.ndarray) -> np.ndarray:
    """Training images to leave out: the likely mislabels, the later image of each near-duplicate
    pair within train (one copy stays), and every training image that repeats a test image
    (it lets the test score what was learnt by heart)."""
    within = duplicates[duplicates["splits"] == "train"]["second"]
    across = duplicates[duplicates["splits"] == "test-train"]["second"]
    indices = np.concatenate([np.asarray(mislabels), within.to_numpy(), across.to_numpy()])
    return np.unique(indices.astype(np.int64))


def hard_images(map_: Cartography, positions: np.ndarray) -> np.ndarray:
    """The training images (indices among the 60,000) a mapped run never learnt."""
    return np.asarray(positions)[map_.regions == "hard to learn"]


# --- The whole data set's studies, kept on disk ---------------------------------------------------

KEPT_FOLDER = DOWNLOAD_FOLDER / "studies"  # beside downloaded data: a data set's, not a run's
KEPT_VERSION = 1  # raised when what is kept, or how it is computed, changes
SPLIT_CODES = ("train", "test", "test-train")
DUPLICATE_COLUMNS = {"splits": np.int8, "first": np.int64, "second": np.int64, "rms": np.float64,
                     "identical": np.bool_, "first_label": np.int64, "second_label": np.int64}  # fmt: skip
ISSUE_COLUMNS = {"index": np.int64, "label": np.int64, "suggested": np.int64, "label_confidence": np.float64}
MAX_KEPT_ROWS = 1_000_000


def _kept_path(name: str) -> Path:
    return KEPT_FOLDER / f"{load_data().fingerprint}-{name}-v{KEPT_VERSION}.npz"


def _read_kept(name: str, columns: dict) -> dict[str, np.ndarray] | None:
    """The arrays kept under `name` for the loaded data, each column of its type and one length,
    where the file is a regular one of the size they may take and names itself; else None."""
    path = _kept_path(name)
    expected = {**{c: ((None,), t) for c, t in columns.items()}, "source": ((), np.array(path.stem).dtype)}
    try:
        arrays = read_arrays(read_regular(path, arrays_size_bound(expected, MAX_KEPT_ROWS)), expected)
        if arrays.pop("source") != path.stem or len({len(a) for a in arrays.values()}) != 1:
            raise ValueError("another study's file, or columns of unequal lengths")
    except (OSError, ValueError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("%s not used, computed again (%s)", path, error)
        return None
    return arrays


def _keep(name: str, table: pd.DataFrame, columns: dict) -> None:
    path = _kept_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {c: table[c].to_numpy().astype(t) for c, t in columns.items()}
        write_arrays_atomic(path, {**arrays, "source": np.array(path.stem)})
    except OSError as error:
        log.warning("%s not kept, computed again next time (%s)", path, error)


def _checked_duplicates(arrays: dict[str, np.ndarray], threshold: float) -> pd.DataFrame | None:
    """The kept near-duplicates, where every value is one the search could have found."""
    data = load_data()
    counts = {"train": len(data.train_labels), "test": len(data.test_labels)}
    labels = {"train": data.train_labels.numpy(), "test": data.test_labels.numpy()}
    codes = arrays["splits"]
    if codes.size and (codes.min() < 0 or codes.max() >= len(SPLIT_CODES)):
        return None
    if not (
        np.all(np.isfinite(arrays["rms"])) and np.all((arrays["rms"] >= 0) & (arrays["rms"] < threshold))
    ):
        return None
    for code, split in enumerate(SPLIT_CODES):
        here = codes == code
        first_split, second_split = ("test", "train") if split == "test-train" else (split, split)
        for column, side in (("first", first_split), ("second", second_split)):
            index = arrays[column][here]
            if index.size and (index.min() < 0 or index.max() >= counts[side]):
                return None
            if not np.array_equal(labels[side][index], arrays[f"{column}_label"][here]):
                return None
    table = pd.DataFrame(arrays)
    table["splits"] = np.asarray(SPLIT_CODES, dtype=object)[codes]
    table["same_label"] = table["first_label"] == table["second_label"]
    return table


def _checked_issues(arrays: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame | None:
    """The kept label doubts, where each is a distinct training image with its own label."""
    index = arrays["index"]
    if (
        (index.size == 0 or (index.min() >= 0 and index.max() < len(labels)))
        and len(np.unique(index)) == len(index)
        and np.array_equal(labels[index], arrays["label"])
        and np.all((arrays["suggested"] >= 0) & (arrays["suggested"] < 10))
        and np.all((arrays["label_confidence"] >= 0) & (arrays["label_confidence"] <= 1))
    ):
        return pd.DataFrame(arrays)
    log.warning("%s not used: values out of range, computed again", _kept_path("pixel-label-issues"))
    return None


@functools.lru_cache(maxsize=4)
def dataset_duplicates(threshold: float = NEAR_DUPLICATE_RMS) -> pd.DataFrame:
    """near_duplicates over the whole loaded data set: computed once per data set and threshold
    (about 12 s on 2 CPU cores), then read from a checked copy kept on disk."""
    name = f"duplicates-{threshold:g}"
    kept = _read_kept(name, DUPLICATE_COLUMNS)
    table = _checked_duplicates(kept, threshold) if kept is not None else None
    if table is not None:
        return table
    data = load_data()
    table = near_duplicates(
        data.train_images, data.test_images, data.train_labels.numpy(), data.test_labels.numpy(), threshold
    )
    coded = table.assign(splits=table["splits"].map(SPLIT_CODES.index))
    _keep(name, coded, DUPLICATE_COLUMNS)
    return table


def issues_from_features(features: np.ndarray, labels) -> pd.DataFrame:
    """label_issues from out-of-fold predictions on `features` (pixels' components or codes)."""
    return label_issues(out_of_fold_probabilities(features, labels), labels)


@functools.lru_cache(maxsize=2)
def pixel_label_issues() -> pd.DataFrame:
    """label_issues of the whole training set from out-of-fold predictions on its pixels (PCA):
    computed once per data set (about 25 s on 2 CPU cores), then read from a checked copy kept on
    disk."""
    data = load_data()
    labels = data.train_labels.numpy()
    kept = _read_kept("pixel-label-issues", ISSUE_COLUMNS)
    table = _checked_issues(kept, labels) if kept is not None else None
    if table is not None:
        return table
    table = issues_from_features(pixel_features(data.train_images), labels)
    _keep("pixel-label-issues", table, ISSUE_COLUMNS)
    return table
