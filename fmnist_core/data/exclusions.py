"""Lists of training images a run leaves out, kept by their digest in models_cache/exclusions/
(a config's `exclude` names the digest, so a run id says exactly which images it did without)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fmnist_core.base.files import checksum, write_text_atomic

EXCLUSIONS = "exclusions"  # models_cache/exclusions/{digest}.json: training images a run leaves out


def exclusion_folder(cache_root: str | os.PathLike) -> Path:
    return Path(cache_root) / EXCLUSIONS


def _exclusion_payload(indices) -> tuple[str, str]:
    """A list of training-image indices as the text kept on disk, and that text's digest."""
    indices = sorted({int(i) for i in indices})
    if not indices:
        raise ValueError("exclude: the list of training images to leave out is empty")
    if indices[0] < 0 or indices[-1] >= 60_000:
        raise ValueError("exclude: training image indices run from 0 to 59,999")
    payload = json.dumps(indices)
    return payload, checksum(payload)[:16]


def exclusion_digest(indices) -> str:
    """The digest a config's `exclude` gives for this list of indices (ValueError if it is no list)."""
    return _exclusion_payload(indices)[1]


def save_exclusion(cache_root: str | os.PathLike, indices) -> str:
    """Keep a list of training-image indices to leave out; returns its digest, which a config's
    `exclude` names (so a run id says exactly which images it did without)."""
    payload, digest = _exclusion_payload(indices)
    folder = exclusion_folder(cache_root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.json"
    if not path.exists():
        write_text_atomic(path, payload)
    return digest


def load_exclusion(cache_root: str | os.PathLike, digest: str) -> np.ndarray:
    """The indices saved under `digest`; a missing or altered list is a ValueError on `exclude`."""
    path = exclusion_folder(cache_root) / f"{digest}.json"
    try:
        payload = path.read_text()
    except OSError:
        raise ValueError(f"exclude: no list of left-out images {digest} in {path.parent}") from None
    if checksum(payload)[:16] != digest:
        raise ValueError(f"exclude: the list {digest} was altered (its digest no longer matches)")
    return np.asarray(json.loads(payload), dtype=np.int64)
