"""A cache entry and its checks: one folder per run id holding config.json, history.json and
model.pt, and a manifest with each file's SHA-256 (base.files.sha256, the lab's one checksum).
What this process has verified is remembered per folder with the files' stamps, and forgotten as
soon as a file changes."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fmnist_core.base.files import CorruptRunError, read_json, sha256

FILES = ("config.json", "history.json", "model.pt")
MANIFEST = "manifest.json"
# What this process has checked, per entry folder, with the files' stamps (size, mtime, inode) then:
# shared by every RunCache (the app makes one per call), and void as soon as a file changes.
_VERIFIED: dict[Path, tuple[tuple, dict]] = {}  # folder -> (stamps, manifest)
LOADABLE: dict[Path, tuple] = {}  # folder -> stamps when its weights last loaded
# What this process has read from an entry, per folder and kind ("config", "record", "state"), with
# the stamps of the files it was read from: read again only after a file changes. Every config is
# kept (small); records and weights only for the latest few entries (a cartography run's record
# holds megabytes; weights are kept for the load that follows a check).
_READ: dict[tuple[Path, str], tuple[tuple, object]] = {}
KEEP_LATEST = {"record": 16, "state": 2, "run": 4}  # by the kind's first word ("run on cpu")
_READING = threading.Lock()
T = TypeVar("T")


class MissingRunError(LookupError):
    """No cache entry for this run id."""


def is_run_id(name: str) -> bool:
    """Whether `name` has a run id's form (RunConfig.run_id: 16 hexadecimal digits)."""
    return isinstance(name, str) and re.fullmatch(r"[0-9a-f]{16}", name) is not None


def stamps(folder: Path) -> tuple:
    """Size, modification time, inode and status-change time of each file of an entry (None where
    one is missing). The last is set by the kernel at any write or utime: a byte changed in place
    with its size and modification time put back still changes it."""
    found = []
    for name in (*FILES, MANIFEST):
        try:
            info = (folder / name).stat()
            found.append((info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns))
        except OSError:
            found.append(None)
    return tuple(found)


def read_once(folder: Path, kind: str, verified: tuple, read: Callable[[], T]) -> T:
    """read() once per change of the entry's files: kept with the stamps `verified` (those its
    checksums were checked at), and kept only where the files still have them after the read."""
    with _READING:
        known = _READ.pop((folder, kind), None)
        if known is not None and known[0] == verified:
            _READ[(folder, kind)] = known  # the latest read last
            return known[1]  # type: ignore[return-value]
    value = read()
    if stamps(folder) == verified:
        with _READING:
            _READ[(folder, kind)] = (verified, value)
            limit = KEEP_LATEST.get(kind.split()[0])
            if limit is not None:
                for key in [key for key in _READ if key[1] == kind][:-limit]:
                    del _READ[key]
    return value


def verified_stamps(folder: Path, run_id: str) -> tuple:
    """The entry's stamps, after checking every file against its checksum (verify_entry)."""
    verify_entry(folder, run_id)
    return _VERIFIED[folder][0]


def written(folder: Path, manifest: dict) -> None:
    """An entry this process has just written, its checksums computed from the files it wrote:
    verified as it stands, so the next read does not hash them again."""
    _VERIFIED[folder] = (stamps(folder), manifest)


def verify_entry(folder: Path, run_id: str) -> dict:
    """The entry's manifest, after checking every file against its checksum."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise MissingRunError(run_id)
    now = stamps(folder)
    known = _VERIFIED.get(folder)
    if known is not None and known[0] == now:
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
    _VERIFIED[folder] = (now, manifest)
    return manifest
