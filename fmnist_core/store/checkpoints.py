"""Runs stopped before their last epoch: the checkpoint a Stop keeps (its tensors, checked by
their SHA-256) and a JSON summary of its curves, in models_cache/.partial/, so that the run can
continue to the weights it would have reached without stopping."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from fmnist_core.base.files import (
    CorruptRunError,
    read_json,
    remove_path,
    sha256,
    write_tensors_atomic,
    write_text_atomic,
)
from fmnist_core.store.entries import MissingRunError, is_run_id

PARTIAL = ".partial"  # {run_id}.pt (resumable) + {run_id}.json


class StoppedRuns:
    """The stopped runs of the cache at `root`."""

    def __init__(self, root: Path):
        self.folder = root / PARTIAL

    def paths(self, run_id: str) -> tuple[Path, Path]:
        if not is_run_id(run_id):
            raise MissingRunError(f"{run_id!r} is not a run id")
        return self.folder / f"{run_id}.pt", self.folder / f"{run_id}.json"

    def save(self, run_id: str, checkpoint: dict, summary: dict) -> None:
        """Keep a stopped run's state at its last finished epoch, so that it can be continued:
        `checkpoint` (tensors, as training.recorders.make_checkpoint makes it) and a JSON `summary`
        (its curves), each written atomically, the summary naming the tensors' checksum."""
        weights, record = self.paths(run_id)
        weights.parent.mkdir(parents=True, exist_ok=True)
        write_tensors_atomic(checkpoint, weights)
        write_text_atomic(
            record, json.dumps({**summary, "run_id": run_id, "sha256": sha256(weights)}, indent=1)
        )

    def summary(self, run_id: str) -> dict | None:
        """A stopped run's summary (epochs done, its curves), or None when there is none to read."""
        try:
            found = read_json(self.paths(run_id)[1])
        except (OSError, ValueError, MissingRunError):
            return None
        return found if isinstance(found, dict) and found.get("run_id") == run_id else None

    def load(self, run_id: str) -> dict | None:
        """A stopped run's checkpoint, verified against its checksum; None when there is none.
        CorruptRunError where its files are damaged (the caller starts the run afresh)."""
        weights, _ = self.paths(run_id)
        summary = self.summary(run_id)
        if summary is None and not weights.exists():
            return None
        try:
            if summary is None or sha256(weights) != summary.get("sha256"):
                raise CorruptRunError(f"the stopped run {run_id}'s checkpoint is damaged")
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        except CorruptRunError:
            raise
        except Exception as error:  # unreadable, unzippable, a pickle that is not plain tensors
            raise CorruptRunError(f"the stopped run {run_id}'s checkpoint is damaged ({error})") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("run_id") != run_id:
            raise CorruptRunError(f"the stopped run {run_id}'s checkpoint belongs to another run")
        return checkpoint

    def discard(self, run_id: str) -> None:
        for path in self.paths(run_id):
            with contextlib.suppress(OSError):
                remove_path(path)

    def run_ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted({path.name.split(".")[0] for path in self.folder.iterdir()} - {""})
