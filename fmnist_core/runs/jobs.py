"""A queue of training jobs, each trained in a child process, one after another.

The app keeps one JobQueue per server: jobs outlive page reruns and browser sessions, two
sessions asking for the same config share one job, and the cores never run two trainings at
once (two at a time ran about 24x slower each on 2 cores). A job trains in its own process, with
its own torch threads: the server's pages keep answering while it runs (the server's own torch
work is held to one thread meanwhile), and a job that crashes or runs out of memory is a failed
job with a message, not a dead server. Progress comes back through a pipe; the weights through
the cache (or, where the cache could not hold them, the pipe).

A job's process does not import the main module (the page script Streamlit runs, a user's
script): it needs only fmnist_core, and re-running a page there would start the app a second time.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import torch

from fmnist_core.runs.trained import TrainedRun, check_resources, get_or_train, load_run, model_with_weights
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import Progress

log = logging.getLogger("fmnist_core")

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"


@dataclass
class Job:
    config: RunConfig
    state: str = QUEUED
    latest: Progress | None = None  # the last progress report
    epochs: list[dict] = field(default_factory=list)  # one metrics dict per finished epoch
    # (epochs done as a fraction, the epoch's running training loss) at every progress report
    trace: list[tuple[float, float]] = field(default_factory=list)
    error: str = ""
    result: TrainedRun | None = None
    submitted: float = field(default_factory=time.time)
    stop_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def record(self, progress: Progress) -> None:
        self.latest = progress
        if progress.epoch_done:
            self.epochs.append(dict(progress.metrics))
        else:  # x as the per-epoch points have it: epoch k's mean sits at k
            self.trace.append(
                (progress.epoch - 1 + progress.step / max(progress.steps, 1), progress.train_loss)
            )

    def history(self) -> dict[str, list]:
        """The finished epochs as history lists (the same shape as a cached run's)."""
        keys = self.epochs[0].keys() if self.epochs else ()
        return {key: [epoch[key] for epoch in self.epochs] for key in keys}


class JobQueue:
    def __init__(self, cache: RunCache | None = None):
        self.cache = cache or RunCache()
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # run ids in submission order
        self._pending: queue.Queue[str] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="fmnist-trainer", daemon=True)
        self._worker.start()

    def refusal(self, config: RunConfig) -> str:
        """Why `config` cannot train here (its memory estimate over the limit, a batch norm fed a
        batch of one), in one line; "" when it can."""
        try:
            check_resources(config, self.cache)
        except ValueError as error:
            return " ".join(str(error).split())
        return ""

    def submit(self, config: RunConfig) -> Job:
        """Queue a training, or return the job already queued, running or done for this config.
        A config that cannot train here is refused before it queues (ValueError, see `refusal`)."""
        check_resources(config, self.cache)
        with self._lock:
            job = self._jobs.get(config.run_id)
            if job is not None and job.active:
                return job
            if job is not None and job.state == DONE and self.cache.exists(config.run_id):
                return job  # a finished job whose entry is gone is forgotten: it trains again
            job = Job(config)
            self._jobs[config.run_id] = job
            if config.run_id in self._order:  # a failed or stopped job, tried again: listed once
                self._order.remove(config.run_id)
            self._order.append(config.run_id)
            self._pending.put(config.run_id)
            return job

    def missing(self, configs) -> tuple[list[RunConfig], list[RunConfig]]:
        """Of `configs` (in their order), those not in the cache: (not queued yet, queued or running)."""
        absent = [config for config in configs if not self.cache.exists(config.run_id)]
        active = {job.run_id for job in self.jobs() if job.active}
        return [c for c in absent if c.run_id not in active], [c for c in absent if c.run_id in active]

    def submit_all(self, configs) -> None:
        """Queue each config in its order (an autoencoder before the classifiers built on it)."""
        for config in configs:
            self.submit(config)

    def get(self, run_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(run_id)

    def stop(self, run_id: str) -> None:
        job = self.get(run_id)
        if job is not None:
            job.stop_requested.set()

    def position(self, run_id: str) -> int | None:
        """0 while running, 1 for the next queued job, and so on; None when not waiting."""
        with self._lock:
            waiting = [rid for rid in self._order if self._jobs[rid].active]
            ordered = sorted(waiting, key=lambda rid: self._jobs[rid].state != RUNNING)
            return ordered.index(run_id) if run_id in ordered else None

    def jobs(self) -> list[Job]:
        with self._lock:
            return [self._jobs[rid] for rid in self._order]

    def wait(self, run_id: str, timeout: float | None = None) -> Job:
        """Block until the job leaves the queue (tests and scripts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(run_id)
        while job is not None and job.active:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {run_id} still {job.state}")
            time.sleep(0.05)
        return job

    def _work(self) -> None:
        while True:
            run_id = self._pending.get()
            job = self.get(run_id)
            if job.stop_requested.is_set():
                job.state = STOPPED
                continue
            job.state = RUNNING
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the server's own torch work yields the cores to the job
            try:
                self._run_in_child(job)
            except Exception as error:  # a failed job must not kill the worker thread
                log.exception("job %s failed", run_id)
                job.error = f"{type(error).__name__}: {error}"
                job.state = FAILED
            finally:
                torch.set_num_threads(threads)

    def _run_in_child(self, job: Job) -> None:
        context = job_context()
        messages = context.Queue()
        stop = context.Event()
        child = context.Process(
            target=train_in_child,
            args=(job.config.to_json(), str(self.cache.root.resolve()), messages, stop, own_settings()),
            name=f"fmnist-job-{job.run_id}",
            daemon=True,
        )
        with _main_module_hidden():
            child.start()
        outcome = None
        while outcome is None:
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
        kind, payload = outcome
        if kind == "error":
            job.error = payload
            job.state = FAILED
            return
        job.result = self._result(job.config, payload)
        if job.result.cached and not job.epochs:
            history = job.result.history
            job.epochs = [
                {key: values[i] for key, values in history.items()} for i in range(len(history["epoch"]))
            ]
        job.state = DONE if job.result.completed else STOPPED

    def _result(self, config: RunConfig, summary: dict) -> TrainedRun:
        """The run the child trained: from the cache where it saved it, else from the weights it sent."""
        config = RunConfig.from_dict(summary["config"])
        if summary["state"] is None:
            run = load_run(config.run_id, self.cache)
        else:
            state = torch.load(io.BytesIO(summary["state"]), weights_only=True)
            model = model_with_weights(config, state, self.cache)
            run = TrainedRun(config, model, summary["history"], summary["metrics"], False)
        run.cached, run.completed, run.note = summary["cached"], summary["completed"], summary["note"]
        return run


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
        try:
            yield
        finally:
            if sys.modules.get("__main__") is empty:  # a script run may have set its own meanwhile
                sys.modules["__main__"] = saved


def job_context():
    """Where jobs' processes come from: a fork server that has imported torch and the core once
    (a job then starts in a fraction of a second instead of ~3 s), forked before any thread of
    ours exists; where there is none (Windows), fresh interpreters."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload([__name__])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def own_settings() -> dict[str, str]:
    """The lab's environment settings (FMNIST_DATA, FMNIST_BF16, ...) as they are now: a forked
    job would otherwise see them as they were when the fork server started."""
    return {key: value for key, value in os.environ.items() if key.startswith("FMNIST_")}


def train_in_child(config_json: str, cache_root: str, messages, stop, settings: dict[str, str]) -> None:
    """A job's process: train (or load) the run, sending progress, then one last message:
    ("done", summary) or ("error", one line). The weights travel only where the cache lacks them."""
    for key in [key for key in os.environ if key.startswith("FMNIST_")]:
        del os.environ[key]
    os.environ.update(settings)
    try:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        config = RunConfig.from_dict(json.loads(config_json))
        run = get_or_train(
            config,
            on_progress=lambda progress: messages.put(("progress", progress)),
            should_stop=stop.is_set,
            cache=RunCache(cache_root),
        )
        saved = run.completed and RunCache(cache_root).exists(run.run_id)
        state = None
        if not saved:  # as bytes: torch's own tensor pickling shares memory that dies with this process
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in run.model.state_dict().items()}, buffer)
            state = buffer.getvalue()
        summary = {
            "config": run.config.to_dict(),
            "state": state,
            "history": run.history,
            "metrics": run.metrics,
            "cached": run.cached,
            "completed": run.completed,
            "note": run.note,
        }
        messages.put(("done", summary))
    except Exception as error:  # expected (bad data, a missing encoder) or not: one line for the page
        log.exception("training %s failed", config_json[:80])
        messages.put(("error", f"{type(error).__name__}: {' '.join(str(error).split())}"))
    finally:
        messages.close()
        messages.join_thread()  # everything sent is in the pipe before the process ends
