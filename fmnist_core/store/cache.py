"""The disk cache in models_cache/: one folder per config hash, the source of truth for trained runs.

It stores and loads files; building models from them is fmnist_core.runs.trained's work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch import nn

from fmnist_core.base.files import (
    ArraySpec,
    CorruptRunError,
    arrays_size_bound,
    default_root,
    read_arrays,
    read_json,
    read_regular,
    remove_path,
    save_tensors,
    sha256,
    write_arrays_atomic,
    write_text_atomic,
)
from fmnist_core.base.locks import LockedRunError, wait_for_lock
from fmnist_core.store.checkpoints import StoppedRuns
from fmnist_core.store.entries import (
    FILES,
    LOADABLE,
    MANIFEST,
    MissingRunError,
    is_run_id,
    read_once,
    stamps,
    verified_stamps,
    verify_entry,
    written,
)
from fmnist_core.training.config import RunConfig, check_record

log = logging.getLogger("fmnist_core")
REMOVED = ".removed"  # configs of deleted entries: {run_id}.json
DERIVED = ".derived"  # what was computed from a run's weights: {run_id}-{weights digest}/
SOURCE = "source"  # a derived file's member: the folder (run id, weights' checksum) it was computed for


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for a moment, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def keep_derived(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Keep arrays computed from a run at its derived_path, with the name of the folder they belong
    to (the run id and its weights' checksum); where that cannot be written (a `.derived` that is a
    file, a read-only cache) nothing is kept: they are computed again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():  # os.replace cannot replace a folder
            remove_path(path, strict=True)
        write_arrays_atomic(path, {**arrays, SOURCE: np.array(path.parent.name)})
    except OSError as error:
        log.warning("%s not kept, computed again next time (%s)", path, error)


def read_derived(
    path: Path, expected: dict[str, ArraySpec], longest: int = 0
) -> dict[str, np.ndarray] | None:
    """The arrays keep_derived kept at `path`, where it is a regular file no larger than `expected`
    arrays take (a None length: `longest` at most), each of the shape and type expected, and
    computed for the folder it is in (not another run's copied here); else None."""
    source = np.array(path.parent.name)
    expected = {**expected, SOURCE: ((), source.dtype)}
    try:
        arrays = read_arrays(read_regular(path, arrays_size_bound(expected, longest)), expected)
    except (OSError, ValueError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("%s not used, computed again (%s)", path, error)
        return None
    return arrays if arrays.pop(SOURCE) == source else None


SHORT_ID = 6  # an id's first characters that may name a run (links, the command line)


def ids_named(given: str, ids) -> list[str]:
    """The run ids `given` may name: itself, else those it begins (why_not_named: whether it names one)."""
    ids = list(ids)
    return [given] if given in ids else [run_id for run_id in ids if run_id.startswith(given)]


def why_not_named(given: str, found: list[str]) -> str | None:
    """Why `given` names no one run (ids_named found `found`), in words after the id; None where it
    names one (the id, or its first SHORT_ID characters or more)."""
    if found == [given] or (len(found) == 1 and len(given) >= SHORT_ID):
        return None
    if len(given) < SHORT_ID:
        return f"is too short ({SHORT_ID} characters at least)"
    if not found:
        return "is not a run of this lab's cache"
    return f"begins {len(found)} runs' ids (give more of it)"


class RunCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def folder(self, run_id: str) -> Path:
        if not is_run_id(run_id):  # never a path: "../x" or "/tmp" would leave the cache
            raise MissingRunError(run_id)
        return self.root / run_id

    # ------------------------------------------------------------------ reading

    def verify(self, run_id: str) -> dict:
        """The entry's manifest, after checking every file against its checksum (entries.verify_entry)."""
        return verify_entry(self.folder(run_id), run_id)

    def stamp(self) -> tuple:
        """Changes whenever any entry's files change: the key of a listing kept in memory."""
        return tuple((run_id, stamps(self.folder(run_id))) for run_id in self.run_ids())

    def load_config(self, run_id: str) -> RunConfig:
        """The entry's config, parsed and checked once per change of its files in this process."""
        folder = self.folder(run_id)
        return read_once(folder, "config", verified_stamps(folder, run_id), lambda: self._read_config(run_id))

    def _read_config(self, run_id: str) -> RunConfig:
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
        """The entry's weights (read-only: models copy them in), loaded once per change of its files
        for the latest two entries (a check, then the load that follows it)."""
        folder = self.folder(run_id)
        return read_once(folder, "state", verified_stamps(folder, run_id), lambda: self._read_state(run_id))

    def _read_state(self, run_id: str) -> dict[str, torch.Tensor]:
        try:
            state = torch.load(self.folder(run_id) / "model.pt", map_location="cpu", weights_only=True)
        except Exception as error:  # refused by weights_only, not a zip, truncated: damaged either way
            raise CorruptRunError(
                f"run {run_id}: model.pt cannot be loaded ({type(error).__name__})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CorruptRunError(f"run {run_id}: model.pt is not a state dict of tensors")
        LOADABLE[self.folder(run_id)] = stamps(self.folder(run_id))
        return state

    def load_record(self, run_id: str) -> tuple[dict, dict]:
        """History and metrics of a verified run, without building its model; read once per change
        of its files (for the latest entries), each call given its own two dicts."""
        folder = self.folder(run_id)
        history, metrics = read_once(
            folder, "record", verified_stamps(folder, run_id), lambda: self._read_record(run_id)
        )
        return dict(history), dict(metrics)

    def _read_record(self, run_id: str) -> tuple[dict, dict]:
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
        if LOADABLE.get(self.folder(run_id)) != stamps(self.folder(run_id)):
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
            remove_path(target, strict=True)  # a corrupted entry (under the run's lock), a link or a file
            os.replace(staging, target)
            written(target, manifest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    @property
    def stopped(self) -> StoppedRuns:
        """Runs stopped before their last epoch, with the checkpoints they continue from."""
        return StoppedRuns(self.root)

    def delete(self, run_id: str) -> None:
        """Remove the entry; its config, where it still reads true, is kept in .removed/ so that a
        classifier built on this run can train it again (resolve_encoder)."""
        config = self.recover_config(run_id)
        if config is not None:
            with contextlib.suppress(OSError):
                kept = self.root / REMOVED / f"{run_id}.json"
                kept.parent.mkdir(exist_ok=True)
                write_text_atomic(kept, json.dumps(config.to_dict(), sort_keys=True))
        remove_path(self.folder(run_id))

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
