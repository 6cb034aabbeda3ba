"""One job queue for several server processes, in a database (SQLite in the cache folder, or a
PostgreSQL server the test starts), trained by workers apart from the servers."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fmnist_core.runs import shared as shared_module
from fmnist_core.runs.jobs import Limits
from fmnist_core.runs.shared import SharedQueue, queue_url
from fmnist_core.store import jobdb
from fmnist_core.store.cache import RunCache
from fmnist_core.store.jobdb import DONE, QUEUED, RUNNING, STOPPED, JobDB, QueueDatabaseError
from fmnist_core.training.config import RunConfig

# Another server process: it builds its own SharedQueue on the same database and cache and answers
# one JSON line per command (submit, get, stop, position), so that the test speaks to it as a page
# would.
SERVER = """
import json, sys
from fmnist_core.runs.jobs import Limits
from fmnist_core.runs.shared import SharedQueue
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig
url, root, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
queue = SharedQueue(url, RunCache(root), Limits(jobs=jobs), trainers=0)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    ask = json.loads(line)
    try:
        if ask["do"] == "submit":
            job = queue.submit(RunConfig.from_dict(ask["config"]), ask["owner"])
            answer = {"run_id": job.run_id, "owners": job.owners}
        elif ask["do"] == "get":
            job = queue.get(ask["run_id"])
            latest = job.latest
            answer = {"state": job.state, "owners": job.owners, "epochs": len(job.epochs), "points": len(job.trace),
                      "step": latest.step if latest else 0, "epoch": latest.epoch if latest else 0, "where": job.where}
        elif ask["do"] == "stop":
            answer = {"stopping": queue.stop(ask["run_id"], ask["owner"])}
        elif ask["do"] == "position":
            answer = {"position": queue.position(ask["run_id"])}
    except (ValueError, PermissionError) as error:
        answer = {"error": str(error)}
    print(json.dumps(answer), flush=True)
"""


class Server:
    """A server process of the lab's (its queue only), spoken to line by line."""

    def __init__(self, url: str, root: Path, folder: Path, jobs: int = 0):
        script = folder / "server.py"
        script.write_text(SERVER)
        self.process = subprocess.Popen(
            [sys.executable, str(script), url, str(root), str(jobs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)


def start_worker(*options: str) -> subprocess.Popen:
    """`python -m fmnist_core worker`, as a teacher types it (FMNIST_QUEUE_DB from the environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist_core", "worker", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, timeout: float = 900.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds; a deadline sized to the work, failing the test after it."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def processes_of(root: Path) -> list[int]:
    """The processes started with FMNIST_CACHE=`root` (a worker, its fork server, its jobs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"FMNIST_CACHE={root}".encode() in environ:
                found.append(int(entry.name))
    return found


def long_job(seed: int = 0) -> RunConfig:
    # Long enough to be seen running and stopped (about a second an epoch here, on one thread).
    return RunConfig.for_model("mlp", epochs=200, train_subset=2000, seed=seed)


def tiny(seed: int = 0, epochs: int = 1) -> RunConfig:
    return RunConfig.for_model("mlp", epochs=epochs, train_subset=2000, seed=seed)


@pytest.fixture
def shared(monkeypatch, tmp_path):
    """FMNIST_QUEUE_DB unset, the default: the cache folder's database, which every server and worker
    given the same cache folder shares."""
    monkeypatch.delenv("FMNIST_QUEUE_DB", raising=False)
    root = Path(os.environ["FMNIST_CACHE"])
    root.mkdir(parents=True, exist_ok=True)
    return queue_url("sqlite", root), root


@pytest.fixture
def cleanup():
    """Processes a test starts, ended with it whatever happens."""
    started = []
    yield started
    for thing in started:
        if isinstance(thing, Server):
            thing.kill()
        elif thing.poll() is None:
            thing.send_signal(signal.SIGTERM)
            try:
                thing.wait(timeout=120)
            except subprocess.TimeoutExpired:
                thing.kill()


def test_a_job_queued_through_one_server_shows_its_progress_in_another_is_trained_apart_and_stopped_from_it(
    shared, tmp_path, cleanup
):
    url, root = shared
    here = SharedQueue(url, RunCache(root), trainers=0)
    there = Server(url, root, tmp_path)
    cleanup.append(there)
    config = long_job()
    job = here.submit(config, owner="ana")
    assert there.ask(do="get", run_id=job.run_id)["state"] == QUEUED
    assert there.ask(do="position", run_id=job.run_id) == {"position": 0}
    cleanup.append(start_worker())
    # The other server sees it train, with its progress: epochs, steps and the running loss's points.
    wait_until(lambda: there.ask(do="get", run_id=job.run_id)["epochs"] >= 2, what="two epochs trained")
    seen = there.ask(do="get", run_id=job.run_id)
    assert seen["state"] == RUNNING and seen["owners"] == ["ana"] and seen["where"]
    assert seen["points"] >= 1 and seen["epoch"] >= 2
    assert "not yours" in there.ask(do="stop", run_id=job.run_id, owner="ben")["error"]
    assert there.ask(do="stop", run_id=job.run_id, owner="ana") == {"stopping": True}
    wait_until(lambda: here.get(job.run_id).state == STOPPED, what="the stop to reach the trainer")
    stopped = here.get(job.run_id)
    assert 2 <= len(stopped.epochs) < 200  # what was trained is kept, as any stopped run's
    assert RunCache(root).stopped.load(config.run_id) is not None  # its checkpoint, to continue
    here.close()


def test_limits_and_turns_count_every_servers_requests(shared, tmp_path, cleanup):
    url, root = shared
    here = SharedQueue(url, RunCache(root), Limits(jobs=2), trainers=0)  # no trainer: all wait
    there = Server(url, root, tmp_path, jobs=2)
    cleanup.append(there)
    first = here.submit(tiny(0), owner="ana")
    here.submit(tiny(1), owner="ana")
    # ana has 2 jobs queued through this server: the other refuses her a third, not ben his first.
    refused = there.ask(do="submit", config=tiny(2).to_dict(), owner="ana")
    assert refused["error"].startswith("limit: you have 2 jobs in the queue")
    bens = there.ask(do="submit", config=tiny(3).to_dict(), owner="ben")
    assert bens["owners"] == ["ben"]
    # Turns: ben's job, queued last through the other server, trains second (round robin).
    assert here.position(bens["run_id"]) == 1 and here.position(first.run_id) == 0
    assert there.ask(do="position", run_id=bens["run_id"]) == {"position": 1}
    # The same config from both servers: one job, both its owners.
    assert there.ask(do="submit", config=tiny(0).to_dict(), owner="ben")["owners"] == ["ana", "ben"]
    assert len(here.jobs()) == 3
    here.close()


def test_a_server_killed_and_restarted_finds_its_queued_jobs_and_a_worker_trains_them(
    shared, tmp_path, cleanup
):
    url, root = shared
    server = Server(url, root, tmp_path)
    cleanup.append(server)
    ids = [server.ask(do="submit", config=tiny(seed).to_dict(), owner="ana")["run_id"] for seed in range(2)]
    server.kill()  # a crash: nothing closed, nothing flushed by hand
    restarted = SharedQueue(url, RunCache(root), trainers=0)
    assert [(job.run_id, job.state, job.owners) for job in restarted.jobs()] == [
        (i, QUEUED, ["ana"]) for i in ids
    ]
    worker = start_worker("--once")
    assert worker.wait(timeout=900) == 0, worker.stderr.read()
    assert [job.state for job in restarted.jobs()] == [DONE, DONE]
    assert all(RunCache(root).exists(run_id) for run_id in ids)
    assert restarted.get(ids[0]).result.metrics["test_accuracy"] > 0.5
    restarted.close()


CLAIMER = """
import sys
from fmnist_core.store.jobdb import JobDB
db = JobDB(sys.argv[1])
sys.stdin.readline()  # both start together
while (row := db.claim(sys.argv[2])) is not None:
    print(row["run_id"], flush=True)
"""


def race(script, source: str, url: str, names, line: str) -> list[str]:
    """`source` run as two processes on the queue at `url`, one per name, both let go at the same
    moment (`line` on their stdin); what each printed."""
    script.write_text(source)
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), url, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for name in names
    ]
    for racer in racers:
        racer.stdin.write(line + "\n")
        racer.stdin.flush()
    return [racer.communicate(timeout=600)[0] for racer in racers]


def test_two_trainers_never_take_the_same_job(shared, tmp_path):
    url, _ = shared
    db = JobDB(url)
    ids = [f"{i:064x}" for i in range(60)]
    for run_id in ids:
        db.submit(run_id, tiny().to_json(), "ana", 0.0, lambda mine: None, lambda row: False)
    taken = [said.split() for said in race(tmp_path / "claim.py", CLAIMER, url, ("one", "two"), "go")]
    assert sorted(taken[0] + taken[1]) == ids  # every job taken once: none twice, none missed
    assert {row["trainer"] for row in db.rows()} == {"one", "two"} or min(map(len, taken)) == 0
    db.dispose()


SUBMITTER = """
import sys
from fmnist_core.store.jobdb import JobDB
db = JobDB(sys.argv[1])
config = sys.stdin.readline()  # both start together
for i in range(40):
    db.submit(f"{i:064x}", config, sys.argv[2], 0.0, lambda mine: None, lambda row: True)
print("done", flush=True)
"""


def test_a_queue_file_deleted_under_a_server_is_made_again_and_one_it_cannot_write_is_one_line(
    shared, monkeypatch, capsys
):
    """Someone deletes queue.sqlite while servers run: the next look makes it again, empty (every
    page's sidebar said "no such table" for ever, and the trainers died). A file the lab may read
    but not write is said when the server starts, in one line, not by its trainers later."""
    from fmnist_core import cli
    from fmnist_core.store import jobdb

    url, root = shared
    queue = SharedQueue(url, RunCache(root), trainers=0)
    queue.submit(tiny(seed=1), owner="ana")
    for suffix in ("", "-wal", "-shm"):
        (root / f"queue.sqlite{suffix}").unlink(missing_ok=True)
    assert queue.jobs() == []  # the tables made again; the jobs went with the file
    job = queue.submit(tiny(seed=2), owner="ana")
    assert [j.run_id for j in queue.jobs()] == [job.run_id]
    queue.close()

    setup = jobdb._sqlite_setup

    def read_only(engine):  # as a file whose mode or mount refuses writes (root ignores chmod)
        setup(engine)
        jobdb.sa.event.listen(
            engine, "connect", lambda connection, _: connection.execute("PRAGMA query_only = ON")
        )

    monkeypatch.setattr(jobdb, "_sqlite_setup", read_only)
    assert cli.main(["settings"]) == 2  # as run_app.sh and serve_class.sh run it first
    said = capsys.readouterr().err
    assert (
        said.startswith("error: FMNIST_CACHE: the queue database does not open: ") and said.count("\n") == 1
    )
    assert "readonly" in said or "read-only" in said, said


def test_a_jobs_end_the_database_refuses_for_a_while_is_written_when_it_answers(shared, monkeypatch):
    """The database made read-only (or locked past its wait) just as a job ends: its trainer tries
    again until it answers. Before, the job showed as training for ever and a new ask joined it."""
    url, root = shared
    refusals = []
    finish = JobDB.finish

    def refused_twice(self, *args, **kwargs):
        if len(refusals) < 2:
            refusals.append(args[2])
            raise QueueDatabaseError("queue database: attempt to write a readonly database")
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(JobDB, "finish", refused_twice)
    monkeypatch.setattr(shared_module, "REAP_SECONDS", 0.2)  # its pause between tries, for the test
    queue = SharedQueue(url, RunCache(root), trainers=1)
    try:
        job = queue.submit(tiny(seed=5), owner="ana")
        assert queue.wait(job.run_id, timeout=900).state == DONE
        assert refusals == [DONE, DONE]  # refused twice, written the third time
    finally:
        queue.close()


def test_two_servers_submitting_the_same_configs_at_once_make_one_job_each(shared, tmp_path):
    """Two processes asking for the same 40 configs at the same moment: 40 jobs, each with both
    owners (none twice, none lost to the other's write)."""
    url, _ = shared
    JobDB(url).dispose()  # the tables made before the race (as a server's start makes them)
    said = race(tmp_path / "submit.py", SUBMITTER, url, ("ana", "ben"), tiny().to_json())
    assert said == ["done\n", "done\n"]
    db = JobDB(url)
    rows = db.rows()
    assert [row["run_id"] for row in rows] == [f"{i:064x}" for i in range(40)]
    assert all(sorted(json.loads(row["owners"])) == ["ana", "ben"] for row in rows)
    db.dispose()


def test_a_trainer_killed_mid_job_keeps_its_epochs_and_the_job_is_queued_again_and_continued(
    shared, tmp_path, cleanup
):
    url, root = shared
    here = SharedQueue(url, RunCache(root), trainers=0)
    config = RunConfig.for_model("mlp", epochs=12, train_subset=2000)
    job = here.submit(config, owner="ana")
    first = start_worker("--stale-after", "2")
    cleanup.append(first)
    wait_until(lambda: len(here.get(job.run_id).epochs) >= 2, what="two epochs trained")
    first.send_signal(signal.SIGKILL)  # no goodbye: the job is left RUNNING under a silent trainer
    first.wait(timeout=60)
    assert here.get(job.run_id).state == RUNNING
    # The orphaned training sees its trainer gone and stops, keeping its finished epochs.
    partial = RunCache(root).stopped
    # (its summary is written after its weights: waited for, the weights are whole)
    wait_until(lambda: partial.summary(config.run_id) is not None, what="the stopped epochs to be kept")
    kept = partial.load(config.run_id)["epoch"]
    assert kept >= 2
    # ...and ends, with its fork server: nothing of the dead trainer's stays (its training once
    # hung forever, writing a stopped run's weights into a pipe nobody read).
    wait_until(lambda: not processes_of(root), what="the dead trainer's processes to end")
    second = start_worker("--stale-after", "2", "--once")
    cleanup.append(second)
    assert second.wait(timeout=900) == 0, second.stderr.read()
    done = here.get(job.run_id)
    assert done.state == DONE and len(done.epochs) == 12
    assert f"continued from epoch {kept}" in done.error  # the run's note: it went on, not from scratch
    here.close()


def test_a_database_locked_for_a_moment_loses_no_job_and_one_locked_too_long_is_one_line(shared, monkeypatch):
    url, root = shared
    queue = SharedQueue(url, RunCache(root), trainers=0)
    path = url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long write
    submitted = []
    thread = threading.Thread(target=lambda: submitted.append(queue.submit(tiny(), owner="ana")))
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive() and not submitted  # it waits for the lock...
    holder.execute("COMMIT")
    thread.join(timeout=120)
    assert [job.run_id for job in submitted] == [tiny().run_id]  # ...and the job is queued after
    assert queue.get(tiny().run_id).state == QUEUED
    monkeypatch.setattr(jobdb, "BUSY_SECONDS", 1)
    impatient = SharedQueue(url, RunCache(root), trainers=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(QueueDatabaseError, match=r"^queue database: database is locked$"):
            impatient.submit(tiny(1), owner="ana")
    finally:
        holder.execute("COMMIT")
    assert [job.run_id for job in impatient.jobs()] == [tiny().run_id]  # nothing half-written
    holder.close()


def test_pages_read_the_queue_while_another_process_holds_the_write_lock(shared, monkeypatch):
    """A page's reads take no write lock (SQLite's WAL reads beside a write): a class's sidebars
    read the queue while a trainer or another server writes, and see what was committed. The reap a
    server's sidebar runs now and then reads first, and writes only when a trainer went silent."""
    url, root = shared
    queue = SharedQueue(url, RunCache(root), trainers=0)
    job = queue.submit(tiny(), owner="ana")
    fresh = SharedQueue(url, RunCache(root), trainers=0)  # another server: its first jobs() reaps
    monkeypatch.setattr(jobdb, "BUSY_SECONDS", 1)  # a read that waited for the lock would fail
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write, not yet committed
    holder.execute("UPDATE jobs SET error = 'not committed'")
    try:
        assert [(j.run_id, j.state, j.error) for j in fresh.jobs()] == [(job.run_id, QUEUED, "")]
        assert fresh.get(job.run_id).owners == ["ana"] and fresh.position(job.run_id) == 0
        with pytest.raises(QueueDatabaseError, match=r"^queue database: database is locked$"):
            fresh.submit(tiny(1), owner="ana")  # a write still waits for the lock, then gives up
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_bad_queue_settings_are_one_line_naming_the_setting_before_anything_starts(
    monkeypatch, tmp_path, capsys
):
    from fmnist_core import cli
    from fmnist_core.base import environment

    folder = tmp_path / "a-folder.sqlite"
    folder.mkdir()
    for value, words in [
        ("mysql://host/db", "not a queue database"),
        ("postgresql://host", "needs a database name"),
        ("postgresql://host:99999/db", "port"),
        ("postgresql://host:abc/db", "port"),
        ("sqlite://", "needs an absolute file path"),
        ("sqlite:///relative.sqlite", "needs an absolute file path"),
        ("sqlite:////no/such/folder/queue.sqlite", "in a folder that does not exist"),
        (f"sqlite:///{folder}", "is a folder, not a database file"),
        ("postgresql://lab@127.0.0.1:1/fmnist", "the queue database does not open"),  # nothing listens
        ("bogus", "'bogus' is not a queue database"),  # quoted as typed
        (f"sqlite:///{tmp_path}/q.sqlite?mode=ro", "takes no options after the path"),
    ]:
        monkeypatch.setenv("FMNIST_QUEUE_DB", value)
        assert cli.main(["settings"]) == 2, value  # as `python -m fmnist_core settings` (run_app.sh)
        said = capsys.readouterr()
        assert said.err.startswith("error: FMNIST_QUEUE_DB: ") and words in said.err, value
        assert said.err.count("\n") == 1 and "settings: ok" not in said.out, said.err  # one line
    assert not Path("relative.sqlite").exists() and not Path("/no/such/folder").exists()  # nothing made
    with pytest.raises(ValueError, match="port") as raised:
        JobDB("postgresql://teacher:s3cret-password@db.example:99999/lab")
    assert "s3cret" not in str(raised.value) and "teacher" not in str(raised.value)
    monkeypatch.setenv("FMNIST_QUEUE_DB", "postgresql://teacher:s3cret-password@db.example/lab")
    assert "FMNIST_QUEUE_DB=(set)" in environment.listing()  # its password never shown
    assert "FMNIST_QUEUE_DB" not in environment.for_jobs()  # nor given to a job's process
    monkeypatch.setenv("FMNIST_QUEUE_DB", "  ")  # blank, as unset: the default, the cache folder's file
    assert environment.queue_db() == "sqlite" and not any(
        "QUEUE_DB" in line for line in environment.listing()
    )
    monkeypatch.setenv("FMNIST_QUEUE_DB", "Memory")  # one server's own queue, as before
    assert environment.queue_db() == ""
    monkeypatch.setenv("FMNIST_QUEUE_DB", "SQLite")  # any case, as "memory"
    assert environment.queue_db() == "sqlite"
    monkeypatch.setenv("FMNIST_QUEUE_DB", f"SQLite:///{tmp_path}/other.sqlite")  # its scheme too
    assert cli.main(["settings"]) == 0 and (tmp_path / "other.sqlite").is_file()
    capsys.readouterr()
    # The default queue's file is a folder: said under the setting that put it there, FMNIST_CACHE.
    monkeypatch.delenv("FMNIST_QUEUE_DB")
    monkeypatch.setenv("FMNIST_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "queue.sqlite").mkdir(parents=True)
    assert cli.main(["settings"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: FMNIST_CACHE: ") and "queue.sqlite is a folder" in said, said
    monkeypatch.setenv("FMNIST_QUEUE_DB", "memory")
    monkeypatch.setenv("FMNIST_WORKERS", "0")  # nobody would train this server's own queue
    with pytest.raises(ValueError, match="^FMNIST_WORKERS: 0 leaves"):
        environment.workers()
    monkeypatch.delenv("FMNIST_QUEUE_DB")
    assert environment.workers() == 0  # the default shared queue: its jobs train apart
    monkeypatch.delenv("FMNIST_WORKERS")
    monkeypatch.setenv("FMNIST_TRAINERS", "0")  # its old name: said, not silently ignored
    with pytest.raises(ValueError, match="^FMNIST_TRAINERS: renamed FMNIST_WORKERS; this one is not read$"):
        environment.check_all()
    monkeypatch.delenv("FMNIST_TRAINERS")
    monkeypatch.setenv("FMNIST_QUEUE_DB", "memory")
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_core", "worker", "--once"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and result.stderr.startswith(
        "error: FMNIST_QUEUE_DB: 'memory' is one server"
    )
    assert result.stderr.count("\n") == 1


def test_a_damaged_queue_file_is_moved_aside_and_the_queue_starts_again(shared):
    url, root = shared
    path = root / jobdb.DB_FILE
    path.write_bytes(b"not a database, but forty bytes of junk!" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "fmnist_core", "settings"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "settings: ok" in result.stdout, result.stderr
    aside = list(root.glob(f"{jobdb.DB_FILE}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")  # kept to look at
    queue = SharedQueue(url, RunCache(root), trainers=0)
    assert queue.jobs() == [] and queue.submit(tiny(), owner="ana").state == QUEUED
    assert queue.trainers_alive() == 0  # nobody trains: the sidebar says so
    queue.close()


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return (
        found[-1].parent
        if found
        else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)
    )


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own for the module, from Debian's packages, on 127.0.0.1."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []  # initdb refuses root
    if as_user:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    subprocess.run([*as_user, binaries / "initdb", "-D", data, "-U", "lab", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    import socket

    with socket.socket() as probe:  # a free port on the loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    subprocess.run([*as_user, binaries / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "-t", "300", "start"],
                   check=True, capture_output=True, timeout=400)  # fmt: skip
    try:
        subprocess.run([binaries / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "lab", "fmnist"],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        yield f"postgresql://lab@127.0.0.1:{port}/fmnist"
    finally:
        subprocess.run(
            [*as_user, binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_the_queue_in_postgresql_is_shared_by_two_servers_and_trained_by_a_worker(
    postgres, tmp_path, monkeypatch, cleanup
):
    root = Path(os.environ["FMNIST_CACHE"])
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FMNIST_QUEUE_DB", postgres)
    here = SharedQueue(postgres, RunCache(root), Limits(jobs=1), trainers=0)
    there = Server(postgres, root, tmp_path, jobs=1)
    cleanup.append(there)
    job = here.submit(tiny(), owner="ana")
    assert there.ask(do="submit", config=tiny().to_dict(), owner="ben")["owners"] == ["ana", "ben"]
    assert there.ask(do="submit", config=tiny(1).to_dict(), owner="ana")["error"].startswith("limit:")
    # Two trainers at once on the server's database: each job taken once.
    db = JobDB(postgres)
    claimed = []
    threads = [
        threading.Thread(target=lambda name=name: claimed.append(db.claim(name))) for name in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(row is None for row in claimed) == [False, True]  # one job, one taker
    db.finish(job.run_id, next(row for row in claimed if row)["trainer"], QUEUED)  # given back
    worker = start_worker("--once")
    assert worker.wait(timeout=900) == 0, worker.stderr.read()
    assert there.ask(do="get", run_id=job.run_id)["state"] == DONE
    assert here.get(job.run_id).result.metrics["test_accuracy"] > 0.5
    here.close()
    db.dispose()


def test_the_app_on_a_shared_queue_shows_another_servers_job_and_says_when_no_trainer_runs(
    shared, monkeypatch
):
    """The app's own start-up path: FMNIST_QUEUE_DB and FMNIST_WORKERS=0 read from the environment."""
    from streamlit.testing.v1 import AppTest

    from ui import warmup

    url, root = shared
    monkeypatch.setenv("FMNIST_WORKERS", "0")
    other = SharedQueue(url, RunCache(root), trainers=0)  # another server process's queue
    job = other.submit(tiny(), owner="someone")
    warmup.wait()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600).run()
    sidebar = " ".join(element.value for element in at.sidebar.caption)
    assert job.run_id[:6] in sidebar  # queued through another server, listed here
    assert "No trainer is running" in sidebar
    from ui import jobs as app_jobs

    assert type(app_jobs.job_queue()).__name__ == "SharedQueue"
    other.close()


def test_a_queue_database_that_stops_answering_is_one_line_in_the_sidebar_not_a_traceback(
    shared, monkeypatch
):
    """Every page's sidebar reads the queue every few seconds: a database locked past its wait (or
    made read-only) is its one line there, and the page itself goes on."""
    from streamlit.testing.v1 import AppTest

    from ui import warmup

    def locked(self):
        raise QueueDatabaseError("queue database: database is locked")

    monkeypatch.setattr(SharedQueue, "jobs", locked)
    warmup.wait()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert [w.value for w in at.sidebar.warning] == ["Training queue: queue database: database is locked"]
    assert at.title and not at.main.error  # the page itself drew


def test_a_worker_keeps_the_disk_cap_as_the_in_process_queue_does(shared, tmp_path, monkeypatch):
    """FMNIST_MAX_CACHE_GB given to `python -m fmnist_core worker`: after its job, the oldest runs go
    until the cache fits, never the run it just trained nor a job still queued."""
    from fmnist_core.runs.trained import get_or_train
    from fmnist_core.store.prune import entry_bytes

    url, root = shared
    cache = RunCache(root)
    old = [get_or_train(tiny(seed), cache=cache) for seed in (31, 32)]  # oldest first
    size = max(entry_bytes(cache, run.run_id) for run in old)
    queue = SharedQueue(url, cache, trainers=0)
    job = queue.submit(tiny(33))
    monkeypatch.setenv("FMNIST_MAX_CACHE_GB", str(2.5 * size / 2**30))  # room for two runs and a half
    worker = start_worker("--once")
    assert worker.wait(timeout=900) == 0, worker.stderr.read()
    assert queue.get(job.run_id).state == DONE
    assert cache.exists(job.run_id) and cache.exists(old[1].run_id)
    assert not cache.exists(old[0].run_id)  # the oldest went
    queue.close()


def test_the_apps_queue_never_removes_the_pinned_runs_at_the_disk_cap(tmp_path, monkeypatch):
    """Through the app's own queue (ui.jobs, both kinds): the disk cap spares the pinned runs (the
    starter set and the reports' runs, studies.pinned) and takes the oldest other one."""
    from fmnist_core.runs.trained import get_or_train
    from fmnist_core.store.prune import entry_bytes
    from fmnist_core.studies import pinned
    from ui import jobs

    for database in ("memory", ""):  # "": unset, the default (the cache folder's shared queue)
        root = tmp_path / (database or "default")
        monkeypatch.setenv("FMNIST_CACHE", str(root))
        cache = RunCache(root)
        old = [get_or_train(tiny(seed), cache=cache) for seed in (41, 42)]  # oldest first
        size = max(entry_bytes(cache, run.run_id) for run in old)
        monkeypatch.setenv("FMNIST_MAX_CACHE_GB", str(1.5 * size / 2**30))  # room for one run and a half
        monkeypatch.setattr(pinned, "pinned_run_ids", lambda old=old: frozenset({old[0].run_id}))
        if database:
            monkeypatch.setenv("FMNIST_QUEUE_DB", database)
        else:
            monkeypatch.delenv("FMNIST_QUEUE_DB", raising=False)
        queue = jobs.job_queue()
        assert type(queue).__name__ == ("JobQueue" if database else "SharedQueue")
        try:
            job = queue.submit(tiny(43))
            queue.wait(job.run_id, timeout=900)
            assert queue.get(job.run_id).state == DONE, database
            assert cache.exists(old[0].run_id), database  # pinned: kept though it is the oldest
            assert not cache.exists(old[1].run_id) and cache.exists(job.run_id), database
        finally:
            queue.close()
            jobs._job_queue.clear()


def test_a_servers_own_torch_work_keeps_to_one_thread_while_its_trainer_trains(shared):
    """As with the in-process queue: while a job of this server's trainer trains (in a process of its
    own, with the cores), the pages' torch work keeps to one thread; the threads come back after.
    Seen from a new thread, as each page run's (torch's thread count is taken per thread, at its
    first parallel work)."""
    import torch

    def threads_of_a_new_thread() -> int:
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    url, root = shared
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    queue = SharedQueue(url, RunCache(root), trainers=1)
    try:
        job = queue.submit(long_job(), owner="ana")
        wait_until(lambda: len(queue.get(job.run_id).epochs) >= 1, what="an epoch trained")
        assert threads_of_a_new_thread() == 1
        queue.stop(job.run_id, owner="ana")
        assert queue.wait(job.run_id, timeout=900).state == STOPPED
        assert threads_of_a_new_thread() == 2
    finally:
        queue.close()
        torch.set_num_threads(before)


def test_a_run_a_shared_queues_trainer_trained_reads_as_trained_and_one_found_cached_does_not(shared):
    """The training panel's 'Trained run' against 'Cached run, not retrained': a shared queue's job
    loads its run from the cache (so the run reads as cached), yet its trainer trained it; a run
    already cached when asked for trained nothing. (Before, a run just trained through a shared queue
    was 'not retrained', and the app's end-to-end test waited in vain for 'Trained run'.)"""
    from fmnist_core.runs.trained import get_or_train
    from ui.panels import trained_by

    url, root = shared
    queue = SharedQueue(url, RunCache(root), trainers=1)
    try:
        job = queue.submit(tiny(seed=7), owner="ana")
        done = queue.wait(job.run_id, timeout=600)
        assert done.state == DONE and done.result.cached and len(done.epochs) == 1
        assert trained_by(done)
        ready = tiny(seed=8)
        get_or_train(ready, cache=RunCache(root))  # trained before anyone queues it
        found = queue.wait(queue.submit(ready, owner="ana").run_id, timeout=600)
        assert found is None or not trained_by(found)
    finally:
        queue.close()
