"""The disk cache in models_cache/: one folder per config hash, the source of truth for trained runs."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from torch import nn

from .analysis import predict_proba
from .config import RunConfig
from .device import pick_device
from .models import create_model
from .train import Progress, train

log = logging.getLogger("fmnist_core")
FILES = ("config.json", "history.json", "model.pt")
MANIFEST = "manifest.json"


class MissingRunError(LookupError):
    """No cache entry for this run id."""


class CorruptRunError(RuntimeError):
    """A cache entry exists but cannot be trusted (half-written, edited, damaged)."""


@dataclass
class TrainedRun:
    config: RunConfig
    model: nn.Module
    history: dict
    metrics: dict
    cached: bool  # True: loaded from disk, not trained now
    completed: bool = True  # False: stopped early, and so not cached
    note: str = ""  # e.g. that a corrupted entry was replaced

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities (N, 10), with the test-time augmentation the run was evaluated with."""
        return predict_proba(self.model, images, self.config.tta)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_root() -> Path:
    return Path(os.environ.get("FMNIST_CACHE") or "models_cache")


# The cache a load or a training is working from, so models built inside it (a classifier
# that starts from a cached encoder) read from the same folder.
_active_root: contextvars.ContextVar[Path | None] = contextvars.ContextVar("fmnist_cache_root", default=None)


class RunCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    @classmethod
    def current(cls) -> RunCache:
        """The cache in use by the load or training in progress, else the default one."""
        return cls(_active_root.get())

    @contextlib.contextmanager
    def active(self):
        token = _active_root.set(self.root)
        try:
            yield self
        finally:
            _active_root.reset(token)

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    # ------------------------------------------------------------------ reading

    def verify(self, run_id: str) -> dict:
        """The entry's manifest, after checking every file against its checksum."""
        folder = self.folder(run_id)
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            raise MissingRunError(run_id)
        try:
            manifest = json.loads(manifest_path.read_text())
            checksums = manifest["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptRunError(f"run {run_id}: manifest unreadable ({error})") from None
        for name in FILES:
            path = folder / name
            if not path.is_file():
                raise CorruptRunError(f"run {run_id}: {name} is missing")
            if _sha256(path) != checksums.get(name):
                raise CorruptRunError(f"run {run_id}: {name} does not match its checksum")
        return manifest

    def load_config(self, run_id: str) -> RunConfig:
        self.verify(run_id)
        try:
            config = RunConfig.from_dict(json.loads((self.folder(run_id) / "config.json").read_text()))
        except (ValueError, TypeError) as error:
            raise CorruptRunError(f"run {run_id}: config.json is not a valid config ({error})") from None
        if config.run_id != run_id:
            raise CorruptRunError(
                f"run {run_id}: its config hashes to {config.run_id} (an older engine made it, or it was edited)"
            )
        return config

    def load_state(self, run_id: str) -> dict[str, torch.Tensor]:
        self.verify(run_id)
        return torch.load(self.folder(run_id) / "model.pt", map_location="cpu", weights_only=True)

    def load_record(self, run_id: str) -> tuple[dict, dict]:
        """History and metrics of a verified run, without building its model."""
        self.verify(run_id)
        record = json.loads((self.folder(run_id) / "history.json").read_text())
        return record["history"], record["metrics"]

    def load(self, run_id: str, device: torch.device | str | None = None) -> TrainedRun:
        """A verified run with its model rebuilt and its weights loaded (eval mode)."""
        config = self.load_config(run_id)
        record = json.loads((self.folder(run_id) / "history.json").read_text())
        with self.active():
            model = create_model(config.model, **config.settings)
        try:
            model.load_state_dict(self.load_state(run_id))
        except RuntimeError as error:
            raise CorruptRunError(f"run {run_id}: weights do not fit the model ({error})") from None
        model.to(pick_device(device)).eval()
        return TrainedRun(config, model, record["history"], record["metrics"], cached=True)

    def exists(self, run_id: str) -> bool:
        try:
            self.verify(run_id)
        except (MissingRunError, CorruptRunError):
            return False
        return True

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # ------------------------------------------------------------------ writing

    def save(self, config: RunConfig, model: nn.Module, history: dict, metrics: dict) -> Path:
        """Write the entry into a temporary folder, then move it into place in one step."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{config.run_id}-", dir=self.root))
        try:
            (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
            record = {"history": history, "metrics": metrics}
            (staging / "history.json").write_text(json.dumps(record, indent=1))
            state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
            torch.save(state, staging / "model.pt")
            manifest = {
                "run_id": config.run_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "sha256": {name: _sha256(staging / name) for name in FILES},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            target = self.folder(config.run_id)
            if target.exists():
                shutil.rmtree(target)  # a corrupted entry, under the run's lock
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.folder(run_id), ignore_errors=True)

    def prune(self) -> list[tuple[str, str]]:
        """Delete every entry that fails its checks (damaged, or made by an older engine).

        Returns (run id, reason) per deleted entry. Each entry is checked under its lock, so a
        run being retrained into its folder is left alone.
        """
        removed = []
        for run_id in self.run_ids():
            with self.lock(run_id):
                try:
                    self.load_config(run_id)
                except MissingRunError:
                    continue
                except CorruptRunError as error:
                    self.delete(run_id)
                    removed.append((run_id, str(error)))
        return removed

    def lock(self, run_id: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f".{run_id}.lock"))

    def get_or_train(
        self,
        config: RunConfig,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        device: torch.device | str | None = None,
    ) -> TrainedRun:
        """Load the run from the cache, or train it once (other processes wait and load)."""
        run_id = config.run_id
        note = ""
        try:
            return self.load(run_id, device)
        except MissingRunError:
            pass
        except CorruptRunError as error:
            note = f"{error}; retrained"
            log.warning("corrupted cache entry: %s", error)
        with self.lock(run_id):
            try:
                return self.load(run_id, device)  # trained by another process while we waited
            except MissingRunError:
                pass
            except CorruptRunError as error:
                note = f"{error}; retrained"
            with self.active():
                result = train(config, on_progress, should_stop, device)
            if result.completed:
                self.save(config, result.model, result.history, result.metrics)
        return TrainedRun(
            config,
            result.model,
            result.history,
            result.metrics,
            cached=False,
            completed=result.completed,
            note=note,
        )

    # ------------------------------------------------------------------ listing

    def list_runs(self) -> pd.DataFrame:
        """Every entry as a row: run id, status, config columns, final metrics."""
        rows = []
        for run_id in self.run_ids():
            row: dict = {"run_id": run_id}
            try:
                manifest = self.verify(run_id)
                config = self.load_config(run_id)
                record = json.loads((self.folder(run_id) / "history.json").read_text())
            except (MissingRunError, CorruptRunError) as error:
                rows.append({**row, "status": f"corrupt: {error}"})
                continue
            row.update(status="ok", created=manifest.get("created", ""))
            values = config.to_dict()
            settings = values.pop("settings")
            row.update(values)
            row.update(
                {
                    key: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                    for key, v in settings.items()
                }
            )
            history = record["history"]
            for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
                if history.get(key):
                    row[f"final_{key}"] = history[key][-1]
            for key in ("test_loss", "test_accuracy", "test_mse", "train_seconds", "epochs_done", "device"):
                if key in record["metrics"]:
                    row[key] = record["metrics"][key]
            rows.append(row)
        return pd.DataFrame(rows)
