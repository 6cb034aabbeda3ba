"""The lab's FMNIST_* settings: each validated once, wrong ones refused in one line naming them,
secrets kept from jobs; the identity a visitor keeps; JSON read with bounded memory."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_core.base import environment
from fmnist_core.base.files import JsonScan, json_shape
from fmnist_core.runs.jobs import Limits, own_settings
from fmnist_core.store import identity

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FMNIST_CLASS", "maybe", "not one of"),
        ("FMNIST_MAX_QUEUE_MINUTES", "nan", "not a finite number"),
        ("FMNIST_MAX_CACHE_GB", "nan", "not a finite number"),
        ("FMNIST_MAX_CACHE_GB", "-1", "at least 0"),
        ("FMNIST_MAX_JOBS", "1.5", "not a whole number"),
        ("FMNIST_MEMORY_LIMIT_GB", "inf", "not a finite number"),
        ("FMNIST_MEMORY_LIMIT_GB", "-1", "above 0"),
        ("FMNIST_MEMORY_LIMIT_GB", "0", "above 0"),
        ("FMNIST_LOCK_PATIENCE", "0", "above 0"),
        ("FMNIST_WORKERS", "-1", "at least 0"),
        ("FMNIST_BF16", "2", "not one of"),
        ("FMNIST_STARTER", "nope", "not one of"),
        ("FMNIST_SCHEDULER", "ucx://127.0.0.1:8786", "not a Dask scheduler's address"),
        ("FMNIST_SCHEDULER", "tcp://127.0.0.1", "needs a host and a port"),
        ("FMNIST_SCHEDULER", "127.0.0.1:8787", "dashboard"),
        ("FMNIST_ADMIN_TOKEN", "", "blank"),
        ("FMNIST_ADMIN_TOKEN", "x", "at least 16"),
        ("FMNIST_ADMINS", "teacher", "not an email"),
        ("FMNIST_DEVICE", "gpu0", "not a device"),
        ("FMNIST_TRUSTED_HEADER", "X User", "not a header name"),
        ("FMNIST_MAX_JOB", "1", "did you mean FMNIST_MAX_JOBS"),
        ("FMNIST_MAX_JOBS", "\u0663", "not a whole number"),  # an Arabic-Indic 3: int() takes it
        ("FMNIST_MAX_JOBS", "1_0", "not a whole number"),
        ("FMNIST_DEVICE", "cuda:99", "CUDA GPU(s)"),
        ("FMNIST_CACHE", "/etc/hostname", "is a file, not a folder"),
        ("FMNIST_CACHE", "/proc/no-such-folder/cache", "cannot be made"),
        ("FMNIST_DATA", "/tmp", "lacks train-images-idx3-ubyte(.gz)"),  # a folder, not of the data
        ("FMNIST_TRUSTED_HEADER", "Host", "browsers send themselves"),  # anyone picks their own
        ("FMNIST_TRUSTED_HEADER", "Cookie", "browsers send themselves"),
        ("FMNIST_TRUSTED_HEADER", "Sec-Fetch-User", "browsers send themselves"),
        ("fmnist_class", "1", "upper case (FMNIST_CLASS)"),  # never read: said, not ignored
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name) as error:
        environment.check_all()
    assert words in str(error.value) and "\n" not in str(error.value)


def test_settings_in_words_are_read_as_their_readers_say(monkeypatch):
    monkeypatch.setenv("FMNIST_CLASS", "Yes")
    monkeypatch.setenv("FMNIST_STARTER", "off")
    monkeypatch.setenv("FMNIST_MAX_JOBS", "3")
    monkeypatch.setenv("FMNIST_MAX_QUEUE_MINUTES", "12.5")
    monkeypatch.setenv("FMNIST_SCHEDULER", "127.0.0.1:8786")
    monkeypatch.setenv("FMNIST_TRUSTED_HEADER", "X-Forwarded-User")
    monkeypatch.setenv("FMNIST_DATA", "/usr/share/datasets/fashion-mnist")
    environment.check_all()
    assert environment.trusted_header() == "X-Forwarded-User"
    assert environment.optional_flag("FMNIST_CLASS") is True
    assert environment.flag("FMNIST_STARTER", True) is False
    assert Limits.from_environment() == Limits(3, 12.5, 0.0)
    assert environment.scheduler() == "tcp://127.0.0.1:8786"


def test_the_lock_patience_setting_is_the_one_waited(monkeypatch, tmp_path):
    """FMNIST_LOCK_PATIENCE=1 gives up on a stopped holder after ~1 s (the waiter compared with the
    module's constant: here made endless, so that the old code would never return)."""
    import os
    import signal
    import threading

    from filelock import FileLock

    from fmnist_core.base import locks

    monkeypatch.setenv("FMNIST_LOCK_PATIENCE", "1")
    monkeypatch.setattr(locks, "LOCK_PATIENCE", 1e9)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from filelock import FileLock; l = FileLock({str(tmp_path / 'r.lock')!r}); "
            "l.acquire(); print('held', flush=True); import time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        (tmp_path / ".r.owner").write_text(str(holder.pid))
        os.kill(holder.pid, signal.SIGSTOP)
        said, raised = [], []

        def wait() -> None:
            try:
                locks.wait_for_lock(FileLock(str(tmp_path / "r.lock")), tmp_path, "r", said.append)
            except locks.LockedRunError as error:
                raised.append(str(error))

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(timeout=120)  # ~3 s of work (a 1 s patience, 2 s looks); never returning is the bug
        assert raised and "stopped for over 1 s" in raised[0], (raised, said)
        assert any("is stopped" in message for message in said)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_the_admin_token_never_reaches_a_jobs_process(monkeypatch):
    monkeypatch.setenv("FMNIST_ADMIN_TOKEN", "a-long-enough-admin-token")
    monkeypatch.setenv("FMNIST_ADMINS", "teacher@school.example")
    monkeypatch.setenv("FMNIST_MAX_JOBS", "2")
    handed = own_settings()
    assert handed["FMNIST_MAX_JOBS"] == "2"
    assert "FMNIST_ADMIN_TOKEN" not in handed and "FMNIST_ADMINS" not in handed
    assert "a-long-enough-admin-token" not in " ".join(environment.listing())


def test_the_settings_command_checks_before_the_app_starts(tmp_path):
    """scripts/run_app.sh runs `python -m fmnist_core settings` first: a wrong one ends it in one line."""
    env = {"PATH": "/usr/bin:/bin", "FMNIST_CACHE": str(tmp_path), "FMNIST_MAX_CACHE_GB": "nan"}
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_core", "settings"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: FMNIST_MAX_CACHE_GB: 'nan' is not a finite number"
    env["FMNIST_MAX_CACHE_GB"] = "5"
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_core", "settings"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "FMNIST_MAX_CACHE_GB=5" in done.stdout


def test_an_unreachable_scheduler_is_one_line_at_once(tmp_path):
    import socket

    from fmnist_core.runs.cluster import connect

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match=rf"FMNIST_SCHEDULER: nothing answers at tcp://127.0.0.1:{port}"):
        connect(f"tcp://127.0.0.1:{port}", "FMNIST_SCHEDULER")


def test_a_web_server_at_the_scheduler_address_is_one_line_not_a_hang(monkeypatch):
    """An HTTP server keeps Dask's handshake waiting for ever: the lab gives up and says so."""
    import http.server
    import threading

    from fmnist_core.runs import cluster

    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 2.0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ValueError, match="no Dask scheduler answered at tcp://127.0.0.1"):
            cluster.connect(f"127.0.0.1:{server.server_address[1]}", "--scheduler")
    finally:
        server.shutdown()


def test_a_name_the_lab_signed_is_recognised_and_a_made_up_one_is_not(tmp_path):
    key = identity.signing_key(tmp_path)
    assert identity.signing_key(tmp_path) == key  # kept: a restarted server knows its visitors
    assert (tmp_path / identity.KEY_FILE).stat().st_mode & 0o077 == 0
    token = identity.issue(key)
    name = identity.verify(key, token)
    assert name and len(name) == 16
    assert identity.issue(key) != token  # each newcomer a new person
    forged = token.split(".")
    assert identity.verify(key, ".".join([forged[0], "0" * 16, forged[2]])) is None  # another's name
    assert identity.verify(key, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert identity.verify(identity.signing_key(tmp_path / "other"), token) is None  # another lab's
    for junk in (None, "", "é" * 10, "v1..", "x" * 10_000, "v1." + "a" * 16):
        assert identity.verify(key, junk) is None
    (tmp_path / identity.KEY_FILE).write_text("damaged")
    assert identity.verify(identity.signing_key(tmp_path), token) is None  # a new key: new people


def test_admin_tokens_compare_as_bytes_whatever_their_text():
    assert identity.same_secret("a-long-enough-admin-token", "a-long-enough-admin-token")
    assert not identity.same_secret("é", "a-long-enough-admin-token")  # str compare_digest raised
    assert not identity.same_secret("", "")  # no token set: nobody is admin by it


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": "[[[[", "b": [{}]}',
        b'"\\"[[["',
        b'["\\\\", [[1]]]',
        json.dumps({"x": "[" * 3_000_000, "y": [[1]]}).encode(),  # a string across the scan's chunks
        json.dumps({"x": "\\" * 2_000_001 + "[", "y": [[1]]}).encode(),  # backslashes across them
    ],
)
def test_the_json_scan_counts_only_brackets_and_commas_outside_strings(text):
    def reference(value, depth=0):  # what the parsed value says: its depth, containers and commas
        if isinstance(value, dict | list):
            children = list(value.values() if isinstance(value, dict) else value)
            below = [reference(child, depth + 1) for child in children]
            commas = max(len(children) - 1, 0)
            return max([depth + 1, *(d for d, _ in below)]), 1 + commas + sum(c for _, c in below)
        return depth, 0

    depth, values = json_shape(text)
    assert (depth, values - 1) == reference(json.loads(text))


@pytest.mark.parametrize("pieces", [1, 7, 1 << 20])
def test_the_json_scan_fed_in_pieces_finds_what_it_finds_whole(pieces):
    """Pieces split escaped quotes, runs of backslashes and brackets anywhere: the same shape."""
    text = json.dumps({"a": ["\\" * 5 + '"[,', [1, 2, {"b": '\\"'}]], "c": "\\" * 7}).encode() * 3
    text = b"[" + text.replace(b"}{", b"},{") + b"]"
    scan = JsonScan()
    for start in range(0, len(text), pieces):
        scan.feed(text[start : start + pieces])
    assert (scan.deepest, scan.values + 1) == json_shape(text) == (5, 3 * 8 + 3 + 1)


@pytest.mark.parametrize(
    ("bomb", "words"),
    [
        ('b"[" * 50_000_000', "nested more than"),
        ('b"[" + b"{}," * 20_000_000 + b"{}]"', "values"),
        ('b"[" + b"1e1," * 20_000_000 + b"1]"', "values"),
        # UTF-16, which json.loads also reads: U+2200's bytes are NUL and a quote, and the scan
        # took all that followed for a string (8 million {} let in, gigabytes once parsed).
        ('("[\\"\\u2200\\"," + ",".join(["{}"] * 8_000_000) + "]").encode("utf-16-le")', "NUL byte"),
        ("b'\"' * 50_000_000", "not JSON"),
    ],
)
def test_json_bombs_are_refused_with_memory_near_their_size(bomb, words):
    """In a fresh process: its peak memory past the bomb's own bytes (the old scan took 8+ bytes a
    byte, 400 MB+ here; json.loads on 20 million {} takes gigabytes)."""
    script = f"""
import resource
from fmnist_core.base.files import parse_json
bomb = {bomb}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    parse_json(bomb)
except ValueError as error:
    print(error)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    said, grown = done.stdout.strip().splitlines()
    assert words in said
    assert int(grown) < 60_000_000, grown


def test_a_jobs_process_holds_no_secret_in_its_environment(monkeypatch):
    """The fork server the first job starts kept the server's whole environment, so a job's
    /proc/<pid>/environ held FMNIST_ADMIN_TOKEN though os.environ there was cleaned."""
    from fmnist_core.runs import child as job_child

    monkeypatch.setenv("FMNIST_ADMIN_TOKEN", "a-long-enough-admin-token")
    # Ones started earlier knew no token: a new fork server and resource tracker for this test.
    # (Stopping the old tracker waited for every process holding its pipe: joblib's idle
    # workers from an earlier test kept this test waiting 300 s.)
    forkserver, tracker = _fresh_forkserver_and_tracker(monkeypatch)
    monkeypatch.setattr(job_child, "_CONTEXT", None)
    context = job_child.job_context()
    messages = context.Queue()  # as a job's: its first one starts the resource tracker
    child = context.Process(target=_send_own_environ, args=(messages,), daemon=True)
    try:
        with job_child._main_module_hidden():
            child.start()
        environ = messages.get(timeout=600)
        child.join(timeout=600)
        assert tracker._pid is not None and forkserver._forkserver_pid is not None
        assert b"a-long-enough-admin-token" not in environ and b"FMNIST_CACHE=" in environ
        tracker_environ = Path(f"/proc/{tracker._pid}/environ").read_bytes()
        assert b"a-long-enough-admin-token" not in tracker_environ and b"FMNIST_CACHE=" in tracker_environ
        assert os.environ["FMNIST_ADMIN_TOKEN"] == "a-long-enough-admin-token"  # the server keeps it
    finally:
        del child, messages  # their semaphores unlinked while this test's tracker knows them
        gc.collect()
        forkserver._stop()  # its only child has ended
        tracker._stop()  # held by that fork server and its child only


def _fresh_forkserver_and_tracker(monkeypatch):
    """multiprocessing's fork server and resource tracker replaced by new ones (the module's
    functions are bound methods of its one instance); monkeypatch puts the old ones back."""
    import multiprocessing.forkserver as forkserver
    from multiprocessing import resource_tracker

    server, tracker = forkserver.ForkServer(), resource_tracker.ResourceTracker()
    monkeypatch.setattr(forkserver, "_forkserver", server)
    for name in ("ensure_running", "get_inherited_fds", "connect_to_new_process", "set_forkserver_preload"):
        monkeypatch.setattr(forkserver, name, getattr(server, name))
    monkeypatch.setattr(resource_tracker, "_resource_tracker", tracker)
    for name in ("ensure_running", "register", "unregister", "getfd"):
        monkeypatch.setattr(resource_tracker, name, getattr(tracker, name))
    return server, tracker


def test_the_lab_still_knows_its_secrets_while_a_jobs_process_starts(monkeypatch):
    """They leave os.environ while a process starts (above); the first job's fork server takes
    seconds to start under load, and a teacher's ?admin= link checked then was refused."""
    from fmnist_core.runs import child as job_child

    monkeypatch.setenv("FMNIST_ADMIN_TOKEN", "a-long-enough-admin-token")
    monkeypatch.setenv("FMNIST_ADMINS", "teacher@school.example")
    with job_child._main_module_hidden():
        assert "FMNIST_ADMIN_TOKEN" not in os.environ and "FMNIST_ADMINS" not in os.environ
        assert environment.admin_token() == "a-long-enough-admin-token"
        assert environment.admins() == {"teacher@school.example"}
        assert "FMNIST_ADMIN_TOKEN=(set)" in environment.listing()
        assert "FMNIST_ADMIN_TOKEN" not in environment.for_jobs()
    assert os.environ["FMNIST_ADMIN_TOKEN"] == "a-long-enough-admin-token"
    assert os.environ["FMNIST_ADMINS"] == "teacher@school.example"


def _send_own_environ(messages) -> None:
    messages.put(Path(f"/proc/{os.getpid()}/environ").read_bytes())
