"""A queue of training jobs, each trained in a child process, by default one after another.

The app keeps one JobQueue per server: jobs outlive page reruns and browser sessions, two
sessions asking for the same config share one job, and by default the cores never run two
trainings at once (two at a time, each with all the cores, ran about 24x slower each on 2 cores);
with `workers` (FMNIST_WORKERS) several train at once, each with its share of the cores. Each job
belongs to those who asked for it; the queue takes turns between them (round robin) within
per-person limits (Limits). A job trains in its own process, with
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
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace

import torch

from fmnist_core.base import environment
from fmnist_core.runs.child import JOB_THREADS, own_settings, run_job
from fmnist_core.runs.trained import TrainedRun, check_resources, load_run, model_with_weights
from fmnist_core.store.cache import RunCache
from fmnist_core.store.prune import over_cap
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import Progress

log = logging.getLogger("fmnist_core")

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
LAB = ""  # the owner of jobs nobody in particular asked for (the command line, a single local user)


@dataclass(frozen=True)
class Limits:
    """What one person may have waiting in the queue (0: no limit). A localhost lab for one person
    feels none of them; a server for a class sets them (FMNIST_MAX_JOBS, FMNIST_MAX_QUEUE_MINUTES)."""

    jobs: int = 0  # queued or running jobs per person
    minutes: float = 0.0  # their estimated training time, together
    cache_gb: float = 0.0  # lab-wide: after each job the oldest unpinned runs go until the cache fits

    @classmethod
    def from_environment(cls) -> Limits:
        return cls(environment.max_jobs(), environment.max_queue_minutes(), environment.max_cache_gb())


def refusal(config: RunConfig, cache: RunCache) -> str:
    """Why `config` cannot train with `cache` (memory, a batch norm fed a batch of one), in one
    line; "" when it can."""
    try:
        check_resources(config, cache)
    except ValueError as error:
        return " ".join(str(error).split())
    return ""


def check_limits(limits: Limits, jobs: int, seconds: float) -> None:
    """ValueError (one line) where a person with `jobs` active jobs may not queue another, or where
    their queue would then hold `seconds` of training over the limit."""
    if limits.jobs and jobs >= limits.jobs:
        raise ValueError(
            f"limit: you have {jobs} job{'s' if jobs != 1 else ''} in the queue, the most one person may have is "
            f"{limits.jobs} (FMNIST_MAX_JOBS; 0 for no limit): wait for one to finish or cancel one"
        )
    if limits.minutes and seconds / 60 > limits.minutes:
        raise ValueError(
            f"limit: your queue would hold about {seconds / 60:.0f} min of training, the most one person "
            f"may have is {limits.minutes:g} min (FMNIST_MAX_QUEUE_MINUTES; 0 for no limit)"
        )


def wait_for(queue, run_id: str, timeout: float | None, pause: float) -> Job | None:
    """Ask `queue` for the job every `pause` seconds until it is no longer queued or running;
    TimeoutError after `timeout` seconds (None: no limit). Either queue, in memory or shared."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = queue.get(run_id)
    while job is not None and job.active:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {run_id} still {job.state}")
        time.sleep(pause)
        job = queue.get(run_id)
    return job


def workers_from_environment() -> int:
    """How many jobs train at once (FMNIST_WORKERS, default 1: on 2 cores two at a time ran about
    24x slower each); each gets its share of the cores."""
    return environment.workers()


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
    # Who asked for it (browser sessions or signed-in people; LAB for nobody in particular): a
    # shared job stops only when none of them still wants it.
    owners: list[str] = field(default_factory=list)
    seconds: float = 0.0  # its estimated training time, counted against its owners' limits
    where: str = ""  # the Dask worker it trains on, where the queue sends jobs to a cluster

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


class ServerThreads:
    """While any job trains on this machine, the server's own torch work keeps to one thread (the
    jobs' processes get the cores); the threads it had come back when the last one ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = torch.get_num_threads()

    @contextlib.contextmanager
    def yielded(self):
        with self._lock:
            self._busy += 1
            if self._busy == 1:
                self._threads = torch.get_num_threads()
                torch.set_num_threads(1)
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    torch.set_num_threads(self._threads)


def keep_under_cap(cache: RunCache, cache_gb: float, keep) -> None:
    """With a disk cap (`cache_gb`, 0: none), the oldest runs go until the cache fits: never one of
    `keep()` (pinned runs, jobs in the queue, the run just trained) nor an encoder a kept run builds
    on. Housekeeping: a failure is logged, never raised into the queue."""
    if not cache_gb:
        return
    try:
        for run_id, freed in over_cap(cache, int(cache_gb * 2**30), set(keep())):
            log.info("disk cap: removed run %s (%d bytes)", run_id, freed)
    except Exception:
        log.exception("disk cap: pruning failed")


class JobQueue:
    def __init__(
        self,
        cache: RunCache | None = None,
        limits: Limits | None = None,
        estimate=None,
        workers: int = 1,
        pinned=None,
        scheduler: str = "",
        scheduler_setting: str = "scheduler",
    ):
        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise ValueError(f"workers: {workers!r} must be a whole number from 1 to 64")
        self._cluster = None
        if scheduler:  # jobs go to a Dask cluster's workers, one at a time each
            from fmnist_core.runs.cluster import Cluster

            self._cluster = Cluster(scheduler, scheduler_setting)
            workers = self._cluster.workers()
        self.cache = cache or RunCache()
        self.limits = limits or Limits()
        self.workers = workers
        self._cores = ServerThreads()  # the server's own torch work keeps to one thread while jobs train
        self._estimate = estimate or (lambda config: 0.0)  # a config's expected training seconds
        self._pinned = pinned or (lambda: set())  # run ids the disk cap never removes
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # run ids in submission order
        self._ready = threading.Condition(self._lock)
        self._served: dict[str, float] = {}  # owner -> when the trainer last started a job of theirs
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"fmnist-trainer-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def refusal(self, config: RunConfig) -> str:
        """Why `config` cannot train here (its memory estimate over the limit, a batch norm fed a
        batch of one), in one line; "" when it can."""
        return refusal(config, self.cache)

    def submit(self, config: RunConfig, owner: str = LAB) -> Job:
        """Queue a training for `owner`, or add them to the job already queued, running or done for
        this config. Refused before it queues (ValueError, one line) when it cannot train here (see
        `refusal`) or when it would take the owner past their limits."""
        if self._closing.is_set():
            raise ValueError("queue: the lab is shutting down; nothing more is queued")
        check_resources(config, self.cache)
        seconds = float(self._estimate(config) or 0.0) if self.limits.minutes else 0.0  # outside the lock
        with self._lock:
            job = self._jobs.get(config.run_id)
            if job is not None and (job.active or (job.state == DONE and self.cache.exists(config.run_id))):
                if owner not in job.owners:  # a finished job whose entry is gone trains again, below
                    job.owners.append(owner)
                return job
            self._check_limits(owner, seconds)
            job = Job(config, owners=[owner], seconds=seconds)
            self._jobs[config.run_id] = job
            if config.run_id in self._order:  # a failed or stopped job, tried again: listed once
                self._order.remove(config.run_id)
            self._order.append(config.run_id)
            self._ready.notify()
            return job

    def _check_limits(self, owner: str, seconds: float) -> None:
        mine = [job for job in self._jobs.values() if job.active and owner in job.owners]
        check_limits(self.limits, len(mine), sum(job.seconds for job in mine) + seconds)

    def missing(self, configs) -> tuple[list[RunConfig], list[RunConfig]]:
        """Of `configs` (in their order), those not in the cache: (not queued yet, queued or running)."""
        absent = [config for config in configs if not self.cache.exists(config.run_id)]
        active = {job.run_id for job in self.jobs() if job.active}
        return [c for c in absent if c.run_id not in active], [c for c in absent if c.run_id in active]

    def submit_all(self, configs, owner: str = LAB) -> None:
        """Queue each config in its order (an autoencoder before the classifiers built on it)."""
        for config in configs:
            self.submit(config, owner)

    def get(self, run_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(run_id)

    def stop(self, run_id: str, owner: str | None = None) -> bool:
        """`owner` no longer wants the job; it stops when no one who asked for it still does.
        owner None: stop it whatever its owners (an admin, the lab itself). PermissionError for a
        person who never asked for it. Returns whether the job is stopping."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return False
            if owner is not None:
                if owner not in job.owners:
                    raise PermissionError(f"stop: job {run_id} is not yours to stop")
                job.owners.remove(owner)
                if job.owners:
                    return False  # someone else still waits for it
            job.stop_requested.set()
            if job.state == QUEUED:  # never started: off the queue at once
                job.state = STOPPED
            return True

    def close(self, timeout: float = 300) -> None:
        """Stop every job (a training stops at its next step, its finished epochs kept as any
        stopped run), end the trainer threads (waiting up to `timeout` seconds for them) and let go
        of the Dask cluster, where jobs went to one. The queue takes nothing after this."""
        with self._lock:
            self._closing.set()
            for job in self._jobs.values():
                if job.active:
                    job.stop_requested.set()
            self._ready.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._cluster is not None:
            self._cluster.client.close()

    def can_stop(self, run_id: str, owner: str) -> bool:
        job = self.get(run_id)
        return job is not None and owner in job.owners

    def position(self, run_id: str) -> int | None:
        """0 while running, 1 for the next queued job, and so on; None when not waiting."""
        with self._lock:
            ordered = [rid for rid in self._order if self._jobs[rid].state == RUNNING]
            ordered += self._turns()
            return ordered.index(run_id) if run_id in ordered else None

    def _turns(self) -> list[str]:
        """The queued jobs in the order they will train: round robin between owners (the owner
        served longest ago first), each owner's jobs in their order. Holds the lock."""
        by_owner: dict[str, list[str]] = {}
        for rid in self._order:
            job = self._jobs[rid]
            if job.state == QUEUED and not job.stop_requested.is_set():
                by_owner.setdefault(job.owners[0] if job.owners else LAB, []).append(rid)
        owners = sorted(by_owner, key=lambda o: (self._served.get(o, 0.0), self._order.index(by_owner[o][0])))
        turns, round_ = [], 0
        while any(round_ < len(by_owner[o]) for o in owners):
            turns += [by_owner[o][round_] for o in owners if round_ < len(by_owner[o])]
            round_ += 1
        return turns

    def jobs(self) -> list[Job]:
        with self._lock:
            return [self._jobs[rid] for rid in self._order]

    def wait(self, run_id: str, timeout: float | None = None) -> Job:
        """Block until the job leaves the queue (tests and scripts)."""
        return wait_for(self, run_id, timeout, 0.05)

    def _next(self) -> Job | None:
        """Wait for a queued job and take the one whose turn it is (jobs cancelled while queued
        are marked stopped on the way)."""
        with self._ready:
            while True:
                for rid in self._order:
                    job = self._jobs[rid]
                    if job.state == QUEUED and job.stop_requested.is_set():
                        job.state = STOPPED
                turns = self._turns()
                if turns:
                    job = self._jobs[turns[0]]
                    job.state = RUNNING
                    for owner in job.owners:
                        self._served[owner] = time.monotonic()
                    return job
                if self._closing.is_set():
                    return None
                self._ready.wait(timeout=0.5)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            run_id = job.run_id
            try:
                if self._cluster is not None:  # the job trains elsewhere: the server keeps its cores
                    self._finish(job, *self._cluster.run(job, str(self.cache.root.resolve()), own_settings()))
                else:
                    with self._cores.yielded():
                        self._run_in_child(job)
            except Exception as error:  # a failed job must not kill the worker thread
                log.exception("job %s failed", run_id)
                job.error = f"{type(error).__name__}: {error}"
                job.state = FAILED

    def _keep_under_cap(self, job: Job) -> None:
        with self._lock:
            busy = {j.run_id for j in self._jobs.values() if j.active}
        keep_under_cap(self.cache, self.limits.cache_gb, lambda: set(self._pinned()) | busy | {job.run_id})

    def _run_in_child(self, job: Job) -> None:
        self._finish(job, *run_job(job, str(self.cache.root.resolve()), self._child_settings()))

    def _finish(self, job: Job, kind: str, payload) -> None:
        """A job's last message: ("error", one line) or ("done", the run's summary)."""
        if kind == "error":
            job.error = payload
            job.state = FAILED
            return
        job.result = self._result(job.config, payload)
        self._keep_under_cap(job)  # before the job shows done: whoever waits on it finds the cap kept
        if job.result.cached and not job.epochs:
            history = job.result.history
            job.epochs = [
                {key: values[i] for key, values in history.items()} for i in range(len(history["epoch"]))
            ]
        job.state = DONE if job.result.completed else STOPPED

    def _child_settings(self) -> dict[str, str]:
        """The lab's settings for a job's process, with its share of the cores."""
        share = environment.job_threads() or max(1, (os.cpu_count() or 1) // self.workers)
        return {**own_settings(), JOB_THREADS: str(share)}

    def _result(self, config: RunConfig, summary: dict) -> TrainedRun:
        """The run the child trained: from the cache where it saved it, else from the weights it sent."""
        if summary["config"] != config.to_dict():  # the child trained what it was given: checked
            config = RunConfig.from_dict(summary["config"])
        if summary["state"] is None:
            run = load_run(config.run_id, self.cache)
        else:
            state = torch.load(io.BytesIO(summary["state"]), weights_only=True)
            model = model_with_weights(config, state, self.cache)
            run = TrainedRun(config, model, summary["history"], summary["metrics"], False)
        # A copy with this job's flags: a loaded run is shared with the pages (load_run).
        return replace(run, cached=summary["cached"], completed=summary["completed"], note=summary["note"])
