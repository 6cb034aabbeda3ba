"""The job queue's state as rows of a database, so that several server processes (and trainers
apart from them) share one queue and a restart loses nothing: jobs with their owners, order,
state, progress and stop requests; the turns between people; the trainers alive.

By default an SQLite file in the cache folder (nothing to start; WAL, each write transaction
taken at once so that two processes never interleave one); `postgresql://...` for several
machines (psycopg; each write transaction holds one advisory lock). Every change that reads
then writes (a submission against the limits, a trainer claiming the next turn, a dead trainer's
job given back) is one transaction: two servers submitting the same config make one job, two
trainers never take the same one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from fmnist_core.base.environment import check_queue_db

log = logging.getLogger("fmnist_core")

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
ACTIVE = (QUEUED, RUNNING)
DB_FILE = "queue.sqlite"  # in the cache folder
LOCK_KEY = 0x464D4E53  # PostgreSQL's advisory lock for the queue's write transactions ("FMNS")
BUSY_SECONDS = 30  # how long a write waits for another process's transaction before it fails
RETRIES = 1  # one more try after a wait that ran out: a moment's lock loses no job

META = sa.MetaData()
JOBS = sa.Table(
    "jobs",
    META,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("config", sa.Text, nullable=False),  # the RunConfig's JSON
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # submission order (a retried job goes last)
    sa.Column("owners", sa.Text, nullable=False),  # JSON list, the first asker first
    sa.Column("seconds", sa.Float, nullable=False, default=0.0),  # its estimate, against limits
    sa.Column("submitted", sa.Float, nullable=False),
    sa.Column("stop", sa.Boolean, nullable=False, default=False),
    sa.Column("trainer", sa.String(120), nullable=False, default=""),  # who trains it now
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # trainers that took it
    sa.Column("latest", sa.Text, nullable=False, default=""),  # the last progress report, JSON
    sa.Column("epochs", sa.Text, nullable=False, default="[]"),  # a metrics dict per finished epoch
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("changed", sa.Float, nullable=False),
)
POINTS = sa.Table(  # the running loss within epochs, for the live curve
    "points",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("x", sa.Float, nullable=False),
    sa.Column("loss", sa.Float, nullable=False),
)
SERVED = sa.Table(  # when a trainer last started a job of each owner (round robin between people)
    "served", META, sa.Column("owner", sa.String(200), primary_key=True), sa.Column("at", sa.Float)
)
TRAINERS = sa.Table(  # each trainer's last sign of life
    "trainers",
    META,
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("seen", sa.Float, nullable=False),
)


def retried(method):
    """A lock held by another process past BUSY_SECONDS is waited for once more; then a one-line
    QueueDatabaseError (the database's own words, never its address)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        for attempt in range(RETRIES + 1):
            try:
                return method(*args, **kwargs)
            except sa.exc.OperationalError as error:
                said = str(error.orig).lower()
                if attempt < RETRIES and "no such table" in said:  # the file deleted under a server:
                    args[0]._create()  # a new one, with its tables (the jobs it held are gone with it)
                    log.warning("queue database: %s; its tables made again", one_line(error))
                    continue
                if attempt == RETRIES or "lock" not in said:
                    raise QueueDatabaseError(f"queue database: {one_line(error)}") from None

    return wrapper


def cache_url(root: str | os.PathLike) -> str:
    """The cache folder's queue file (the folder made where it is not yet)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(Path(root) / DB_FILE).resolve()}"


def _sqlite_setup(engine: sa.Engine) -> None:
    """Each connection waits for another process's transaction, reads beside writes (WAL), and
    takes its write lock when a transaction begins, not at its first write (two read-then-write
    transactions would otherwise both read, and one fail)."""

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection):
        reading = connection.get_execution_options().get("reading", False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


class QueueDatabaseError(OSError):
    """The queue's database did not answer as it should (locked too long, gone away): one line."""


def one_line(error: sa.exc.SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's links or the statement (never the address)."""
    return " ".join(str(getattr(error, "orig", None) or error).split())[:200]


class JobDB:
    """The queue's tables at `url` (created where missing). An address that does not open as a
    queue database is a ValueError naming FMNIST_QUEUE_DB; an SQLite file that is not a database
    (damaged, or something else) is moved aside as FILE.damaged-TIME and the queue starts empty."""

    def __init__(self, url: str, setting: str = "FMNIST_QUEUE_DB"):
        self.url = check_queue_db(url, setting)
        self.sqlite = self.url.startswith("sqlite")
        if self.sqlite:
            self.engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            _sqlite_setup(self.engine)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=4)
        try:
            self._create()
        except sa.exc.DatabaseError as error:
            damaged = self.sqlite and ("not a database" in str(error) or "malformed" in str(error))
            if not damaged:
                raise ValueError(f"{setting}: the queue database does not open: {one_line(error)}") from None
            self._move_aside()
            self._create()
        except sa.exc.SQLAlchemyError as error:
            raise ValueError(f"{setting}: the queue database does not open: {one_line(error)}") from None

    def _create(self) -> None:
        with self.write() as db:  # tables made once, whoever comes first (under the write lock)
            META.create_all(db)
            db.execute(sa.select(sa.func.count()).select_from(JOBS)).scalar()  # a damaged file shows here
            # A write, undone: a file the lab can read but not write (its mode, a read-only mount) is
            # said here, at the start, not by every trainer and page later.
            db.execute(TRAINERS.insert().values(name="", seen=0.0))
            db.execute(TRAINERS.delete().where(TRAINERS.c.name == ""))

    def _move_aside(self) -> None:
        self.engine.dispose()
        path = Path(urlsplit(self.url).path[1:])
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("queue database %s is damaged: moved to %s, the queue starts empty", path, aside.name)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")

    def dispose(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def write(self):
        """One transaction that nobody else's write interleaves."""
        with self.engine.begin() as db:
            if not self.sqlite:
                db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield db

    @contextlib.contextmanager
    def read(self):
        """One reading transaction: it takes no write lock (SQLite's WAL reads beside a write), so
        the pages of a class read the queue at once."""
        with self.engine.connect() as db:
            yield db.execution_options(reading=True)

    # Reading -------------------------------------------------------------------------------

    @retried
    def rows(self) -> list[dict]:
        with self.read() as db:
            return [dict(row._mapping) for row in db.execute(sa.select(JOBS).order_by(JOBS.c.seq))]

    @retried
    def row(self, run_id: str) -> dict | None:
        with self.read() as db:
            found = db.execute(sa.select(JOBS).where(JOBS.c.run_id == run_id)).first()
            return dict(found._mapping) if found is not None else None

    @retried
    def points(self, run_id: str) -> list[tuple[float, float]]:
        with self.read() as db:
            query = (
                sa.select(POINTS.c.x, POINTS.c.loss).where(POINTS.c.run_id == run_id).order_by(POINTS.c.id)
            )
            return [(x, loss) for x, loss in db.execute(query)]

    def served(self, db) -> dict[str, float]:
        return {owner: at for owner, at in db.execute(sa.select(SERVED.c.owner, SERVED.c.at))}

    # Submitting and stopping -----------------------------------------------------------------

    @retried
    def submit(self, run_id: str, config: str, owner: str, seconds: float, check, reusable) -> dict:
        """Queue `config` for `owner`, or add them to the job for it that is queued, running, or done
        (where `reusable(row)`, its run still in the cache). `check(mine)` raises where `owner`'s
        active jobs `mine` leave no room. Returns the job's row."""
        with self.write() as db:
            found = db.execute(sa.select(JOBS).where(JOBS.c.run_id == run_id)).first()
            if found is not None and (found.state in ACTIVE or (found.state == DONE and reusable(found))):
                owners = json.loads(found.owners)
                if owner not in owners:
                    owners.append(owner)
                    db.execute(JOBS.update().where(JOBS.c.run_id == run_id).values(owners=json.dumps(owners)))
                return {**found._mapping, "owners": json.dumps(owners)}
            mine = [
                row
                for row in db.execute(
                    sa.select(JOBS.c.run_id, JOBS.c.owners, JOBS.c.seconds).where(JOBS.c.state.in_(ACTIVE))
                )
                if owner in json.loads(row.owners)
            ]
            check(mine)
            seq = (db.execute(sa.select(sa.func.max(JOBS.c.seq))).scalar() or 0) + 1
            now = time.time()
            values = dict(
                config=config, state=QUEUED, seq=seq, owners=json.dumps([owner]), seconds=seconds, submitted=now,
                stop=False, trainer="", attempts=0, latest="", epochs="[]", error="", changed=now,
            )  # fmt: skip
            if found is None:
                db.execute(JOBS.insert().values(run_id=run_id, **values))
            else:  # a failed, stopped or vanished job tried again: one row, listed last
                db.execute(JOBS.update().where(JOBS.c.run_id == run_id).values(**values))
                db.execute(POINTS.delete().where(POINTS.c.run_id == run_id))
            return {"run_id": run_id, **values}

    @retried
    def stop(self, run_id: str, owner: str | None) -> bool:
        """`owner` no longer wants the job (None: stop it whoever asked). PermissionError for a
        person who never asked for it. Whether it is stopping."""
        with self.write() as db:
            found = db.execute(sa.select(JOBS).where(JOBS.c.run_id == run_id)).first()
            if found is None:
                return False
            owners = json.loads(found.owners)
            if owner is not None:
                if owner not in owners:
                    raise PermissionError(f"stop: job {run_id} is not yours to stop")
                owners.remove(owner)
                if owners:
                    db.execute(JOBS.update().where(JOBS.c.run_id == run_id).values(owners=json.dumps(owners)))
                    return False
            state = STOPPED if found.state == QUEUED else found.state  # queued: off the queue at once
            db.execute(
                JOBS.update()
                .where(JOBS.c.run_id == run_id)
                .values(owners=json.dumps(owners), stop=True, state=state, changed=time.time())
            )
            return True

    @retried
    def stop_all(self) -> None:
        with self.write() as db:
            db.execute(JOBS.update().where(JOBS.c.state.in_(ACTIVE)).values(stop=True))
            db.execute(JOBS.update().where(JOBS.c.state == QUEUED).values(state=STOPPED))

    # Training --------------------------------------------------------------------------------

    @retried
    def claim(self, trainer: str) -> dict | None:
        """The queued job whose turn it is, now RUNNING for `trainer`; None when none waits."""
        with self.write() as db:
            self._beat(db, trainer)
            rows = db.execute(sa.select(JOBS).where(JOBS.c.state == QUEUED).order_by(JOBS.c.seq)).all()
            turns = turn_order([dict(row._mapping) for row in rows], self.served(db))
            if not turns:
                return None
            chosen = next(dict(row._mapping) for row in rows if row.run_id == turns[0])
            now = time.time()
            db.execute(
                JOBS.update()
                .where(JOBS.c.run_id == chosen["run_id"])
                .values(state=RUNNING, trainer=trainer, attempts=chosen["attempts"] + 1, changed=now)
            )
            for owner in json.loads(chosen["owners"]):
                if db.execute(SERVED.update().where(SERVED.c.owner == owner).values(at=now)).rowcount == 0:
                    db.execute(SERVED.insert().values(owner=owner, at=now))
            return {**chosen, "state": RUNNING, "trainer": trainer}

    def _beat(self, db, trainer: str) -> None:
        if (
            db.execute(TRAINERS.update().where(TRAINERS.c.name == trainer).values(seen=time.time())).rowcount
            == 0
        ):
            db.execute(TRAINERS.insert().values(name=trainer, seen=time.time()))

    @retried
    def report(self, run_id: str, trainer: str, latest: str, epochs: str, points: list) -> bool:
        """A running job's progress, from the trainer that holds it; whether a stop was asked."""
        with self.write() as db:
            self._beat(db, trainer)
            if points:
                db.execute(POINTS.insert(), [{"run_id": run_id, "x": x, "loss": loss} for x, loss in points])
            mine = (JOBS.c.run_id == run_id) & (JOBS.c.trainer == trainer)
            db.execute(JOBS.update().where(mine).values(latest=latest, epochs=epochs, changed=time.time()))
            return bool(db.execute(sa.select(JOBS.c.stop).where(mine)).scalar())

    @retried
    def finish(
        self, run_id: str, trainer: str, state: str, error: str = "", epochs: str | None = None
    ) -> None:
        values = {"state": state, "error": error, "changed": time.time()}
        if state == QUEUED:  # given back: any trainer may take it
            values["trainer"] = ""
        if epochs is not None:
            values["epochs"] = epochs
        with self.write() as db:
            mine = (JOBS.c.run_id == run_id) & (JOBS.c.trainer == trainer) & (JOBS.c.state == RUNNING)
            db.execute(JOBS.update().where(mine).values(**values))

    @retried
    def waiting(self) -> bool:
        """Whether a job is queued (a read: an idle trainer asks this before it claims, which writes)."""
        with self.read() as db:
            return (
                db.execute(sa.select(JOBS.c.run_id).where(JOBS.c.state == QUEUED).limit(1)).first()
                is not None
            )

    @retried
    def beat(self, trainer: str) -> None:
        with self.write() as db:
            self._beat(db, trainer)

    @retried
    def trainers_alive(self, within: float) -> int:
        """How many trainers gave a sign of life in the last `within` seconds."""
        with self.read() as db:
            query = (
                sa.select(sa.func.count())
                .select_from(TRAINERS)
                .where(TRAINERS.c.seen >= time.time() - within)
            )
            return int(db.execute(query).scalar())

    @retried
    def leave(self, trainer: str) -> None:
        with self.write() as db:
            db.execute(TRAINERS.delete().where(TRAINERS.c.name == trainer))

    @retried
    def reap(self, stale_after: float, attempts: int = 2) -> list[str]:
        """Running jobs whose trainer gave no sign of life for `stale_after` seconds: queued again
        (a trainer continues them from their last finished epoch, which the stopped training kept),
        or failed with a message after `attempts` trainers. The run ids given back."""
        given, cutoff = [], time.time() - stale_after
        if not self._stale(cutoff):
            return given  # the usual case, read without the write lock (a page's sidebar asks this)
        with self.write() as db:
            alive = {
                name
                for name, seen in db.execute(sa.select(TRAINERS.c.name, TRAINERS.c.seen))
                if seen >= cutoff
            }
            for row in db.execute(sa.select(JOBS).where(JOBS.c.state == RUNNING)).all():
                if row.trainer in alive:
                    continue
                why = f"its trainer ({row.trainer}) stopped answering; the epochs it finished are kept"
                if row.stop or row.attempts >= attempts:
                    values = {"state": STOPPED if row.stop else FAILED, "error": why}
                else:
                    values = {"state": QUEUED, "error": why + "; queued again", "trainer": ""}
                db.execute(
                    JOBS.update().where(JOBS.c.run_id == row.run_id).values(changed=time.time(), **values)
                )
                given.append(row.run_id)
            db.execute(TRAINERS.delete().where(TRAINERS.c.seen < cutoff))
        return given

    @retried
    def _stale(self, cutoff: float) -> bool:
        """Whether a trainer's last sign of life is older than `cutoff`, or a running job's trainer
        has none: the reap has something to do."""
        with self.read() as db:
            seen = dict(db.execute(sa.select(TRAINERS.c.name, TRAINERS.c.seen)).all())
            running = db.execute(sa.select(JOBS.c.trainer).where(JOBS.c.state == RUNNING)).scalars().all()
        return any(when < cutoff for when in seen.values()) or any(
            seen.get(trainer, -math.inf) < cutoff for trainer in running
        )


def turn_order(queued: list[dict], served: dict[str, float]) -> list[str]:
    """The queued jobs (rows in submission order) in the order they will train: round robin
    between owners (the one served longest ago first), each owner's jobs in their order."""
    by_owner: dict[str, list[str]] = {}
    for row in queued:
        if not row["stop"]:
            owners = json.loads(row["owners"])
            by_owner.setdefault(owners[0] if owners else "", []).append(row["run_id"])
    first = {owner: i for i, owner in enumerate(by_owner)}  # the order owners first appear in
    owners = sorted(by_owner, key=lambda o: (served.get(o, 0.0), first[o]))
    turns, round_ = [], 0
    while any(round_ < len(by_owner[o]) for o in owners):
        turns += [by_owner[o][round_] for o in owners if round_ < len(by_owner[o])]
        round_ += 1
    return turns
