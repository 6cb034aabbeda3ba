"""A queue of training jobs run one after another by a background thread.

The app keeps one JobQueue per process: jobs outlive page reruns and browser sessions, two
sessions asking for the same config share one job, and the cores never run two trainings at
once (two at a time ran about 24x slower each on 2 cores).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field

from .cache import RunCache
from .config import RunConfig
from .runs import TrainedRun, get_or_train
from .training import Progress

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"


@dataclass
class Job:
    config: RunConfig
    state: str = QUEUED
    latest: Progress | None = None  # the last progress report
    epochs: list[dict] = field(default_factory=list)  # one metrics dict per finished epoch
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

    def submit(self, config: RunConfig) -> Job:
        """Queue a training, or return the job already queued, running or done for this config."""
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
            try:
                run = get_or_train(
                    job.config,
                    on_progress=job.record,
                    should_stop=job.stop_requested.is_set,
                    cache=self.cache,
                )
                if run.cached and not job.epochs:
                    job.epochs = [
                        {key: values[i] for key, values in run.history.items()}
                        for i in range(len(run.history["epoch"]))
                    ]
                job.result = run
                job.state = DONE if run.completed else STOPPED
            except Exception as error:  # a failed job must not kill the worker thread
                job.error = f"{type(error).__name__}: {error}"
                job.state = FAILED
                traceback.print_exc()
