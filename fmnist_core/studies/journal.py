"""A sweep's Optuna journal, checked before Optuna reads it: one JSON operation a line, each of
bounded size and depth, of an op code Optuna knows, naming the sweep the file is named for. A last
line cut by a kill is dropped before a sweep writes again (Optuna would append onto it); anything
else wrong is one line naming the file and the cause (JournalError, a ValueError)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fmnist_core.base.files import parse_json, replaced_atomically

log = logging.getLogger("fmnist_core")
MAX_JOURNAL_BYTES = 256_000_000  # ~5 KB a trial of 30 epochs: 50,000 trials
MAX_LINE_BYTES = 1_000_000  # one operation: a plan ~1 KB, a trial's value or attribute ~200 bytes
MAX_LINE_DEPTH = 16  # a plan's fixed settings nest 5 deep inside its operation
MAX_LINE_VALUES = 100_000  # a line of 1 MB holds 500,000 at most
CREATE_STUDY, SET_STUDY_USER_ATTR = 0, 2  # Optuna's op codes (its journals on disk fix them)
CREATE_TRIAL, SET_TRIAL_STATE_VALUES, SET_TRIAL_INTERMEDIATE_VALUE = 4, 6, 7
TRIAL_STATES, COMPLETE = range(5), 1  # RUNNING, COMPLETE, PRUNED, FAIL, WAITING
DIRECTIONS = (1, 2)  # minimise, maximise: a lab sweep has one
# What describe() writes; the pages read each of these from a kept sweep.
PLAN_FIELDS = {
    "model": str,
    "params": list,
    "trials": int,
    "sampler": str,
    "pruner": str,
    "metric": str,
    "fixed": dict,
}


class JournalError(ValueError):
    """A sweep's journal that cannot be used as it is: one line, the file and the cause."""


@dataclass(frozen=True)
class _Scan:
    stamp: tuple  # (device, inode, size, mtime_ns) of the file when it was scanned
    whole: int  # bytes of its whole lines, each checked
    lines: int
    last: bytes  # the last whole line: where it still stands, a later scan goes on after it
    error: str = ""


_SCANS: dict[str, _Scan] = {}
_SOUND: dict[str, tuple] = {}  # journals that replayed, by path: the file's stamp then
_REPORTED: set[str] = set()


def refuse_links(path: Path) -> None:
    """A journal, or the sweeps' folder, that is a symbolic link is refused: as the cache never
    follows a link, a sweep never writes through one (to a file outside the cache folder)."""
    for where in (path.parent, path):
        if where.is_symlink():
            raise JournalError(
                f"{where}: a symbolic link; a sweep's journal must be a plain file in the cache"
            )


@contextlib.contextmanager
def _opened(path: Path):
    """The journal opened to read: never through a link, never a FIFO (whose open would wait)."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(handle, "rb") as file:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise JournalError(f"{path}: not a regular file")
        yield file


def check_plan(path: Path, number: int, plan) -> None:
    """The plan a study keeps (SweepPlan.describe), of the shape the pages read."""
    if not isinstance(plan, dict):
        problem = f"a {type(plan).__name__}, not a mapping"
    else:
        wrong = [key for key, kind in PLAN_FIELDS.items() if type(plan.get(key)) is not kind]
        if not wrong and not all(isinstance(text, str) for text in plan["params"]):
            wrong = ["params"]
        problem = f"{wrong[0]} missing or of a wrong type" if wrong else ""
    if problem:
        raise JournalError(f"{path}: line {number}: the sweep's plan is damaged ({problem})")


@functools.cache
def _known_codes() -> frozenset[int]:
    """The op codes of Optuna's journal (its JournalOperation)."""
    from optuna.storages.journal._storage import JournalOperation

    return frozenset(op.value for op in JournalOperation)


def _parsed(line: bytes):
    """One line's JSON, bounded as parse_json bounds it."""
    # Fewer brackets than the depth limit can nest no deeper nor make more containers: json.loads
    # is safe on such a line (most have 1 to 3), and 10x faster than parse_json's scan.
    if line.count(b"{") + line.count(b"[") <= MAX_LINE_DEPTH:
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return parse_json(line, MAX_LINE_DEPTH, MAX_LINE_BYTES, MAX_LINE_VALUES)  # or its one-line why


def check_line(path: Path, name: str, number: int, line: bytes) -> None:
    """One operation as Optuna will apply it: bounded JSON, a known op code, the first creating the
    study, every study created named `name`, a plan of the shape describe() writes."""
    try:
        operation = _parsed(line)
    except ValueError as error:
        raise JournalError(f"{path}: line {number}: {error}") from None
    code = operation.get("op_code") if isinstance(operation, dict) else None
    if type(code) is not int or code not in _known_codes():
        raise JournalError(
            f"{path}: line {number}: op code {str(code)[:20]} is not one Optuna's journal knows"
        )
    if number == 1 and code != CREATE_STUDY:
        raise JournalError(f"{path}: line 1 does not create a study (op code {code})")
    if code == CREATE_STUDY and operation.get("study_name") != name:
        found = str(operation.get("study_name"))[:60]
        raise JournalError(f"{path}: line {number} holds sweep {found!r}, not {name!r} (copied or renamed?)")
    attributes = operation.get("user_attr")
    if code == SET_STUDY_USER_ATTR and isinstance(attributes, dict) and "plan" in attributes:
        check_plan(path, number, attributes["plan"])
    if wrong := _wrong_numbers(operation, code):
        raise JournalError(f"{path}: line {number}: {wrong}")


def _number(value, finite: bool = True) -> bool:
    return type(value) in (int, float) and (math.isfinite(value) or not finite)


def _wrong_numbers(operation: dict, code: int) -> str:
    """What is not a number where a trial's numbers are (Optuna replays them as they are, and the
    pages and the explorer then failed on them deep inside): '' where all are."""
    directions = operation.get("directions")
    one = isinstance(directions, list) and len(directions) == 1 and type(directions[0]) is int
    if code == CREATE_STUDY and not (one and directions[0] in DIRECTIONS):
        return f"the sweep's direction ({str(directions)[:40]}) is not one minimised or maximised value"
    values = operation.get("values")
    numbers = isinstance(values, list) and len(values) == 1 and all(_number(v) for v in values)
    if code in (CREATE_TRIAL, SET_TRIAL_STATE_VALUES) and values is not None and not numbers:
        return f"a trial's values ({str(values)[:40]}) are not one finite number"
    state = operation.get("state", 0 if code == CREATE_TRIAL else None)
    if code in (CREATE_TRIAL, SET_TRIAL_STATE_VALUES) and state == COMPLETE and values is None:
        return "a complete trial has no value"
    if code in (CREATE_TRIAL, SET_TRIAL_STATE_VALUES) and (
        type(state) is not int or state not in TRIAL_STATES
    ):
        return f"a trial's state ({str(state)[:20]}) is not one Optuna knows"
    if code == SET_TRIAL_INTERMEDIATE_VALUE and not (
        type(operation.get("step")) is int and _number(operation.get("intermediate_value"), finite=False)
    ):  # a diverged epoch's NaN is a number here: Optuna keeps it, its pruners read it
        return "an epoch's value or step is not a number"
    steps = operation.get("intermediate_values", {}) if code == CREATE_TRIAL else {}
    if not isinstance(steps, dict) or not all(_number(v, finite=False) for v in steps.values()):
        return "a trial's epoch values are not numbers"
    return ""


def _check_lines(path: Path, name: str, file, whole: int, lines: int, last: bytes):
    """Every whole line from the file's position on; (whole, lines, last) after them."""
    while line := file.readline(MAX_LINE_BYTES + 1):
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE_BYTES:
                raise JournalError(f"{path}: line {lines + 1} is longer than {MAX_LINE_BYTES:,} bytes")
            break  # the last line, cut by a kill (or being written now): Optuna skips it too
        lines += 1
        check_line(path, name, lines, line)
        whole, last = whole + len(line), line
    return whole, lines, last


def _resume(file, known: _Scan | None, stamp: tuple) -> tuple[int, int, bytes]:
    """Where an earlier scan of this same file ended, if the line it ended on is still there."""
    if known and not known.error and known.stamp[:2] == stamp[:2] and stamp[2] >= known.whole:
        file.seek(known.whole - len(known.last))
        if file.read(len(known.last)) == known.last:
            return known.whole, known.lines, known.last
    file.seek(0)
    return 0, 0, b""


def scan(path: Path, name: str) -> int:
    """Bytes of the journal's whole lines, each checked (check_line); a last line cut by a kill (no
    newline) is not counted. Lines this process checked before are not read again (a journal only
    grows; a replaced or rewritten one is read in full)."""
    refuse_links(path)
    with _opened(path) as file:
        info = os.fstat(file.fileno())
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        known = _SCANS.get(str(path))
        if known is not None and known.stamp == stamp:
            if known.error:
                raise JournalError(known.error)
            return known.whole
        try:
            if info.st_size > MAX_JOURNAL_BYTES:
                raise JournalError(
                    f"{path}: {info.st_size:,} bytes, over the {MAX_JOURNAL_BYTES:,} a journal may have"
                )
            whole, lines, last = _check_lines(path, name, file, *_resume(file, known, stamp))
        except JournalError as error:
            _SCANS[str(path)] = _Scan(stamp, 0, 0, b"", str(error))
            raise
    _SCANS[str(path)] = _Scan(stamp, whole, lines, last)
    return whole


def drop_cut_line(path: Path, name: str) -> None:
    """A last line cut by a kill removed: the whole lines copied beside the journal and moved onto
    it in one step, under Optuna's own lock on the journal (no writer is then mid-line)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if scan(path, name) == path.lstat().st_size:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        whole, size = scan(path, name), path.lstat().st_size
        if whole == size:
            return
        with _opened(path) as source, replaced_atomically(path) as temporary, open(temporary, "wb") as target:
            while source.tell() < whole:
                target.write(source.read(min(1 << 20, whole - source.tell())))
        log.warning(
            "sweep journal %s: its last line was cut (%d bytes, a kill mid-write); dropped",
            path,
            size - whole,
        )
    finally:
        lock.release()


@contextlib.contextmanager
def replaying(path: Path):
    """Optuna reading the journal: what the line checks cannot foresee (a field of a wrong type, a
    trial or study that was never made) is one line naming the file, not Optuna's own error."""
    try:
        yield
    except JournalError:
        raise
    except (
        KeyError,
        TypeError,
        AttributeError,
        AssertionError,
        IndexError,
        ValueError,
        RecursionError,
    ) as error:
        cause = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise JournalError(f"{path}: Optuna cannot replay it ({cause})") from None


def storage(path: Path, name: str, writing: bool):
    """An Optuna JournalStorage on the checked journal. `writing`: made where missing, its cut last
    line dropped (the sweep goes on writing); else it must hold the study."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    refuse_links(path)
    if writing:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            drop_cut_line(path, name)
    elif scan(path, name) == 0:
        raise JournalError(f"{path}: holds no study (empty, or cut before its first line)")
    with replaying(path):
        return JournalStorage(JournalFileBackend(str(path)))


def is_sound(path: Path, name: str) -> bool:
    """Whether a page may open the journal: it holds a study that passes scan and that Optuna
    replays. Judged again only when the file changes; a damaged one is logged once."""
    import optuna

    try:
        info = path.lstat()
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if _SOUND.get(str(path)) != stamp:
            with replaying(path):
                optuna.load_study(study_name=name, storage=storage(path, name, writing=False))
            _SOUND[str(path)] = stamp
    except (JournalError, OSError) as error:
        if str(error) not in _REPORTED:
            _REPORTED.add(str(error))
            log.warning("sweep journal left out: %s", error)
        return False
    return True
