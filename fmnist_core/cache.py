"""The disk cache in models_cache/: one folder per config hash, the source of truth for trained runs.

It stores and loads files; building models from them is fmnist_core.runs' work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from filelock import FileLock
from torch import nn

from .config import RunConfig

log = logging.getLogger("fmnist_core")
FILES = ("config.json", "history.json", "model.pt")
MANIFEST = "manifest.json"


class MissingRunError(LookupError):
    """No cache entry for this run id."""


class CorruptRunError(RuntimeError):
    """A cache entry exists but cannot be trusted (half-written, edited, damaged)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_root() -> Path:
    return Path(os.environ.get("FMNIST_CACHE") or "models_cache")


class RunCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

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
            ran = record["metrics"].get("execution")
            if isinstance(ran, dict):  # what it computed with: device type, precision, kernels
                row["execution"] = "/".join(str(ran.get(k, "?")) for k in ("device", "precision", "kernels"))
            rows.append(row)
        return pd.DataFrame(rows)
