"""One job queue shared by several server processes, kept in a database (store/jobdb.py), and the
trainers that take its jobs: threads in a server (FMNIST_TRAINERS) or apart from every server
(`python -m fmnist_core worker`).

SharedQueue answers as JobQueue does (submit, get, jobs, position, stop, wait, close), but every
answer is read from the database: a job queued through one server shows, with its progress and
its curve, in every other; Stop from any of them reaches the trainer; the limits and the turns
count every server's requests; a server restarted finds the queue where it was. A Trainer claims
the job whose turn it is in a transaction (two never take the same one), trains it in a process
of its own (child.run_job), writes its progress and takes its stop requests about twice a second,
and signs of life with them: a trainer that stops answering has its job queued again (the next
trainer continues from its last finished epoch, which its stopped training kept) or, after two
trainers, failed with a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid

from fmnist_core.base import environment
from fmnist_core.runs.child import JOB_THREADS, own_settings, run_job
from fmnist_core.runs.jobs import (
    LAB,
    Job,
    Limits,
    ServerThreads,
    check_limits,
    keep_under_cap,
    refusal,
    wait_for,
)
from fmnist_core.runs.trained import check_resources, load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.store.jobdb import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    STOPPED,
    JobDB,
    QueueDatabaseError,
    cache_url,
    turn_order,
)
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import Progress

log = logging.getLogger("fmnist_core")

STALE_SECONDS = 60.0  # a trainer silent this long is taken for dead (it reports twice a second)
REPORT_SECONDS = 0.5  # how often a trainer writes its job's progress and reads its stop request
REAP_SECONDS = 5.0  # how often a server without trainers, or an idle trainer, looks for dead ones


def queue_url(setting: str, cache_root) -> str:
    """FMNIST_QUEUE_DB's value as a database address: "sqlite" is the cache folder's file."""
    return cache_url(cache_root) if setting == "sqlite" else setting


def check_setting(cache_root) -> None:
    """FMNIST_QUEUE_DB, where set, opened once (`settings` asks before the app starts): a file or a
    server that does not open as the queue is one line naming the setting."""
    if environment.queue_db():
        JobDB(queue_url(environment.queue_db(), cache_root), environment.queue_db_setting()).dispose()


class SharedJob(Job):
    """A job as the database had it when read; its run loaded from the cache when asked for."""

    _run = None

    @property
    def result(self):
        if self._run is None and self.state == DONE:
            try:
                # A copy with the job's note (e.g. continued from epoch N): the loaded run is shared.
                self._run = dataclasses.replace(load_run(self.run_id, self._cache), note=self.error)
            except Exception:  # gone or damaged since: the pages show the job without its run
                log.exception("job %s: its run did not load", self.run_id)
        return self._run

    @result.setter
    def result(self, value) -> None:
        self._run = value


def job_from_row(row: dict, cache: RunCache, trace: list | None = None) -> SharedJob:
    latest = json.loads(row["latest"]) if row["latest"] else {}
    where = latest.pop("where", "")  # the Dask worker it trains on, where a trainer sent it to one
    job = SharedJob(
        RunConfig.from_dict(json.loads(row["config"])),
        state=row["state"],
        latest=Progress(**latest) if latest else None,
        epochs=json.loads(row["epochs"]),
        trace=list(trace or []),
        error=row["error"],
        submitted=row["submitted"],
        owners=json.loads(row["owners"]),
        seconds=row["seconds"],
        where=where or (row["trainer"].split(":")[0] if row["state"] == RUNNING else ""),  # its machine
    )
    job._cache = cache
    if row["stop"]:
        job.stop_requested.set()
    return job


class SharedQueue:
    """The queue at `url` (base.environment.check_queue_db), with `trainers` of its own here; with
    a Dask `scheduler`, one trainer per worker of its cluster, each sending its jobs there."""

    def __init__(
        self,
        url: str,
        cache: RunCache | None = None,
        limits: Limits | None = None,
        estimate=None,
        trainers: int = 1,
        stale_after: float = STALE_SECONDS,
        pinned=None,
        scheduler: str = "",
        scheduler_setting: str = "scheduler",
        setting: str = "FMNIST_QUEUE_DB",
    ):
        if not isinstance(trainers, int) or not 0 <= trainers <= 64:
            raise ValueError(f"trainers: {trainers!r} must be a whole number from 0 to 64")
        self._cluster = None
        if scheduler and trainers:  # the jobs go to a Dask cluster's workers, one at a time each
            from fmnist_core.runs.cluster import Cluster

            self._cluster = Cluster(scheduler, scheduler_setting)
            trainers = self._cluster.workers()
        self.db = JobDB(url, setting)  # `setting`: what its problems are said under
        self.cache = cache or RunCache()
        self.limits = limits or Limits()
        self.workers = trainers
        self._estimate = estimate or (lambda config: 0.0)
        self._stale_after = stale_after
        self._reaped = 0.0
        self._closing = threading.Event()
        cores = ServerThreads()  # this server's torch work keeps to one thread while its trainers train
        self._trainers = [
            Trainer(
                self.db,
                self.cache,
                share=max(1, (os.cpu_count() or 1) // trainers),
                stale_after=stale_after,
                cache_gb=self.limits.cache_gb,
                pinned=pinned,
                cluster=self._cluster,
                cores=cores,
            )
            for _ in range(trainers)
        ]
        self._threads = [
            threading.Thread(target=t.run, args=(self._closing,), name=f"fmnist-trainer-{i}", daemon=True)
            for i, t in enumerate(self._trainers)
        ]
        for thread in self._threads:
            thread.start()

    def refusal(self, config: RunConfig) -> str:
        return refusal(config, self.cache)

    def submit(self, config: RunConfig, owner: str = LAB) -> Job:
        """As JobQueue.submit, the limits counting this person's jobs from every server."""
        if self._closing.is_set():
            raise ValueError("queue: the lab is shutting down; nothing more is queued")
        check_resources(config, self.cache)
        seconds = float(self._estimate(config) or 0.0) if self.limits.minutes else 0.0

        def check(mine: list) -> None:  # this person's active jobs, from every server
            check_limits(self.limits, len(mine), sum(row.seconds for row in mine) + seconds)

        row = self.db.submit(
            config.run_id, config.to_json(), owner, seconds, check, lambda row: self.cache.exists(row.run_id)
        )
        return job_from_row(row, self.cache)

    def submit_all(self, configs, owner: str = LAB) -> None:
        for config in configs:
            self.submit(config, owner)

    def missing(self, configs) -> tuple[list[RunConfig], list[RunConfig]]:
        absent = [config for config in configs if not self.cache.exists(config.run_id)]
        active = {job.run_id for job in self.jobs() if job.active}
        return [c for c in absent if c.run_id not in active], [c for c in absent if c.run_id in active]

    def get(self, run_id: str) -> Job | None:
        row = self.db.row(run_id)
        return None if row is None else job_from_row(row, self.cache, self.db.points(run_id))

    def jobs(self) -> list[Job]:
        self._reap_now_and_then()
        return [job_from_row(row, self.cache) for row in self.db.rows()]

    def _reap_now_and_then(self) -> None:
        if not self._trainers and time.monotonic() - self._reaped > REAP_SECONDS:
            self._reaped = time.monotonic()
            self.db.reap(self._stale_after)

    def stop(self, run_id: str, owner: str | None = None) -> bool:
        return self.db.stop(run_id, owner)

    def trainers_alive(self) -> int:
        """Trainers (this process's or apart) that answered lately: with none, queued jobs wait."""
        return len(self._trainers) or self.db.trainers_alive(self._stale_after)

    def can_stop(self, run_id: str, owner: str) -> bool:
        job = self.get(run_id)
        return job is not None and owner in job.owners

    def position(self, run_id: str) -> int | None:
        rows = self.db.rows()
        with self.db.read() as db:
            served = self.db.served(db)
        ordered = [row["run_id"] for row in rows if row["state"] == RUNNING]
        ordered += turn_order([row for row in rows if row["state"] == QUEUED], served)
        return ordered.index(run_id) if run_id in ordered else None

    def wait(self, run_id: str, timeout: float | None = None) -> Job:
        return wait_for(self, run_id, timeout, 0.1)

    def close(self, timeout: float = 300) -> None:
        """This process's trainers end: a job one of them trains stops at its next step and goes
        back to the queue (another trainer, or this one after a restart, continues it). The other
        servers' jobs and the queued ones stay as they are."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._cluster is not None:
            self._cluster.client.close()
            self._cluster = None
        self.db.dispose()


class Trainer:
    """Takes the queue's jobs one at a time and trains each in a process of its own (or, given a
    Dask `cluster`, on one of its workers)."""

    def __init__(
        self,
        db: JobDB,
        cache: RunCache,
        share: int = 0,
        stale_after: float = STALE_SECONDS,
        cache_gb: float = 0.0,
        pinned=None,
        cluster=None,
        cores=None,
    ):
        self.db = db
        self.cluster = cluster
        self.cores = cores  # a server's ServerThreads: its torch work yields the cores to a local job
        self.cache_root = str(cache.root.resolve())
        self.cache_gb = cache_gb  # the disk cap, kept after each job as the in-process queue keeps it
        self.pinned = pinned or (lambda: set())  # run ids the cap never removes
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.share = share  # its job's threads (0: FMNIST_JOB_THREADS, else every core)
        self._said = ("", 0.0)  # the last database problem logged, and when
        self.stale_after = stale_after

    def run(self, closing: threading.Event, poll: float = 0.5, once: bool = False) -> None:
        """Train job after job until `closing` is set (or, `once`, until no job is queued or
        training anywhere)."""
        # Idle, it reads twice a second whether a job waits, and writes (its sign of life, the dead
        # trainers' jobs given back) every few seconds, not at each look: several servers' trainers
        # share one database lock.
        every = min(REAP_SECONDS, self.stale_after / 3)
        looked = -every
        try:
            while not closing.is_set():
                try:
                    if time.monotonic() - looked >= every:
                        self.db.reap(self.stale_after)
                        self.db.beat(self.name)
                        looked = time.monotonic()
                    if not self._next(closing, poll, once):
                        return
                except QueueDatabaseError as error:  # locked too long, made read-only: said, tried again
                    self._say(f"{error}; trying again every {every:.0f} s")
                    closing.wait(every)
        except Exception:
            log.exception("trainer %s failed", self.name)
        finally:
            try:
                self.db.leave(self.name)
            except QueueDatabaseError as error:  # its row goes with the next reap of dead trainers
                log.warning("trainer %s: could not sign off (%s)", self.name, error)

    def _next(self, closing: threading.Event, poll: float, once: bool) -> bool:
        """Train the job whose turn it is, or wait `poll` seconds for one; False where `once` and
        nothing is queued or training anywhere (a silent trainer's job comes back: it waits)."""
        row = self.db.claim(self.name) if self.db.waiting() else None
        if row is not None:
            self.train(row, closing)
        elif once and not any(row["state"] in (QUEUED, RUNNING) for row in self.db.rows()):
            return False
        else:
            closing.wait(poll)
        return True

    def train(self, row: dict, closing: threading.Event) -> None:
        run_id = row["run_id"]
        job = Job(RunConfig.from_dict(json.loads(row["config"])), state=RUNNING)
        sent = {"points": 0, "at": 0.0}
        asked = {"stop": False}

        def report(force: bool = False) -> None:
            if not force and time.monotonic() - sent["at"] < REPORT_SECONDS:
                return
            latest = dataclasses.asdict(job.latest) if job.latest is not None else {}
            if job.where:  # the Dask worker it trains on
                latest["where"] = job.where
            points = job.trace[sent["points"] :]
            try:
                asked["stop"] = self.db.report(
                    run_id, self.name, json.dumps(latest) if latest else "", json.dumps(job.epochs), points
                )
            except QueueDatabaseError as error:  # the training goes on; its progress is sent next time
                self._say(f"job {run_id}: its progress was not written ({error})")
                sent["at"] = time.monotonic()
                return
            sent.update(points=sent["points"] + len(points), at=time.monotonic())
            if asked["stop"] or closing.is_set():
                job.stop_requested.set()

        settings = {
            **own_settings(),
            JOB_THREADS: str(environment.job_threads() or self.share or os.cpu_count() or 1),
        }
        try:
            if self.cluster is not None:
                kind, payload = self.cluster.run(job, self.cache_root, own_settings(), report)
            else:
                with self.cores.yielded() if self.cores is not None else contextlib.nullcontext():
                    kind, payload = run_job(job, self.cache_root, settings, report)
            report(force=True)
        except Exception as error:
            log.exception("job %s failed", run_id)
            kind, payload = "error", f"{type(error).__name__}: {error}"
        if kind == "error":
            self._until_written(lambda: self.db.finish(run_id, self.name, FAILED, payload), closing)
            return
        history = payload["history"]
        # The run's own history where it has one (a continued run's epochs before this trainer too).
        count = len(history.get("epoch", []))
        epochs = [{k: v[i] for k, v in history.items()} for i in range(count)] if count else job.epochs
        if payload.get("cached"):  # found in the cache (another trainer, a process of its own): none trained
            epochs = []
        if payload["completed"]:
            state, note = DONE, payload["note"] or ""
        elif asked["stop"]:
            state, note = STOPPED, ""
        else:  # this trainer is closing, nobody asked: back to the queue, to continue from its epochs
            state, note = (
                QUEUED,
                f"its trainer ({self.name}) shut down after {len(epochs)} epochs; queued again",
            )

        def finish() -> None:
            if state == DONE:  # before the job shows done: whoever waits on it finds the cap kept
                busy = {row["run_id"] for row in self.db.rows() if row["state"] in (QUEUED, RUNNING)}
                keep_under_cap(RunCache(self.cache_root), self.cache_gb, lambda: set(self.pinned()) | busy)
            self.db.finish(run_id, self.name, state, note, json.dumps(epochs))

        self._until_written(finish, closing)

    def _until_written(self, write, closing: threading.Event) -> None:
        """A job's end written, tried again while the database refuses it (made read-only, locked
        past its wait): the job would otherwise show as training for ever. A trainer closing gives
        up after one more try; its silence then gives the job back to the queue (reap)."""
        while True:
            try:
                write()
                return
            except QueueDatabaseError as error:
                self._say(f"its job's end was not written ({error})")
                if closing.is_set():
                    return
                closing.wait(REAP_SECONDS)

    def _say(self, what: str) -> None:
        """A database problem in the log: once, then again each minute while it lasts."""
        now = time.monotonic()
        if what != self._said[0] or now - self._said[1] > 60:
            log.warning("trainer %s: %s", self.name, what)
            self._said = (what, now)
