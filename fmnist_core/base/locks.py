"""Waiting for a run's lock: who holds it, said at once, and a holder that is stopped named with
what to do (a process under kill -STOP holds its lock for ever)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from filelock import FileLock, Timeout

from fmnist_core.base import environment

log = logging.getLogger("fmnist_core")


class LockedRunError(TimeoutError):
    """A run's lock held by a process that has been stopped (kill -STOP, a debugger) too long."""


LOCK_POLL = 2.0  # seconds between looks at a lock's holder while waiting for it
LOCK_PATIENCE = 120.0  # seconds a stopped holder is waited for ($FMNIST_LOCK_PATIENCE)


def process_state(pid: int) -> str:
    """Its state: "running", "stopped" (SIGSTOP, a debugger), "gone", or "unknown" (no /proc to ask)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return "gone"
    except (OSError, IndexError):
        return "unknown"
    return "stopped" if fields and fields[0] in ("T", "t") else "running"


def lock_holder(root: Path, run_id: str) -> int | None:
    """The process id that holds the run's lock (as it wrote it), or None where unknown."""
    try:
        return int((root / f".{run_id}.owner").read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for_lock(lock: FileLock, root: Path, run_id: str, say) -> None:
    """Acquire `lock`, which another process holds: say so at once, and name a stopped holder."""
    holder = lock_holder(root, run_id)
    who = f"process {holder}" if holder else "another process"
    message = f"run {run_id} is being trained by {who}; waiting for it"
    log.warning(message)
    say(message)
    stopped_since = None
    patience = environment.lock_patience(LOCK_PATIENCE)
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL)
            return
        except Timeout:
            holder = lock_holder(root, run_id)
            if holder is None or process_state(holder) != "stopped":
                stopped_since = None
                continue
            if stopped_since is None:
                stopped_since = time.monotonic()
                message = (
                    f"process {holder}, which holds run {run_id}'s lock, is stopped: `kill -CONT {holder}` "
                    f"lets it go on, `kill {holder}` ends it and frees the run"
                )
                log.warning(message)
                say(message)
            elif time.monotonic() - stopped_since > patience:
                raise LockedRunError(
                    f"run {run_id} is locked by process {holder}, stopped for over {patience:.0f} s: "
                    f"`kill -CONT {holder}` lets it go on, `kill {holder}` frees the run"
                ) from None
