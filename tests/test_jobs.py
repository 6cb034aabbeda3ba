import os
import threading
import time

import pytest

from fmnist_core.runs.jobs import DONE, FAILED, QUEUED, RUNNING, STOPPED, JobQueue, Limits
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig


def tiny(seed=0, epochs=1):
    return RunConfig.for_model("mlp", epochs=epochs, train_subset=2000, seed=seed)


def wait_until(condition, timeout: float = 900.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_job_trains_in_the_background_and_lands_in_the_cache():
    queue = JobQueue(RunCache())
    job = queue.submit(tiny())
    assert queue.submit(tiny()) is job  # a second session asking for the same config shares it
    queue.wait(job.run_id, timeout=900)
    assert job.state == DONE and job.result.metrics["test_accuracy"] > 0.5
    assert len(job.epochs) == 1 and job.history()["val_accuracy"] == job.result.history["val_accuracy"]
    assert RunCache().exists(job.run_id)
    assert queue.submit(tiny()) is job  # done jobs are not redone


def test_jobs_run_one_at_a_time_in_order_and_report_their_place():
    queue = JobQueue(RunCache())
    release = threading.Event()
    first = queue.submit(tiny(seed=1, epochs=3))
    # Hold the first job inside its first progress report, so the queue's state can be read.
    original = first.record

    def hold(progress):
        original(progress)
        release.wait(timeout=900)

    first.record = hold
    second, third = queue.submit(tiny(seed=2)), queue.submit(tiny(seed=3))
    wait_until(lambda: first.state == RUNNING)
    assert (second.state, third.state) == (QUEUED, QUEUED)
    assert [queue.position(j.run_id) for j in (first, second, third)] == [0, 1, 2]
    queue.stop(third.run_id)
    release.set()
    for job in (first, second, third):
        queue.wait(job.run_id, timeout=900)
    assert (first.state, second.state, third.state) == (DONE, DONE, STOPPED)
    assert queue.position(first.run_id) is None


def test_stop_keeps_what_was_done_and_caches_nothing():
    queue = JobQueue(RunCache())
    config = tiny(seed=4, epochs=50)
    job = queue.submit(config)
    wait_until(lambda: len(job.epochs) >= 1)
    queue.stop(job.run_id)
    queue.wait(job.run_id, timeout=900)
    assert job.state == STOPPED and 1 <= len(job.epochs) < 50
    assert not RunCache().exists(config.run_id)
    again = queue.submit(config)  # a stopped job can be started again
    assert again is not job and again.state in (QUEUED, RUNNING)
    queue.stop(again.run_id)
    queue.wait(again.run_id, timeout=900)


def test_a_failing_job_reports_its_error_and_the_worker_survives():
    queue = JobQueue(RunCache())
    broken = RunConfig.for_model(
        "encoder_classifier", {"encoder_run": "0000000000000000"}, epochs=1, train_subset=500
    )
    job = queue.submit(broken)
    queue.wait(job.run_id, timeout=900)
    assert job.state == FAILED and "0000000000000000" in job.error
    healthy = queue.submit(tiny(seed=5))
    queue.wait(healthy.run_id, timeout=900)
    assert healthy.state == DONE


def test_a_done_job_whose_entry_is_gone_trains_again_and_a_retried_job_is_listed_once():
    cache = RunCache()
    queue = JobQueue(cache)
    job = queue.submit(tiny(seed=6))
    queue.wait(job.run_id, timeout=900)
    cache.delete(job.run_id)
    again = queue.submit(tiny(seed=6))
    assert again is not job
    queue.wait(again.run_id, timeout=900)
    assert again.state == DONE and cache.exists(again.run_id)
    assert [j.run_id for j in queue.jobs()].count(job.run_id) == 1


def test_a_job_trains_in_its_own_process_whose_death_is_a_message_not_a_dead_server():
    import multiprocessing
    import os

    queue = JobQueue(RunCache())
    job = queue.submit(tiny(seed=7, epochs=50))
    wait_until(lambda: job.latest is not None)  # it reports progress from the child
    children = [p for p in multiprocessing.active_children() if p.name == f"fmnist-job-{job.run_id}"]
    assert len(children) == 1 and children[0].pid != os.getpid()
    children[0].kill()  # as the kernel's out-of-memory killer would
    queue.wait(job.run_id, timeout=900)
    assert job.state == FAILED and "training process died" in job.error and "-9" in job.error
    healthy = queue.submit(tiny(seed=8))  # the queue lives on
    queue.wait(healthy.run_id, timeout=900)
    assert healthy.state == DONE and RunCache().exists(healthy.run_id)


def test_an_empty_cache_queues_the_starter_set_once_in_the_order_pages_need_it(monkeypatch):
    from fmnist_core.runs import starter

    class Recorder:
        def __init__(self):
            self.submitted = []

        def jobs(self):
            return self.submitted

        def submit(self, config):
            self.submitted.append(config)

    queue = Recorder()
    assert starter.start_if_empty(queue, RunCache()) == []  # FMNIST_STARTER=0 (the tests' setting)
    monkeypatch.setenv("FMNIST_STARTER", "1")
    chosen = starter.start_if_empty(queue, RunCache())
    models = [c.model for c in queue.submitted]
    assert models == ["mlp", "conv_autoencoder", "encoder_classifier", "encoder_classifier", "cnn"]
    encoder = queue.submitted[1].run_id  # the classifiers build on the starter's own autoencoder
    assert [c.settings["encoder_run"] for c in queue.submitted[2:4]] == [encoder, encoder]
    assert {c.settings["freeze_encoder"] for c in queue.submitted[2:4]} == {True, False}
    assert {c.settings["head"] for c in queue.submitted[2:4]} == {"wide"}  # S0's head loses classes
    assert len(chosen) == 5 and starter.start_if_empty(queue, RunCache()) == []  # once
    get_or_train(tiny(seed=11))
    assert starter.start_if_empty(Recorder(), RunCache()) == []  # a cache with a run: nothing


def test_a_job_sees_the_lab_settings_of_its_submission_not_of_the_fork_server(monkeypatch, tmp_path):
    queue = JobQueue(RunCache())
    first = queue.submit(tiny(seed=12))  # the fork server starts here, with the real data
    queue.wait(first.run_id, timeout=900)
    assert first.state == DONE
    monkeypatch.setenv("FMNIST_DATA", str(tmp_path / "nowhere"))
    second = queue.submit(tiny(seed=13))
    queue.wait(second.run_id, timeout=900)
    assert second.state == FAILED and "FMNIST_DATA" in second.error and "nowhere" in second.error


def test_a_job_traces_its_running_loss_within_each_epoch_for_the_live_curve():
    from ui import plots

    queue = JobQueue(RunCache())
    job = queue.submit(RunConfig.for_model("mlp", epochs=2, train_subset=30_000, seed=14))
    queue.wait(job.run_id, timeout=900)
    assert job.state == DONE and len(job.trace) >= 2  # reports every quarter second within epochs
    positions = [position for position, _ in job.trace]
    assert positions == sorted(positions) and positions[0] > 0 and positions[-1] <= 2
    assert all(0 < loss < 5 for _, loss in job.trace)
    figure = plots.curves(job.history(), trace=job.trace)
    running = [t for t in figure.data if t.name.startswith("train loss, running")]
    assert len(running) == 1 and len(running[0].x) == len(job.trace)


def held_queue(monkeypatch, **kwargs):
    """A queue whose trainer records the order it takes jobs in and holds each until released (no
    training: these tests are about who may do what, and in which order)."""
    taken, release = [], threading.Semaphore(0)

    def run(self, job):
        taken.append(job.run_id)
        while not release.acquire(timeout=0.05) and not job.stop_requested.is_set():
            pass  # held until released, or stopped (as the test's end stops every job)
        job.state = STOPPED if job.stop_requested.is_set() else DONE

    monkeypatch.setattr(JobQueue, "_run_in_child", run)
    return JobQueue(RunCache(), **kwargs), taken, release


def test_only_those_who_asked_stop_a_job_and_a_shared_job_stops_when_no_one_wants_it(monkeypatch):
    queue, taken, release = held_queue(monkeypatch)
    job = queue.submit(tiny(), owner="A")
    assert queue.submit(tiny(), owner="B") is job and job.owners == ["A", "B"]  # B shares A's job
    wait_until(lambda: taken)
    with pytest.raises(PermissionError, match="not yours to stop"):
        queue.stop(job.run_id, owner="C")
    assert not queue.can_stop(job.run_id, "C") and queue.can_stop(job.run_id, "B")
    assert queue.stop(job.run_id, owner="A") is False  # B still wants it: it trains on
    assert not job.stop_requested.is_set() and job.owners == ["B"]
    assert queue.stop(job.run_id, owner="B") is True and job.stop_requested.is_set()
    # Its trainer ends on the stop: no release here (one left unused let the next job end at once,
    # and the one after it was taken before the test could stop it in the queue).
    wait_until(lambda: not job.active)
    assert job.state == STOPPED
    # An admin (owner None) stops any job; a queued one leaves the queue at once.
    first, second = queue.submit(tiny(seed=1), owner="A"), queue.submit(tiny(seed=2), owner="B")
    wait_until(lambda: len(taken) == 2)
    # Which of the two trains first is B's turn or A's: B has been served only if the first job was
    # taken after B joined it (a fast trainer takes it between the two submits).
    [running] = [j for j in (first, second) if j.run_id == taken[1]]
    [waiting] = [j for j in (first, second) if j is not running]
    assert waiting.state == QUEUED
    assert queue.stop(waiting.run_id) is True and waiting.state == STOPPED
    release.release()
    wait_until(lambda: not running.active)
    assert running.state == DONE and len(taken) == 2  # the stopped one never started


def test_a_person_over_the_limit_is_refused_in_one_line_and_others_are_not(monkeypatch):
    queue, taken, release = held_queue(monkeypatch, limits=Limits(jobs=2))
    queue.submit(tiny(seed=1), owner="A")
    queue.submit(tiny(seed=2), owner="A")
    with pytest.raises(
        ValueError,
        match=r"limit: you have 2 jobs in the queue, the most one person may have is 2 \(FMNIST_MAX_JOBS",
    ):
        queue.submit(tiny(seed=3), owner="A")
    queue.submit(tiny(seed=3), owner="B")  # another person is not held back by A's queue
    assert queue.submit(tiny(seed=1), owner="A").owners == ["A"]  # asking again is no new job
    timed, _, _ = held_queue(monkeypatch, limits=Limits(minutes=1), estimate=lambda config: 40.0)
    timed.submit(tiny(seed=1), owner="A")
    with pytest.raises(ValueError, match=r"about 1 min of training, the most one person may have is 1 min"):
        timed.submit(tiny(seed=2), owner="A")


def test_the_queue_takes_turns_between_people_not_first_come_first_served(monkeypatch):
    queue, taken, release = held_queue(monkeypatch)
    a1 = queue.submit(tiny(seed=1), owner="A")
    wait_until(lambda: taken == [a1.run_id])  # A's first job trains; A queues two more, then B and C one each
    a2, a3 = queue.submit(tiny(seed=2), owner="A"), queue.submit(tiny(seed=3), owner="A")
    b1, c1 = queue.submit(tiny(seed=4), owner="B"), queue.submit(tiny(seed=5), owner="C")
    assert [queue.position(j.run_id) for j in (a1, b1, c1, a2, a3)] == [0, 1, 2, 3, 4]
    for _ in range(5):
        release.release()
    wait_until(lambda: len(taken) == 5 and not a3.active)
    assert taken == [j.run_id for j in (a1, b1, c1, a2, a3)]


def test_limits_come_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("FMNIST_MAX_JOBS", "3")
    monkeypatch.setenv("FMNIST_MAX_QUEUE_MINUTES", "45")
    assert Limits.from_environment() == Limits(jobs=3, minutes=45.0)
    monkeypatch.setenv("FMNIST_MAX_JOBS", "many")
    with pytest.raises(ValueError, match="FMNIST_MAX_JOBS: 'many' is not a whole number"):
        Limits.from_environment()
    monkeypatch.delenv("FMNIST_MAX_JOBS")
    monkeypatch.delenv("FMNIST_MAX_QUEUE_MINUTES")
    assert Limits.from_environment() == Limits()  # a single local user feels no limit


def test_with_two_workers_two_jobs_train_at_once_each_with_its_share_of_the_cores(monkeypatch):
    queue, taken, release = held_queue(monkeypatch, workers=2)
    first, second, third = (queue.submit(tiny(seed=s), owner=o) for s, o in ((1, "A"), (2, "B"), (3, "A")))
    wait_until(lambda: len(taken) == 2)
    assert {first.state, second.state, third.state} == {RUNNING, QUEUED} and third.state == QUEUED
    assert queue.position(third.run_id) == 2  # behind the two running
    assert queue._child_settings()["FMNIST_JOB_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    for _ in range(3):
        release.release()
    wait_until(lambda: not third.active)
    with pytest.raises(ValueError, match="workers: 0"):
        JobQueue(RunCache(), workers=0)


def test_two_jobs_really_train_at_once_with_two_workers():
    queue = JobQueue(RunCache(), workers=2)
    jobs = [queue.submit(tiny(seed=s, epochs=2), owner=o) for s, o in ((11, "A"), (12, "B"))]
    wait_until(lambda: all(job.state == RUNNING for job in jobs) or not all(job.active for job in jobs), 900)
    both_running = all(job.state == RUNNING for job in jobs)
    for job in jobs:
        queue.wait(job.run_id, timeout=900)
    assert both_running and all(job.state == DONE for job in jobs)
    assert all(RunCache().exists(job.run_id) for job in jobs)


def test_at_the_disk_cap_the_oldest_unpinned_runs_go_and_pinned_ones_stay():
    from fmnist_core.store.prune import entry_bytes, over_cap

    cache = RunCache()
    runs = [get_or_train(tiny(seed=s), cache=cache) for s in (21, 22, 23)]  # oldest first
    size = max(entry_bytes(cache, run.run_id) for run in runs)
    assert size > 0 and over_cap(cache, 4 * size, pinned=set()) == []  # under the cap: nothing goes
    removed = over_cap(cache, int(2.5 * size), pinned={runs[0].run_id})
    assert [run_id for run_id, _ in removed] == [runs[1].run_id]  # the oldest that is not pinned
    assert cache.exists(runs[0].run_id) and cache.exists(runs[2].run_id)
    # The queue keeps the cap after each job; the run it just trained stays, as do pinned ones.
    queue = JobQueue(cache, Limits(cache_gb=1.5 * size / 2**30), pinned=lambda: {runs[0].run_id})
    job = queue.submit(tiny(seed=24))
    queue.wait(job.run_id, timeout=900)
    assert cache.exists(job.run_id) and cache.exists(runs[0].run_id) and not cache.exists(runs[2].run_id)
