"""The app's jobs on a Dask cluster: each job trains on one of the cluster's workers, into the
cache folder they share with the server (the same path on every machine). Progress comes back
through a Dask queue, Stop goes out through a Dask event; a worker that dies fails its job with a
message and the queue goes on (Dask would otherwise start the task again on another worker, from
its first step, while the job shows epochs already done)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from urllib.parse import urlsplit

STOP_LOOK_SECONDS = 0.5  # how often a training on a worker asks whether it was stopped
ALIVE_LOOK_SECONDS = 1.0  # how often the server asks the scheduler whether a job's worker is still there


def train_on_worker(config_json: str, cache_root: str, name: str, settings: dict[str, str]) -> dict:
    """Runs on a worker: train (or load) the run, progress into the queue `name`, stopped by the
    event `name`; returns what a job's process sends back (trained.summarise)."""
    from distributed import Event, Queue, get_worker

    from fmnist_core.base.device import use_threads
    from fmnist_core.runs.trained import get_or_train, summarise
    from fmnist_core.store.cache import RunCache
    from fmnist_core.training.config import RunConfig

    os.environ.update(settings)
    use_threads((os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    progress, stop = Queue(name), Event(name)
    progress.put({"worker": get_worker().address})  # where it trains: the server watches that worker
    looked = {"at": 0.0, "stop": False}

    def should_stop() -> bool:  # an event lives on the scheduler: ask twice a second, not every step
        if time.monotonic() - looked["at"] > STOP_LOOK_SECONDS:
            looked.update(at=time.monotonic(), stop=stop.is_set())
        return looked["stop"]

    run = get_or_train(
        RunConfig.from_dict(json.loads(config_json)),
        on_progress=progress.put,
        should_stop=should_stop,
        cache=RunCache(cache_root),
    )
    return summarise(run, cache_root)


CONNECT_SECONDS = 20.0  # a scheduler answers in well under a second; a web server never does


def connect(address: str, name: str = "scheduler"):
    """A Dask client on the scheduler at `address`, or a ValueError in one line naming `name` (an
    address that is not one, nothing listening there, or something there that is no Dask scheduler:
    a web server can keep the handshake waiting for ever, or answer bytes Dask reads as a length)."""
    import threading

    from fmnist_core.base import environment

    address = environment.check_scheduler(address, name)
    where = urlsplit(address)
    try:  # nothing listening is said at once (Dask would retry for its whole timeout)
        socket.create_connection((where.hostname, where.port), timeout=5).close()
    except OSError as error:
        raise ValueError(
            f"{name}: nothing answers at {address} ({error.strerror or type(error).__name__}); "
            "start the scheduler (dask scheduler) or fix the address"
        ) from None
    outcome: dict = {}

    def attempt() -> None:
        try:
            from distributed import Client

            client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
            client.scheduler_info()  # a real scheduler answers this; anything else fails here
            outcome["client"] = client
        except BaseException as error:  # numpy's MemoryError for a 3 EiB "frame" included
            outcome["error"] = error

    thread = threading.Thread(target=attempt, name="fmnist-dask-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS + 5)
    if "client" in outcome:
        return outcome["client"]
    why = outcome.get("error")
    reason = f"{type(why).__name__}: {' '.join(str(why).split())[:120]}" if why else "no answer"
    raise ValueError(
        f"{name}: no Dask scheduler answered at {address} within {CONNECT_SECONDS:.0f} s ({reason}); "
        "start one (dask scheduler) or fix the address"
    )


class Cluster:
    def __init__(self, address: str, name: str = "scheduler"):
        self.client = connect(address, name)

    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

    def run(self, job, cache_root: str, settings: dict[str, str], tick=None) -> tuple[str, object]:
        """Train `job` on a worker, recording its progress; ("done", summary) or ("error", why).
        `tick()` is called about five times a second meanwhile (a shared queue's trainer reports there)."""
        from distributed import Event, Queue

        name = f"fmnist-{job.run_id}-{uuid.uuid4().hex[:8]}"
        progress, stop = Queue(name, client=self.client), Event(name, client=self.client)
        future = self.client.submit(
            train_on_worker, job.config.to_json(), cache_root, name, settings, pure=False, retries=0
        )
        where, looked = "", time.monotonic()
        while True:
            if tick is not None:
                tick()
            if job.stop_requested.is_set() and not stop.is_set():
                stop.set()
            ended = future.done()
            while progress.qsize():
                item = progress.get()
                if not isinstance(item, dict):
                    job.record(item)
                elif where:  # the task started again elsewhere: the worker it was on died
                    return self._lost(future, stop, where)
                else:
                    where = job.where = item["worker"]
            if ended:
                break
            if where and time.monotonic() - looked > ALIVE_LOOK_SECONDS:
                looked = time.monotonic()
                if where not in self.client.nthreads():
                    return self._lost(future, stop, where)
            time.sleep(0.2)
        try:
            return "done", future.result()
        except Exception as error:  # the training failed there, or its worker died
            return "error", f"on the cluster: {type(error).__name__}: {' '.join(str(error).split())[:300]}"

    @staticmethod
    def _lost(future, stop, where: str) -> tuple[str, str]:
        """The worker training a job died: the job fails (no silent start again from scratch)."""
        stop.set()  # a copy Dask may have started on another worker stops at its next look
        future.cancel()
        return "error", f"on the cluster: the worker {where} training this job died; its epochs are lost"
