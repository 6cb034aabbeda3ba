"""`python -m fmnist_core worker`: trainers apart from every server, taking the jobs of the queue
that FMNIST_QUEUE_DB names, by default the cache folder's (fmnist_core.runs.shared)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from fmnist_core.base import environment
from fmnist_core.store.cache import RunCache


def add_worker(commands) -> None:
    parser = commands.add_parser(
        "worker", help="train the shared queue's jobs (FMNIST_QUEUE_DB), apart from the app's servers"
    )
    parser.add_argument("--trainers", type=trainer_count, default=1, help="jobs trained at once, 1 to 64")
    parser.add_argument("--once", action="store_true", help="stop when no job is queued or training")
    parser.add_argument(
        "--stale-after",
        dest="stale_after",
        type=seconds,
        default=60.0,
        help="seconds without a sign from a trainer before its job is given back (default 60)",
    )
    parser.set_defaults(handler=command_worker)


def trainer_count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to 64")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds from 1 to 86400")
    return value


def command_worker(args: argparse.Namespace) -> int:
    from fmnist_core.base.device import use_threads
    from fmnist_core.runs.shared import Trainer, queue_url
    from fmnist_core.store.jobdb import JobDB

    setting = environment.queue_db()
    if not setting:
        raise ValueError(
            "FMNIST_QUEUE_DB: 'memory' is one server's own queue, which no worker can reach; a worker "
            "takes the jobs of a shared queue (unset or sqlite: the cache folder's, as the servers have it)"
        )
    use_threads(1)  # this process only reads and writes rows; each job's process has the cores
    cache = RunCache()
    db = JobDB(queue_url(setting, cache.root), environment.queue_db_setting())
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a job in training goes back to the queue
        signal.signal(sig, lambda *_: done.set())
    share = max(1, (os.cpu_count() or 1) // args.trainers)  # FMNIST_JOB_THREADS, where set, wins
    from fmnist_core.studies.pinned import pinned_run_ids  # the starter set, the reports' runs

    cap = environment.max_cache_gb()
    trainers = [
        Trainer(db, cache, share, args.stale_after, cap, pinned_run_ids) for _ in range(args.trainers)
    ]
    threads = [threading.Thread(target=t.run, args=(done, 0.5, args.once), daemon=True) for t in trainers]
    where = "the cache folder's queue" if setting == "sqlite" else "the queue of FMNIST_QUEUE_DB"
    print(
        f"worker: {args.trainers} trainer(s) on {where}, runs into {cache.root}; Ctrl+C to stop",
        file=sys.stderr,
    )
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.5)
    db.dispose()
    return 0
