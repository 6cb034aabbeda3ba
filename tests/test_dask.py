"""Jobs, sweeps and the app's queue on a Dask cluster: one local cluster of two worker processes for
the whole file, started once (each start spawned two processes that imported torch, the lab and
the data before their first task: 5-8 s of a core a test), its workers back to two before each test.
The test that kills a worker comes last."""

import contextlib
import os
import time

import pytest
from test_app import open_app, page, set_quick, train_and_wait
from test_hpsearch import QUICK
from test_jobs import tiny, wait_until

from fmnist_core.runs import child
from fmnist_core.runs.jobs import DONE, FAILED, RUNNING, STOPPED, JobQueue
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import hpsearch
from fmnist_core.studies.hpsearch import SweepPlan, parse_param

pytestmark = pytest.mark.slow  # worker processes and real trainings: about a minute in all


@pytest.fixture(scope="module")
def shared_cluster():
    """Two one-thread worker processes on this machine, as a teacher starts them. Spawned with
    `__main__` empty: after an AppTest run `__main__` is app.py, which each spawned worker would
    import, and so run the lab's warm-up."""
    from distributed import LocalCluster

    with child._main_module_hidden():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster:
        yield cluster


@pytest.fixture
def local_cluster(shared_cluster):
    """The file's cluster, once both its workers are up (a killed one is started again by its nanny)."""
    from distributed import Client

    @contextlib.contextmanager
    def started():
        with Client(shared_cluster.scheduler_address) as client:
            client.wait_for_workers(2, timeout=900)
        yield shared_cluster

    return started


def test_a_sweep_spreads_its_trials_over_a_dask_scheduler_and_two_workers(isolated_cache, local_cluster):
    from distributed import Client

    cache = RunCache(isolated_cache)
    plan = SweepPlan("on_dask", "mlp", (parse_param("lr=1e-3..1e-2:log"),), 4, pruner="none", fixed=QUICK)
    with (
        local_cluster() as cluster,
        Client(cluster.scheduler_address) as client,  # as `--scheduler ADDRESS` connects
    ):
        study = hpsearch.sweep_on_cluster(plan, cache, client)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 4
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers trained trials
    assert all(cache.exists(t.user_attrs["run_id"]) for t in finished)  # into the one shared cache


def test_two_app_jobs_train_at_once_on_a_local_dask_cluster_and_stop_reaches_a_worker(local_cluster):
    with local_cluster() as cluster:
        queue = JobQueue(RunCache(), scheduler=cluster.scheduler_address)  # as FMNIST_SCHEDULER gives it
        assert queue.workers == 2
        jobs = [queue.submit(tiny(seed=s, epochs=2), owner=o) for s, o in ((31, "A"), (32, "B"))]
        wait_until(
            lambda: all(job.state == RUNNING for job in jobs) or not all(job.active for job in jobs), 60
        )
        both_running = all(job.state == RUNNING for job in jobs)
        for job in jobs:
            queue.wait(job.run_id, timeout=900)
        assert both_running and all(job.state == DONE for job in jobs), [job.error for job in jobs]
        assert all(len(job.epochs) == 2 for job in jobs)  # the live progress came back from the workers
        assert all(RunCache().exists(job.run_id) for job in jobs)  # into the shared cache folder
        # Stop goes out to the worker: the run stops, its finished epochs kept as a stopped run.
        long = queue.submit(tiny(seed=33, epochs=40), owner="A")
        wait_until(lambda: len(long.epochs) >= 1, 900)
        queue.stop(long.run_id, owner="A")
        queue.wait(long.run_id, timeout=900)
        assert long.state == STOPPED and not RunCache().exists(long.run_id)
        assert 1 <= RunCache().stopped.summary(long.run_id)["epochs_done"] < 40
        queue.close()


def test_with_fmnist_scheduler_set_the_apps_jobs_train_on_the_dask_workers(monkeypatch, local_cluster):
    """The path a teacher takes: FMNIST_SCHEDULER in the environment, the app's own queue builder
    (the default one, the cache folder's shared queue: its trainers send their jobs to the cluster).
    A job queued from a page trains on one of the cluster's workers (its live progress and Stop
    work there); an address where nothing listens is one line on the page, not a silent local queue."""
    import socket

    from ui import jobs as app_jobs

    with local_cluster() as cluster:
        monkeypatch.setenv("FMNIST_SCHEDULER", cluster.scheduler_address)
        app_jobs._job_queue.clear()  # a server started with this setting
        at = set_quick(page(open_app(), "app_pages/autoencoder.py"), "ae:conv_autoencoder")
        at = train_and_wait(at)
        queue = app_jobs.job_queue()
        workers = set(cluster.scheduler_info["workers"])
        [job] = queue.jobs()
        assert queue.workers == 2 and job.where in workers and len(job.epochs) == 1, (job.where, workers)
        # A longer one, stopped from the page while it trains on its worker: its epochs kept.
        at.slider(key="widget:ae:conv_autoencoder:epochs").set_value(30).run()
        [b for b in at.button if b.label == "Train"][0].click().run()
        long = [j for j in queue.jobs() if j.active][0]
        deadline = time.monotonic() + 900
        while not (long := queue.get(long.run_id)).epochs:  # as the queue has it now
            assert time.monotonic() < deadline and long.active, (long.state, long.error)
            time.sleep(0.5)
        assert long.where in workers
        at.run()
        [b for b in at.button if b.label == "Stop"][0].click().run()
        long = queue.wait(long.run_id, timeout=900)
        assert long.state == "stopped" and 1 <= RunCache().stopped.summary(long.run_id)["epochs_done"] < 30
        queue.close()
    app_jobs._job_queue.clear()

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("FMNIST_SCHEDULER", dead)
    app_jobs._QUEUE_FAILED.clear()
    at = page(open_app(), "app_pages/autoencoder.py")
    assert [e.value for e in at.error] == [
        f"The lab's settings: FMNIST_SCHEDULER: nothing answers at {dead} (Connection refused); start "
        "the scheduler (dask scheduler) or fix the address. Fix it and start the lab again."
    ]
    app_jobs._QUEUE_FAILED.clear()


def test_a_dask_worker_that_dies_mid_job_fails_that_job_with_a_message_and_the_queue_goes_on(local_cluster):
    import signal

    from distributed import Client

    with local_cluster() as cluster:
        queue = JobQueue(RunCache(), scheduler=cluster.scheduler_address)
        doomed = queue.submit(tiny(seed=41, epochs=40), owner="A")
        wait_until(lambda: len(doomed.epochs) >= 1, 900)
        with Client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
            busy = [address for address, keys in client.processing().items() if keys]
            assert len(busy) == 1
            os.kill(pids[busy[0]], signal.SIGKILL)
        queue.wait(doomed.run_id, timeout=900)
        assert doomed.state == FAILED
        assert "died" in doomed.error and busy[0] in doomed.error
        assert not RunCache().exists(doomed.run_id)
        # Dask did not quietly start it again elsewhere, and the next job trains as usual.
        after = queue.submit(tiny(seed=42), owner="B")
        queue.wait(after.run_id, timeout=900)
        assert after.state == DONE and RunCache().exists(after.run_id)
        queue.close()
