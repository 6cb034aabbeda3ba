"""The disk cache in models_cache/: one folder per config hash, the source of truth for trained runs.

It stores and loads files; building models from them is fmnist_core.runs' work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from filelock import FileLock, Timeout
from torch import nn

from .analysis import classes_never_predicted
from .config import RunConfig, check_record
from .files import read_json, save_tensors, sha256, write_text_atomic
from .locks import LockedRunError, wait_for_lock

log = logging.getLogger("fmnist_core")
FILES = ("config.json", "history.json", "model.pt")
MANIFEST = "manifest.json"
REMOVED = ".removed"  # configs of deleted entries: {run_id}.json
DERIVED = ".derived"  # what was computed from a run's weights: {run_id}-{weights digest}/
PARTIAL = ".partial"  # runs stopped before their last epoch: {run_id}.pt (resumable) + {run_id}.json
STALE_SECONDS = 24 * 3600  # staging folders and locks untouched this long belong to runs that died
# What this process has checked, per entry folder, with the files' stamps (size, mtime, inode) then:
# shared by every RunCache (the app makes one per call), and void as soon as a file changes.
_VERIFIED: dict[Path, tuple[tuple, dict]] = {}  # folder -> (stamps, manifest)
_LOADABLE: dict[Path, tuple] = {}  # folder -> stamps when its weights last loaded


class MissingRunError(LookupError):
    """No cache entry for this run id."""


class CorruptRunError(RuntimeError):
    """A cache entry exists but cannot be trusted (half-written, edited, damaged)."""


def is_run_id(name: str) -> bool:
    """Whether `name` has a run id's form (RunConfig.run_id: 16 hexadecimal digits)."""
    return isinstance(name, str) and re.fullmatch(r"[0-9a-f]{16}", name) is not None


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for a moment, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _remove(path: Path, strict: bool = False) -> None:
    """Remove an entry's path whatever it is: a link (never followed, it may point at another
    entry) or a file is unlinked, a folder removed with its files. `strict`: failures raise."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=not strict)


def default_root() -> Path:
    return Path(os.environ.get("FMNIST_CACHE") or "models_cache")


class RunCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def folder(self, run_id: str) -> Path:
        if not is_run_id(run_id):  # never a path: "../x" or "/tmp" would leave the cache
            raise MissingRunError(run_id)
        return self.root / run_id

    # ------------------------------------------------------------------ reading

    def verify(self, run_id: str) -> dict:
        """The entry's manifest, after checking every file against its checksum."""
        folder = self.folder(run_id)
        manifest_path = folder / MANIFEST
        if not folder.is_dir():
            raise MissingRunError(run_id)
        stamps = self._stamps(folder)
        known = _VERIFIED.get(folder)
        if known is not None and known[0] == stamps:
            return known[1]  # the same files as when last hashed: no need to read them again
        try:
            manifest = read_json(manifest_path)
            checksums = manifest["sha256"]
            if not all(isinstance(checksums.get(name), str) for name in FILES):
                raise TypeError("sha256 is not a checksum per file")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CorruptRunError(f"run {run_id}: manifest unreadable ({error})") from None
        for name in FILES:
            path = folder / name
            if not path.is_file():
                raise CorruptRunError(f"run {run_id}: {name} is missing")
            try:
                digest = sha256(path)
            except OSError as error:
                raise CorruptRunError(f"run {run_id}: {name} unreadable ({error})") from None
            if digest != checksums[name]:
                raise CorruptRunError(f"run {run_id}: {name} does not match its checksum")
        _VERIFIED[folder] = (stamps, manifest)
        return manifest

    @staticmethod
    def _stamps(folder: Path) -> tuple:
        """Size and modification time of each file of an entry (None where one is missing)."""
        stamps = []
        for name in (*FILES, MANIFEST):
            try:
                info = (folder / name).stat()
                stamps.append((info.st_size, info.st_mtime_ns, info.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def stamp(self) -> tuple:
        """Changes whenever any entry's files change: the key of a listing kept in memory."""
        return tuple((run_id, self._stamps(self.folder(run_id))) for run_id in self.run_ids())

    def load_config(self, run_id: str) -> RunConfig:
        self.verify(run_id)
        try:
            config = RunConfig.from_dict(read_json(self.folder(run_id) / "config.json"))
        except (OSError, ValueError, TypeError) as error:
            raise CorruptRunError(f"run {run_id}: config.json is not a valid config ({error})") from None
        if config.run_id != run_id:
            raise CorruptRunError(
                f"run {run_id}: its config hashes to {config.run_id} (an older engine made it, or it was edited)"
            )
        return config

    def load_state(self, run_id: str) -> dict[str, torch.Tensor]:
        self.verify(run_id)
        try:
            state = torch.load(self.folder(run_id) / "model.pt", map_location="cpu", weights_only=True)
        except Exception as error:  # refused by weights_only, not a zip, truncated: damaged either way
            raise CorruptRunError(
                f"run {run_id}: model.pt cannot be loaded ({type(error).__name__})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CorruptRunError(f"run {run_id}: model.pt is not a state dict of tensors")
        _LOADABLE[self.folder(run_id)] = self._stamps(self.folder(run_id))
        return state

    def load_record(self, run_id: str) -> tuple[dict, dict]:
        """History and metrics of a verified run, without building its model."""
        self.verify(run_id)
        try:
            record = read_json(self.folder(run_id) / "history.json")
            history, metrics = record["history"], record["metrics"]
            check_record(self.load_config(run_id), history, metrics)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptRunError(f"run {run_id}: history.json unreadable ({error})") from None
        return history, metrics

    def recover_config(self, run_id: str) -> RunConfig | None:
        """A damaged or removed entry's config, where its config.json (or the copy that removing
        it kept) still reads and hashes to the run id, so it says truly what to retrain; else None."""
        for path in (self.folder(run_id) / "config.json", self.root / REMOVED / f"{run_id}.json"):
            try:
                config = RunConfig.from_dict(read_json(path))
            except (OSError, ValueError, TypeError, MissingRunError):
                continue
            if config.run_id == run_id:
                return config
        return None

    def check(self, run_id: str) -> RunConfig:
        """Every file of the entry read as a load would (config, record, weights), and its encoder's
        entry too; raises CorruptRunError where any of it fails. The weights are read once per
        change of their files, so listings stay cheap."""
        config = self.load_config(run_id)
        self.load_record(run_id)
        if _LOADABLE.get(self.folder(run_id)) != self._stamps(self.folder(run_id)):
            self.load_state(run_id)
        encoder_run = config.settings.get("encoder_run")
        if encoder_run:
            try:
                self.check(encoder_run)
            except (MissingRunError, CorruptRunError) as error:
                raise CorruptRunError(
                    f"run {run_id}: its encoder {encoder_run} is gone or damaged ({error})"
                ) from None
        return config

    def usable(self, run_id: str) -> bool:
        """Whether `check` passes: the entry and the encoder it builds on load in full."""
        try:
            self.check(run_id)
        except (MissingRunError, CorruptRunError):
            return False
        return True

    def exists(self, run_id: str) -> bool:
        try:
            self.verify(run_id)
        except (MissingRunError, CorruptRunError):
            return False
        return True

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_run_id(p.name) and p.is_dir())

    # ------------------------------------------------------------------ writing

    def save(self, config: RunConfig, model: nn.Module, history: dict, metrics: dict) -> Path:
        """Write the entry into a temporary folder, then move it into place in one step."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{config.run_id}-", dir=self.root))
        try:
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from a shared group
            (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
            record = {"history": history, "metrics": metrics}
            (staging / "history.json").write_text(json.dumps(record, indent=1))
            state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
            save_tensors(state, staging / "model.pt")
            manifest = {
                "run_id": config.run_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "sha256": {name: sha256(staging / name) for name in FILES},
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            target = self.folder(config.run_id)
            _remove(target, strict=True)  # a corrupted entry (under the run's lock), a link or a file
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    # ------------------------------------------------------------------ stopped runs

    def _partial(self, run_id: str) -> tuple[Path, Path]:
        if not is_run_id(run_id):
            raise MissingRunError(f"{run_id!r} is not a run id")
        folder = self.root / PARTIAL
        return folder / f"{run_id}.pt", folder / f"{run_id}.json"

    def save_partial(self, run_id: str, checkpoint: dict, summary: dict) -> None:
        """Keep a stopped run's state at its last finished epoch, so that it can be continued:
        `checkpoint` (tensors, as fmnist_core.training makes it) and a JSON `summary` (its curves)."""
        weights, record = self._partial(run_id)
        weights.parent.mkdir(parents=True, exist_ok=True)
        temporary = weights.with_suffix(".pt.tmp")
        try:
            save_tensors(checkpoint, temporary)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        digest = sha256(temporary)
        os.replace(temporary, weights)
        temporary = record.with_suffix(".json.tmp")
        temporary.write_text(json.dumps({**summary, "run_id": run_id, "sha256": digest}, indent=1))
        os.replace(temporary, record)

    def partial_summary(self, run_id: str) -> dict | None:
        """A stopped run's summary (epochs done, its curves), or None when there is none to read."""
        try:
            summary = read_json(self._partial(run_id)[1])
        except (OSError, ValueError, MissingRunError):
            return None
        return summary if isinstance(summary, dict) and summary.get("run_id") == run_id else None

    def load_partial(self, run_id: str) -> dict | None:
        """A stopped run's checkpoint, verified against its checksum; None when there is none.
        CorruptRunError where its files are damaged (the caller starts the run afresh)."""
        weights, _ = self._partial(run_id)
        summary = self.partial_summary(run_id)
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

    def discard_partial(self, run_id: str) -> None:
        for path in self._partial(run_id):
            with contextlib.suppress(OSError):
                _remove(path)

    def delete(self, run_id: str) -> None:
        """Remove the entry; its config, where it still reads true, is kept in .removed/ so that a
        classifier built on this run can train it again (resolve_encoder)."""
        config = self.recover_config(run_id)
        if config is not None:
            with contextlib.suppress(OSError):
                kept = self.root / REMOVED / f"{run_id}.json"
                kept.parent.mkdir(exist_ok=True)
                temporary = kept.with_suffix(".tmp")
                temporary.write_text(json.dumps(config.to_dict(), sort_keys=True))
                os.replace(temporary, kept)
        _remove(self.folder(run_id))

    def prune(self) -> list[tuple[str, str]]:
        """Delete every entry that fails its checks (damaged, made by an older engine, or built on
        an encoder that is), stopped runs' checkpoints that are damaged or whose run has finished,
        and staging folders and locks left by runs that died.

        Returns (run id, reason) per deleted entry. Each entry is checked under its lock, so a
        run being retrained into its folder is left alone.
        """
        removed = []
        # Encoders first, so that a classifier whose encoder goes is found orphaned in this pass.
        for run_id in sorted(self.run_ids(), key=self._has_encoder):
            with self.lock(run_id):
                try:
                    self.check(run_id)
                except MissingRunError:
                    continue
                except CorruptRunError as error:
                    self.delete(run_id)
                    removed.append((run_id, str(error)))
        removed += self._prune_partials()
        self.clean_stale()
        return removed

    def _prune_partials(self) -> list[tuple[str, str]]:
        """Stopped runs' checkpoints that are damaged, or whose run has since finished."""
        folder = self.root / PARTIAL
        if not folder.is_dir():
            return []
        removed = []
        stopped = {path.name.split(".")[0] for path in folder.iterdir()}
        for run_id in sorted(stopped):
            if not is_run_id(run_id):
                continue
            with self.lock(run_id):
                reason = None
                if self.exists(run_id):
                    reason = "a stopped run's checkpoint, its run since finished"
                else:
                    try:
                        if self.load_partial(run_id) is None:
                            continue
                    except CorruptRunError as error:
                        reason = str(error)
                if reason:
                    self.discard_partial(run_id)
                    for leftover in folder.glob(f"{run_id}.*.tmp"):
                        _remove(leftover)
                    removed.append((run_id, reason))
        return removed

    def _has_encoder(self, run_id: str) -> bool:
        config = self.recover_config(run_id)
        return config is not None and bool(config.settings.get("encoder_run"))

    def folder_of_derived_exists(self, name: str) -> bool:
        """Whether a derived folder's run is still cached with the weights it was computed from."""
        run_id, _, digest = name.partition("-")
        try:
            return self.verify(run_id)["sha256"]["model.pt"].startswith(digest)
        except (MissingRunError, CorruptRunError):
            return False

    def derived_path(self, run_id: str, name: str) -> Path:
        """Where something computed from a run's weights is kept (a calibration, a search index):
        named by the weights' checksum, so a retrained run never reads another's."""
        weights = self.verify(run_id)["sha256"]["model.pt"]
        return self.root / DERIVED / f"{run_id}-{weights[:12]}" / name

    def clean_stale(self, older_than: float = STALE_SECONDS) -> None:
        """Remove staging folders and unheld lock files older than `older_than` seconds."""
        if not self.root.is_dir():
            return
        limit = time.time() - older_than
        for path in self.root.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < limit:
                    shutil.rmtree(path, ignore_errors=True)
        for path in (self.root / DERIVED).glob("*-*"):
            if not self.folder_of_derived_exists(path.name):
                shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(".*.owner"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < limit:
                    path.unlink()
        for path in self.root.glob(".*.lock"):
            with contextlib.suppress(OSError, Timeout):
                if path.stat().st_mtime < limit:
                    with FileLock(str(path), timeout=0):
                        path.unlink()

    def lock(self, run_id: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f".{run_id}.lock"))

    @contextlib.contextmanager
    def lock_if_writable(self, run_id: str, on_wait=None):
        """The run's lock; where the cache cannot hold a lock (read-only, a file, a lock path that
        is a folder) nothing is locked, and the caller learns why (None: locked). Waiting for
        another process is said at once (`on_wait` and the log), and so is a holder that is
        stopped; one stopped past LOCK_PATIENCE seconds ends the wait with a LockedRunError."""
        try:
            lock = self.lock(run_id)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                wait_for_lock(lock, self.root, run_id, on_wait or (lambda message: None))
        except OSError as error:
            if isinstance(error, LockedRunError):
                raise
            log.warning("run %s trains unlocked: cache %s not writable (%s)", run_id, self.root, error)
            yield f"{type(error).__name__}: {error}"
            return
        owner = self.root / f".{run_id}.owner"
        with contextlib.suppress(OSError):
            write_text_atomic(owner, str(os.getpid()))
        try:
            yield None
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            lock.release()

    # ------------------------------------------------------------------ listing

    def list_runs(self) -> pd.DataFrame:
        """Every entry as a row: run id, status, config columns, final metrics."""
        rows = []
        for run_id in self.run_ids():
            row: dict = {"run_id": run_id}
            try:
                config = self.check(run_id)
                manifest = self.verify(run_id)
                history, metrics = self.load_record(run_id)
            except (MissingRunError, CorruptRunError) as error:
                rows.append({**row, "status": f"damaged: {error}"})
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
            for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
                if history.get(key):
                    row[f"final_{key}"] = history[key][-1]
            for key in ("test_loss", "test_accuracy", "test_mse", "train_seconds", "epochs_done", "device"):
                if key in metrics:
                    row[key] = metrics[key]
            if "test_confusion" in metrics:
                row["never_predicted"] = ", ".join(classes_never_predicted(metrics["test_confusion"]))
            ran = metrics.get("execution")
            if isinstance(ran, dict):  # what it computed with: device type, precision, kernels
                row["execution"] = "/".join(str(ran.get(k, "?")) for k in ("device", "precision", "kernels"))
            rows.append(row)
        return pd.DataFrame(rows)
