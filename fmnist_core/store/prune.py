"""Pruning the run store: entries that fail their checks (damaged, made by an older engine, or
built on an encoder that is), stopped runs' checkpoints that are damaged or whose run has
finished, and what dead runs left behind (staging folders, temporaries, locks, derived files)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import Counter

from filelock import FileLock, Timeout

from fmnist_core.base.files import CorruptRunError, remove_path
from fmnist_core.store.cache import DERIVED, RunCache
from fmnist_core.store.entries import MissingRunError, is_run_id

STALE_SECONDS = 24 * 3600  # staging folders and locks untouched this long belong to runs that died


def prune(cache: RunCache) -> list[tuple[str, str]]:
    """Delete what fails its checks; returns (run id, reason) per deleted entry. Each entry is
    checked under its lock, so a run being retrained into its folder is left alone."""
    removed = []
    # Encoders first, so that a classifier whose encoder goes is found orphaned in this pass.
    for run_id in sorted(cache.run_ids(), key=lambda run_id: has_encoder(cache, run_id)):
        with cache.lock(run_id):
            try:
                cache.check(run_id)
            except MissingRunError:
                continue
            except CorruptRunError as error:
                cache.delete(run_id)
                removed.append((run_id, str(error)))
    removed += prune_stopped(cache)
    clean_stale(cache)
    return removed


def prune_stopped(cache: RunCache) -> list[tuple[str, str]]:
    """Stopped runs' checkpoints that are damaged, or whose run has since finished."""
    removed, stopped = [], cache.stopped
    for run_id in stopped.run_ids():
        if not is_run_id(run_id):
            continue
        with cache.lock(run_id):
            reason = None
            if cache.exists(run_id):
                reason = "a stopped run's checkpoint, its run since finished"
            else:
                try:
                    if stopped.load(run_id) is None:
                        continue
                except CorruptRunError as error:
                    reason = str(error)
            if reason:
                stopped.discard(run_id)
                removed.append((run_id, reason))
    return removed


def has_encoder(cache: RunCache, run_id: str) -> bool:
    config = cache.recover_config(run_id)
    return config is not None and bool(config.settings.get("encoder_run"))


def clean_stale(cache: RunCache, older_than: float = STALE_SECONDS) -> None:
    """Remove staging folders, temporaries and unheld lock files older than `older_than` seconds,
    and derived files whose run is gone or retrained."""
    root = cache.root
    if not root.is_dir():
        return
    limit = time.time() - older_than
    for path in [*root.glob(".tmp-*"), *cache.stopped.folder.glob(".*.tmp")]:
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                remove_path(path)
    for path in (root / DERIVED).glob("*-*"):
        if not cache.folder_of_derived_exists(path.name):
            shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".*.owner"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                path.unlink()
    for path in root.glob(".*.lock"):
        with contextlib.suppress(OSError, Timeout):
            if path.stat().st_mtime < limit:
                with FileLock(str(path), timeout=0):
                    path.unlink()


def entry_bytes(cache: RunCache, run_id: str) -> int:
    """The disk an entry takes: its files and what was derived from it."""
    total = 0
    for path in [*cache.folder(run_id).glob("*"), *(cache.root / DERIVED).glob(f"{run_id}-*/*")]:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def over_cap(cache: RunCache, max_bytes: int, pinned: set[str]) -> list[tuple[str, int]]:
    """Fit the run store under `max_bytes`: the oldest entries first, never a pinned one nor the
    encoder a kept entry builds on. Returns (run id, bytes freed) per removed entry; a store that
    pinned entries alone fill stays over the cap (nothing pinned is ever removed)."""
    if max_bytes <= 0:
        return []
    sizes = {run_id: entry_bytes(cache, run_id) for run_id in cache.run_ids()}
    total = sum(sizes.values())
    if total <= max_bytes:
        return []

    def age(run_id: str) -> float:
        with contextlib.suppress(OSError):
            return (cache.folder(run_id) / "manifest.json").stat().st_mtime
        return 0.0

    encoder_of = {}
    for run_id in sizes:
        config = cache.recover_config(run_id)
        encoder_of[run_id] = config.settings.get("encoder_run") if config is not None else None
    users = Counter(encoder for encoder in encoder_of.values() if encoder)  # kept runs built on each
    removed = []
    for run_id in sorted(sizes, key=age):
        if total <= max_bytes:
            break
        if run_id in pinned or users[run_id]:  # pinned, or a kept run builds on it
            continue
        if encoder_of[run_id]:
            users[encoder_of[run_id]] -= 1
        with cache.lock(run_id):
            cache.delete(run_id)
        freed = sizes.pop(run_id)
        total -= freed
        removed.append((run_id, freed))
    return removed
