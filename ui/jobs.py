"""The server's job queue (one per process and cache folder) and a config's expected time."""

from __future__ import annotations

import atexit

import streamlit as st

from fmnist_core.base import environment
from fmnist_core.runs.jobs import JobQueue, Limits, workers_from_environment
from fmnist_core.store.cache import RunCache, default_root
from ui.resources import in_background, run_cache
from ui.runs import runs_in, runs_table

CLOSE_SECONDS = 60  # how long a stopping server waits for its trainers' jobs to stop and be kept


@st.cache_resource
def _job_queue(root: str) -> JobQueue:
    if environment.queue_db():  # one queue for every server process given the same database
        from fmnist_core.runs.shared import SharedQueue, queue_url

        queue = SharedQueue(
            queue_url(environment.queue_db(), root),
            RunCache(root),
            Limits.from_environment(),
            estimate=_expected_seconds,
            trainers=environment.workers(),
            pinned=_pinned,
            scheduler=environment.scheduler(),  # the jobs train on a Dask cluster's workers
            scheduler_setting="FMNIST_SCHEDULER",
            setting=environment.queue_db_setting(),
        )
        # The server stopped (Ctrl+C, an update): a job its trainer holds goes back to the queue at
        # once, its finished epochs kept, for the next start or another server's trainer to continue.
        atexit.register(queue.close, CLOSE_SECONDS)
        return queue
    return JobQueue(  # FMNIST_QUEUE_DB=memory: this process's own queue
        RunCache(root),
        Limits.from_environment(),
        estimate=_expected_seconds,
        workers=workers_from_environment(),
        scheduler=environment.scheduler(),  # the jobs train on a Dask cluster's workers
        scheduler_setting="FMNIST_SCHEDULER",
        pinned=_pinned,  # the disk cap never removes the starter set nor the reports' runs
    )


def _pinned() -> frozenset[str]:
    """The runs the disk cap never removes: the starter set and the reports' runs (asked after a job)."""
    from fmnist_core.studies.pinned import pinned_run_ids

    return pinned_run_ids()


def _expected_seconds(config) -> float:
    """A config's expected training time here, counted against its owner's minutes in the queue:
    from this machine's runs of the model, else a few of its steps timed now (never 0: a 60-epoch
    ResNet counted as nothing against FMNIST_MAX_QUEUE_MINUTES); a config that cannot train here
    is refused before this is asked."""
    from fmnist_core.views.architecture import expected_seconds

    cache = RunCache(job_queue().cache.root)
    runs = runs_in(cache)
    estimate = expected_seconds(config, runs, cache, probe=True)
    return estimate.seconds if estimate is not None else 0.0


def expected_time(config):
    """(its Estimate or None, whether it is still being timed): from this machine's runs of the
    model at once, else a few of its steps timed in the background (seconds) and kept."""
    from fmnist_core.views.architecture import probe_timing, timed_part
    from fmnist_core.views.explore import estimate_seconds

    cache = run_cache()
    estimate = estimate_seconds(config, runs_table())
    if estimate is not None:
        return estimate, False
    # Timed once per kind of config: another number of epochs or images is the same kind.
    done = in_background(
        f"probe:{cache.root.resolve()}:{timed_part(config).run_id}", lambda: [probe_timing(config, cache)]
    )
    if done is None:
        return None, True
    return (done[0].estimate(config) if done[0] is not None else None), False


_QUEUE_FAILED: dict[str, str] = {}  # cache folder -> why its queue could not be built (a scheduler)


def job_queue() -> JobQueue:
    """One queue (and one training thread) per process and cache folder. Where it cannot be built
    (FMNIST_SCHEDULER unreachable) the same one line at once on every later ask: the settings are
    read when the server starts, so only a restart can mend it."""
    root = str(default_root().resolve())
    if root in _QUEUE_FAILED:
        raise ValueError(_QUEUE_FAILED[root])
    try:
        return _job_queue(root)
    except ValueError as error:
        _QUEUE_FAILED[root] = " ".join(str(error).split())
        raise
