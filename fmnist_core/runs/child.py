"""A job's own process: where it comes from (a fork server that has imported torch and the core
once), what it is given (the lab's settings, never a secret) and how its progress and its end come
back (a pipe). The in-process queue (jobs.py) and the shared queue's trainers (shared.py) both
train through `run_job`.

A job's process does not import the main module (the page script Streamlit runs, a user's
script): it needs only fmnist_core, and re-running a page there would start the app a second time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import sys
import threading
import types
from multiprocessing import resource_tracker

from fmnist_core.base import environment
from fmnist_core.base.device import use_threads
from fmnist_core.runs.trained import get_or_train, summarise
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig

log = logging.getLogger("fmnist_core")

JOB_THREADS = "FMNIST_JOB_THREADS"  # a job's process: its torch threads (its share of the cores)


def run_job(job, cache_root: str, settings: dict[str, str], tick=None) -> tuple[str, object]:
    """Train `job` (its config, its stop_requested event, its record()) in a process of its own
    and return its last message: ("error", one line) or ("done", the run's summary). `tick()` is
    called about five times a second meanwhile (a shared queue's trainer reports there). A process
    that dies is a RuntimeError with its exit code."""
    context = job_context()
    messages = context.Queue()
    stop = context.Event()
    child = context.Process(
        target=train_in_child,
        args=(job.config.to_json(), cache_root, messages, stop, settings),
        name=f"fmnist-job-{job.run_id}",
        daemon=True,
    )
    with _main_module_hidden():
        child.start()
    outcome = None
    while outcome is None:
        if tick is not None:
            tick()
        if job.stop_requested.is_set():
            stop.set()
        try:
            kind, payload = messages.get(timeout=0.2)
        except queue.Empty:
            if not child.is_alive() and messages.empty():
                break
            continue
        if kind == "progress":
            job.record(payload)
        else:
            outcome = (kind, payload)
    child.join(timeout=30)
    if outcome is None:
        code = child.exitcode
        why = ", killed: out of memory?" if code in (-9, 137) else ""
        raise RuntimeError(f"the training process died (exit code {code}{why}); the server is fine")
    return outcome


_CONTEXT = None
_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden():
    """While a job's process starts, `__main__` is an empty module: multiprocessing would otherwise
    have the child import the parent's main script (under Streamlit, the page being run)."""
    with _MAIN_LOCK:
        saved = sys.modules.get("__main__")
        empty = types.ModuleType("__main__")
        sys.modules["__main__"] = empty
        # The fork server, started by the first job, would keep the server's whole environment,
        # and every job forked from it would hold the admin token in /proc/<pid>/environ.
        try:
            with environment.secrets_hidden():
                yield
        finally:
            if sys.modules.get("__main__") is empty:  # a script run may have set its own meanwhile
                sys.modules["__main__"] = saved


def job_context():
    """Where jobs' processes come from: a fork server that has imported torch and the core once
    and done what every job's first run would (runs/preload.py), forked before any thread of ours
    exists; where there is none (Windows), fresh interpreters."""
    global _CONTEXT
    if _CONTEXT is None:
        # multiprocessing's resource tracker, started by the first queue a job is given, would
        # keep the server's environment, secrets included, for the server's life.
        with environment.secrets_hidden():
            resource_tracker.ensure_running()
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload([__name__, "fmnist_core.runs.preload"])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def own_settings() -> dict[str, str]:
    """The lab's environment settings (FMNIST_DATA, FMNIST_BF16, ...) as they are now: a forked
    job would otherwise see them as they were when the fork server started. Secrets (the admin
    token) stay in the server."""
    return environment.for_jobs()


def train_in_child(config_json: str, cache_root: str, messages, stop, settings: dict[str, str]) -> None:
    """A job's process: train (or load) the run, sending progress, then one last message:
    ("done", summary) or ("error", one line). The weights travel only where the cache lacks them."""
    for key in [key for key in os.environ if key.startswith("FMNIST_")]:
        del os.environ[key]
    os.environ.update(settings)
    try:
        use_threads(environment.job_threads() or os.cpu_count() or 1)
        config = RunConfig.from_dict(json.loads(config_json))
        parent = multiprocessing.parent_process()  # the queue's trainer: gone, the job stops too
        run = get_or_train(
            config,
            on_progress=lambda progress: messages.put(("progress", progress)),
            # A trainer killed mid-job leaves no orphan training on: the job stops at its next
            # step, its finished epochs kept as any stopped run's (the next trainer continues).
            should_stop=lambda: stop.is_set() or (parent is not None and not parent.is_alive()),
            cache=RunCache(cache_root),
        )
        messages.put(("done", summarise(run, cache_root)))
    except Exception as error:  # expected (bad data, a missing encoder) or not: one line for the page
        log.exception("training %s failed", config_json[:80])
        messages.put(("error", f"{type(error).__name__}: {' '.join(str(error).split())}"))
    finally:
        parent = multiprocessing.parent_process()
        if parent is not None and not parent.is_alive():
            # Nobody reads the pipe any more: waiting for it to take the last message (a stopped
            # run's weights fill it) would keep this process forever.
            messages.cancel_join_thread()
        messages.close()
        messages.join_thread()  # everything sent is in the pipe before the process ends
