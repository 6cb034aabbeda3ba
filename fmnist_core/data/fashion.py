"""The real Fashion-MNIST: find the four IDX files, parse them with numpy, hold them as tensors."""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmnist_core.base import environment
from fmnist_core.base.files import checksum
from fmnist_core.data.labels import CLASS_NAMES

SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_FOLDER = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmnist_lab"
FILES = dict(
    zip(("train_images", "train_labels", "test_images", "test_labels"), environment.DATA_FILES, strict=True)
)
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
IDX_UBYTE = 0x08
# The original files' content (decompressed): SHA-256 and size. Published beside the .gz files'
# MD5s; Debian's package recompresses them, so the .gz bytes differ but these do not.
ORIGINAL = {
    "train-images-idx3-ubyte": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
    ),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}
MAX_IDX_BYTES = 64 << 20  # no IDX file is read past this (a gzip bomb stops here)
REAL_DATA = "fashion-mnist"  # the fingerprint of the original files
OTHER_DATA_FLAG = "FMNIST_OTHER_DATA"  # =1: train on files that are not the originals, named as such


class DataError(RuntimeError):
    """The Fashion-MNIST files are missing, truncated or not what they claim to be."""


def read_raw(path: str | os.PathLike, limit: int = MAX_IDX_BYTES) -> bytes:
    """A file's content, decompressed if it ends in .gz, never more than `limit` bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as error:  # what gzip raises on truncated or foreign data
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if len(raw) > limit:
        raise DataError(f"{path}: holds over {limit:,} bytes, more than any Fashion-MNIST file")
    return raw


def read_idx(path: str | os.PathLike, raw: bytes | None = None) -> np.ndarray:
    """Parse one IDX file (gzipped or not) of unsigned bytes into an array of its shape."""
    path = Path(path)
    raw = read_raw(path) if raw is None else raw
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != IDX_UBYTE:
        raise DataError(f"{path}: IDX data type {raw[2]:#04x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path}: IDX body holds {len(raw) - header_size} bytes, its header promises {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_folders() -> list[Path]:
    """Where the files are looked for, in order."""
    folders = []
    if os.environ.get("FMNIST_DATA"):
        folders.append(Path(os.environ["FMNIST_DATA"]))
    folders += [SYSTEM_FOLDER, DOWNLOAD_FOLDER, DOWNLOAD_FOLDER / "FashionMNIST" / "raw"]
    return folders


def find_data_folder() -> Path | None:
    """The first folder that holds all four files, or None. `$FMNIST_DATA`, where set, must be one:
    a user who names a folder means that folder, so anything missing there is an error."""
    try:
        chosen = environment.data_folder()  # the same check as at start-up
    except ValueError as error:
        raise DataError(str(error)) from None
    if chosen:
        return Path(chosen)
    for folder in candidate_folders():
        if all(_file_in(folder, stem) for stem in FILES.values()):
            return folder
    return None


def download() -> Path:
    """Fetch the original files with torchvision into the local download folder."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(DOWNLOAD_FOLDER), train=True, download=True)
        FashionMNIST(str(DOWNLOAD_FOLDER), train=False, download=True)
    except Exception as error:  # torchvision raises bare RuntimeErrors and URLErrors alike
        raise DataError(
            "Fashion-MNIST was not found in $FMNIST_DATA, "
            f"{SYSTEM_FOLDER} (Debian package dataset-fashion-mnist) or {DOWNLOAD_FOLDER}, "
            f"and downloading it failed: {error}"
        ) from error
    return DOWNLOAD_FOLDER / "FashionMNIST" / "raw"


@dataclass(frozen=True)
class FashionMNIST:
    """The data set as tensors: images (N, 1, 28, 28) float in [0, 1], labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    folder: str
    fingerprint: str = REAL_DATA  # another data set's: a digest of its four files

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES


def check_real(labels: np.ndarray, images: np.ndarray, split: str, folder: Path) -> None:
    """Refuse anything that is not the original 60,000 / 10,000 balanced set."""
    count = EXPECTED_COUNTS[split]
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise DataError(
            f"{folder}: {split} split has images {images.shape} and labels {labels.shape}, "
            f"expected ({count}, 28, 28) and ({count},)"
        )
    per_class = np.bincount(labels, minlength=10)
    if len(per_class) != 10 or not np.all(per_class == count // 10):
        raise DataError(f"{folder}: {split} labels are not {count // 10} per class: {per_class}")


def load_from_folder(folder: Path, allow_other: bool | None = None) -> FashionMNIST:
    """Parse and check the four files in `folder`: they must be the original files, byte for byte,
    unless `allow_other` (default: `$FMNIST_OTHER_DATA=1`), and then they are named by a digest."""
    if allow_other is None:
        allow_other = environment.flag(OTHER_DATA_FLAG)
    arrays, digests = {}, []
    for key, stem in FILES.items():
        path = _file_in(folder, stem)
        if path is None:
            raise DataError(f"{folder}: missing {stem}(.gz)")
        raw = read_raw(path, limit=ORIGINAL[stem][1])  # never decompressed past the original's size
        digest = checksum(raw)
        if digest != ORIGINAL[stem][0] and not allow_other:
            raise DataError(
                f"{path}: not Fashion-MNIST's original {stem} (its content's SHA-256 is {digest[:16]}..., "
                f"the original's {ORIGINAL[stem][0][:16]}...); set {OTHER_DATA_FLAG}=1 to train on it anyway"
            )
        digests.append(digest)
        arrays[key] = read_idx(path, raw)
    for split in ("train", "test"):
        check_real(arrays[f"{split}_labels"], arrays[f"{split}_images"], split, folder)

    def images(array: np.ndarray) -> torch.Tensor:
        # Converted once here so no batch ever pays for uint8 -> float again.
        return torch.from_numpy(array.astype(np.float32) / 255.0).unsqueeze(1).contiguous()

    def labels(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64))

    return FashionMNIST(
        train_images=images(arrays["train_images"]),
        train_labels=labels(arrays["train_labels"]),
        test_images=images(arrays["test_images"]),
        test_labels=labels(arrays["test_labels"]),
        folder=str(folder),
        fingerprint=fingerprint(digests),
    )


def fingerprint(digests: list[str]) -> str:
    """REAL_DATA for the four original files, else a short digest naming these four."""
    if digests == [ORIGINAL[stem][0] for stem in FILES.values()]:
        return REAL_DATA
    return "other-" + checksum("".join(digests))[:16]


@functools.lru_cache(maxsize=2)
def _load(folder: str, allow_other: bool) -> FashionMNIST:
    return load_from_folder(Path(folder), allow_other)


def load_data() -> FashionMNIST:
    """The real data set, loaded once per process; downloads it if no folder has it."""
    folder = find_data_folder() or download()
    return _load(str(folder), environment.flag(OTHER_DATA_FLAG))
