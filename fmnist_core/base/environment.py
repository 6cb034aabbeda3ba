"""The lab's settings from the environment (FMNIST_*): each read through one function here that
validates it, and all of them checked together at start-up (`check_all`), so a typo, a NaN or a
word the lab does not know is one line naming the setting, never a setting taken silently."""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import threading
from urllib.parse import urlsplit

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
MIN_ADMIN_TOKEN = 16  # characters: a token guessed by hand or by a short brute force is no token
# Settings a job's process or a Dask worker needs nothing of: never handed to them (a worker's
# environment may be read by whoever runs it).
SECRET = (
    "FMNIST_ADMIN_TOKEN",
    "FMNIST_ADMINS",
    "FMNIST_TRUSTED_HEADER",
    "FMNIST_QUEUE_DB",
)  # the last may hold a password
_HELD: dict[str, str] = {}  # secrets out of os.environ while a process starts (secrets_hidden)
_HIDING = threading.Lock()


def _get(name: str) -> str | None:
    """A setting's raw value, also while `secrets_hidden` holds it out of os.environ."""
    value = os.environ.get(name)
    return _HELD.get(name) if value is None else value


def _text(name: str) -> str:
    return (_get(name) or "").strip()


@contextlib.contextmanager
def secrets_hidden():
    """The secrets out of os.environ (so a process started meanwhile never inherits them) but still
    read by the lab: a teacher's ?admin= link checked while the first job's fork server starts,
    seconds under load, was refused as a wrong token. Each is kept here before it leaves os.environ
    and put back there before it leaves here, so a reader in another thread always finds it."""
    with _HIDING:
        for key in SECRET:
            if key in os.environ:
                _HELD[key] = os.environ[key]
                del os.environ[key]
        try:
            yield
        finally:
            for key in list(_HELD):
                os.environ[key] = _HELD[key]
                del _HELD[key]


def flag(name: str, default: bool = False) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (any case); unset or blank: `default`."""
    text = _text(name).lower()
    if not text:
        return default
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{name}: {os.environ[name]!r} is not one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def optional_flag(name: str) -> bool | None:
    """A yes/no setting where unset means "decide for me" (None)."""
    return flag(name) if _text(name) else None


def number(
    name: str, default: float, *, low: float = 0.0, above_low: bool = False, whole: bool = False, high=None
):
    """A finite number from `low` (or above it) to `high`; unset or blank: `default`."""
    text = _text(name)
    if not text:
        return default
    try:
        if not re.fullmatch(
            r"[+-]?[0-9]+" if whole else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|[a-z]+",
            text.lower(),
        ):
            raise ValueError(text)  # int() takes other scripts' digits and 1_000; a setting does not
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name}: {text[:40]!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: {text!r} is not a finite number")
    if value < low or (above_low and value == low):
        raise ValueError(f"{name}: {text!r} must be {'above' if above_low else 'at least'} {low:g}")
    if high is not None and value > high:
        raise ValueError(f"{name}: {text!r} must be at most {high:g}")
    return value


def max_jobs() -> int:
    """Queued or running jobs one person may have (0: no limit)."""
    return number("FMNIST_MAX_JOBS", 0, whole=True, high=10_000)


def max_queue_minutes() -> float:
    """Estimated minutes of training one person may have queued (0: no limit)."""
    return number("FMNIST_MAX_QUEUE_MINUTES", 0.0, high=1e6)


def max_cache_gb() -> float:
    """The cache's disk cap in GiB (0: none)."""
    return number("FMNIST_MAX_CACHE_GB", 0.0, high=1e6)


def memory_limit_gb() -> float | None:
    """Gigabytes a run may use (None: half the device's memory)."""
    value = number("FMNIST_MEMORY_LIMIT_GB", 0.0, above_low=True, high=1e6)
    return value or None


def lock_patience(default: float) -> float:
    """Seconds a stopped holder of a run's lock is waited for."""
    return number("FMNIST_LOCK_PATIENCE", default, above_low=True, high=1e6)


def workers() -> int:
    """How many jobs this server process trains at once (0: none; its queue's jobs train apart, in
    `python -m fmnist_core worker`, which a queue kept in this server's memory cannot have)."""
    count = number("FMNIST_WORKERS", 1, low=0, whole=True, high=64)
    if count == 0 and not queue_db():
        raise ValueError(
            "FMNIST_WORKERS: 0 leaves a queue kept in this server's memory (FMNIST_QUEUE_DB=memory) "
            "with nobody to train; 0 is for a shared queue whose jobs train apart (python -m fmnist_core worker)"
        )
    return count


def job_threads() -> int:
    """A job's process: its torch threads (0: all the cores)."""
    return number("FMNIST_JOB_THREADS", 0, whole=True, high=4096)


POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def queue_db() -> str:
    """Where the job queue lives, shared by every server process and trainer given the same:
    "sqlite" (unset: the default) the cache folder's queue.sqlite; sqlite:////PATH;
    postgresql://[USER@]HOST[:PORT]/DBNAME (a password from ~/.pgpass or PGPASSWORD, or in the
    address: the setting is a secret, never shown or given to a job); "memory": "", this server's
    memory (one process; its queue is lost with it)."""
    text = _text("FMNIST_QUEUE_DB")
    if text.lower() == "memory":
        return ""
    return check_queue_db(text) if text and text.lower() != "sqlite" else "sqlite"


def queue_db_setting() -> str:
    """The setting a problem of the queue's database is said under: FMNIST_QUEUE_DB where it names
    a database, else FMNIST_CACHE (the queue is its folder's queue.sqlite)."""
    return "FMNIST_QUEUE_DB" if queue_db() not in ("", "sqlite") else "FMNIST_CACHE"


def check_queue_db(url: str, name: str = "FMNIST_QUEUE_DB") -> str:
    """A queue database's address checked before anything connects; "sqlite" stays as it is (the
    cache folder's file), a PostgreSQL one names its driver. The password is never shown."""
    if url == "sqlite":
        return url
    parts = urlsplit(url)
    # As typed where it cannot hold a password; else without what may (user, password, query).
    shown = (
        url[:80]
        if "://" not in url and "@" not in url
        else f"{parts.scheme}://{parts.hostname or ''}{parts.path[:60]}"
    )
    if parts.scheme == "sqlite":
        path = parts.path[1:]
        if parts.query or parts.fragment:
            raise ValueError(f"{name}: {shown!r} takes no options after the path (?...): a file path only")
        if parts.netloc or not path.startswith("/") or path.endswith("/"):
            raise ValueError(
                f"{name}: {shown!r} needs an absolute file path: sqlite:////absolute/path/queue.sqlite"
            )
        if not os.path.isdir(os.path.dirname(path)) or os.path.isdir(path):
            what = (
                "is a folder, not a database file"
                if os.path.isdir(path)
                else "is in a folder that does not exist"
            )
            shown_path = path if len(path) <= 120 else "..." + path[-117:]  # its end names the file
            raise ValueError(f"{name}: {shown_path} {what}")
        return "sqlite:" + url.split(":", 1)[1]  # SQLITE:// as sqlite:// (the driver's name is lower case)
    if parts.scheme in POSTGRES_SCHEMES:
        if not parts.path.strip("/"):
            raise ValueError(f"{name}: {shown!r} needs a database name: postgresql://HOST/DBNAME")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"{name}: {shown!r} has a port that is not a number from 1 to 65535")
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    raise ValueError(
        f"{name}: {shown!r} is not a queue database (sqlite, sqlite:////path/queue.sqlite or postgresql://HOST/DBNAME)"
    )


SCHEMES = ("tcp", "tls")


def scheduler() -> str:
    """The Dask scheduler the app's jobs go to ("" for none): tcp://HOST:PORT or tls://HOST:PORT
    (a bare HOST:PORT means tcp)."""
    return check_scheduler(_text("FMNIST_SCHEDULER"), "FMNIST_SCHEDULER")


def check_scheduler(address: str, name: str = "scheduler") -> str:
    """A Dask scheduler's address checked before anything connects: a known scheme, a host, a port."""
    if not address:
        return ""
    shown = address if len(address) <= 80 else address[:77] + "..."
    full = address if "://" in address else "tcp://" + address
    parts = urlsplit(full)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"{name}: {shown!r} is not a Dask scheduler's address (tcp://HOST:PORT or tls://HOST:PORT)"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or not 1 <= port <= 65535 or parts.path not in ("", "/"):
        raise ValueError(f"{name}: {shown!r} needs a host and a port from 1 to 65535 (tcp://HOST:8786)")
    if port == 8787:
        raise ValueError(
            f"{name}: port 8787 is Dask's dashboard (a web page); the scheduler listens on its own port, "
            "8786 unless it was started with another"
        )
    return full.rstrip("/")


SCALES = ("full", "test")


def scale() -> str:
    """The size of the runs the lab picks by itself (the starter set, Suspect data's map and its
    retraining): full, or test (each 1-2 epochs on 2,000 images: the test suite's browser tests
    prove the same pages on them in seconds; bench/ measures the full ones)."""
    text = _text("FMNIST_SCALE").lower() or "full"
    if text not in SCALES:
        raise ValueError(f"FMNIST_SCALE: {text[:20]!r} is not one of {', '.join(SCALES)}")
    return text


def scored_test_images() -> int:
    """How many test images the runs the lab configures itself (the starter set, Suspect data's,
    the pages' forms) score after each epoch: all 10,000 (0), or 1,000 at FMNIST_SCALE=test, where
    scoring all of them took longer than training on 2,000 images."""
    return 1000 if scale() == "test" else 0


def admin_token() -> str:
    """The token that makes a visitor an admin (?admin=TOKEN once); "" for none. A blank or short
    one is refused: it would let anyone who guesses it stop every job."""
    token = _get("FMNIST_ADMIN_TOKEN")
    if token is None:
        return ""
    if not token.strip():
        raise ValueError("FMNIST_ADMIN_TOKEN: blank; unset it, or give at least 16 characters")
    if len(token) < MIN_ADMIN_TOKEN or not token.isprintable() or token != token.strip():
        raise ValueError(
            f"FMNIST_ADMIN_TOKEN: {len(token)} characters or spaces at its ends; give at least "
            f"{MIN_ADMIN_TOKEN} printable ones (python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


def admins() -> set[str]:
    """Signed-in people (emails) who may stop any job."""
    emails = {e.strip().lower() for e in (_get("FMNIST_ADMINS") or "").split(",") if e.strip()}
    bad = [e for e in emails if not re.fullmatch(r"[^@\s]+@[^@\s]+", e)]
    if bad:
        raise ValueError(f"FMNIST_ADMINS: {bad[0][:60]!r} is not an email address")
    return emails


# Headers a browser sends itself (or lets a page set): a proxy cannot be trusted to have set them.
BROWSER_HEADERS = {
    "host", "cookie", "user-agent", "referer", "origin", "connection", "upgrade", "authorization",
    "cache-control", "pragma", "dnt", "te", "priority", "if-none-match", "if-modified-since", "range",
}  # fmt: skip


def trusted_header() -> str:
    """The request header a reverse proxy sets to the signed-in person ("" for none): never one a
    browser sends itself (Host, Cookie, Accept-*, Sec-*...), which anyone could choose."""
    name = _text("FMNIST_TRUSTED_HEADER")
    if name and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name):
        raise ValueError(f"FMNIST_TRUSTED_HEADER: {name[:40]!r} is not a header name (e.g. X-Forwarded-User)")
    lower = name.lower()
    if lower in BROWSER_HEADERS or lower.startswith(("accept", "sec-", "content-", "upgrade-")):
        raise ValueError(
            f"FMNIST_TRUSTED_HEADER: {name} is a header browsers send themselves, not one a proxy sets "
            "(e.g. X-Forwarded-User)"
        )
    return name


def device_name() -> str:
    """The device runs train on ("" for the lab's choice: CUDA when present, else the CPU)."""
    name = _text("FMNIST_DEVICE")
    if name and not re.fullmatch(r"(cpu|cuda|mps|xpu)(:\d{1,2})?", name):
        raise ValueError(f"FMNIST_DEVICE: {name[:40]!r} is not a device (cpu, cuda, cuda:1, mps)")
    if name.startswith("cuda"):
        import torch  # only where a GPU is asked for: the check needs torch's answer

        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"FMNIST_DEVICE: {name} but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    return name


DATA_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def data_folder() -> str:
    """FMNIST_DATA, the folder of the four data files ("" when unset): it must hold them (each as
    it is or gzipped); their contents are checked where they are read (data/fashion.py)."""
    text = _text("FMNIST_DATA")
    if not text:
        return ""
    if not os.path.isdir(text):
        raise ValueError(
            f"FMNIST_DATA: {text[:200]} is not a folder (it must hold the four *-ubyte.gz files)"
        )
    missing = [
        stem
        for stem in DATA_FILES
        if not any(os.path.isfile(os.path.join(text, stem + e)) for e in (".gz", ""))
    ]
    if missing:
        raise ValueError(f"FMNIST_DATA: {text[:200]} lacks {', '.join(m + '(.gz)' for m in missing)}")
    return text


def cache_folder() -> str:
    """Where the run store lives ("" for models_cache/ here): a folder the lab can write in, or a
    path where one can be made (made here: the check is the making)."""
    text = _text("FMNIST_CACHE")
    if not text:
        return text
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(f"FMNIST_CACHE: {text[:200]} is a file, not a folder for the run store")
    try:
        os.makedirs(text, exist_ok=True)
    except OSError as error:
        raise ValueError(f"FMNIST_CACHE: {text[:200]} cannot be made ({error.strerror or error})") from None
    if not os.access(text, os.W_OK | os.X_OK):
        raise ValueError(f"FMNIST_CACHE: {text[:200]} is not writable by this user")
    return text


# Settings the lab no longer reads under that name: one line saying the new one.
RENAMED = {"FMNIST_TRAINERS": "FMNIST_WORKERS"}

# Every setting with the reader that validates it: check_all runs them all; a name not here is a typo.
READERS = {
    "FMNIST_DATA": data_folder,
    "FMNIST_CACHE": cache_folder,
    "FMNIST_OTHER_DATA": lambda: flag("FMNIST_OTHER_DATA"),
    "FMNIST_BF16": lambda: optional_flag("FMNIST_BF16"),
    "FMNIST_DEVICE": device_name,
    "FMNIST_STARTER": lambda: flag("FMNIST_STARTER", True),
    "FMNIST_SCALE": scale,
    "FMNIST_DEBUG": lambda: flag("FMNIST_DEBUG"),
    "FMNIST_CLASS": lambda: optional_flag("FMNIST_CLASS"),
    "FMNIST_MAX_JOBS": max_jobs,
    "FMNIST_MAX_QUEUE_MINUTES": max_queue_minutes,
    "FMNIST_MAX_CACHE_GB": max_cache_gb,
    "FMNIST_MEMORY_LIMIT_GB": memory_limit_gb,
    "FMNIST_LOCK_PATIENCE": lambda: lock_patience(1.0),
    "FMNIST_WORKERS": workers,
    "FMNIST_JOB_THREADS": job_threads,
    "FMNIST_SCHEDULER": scheduler,
    "FMNIST_QUEUE_DB": queue_db,
    "FMNIST_ADMIN_TOKEN": admin_token,
    "FMNIST_ADMINS": admins,
    "FMNIST_TRUSTED_HEADER": trusted_header,
}


def check_all() -> None:
    """Every FMNIST_* setting validated: ValueError, one line naming the first one that is wrong
    (a name the lab does not know included, with the nearest it does)."""
    for name in sorted(key for key in os.environ if key.lower().startswith("fmnist_")):
        if not name.startswith("FMNIST_"):
            raise ValueError(
                f"{name}: the lab's settings are upper case ({name.upper()}); this one is not read"
            )
        if name in RENAMED:
            raise ValueError(f"{name}: renamed {RENAMED[name]}; this one is not read")
        if name not in READERS:
            near = difflib.get_close_matches(name, READERS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValueError(f"{name}: not a setting of the lab{hint}; the README lists them")
    for reader in READERS.values():
        reader()


def listing() -> list[str]:
    """The settings in force as NAME=value lines, secrets shown only as set."""
    shown = [n for n in sorted(READERS) if _get(n) is not None and (n not in SECRET or _get(n).strip())]
    return [f"{n}={'(set)' if n in SECRET else _get(n)}" for n in shown]


def for_jobs() -> dict[str, str]:
    """The lab's settings as a job's process or a worker needs them: no secrets."""
    return {
        key: value for key, value in os.environ.items() if key.startswith("FMNIST_") and key not in SECRET
    }
