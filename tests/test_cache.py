import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fmnist_core.base.files import remove_path
from fmnist_core.runs.trained import get_or_train, load_run
from fmnist_core.store import table
from fmnist_core.store.cache import CorruptRunError, MissingRunError, RunCache
from fmnist_core.store.prune import prune
from fmnist_core.store.table import list_runs
from fmnist_core.training.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_gives_the_same_model(tiny_autoencoder_config):
    cache = RunCache()
    trained = get_or_train(tiny_autoencoder_config, cache=cache)
    assert not trained.cached and trained.completed
    folder = cache.folder(trained.run_id)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "history.json",
        "manifest.json",
        "model.pt",
    ]
    loaded = get_or_train(tiny_autoencoder_config, cache=cache)
    assert loaded.cached
    assert loaded.metrics == trained.metrics and loaded.history == trained.history
    x = torch.rand(5, 1, 28, 28, device=next(trained.model.parameters()).device)  # CPU or GPU alike
    torch.testing.assert_close(loaded.model(x), trained.model.eval()(x))
    assert json.loads((folder / "config.json").read_text())["model"] == "conv_autoencoder"


def test_missing_run_raises():
    with pytest.raises(MissingRunError):
        load_run("0123456789abcdef")


def test_failed_write_leaves_no_entry_and_no_temporary_files(tiny_autoencoder_config, monkeypatch):
    cache = RunCache()
    model = torch.nn.Linear(1, 1)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        cache.save(tiny_autoencoder_config, model, {}, {})
    assert not cache.folder(tiny_autoencoder_config.run_id).exists()
    assert [p for p in cache.root.iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_weights", "drop_manifest", "edit_config"])
def test_corrupted_entry_is_detected_and_retrained(tiny_autoencoder_config, damage, pooled):
    cache = RunCache()
    first = pooled(tiny_autoencoder_config)
    folder = cache.folder(first.run_id)
    weights = folder / "model.pt"
    if damage == "flip_weights":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "drop_manifest":
        (folder / "manifest.json").unlink()
    else:
        (folder / "config.json").write_text('{"model": "mlp"}')
    with pytest.raises(CorruptRunError):
        load_run(first.run_id, cache)
    assert "damaged" in list_runs(cache).loc[0, "status"]
    again = get_or_train(tiny_autoencoder_config, cache=cache)
    assert not again.cached and "retrained" in again.note
    assert again.metrics["test_mse"] == pytest.approx(first.metrics["test_mse"])
    assert get_or_train(tiny_autoencoder_config, cache=cache).cached


@pytest.mark.slow
def test_two_processes_train_the_same_config_once(tmp_path, isolated_cache):
    script = (
        "import json; from fmnist_core import RunConfig, get_or_train;"
        "c = RunConfig.for_model('mlp', epochs=1, train_subset=20000);"
        "print(json.dumps(get_or_train(c).cached))"
    )
    env = {**os.environ, "FMNIST_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
        for _ in range(2)
    ]
    answers = sorted(
        json.loads(p.communicate(timeout=300)[0].decode().strip().splitlines()[-1]) for p in processes
    )
    assert answers == [False, True]
    assert len(RunCache(isolated_cache).run_ids()) == 1


def test_list_runs_has_config_columns_and_metrics(tiny_autoencoder_config):
    cache = RunCache()
    get_or_train(tiny_autoencoder_config, cache=cache)
    get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000), cache=cache)
    table = list_runs(cache).set_index("model")
    assert set(table.index) == {"conv_autoencoder", "mlp"}
    assert table.loc["mlp", "test_accuracy"] > 0.5
    assert table.loc["conv_autoencoder", "n"] == 64
    assert (table["status"] == "ok").all()


def test_runs_are_ranked_best_first_per_model_usable_only_and_other_data_last():
    from fmnist_core.store.table import rank_runs

    table = pd.DataFrame(
        [
            dict(run_id="ae_good", status="ok", test_mse=0.010, data="ours", created="2026-01-01"),
            dict(run_id="ae_bad", status="ok", test_mse=0.020, data="ours", created="2026-01-03"),
            dict(run_id="cls_best", status="ok", test_accuracy=0.93, data="ours", created="2026-01-01"),
            dict(run_id="cls_tie_new", status="ok", test_accuracy=0.90, data="ours", created="2026-01-05"),
            dict(run_id="cls_tie_old", status="ok", test_accuracy=0.90, data="ours", created="2026-01-02"),
            dict(run_id="damaged", status="corrupt", test_accuracy=0.99, data="ours", created="2026-01-01"),
            dict(run_id="theirs", status="ok", test_accuracy=0.99, data="other", created="2026-01-01"),
        ]
    )
    ranked = rank_runs(table, loaded="ours")
    # An autoencoder's score is its MSE and a classifier's its accuracy, negated: lower is better.
    assert list(ranked["run_id"]) == ["cls_best", "cls_tie_new", "cls_tie_old", "ae_good", "ae_bad", "theirs"]
    assert list(ranked["other_data"]) == [False] * 5 + [True]
    assert rank_runs(table.iloc[5:6], loaded="ours").empty


def test_an_entry_is_read_once_per_change_of_its_files(pooled, monkeypatch):
    """Config parses, checksums and weight loads: once per process per change of the entry's files,
    however many callers ask (a Train click read one config ~19 times, its weights twice)."""
    from fmnist_core.store import cache as cache_module

    counts = {"parse": 0, "sha256": 0, "load": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    config = RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300)
    pooled(config)  # loaded once here already: its files written again below, as by a new training
    cache = RunCache()
    for path in cache.folder(config.run_id).iterdir():
        path.write_bytes(path.read_bytes())
    monkeypatch.setattr(RunConfig, "from_dict", counted("parse", RunConfig.from_dict))
    monkeypatch.setattr(cache_module.torch, "load", counted("load", torch.load))
    import fmnist_core.store.entries as entries

    monkeypatch.setattr(entries, "sha256", counted("sha256", entries.sha256))
    for _ in range(3):
        assert cache.load_config(config.run_id) == config
        cache.check(config.run_id)
        cache.load_record(config.run_id)
        RunCache(cache.root).load_state(config.run_id)  # another RunCache of the same folder: the same
        list_runs(cache)
    assert counts == {"parse": 1, "sha256": 3, "load": 1}  # config.json, history.json, model.pt once
    history, _ = cache.load_record(config.run_id)
    history["epoch"] = "edited"  # a caller's own copy: the next one is whole
    assert cache.load_record(config.run_id)[0]["epoch"] == [1]
    path = cache.folder(config.run_id) / "config.json"
    path.write_bytes(path.read_bytes())  # the same bytes, new stamps: read and checked again
    assert cache.load_config(config.run_id) == config
    assert counts["parse"] == 2 and counts["sha256"] == 6


def test_a_byte_changed_in_place_with_its_size_and_times_put_back_is_still_found(pooled):
    """The listing kept beside the cache (and each process's memory) trusts an entry whose files
    keep their stamps: a byte flipped with its size, inode and modification time put back (os.utime)
    still changes the file's status-change time, so the listing in a new process hashes it again."""
    config = RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300)
    pooled(config)
    cache = RunCache()
    assert list(list_runs(cache)["status"]) == ["ok"]  # listed, its row kept beside the cache
    path = cache.folder(config.run_id) / "model.pt"
    before, data = path.stat(), bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    with open(path, "r+b") as handle:  # in place: the same inode and size
        handle.write(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    command = [sys.executable, "-m", "fmnist_core", "runs"]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert f"{config.run_id}" in listed.stdout and "does not match its checksum" in listed.stdout, (
        listed.stdout
    )
    assert "damaged" in list_runs(cache).loc[0, "status"]  # and in this process


def test_list_runs_reads_only_the_entries_that_changed(monkeypatch):
    cache = RunCache()
    first = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000), cache=cache)
    second = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000, seed=1), cache=cache)
    listed = list_runs(cache).set_index("run_id")
    assert len(listed.loc[first.run_id, "val_curve"]) == 1  # the validation curve rides in the row
    reads = []
    real = RunCache.check
    monkeypatch.setattr(RunCache, "check", lambda self, run_id: reads.append(run_id) or real(self, run_id))
    again = list_runs(cache).set_index("run_id")
    assert reads == []  # nothing changed: no entry read again
    assert again.loc[first.run_id, "test_accuracy"] == listed.loc[first.run_id, "test_accuracy"]
    (cache.folder(second.run_id) / "history.json").write_text("{}")  # one entry changes
    damaged = list_runs(cache).set_index("run_id")
    assert set(reads) == {second.run_id}
    assert damaged.loc[second.run_id, "status"].startswith("damaged")
    assert damaged.loc[first.run_id, "status"] == "ok"


def test_prune_removes_damaged_and_stale_entries_and_keeps_good_ones(isolated_cache, tmp_path):
    cache = RunCache()
    config = RunConfig.for_model("mlp", epochs=1, train_subset=2000)
    good = get_or_train(config, cache=cache).run_id
    stale, damaged = "0" * 16, "f" * 16
    shutil.copytree(cache.folder(good), cache.folder(stale))  # its config hashes to another id
    shutil.copytree(cache.folder(good), cache.folder(damaged))
    (cache.folder(damaged) / "model.pt").write_bytes(b"not a model")
    # Stopped runs' checkpoints: one whose run has since finished, one damaged, one to continue.
    resumable, broken = "1" * 16, "2" * 16
    for run_id in (good, resumable, broken):
        cache.stopped.save(run_id, {"run_id": run_id, "weights": torch.zeros(3)}, {"epochs_done": 1})
    (cache.root / ".partial" / f"{broken}.pt").write_bytes(b"cut short")
    env = {**os.environ, "FMNIST_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "fmnist_core", "runs", "--prune"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert f"removed {stale}: run {stale}: its config hashes to {good}" in out.stdout
    assert f"removed {damaged}: run {damaged}: model.pt does not match its checksum" in out.stdout
    assert f"removed {good}: a stopped run's checkpoint, its run since finished" in out.stdout
    assert f"removed {broken}: the stopped run {broken}'s checkpoint is damaged" in out.stdout
    assert "4 entries removed" in out.stdout
    assert cache.run_ids() == [good]
    assert sorted(p.name for p in (cache.root / ".partial").iterdir()) == [
        f"{resumable}.json",
        f"{resumable}.pt",
    ]
    assert cache.stopped.load(resumable)["weights"].shape == (3,)
    assert get_or_train(config, cache=cache).cached


def rewrite_with_checksum(cache: RunCache, run_id: str, name: str, content: bytes) -> None:
    """Replace one file of an entry and make its manifest agree: damage a checksum cannot see."""
    folder = cache.folder(run_id)
    (folder / name).write_bytes(content)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(content).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


class Payload:  # what weights_only refuses to unpickle
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("damage", ["refused payload", "sha256 not a dict", "history malformed"])
def test_an_entry_that_cannot_load_is_damaged_listed_so_pruned_and_retrained(
    tiny_autoencoder_config, damage, pooled
):
    cache = RunCache()
    good = pooled(RunConfig.for_model("mlp", epochs=1, train_subset=500))
    run = pooled(tiny_autoencoder_config)
    folder = cache.folder(run.run_id)
    if damage == "refused payload":
        buffer = io.BytesIO()
        torch.save({"weight": Payload()}, buffer)
        rewrite_with_checksum(cache, run.run_id, "model.pt", buffer.getvalue())
    elif damage == "sha256 not a dict":
        (folder / "manifest.json").write_text(json.dumps({"sha256": 7}))
    else:
        rewrite_with_checksum(cache, run.run_id, "history.json", b'{"history": [1], "metrics": {}}')
    cache = RunCache()  # a fresh process's view, nothing remembered
    table = list_runs(cache).set_index("run_id")
    assert table.loc[run.run_id, "status"].startswith("damaged")
    assert table.loc[good.run_id, "status"] == "ok"  # one bad entry does not break the listing
    again = get_or_train(tiny_autoencoder_config, cache=cache)
    assert not again.cached and "retrained" in again.note
    assert get_or_train(tiny_autoencoder_config, cache=cache).cached
    (cache.folder(run.run_id) / "manifest.json").write_text(json.dumps({"sha256": 7}))
    assert [run_id for run_id, _ in prune(RunCache())] == [run.run_id]


@pytest.mark.slow
def test_an_encoders_damage_marks_its_classifiers_prune_takes_both_and_training_retrains_both():
    cache = RunCache()
    encoder = get_or_train(
        RunConfig.for_model(
            "conv_autoencoder", {"dropout": 0.0}, epochs=1, train_subset=500, test_subset=200
        ),
        cache=cache,
    )
    config = RunConfig.for_model(
        "encoder_classifier",
        {"encoder_run": encoder.run_id, "head": "fc"},
        epochs=1,
        train_subset=500,
        test_subset=200,
    )
    classifier = get_or_train(config, cache=cache)
    rewrite_with_checksum(cache, encoder.run_id, "model.pt", b"not a zip file")
    statuses = list_runs(RunCache()).set_index("run_id")["status"]
    assert statuses[encoder.run_id].startswith("damaged") and statuses[classifier.run_id].startswith(
        "damaged"
    )
    again = get_or_train(config, cache=RunCache())  # the encoder's config.json still says what it was
    assert not again.cached
    assert set(list_runs(RunCache())["status"]) == {"ok"}
    rewrite_with_checksum(cache, encoder.run_id, "model.pt", b"not a zip file")
    removed = dict(prune(RunCache()))
    assert set(removed) == {encoder.run_id, classifier.run_id}
    assert "encoder" in removed[classifier.run_id]
    assert RunCache().run_ids() == []
    # Pruned, the two train again on demand: the encoder from the config its removal kept.
    after = get_or_train(config, cache=RunCache())
    assert not after.cached and after.metrics["test_accuracy"] == again.metrics["test_accuracy"]
    assert set(RunCache().run_ids()) == {encoder.run_id, classifier.run_id}
    assert set(list_runs(RunCache())["status"]) == {"ok"}


def test_a_failed_save_keeps_the_trained_run_and_says_where(tiny_autoencoder_config, monkeypatch):
    cache = RunCache()
    calls = []

    def full_disk(*args):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "save", full_disk)
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    assert run.completed and run.model is not None and "test_mse" in run.metrics
    assert len(calls) == 2 and "not saved" in run.note and "No space left" in run.note


def test_entries_are_group_readable_and_stale_staging_is_cleaned(tiny_autoencoder_config):
    cache = RunCache()
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    assert cache.folder(run.run_id).stat().st_mode & 0o050 == 0o050
    stale = cache.root / ".tmp-0123456789abcdef-xyz"
    stale.mkdir()
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = cache.root / ".tmp-fedcba9876543210-abc"
    fresh.mkdir()
    prune(cache)
    assert not stale.exists() and fresh.exists()  # a staging folder of a run in progress stays


@pytest.mark.parametrize("root_kind", ["a file", "under a file", "its lock a folder"])
def test_a_cache_that_cannot_be_written_still_returns_the_run(tiny_autoencoder_config, tmp_path, root_kind):
    root = tmp_path / "cache"
    if root_kind == "a file":
        root.write_text("not a folder")
    elif root_kind == "under a file":
        (tmp_path / "file").write_text("x")
        root = tmp_path / "file" / "cache"
    else:
        (root / f".{tiny_autoencoder_config.run_id}.lock").mkdir(parents=True)
    run = get_or_train(tiny_autoencoder_config, cache=RunCache(root))
    assert run.completed and not run.cached and run.metrics["test_mse"] > 0
    if root_kind != "its lock a folder":  # there the entry itself saves: only the lock could not be taken
        assert "not saved" in run.note
    assert list_runs(RunCache(root)).shape[0] == (1 if root_kind == "its lock a folder" else 0)


@pytest.mark.parametrize("link_to", ["another run's entry", "nowhere"])
def test_an_entry_that_is_a_symlink_is_not_served_and_is_replaced(tiny_autoencoder_config, link_to, pooled):
    cache = RunCache()
    other = pooled(tiny_autoencoder_config.replace(seed=1))
    reference = pooled(tiny_autoencoder_config, RunCache(cache.root.parent / "reference"))
    target = cache.folder(other.run_id) if link_to != "nowhere" else cache.root / "nowhere"
    cache.folder(reference.run_id).symlink_to(target.resolve())
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    assert not run.cached and run.metrics["test_mse"] == reference.metrics["test_mse"]
    folder = cache.folder(reference.run_id)
    assert folder.is_dir() and not folder.is_symlink() and "not saved" not in run.note
    assert load_run(reference.run_id, cache).metrics["test_mse"] == reference.metrics["test_mse"]
    assert cache.usable(other.run_id)  # the linked entry was left alone


def test_run_ids_are_names_in_the_cache_never_paths(tiny_autoencoder_config, pooled):
    cache = RunCache()
    run = pooled(tiny_autoencoder_config)
    (cache.root / "notes").mkdir()  # a folder a user left there is not a run
    assert cache.run_ids() == [run.run_id] and len(list_runs(cache)) == 1
    for name in ("../" + run.run_id, "/tmp", "notes", run.run_id.upper()):
        with pytest.raises(MissingRunError):
            cache.folder(name)
        assert not cache.exists(name) and not cache.usable(name)


def test_random_damage_to_an_entrys_files_is_always_caught_and_retrained():
    """A fuzz test: bytes flipped, cut or inserted in any of an entry's four files (without
    forging the manifest) never serve anything but the config's own result, and never break a listing."""
    cache = RunCache()
    config = RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300)
    reference = get_or_train(config, cache=cache)
    folder = cache.folder(config.run_id)
    rng = np.random.default_rng(0)
    names = ["model.pt", "config.json", "history.json", "manifest.json"]
    for trial in range(16):
        path = folder / names[trial % 4]
        data = bytearray(path.read_bytes())
        position = int(rng.integers(0, len(data)))
        kind = trial // 4 % 3
        if kind == 0:
            data[position] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            del data[position:]
        else:
            data[position:position] = rng.bytes(int(rng.integers(1, 16)))
        path.write_bytes(bytes(data))
        assert len(list_runs(cache)) == 1  # listed (ok or damaged), never an exception
        run = get_or_train(config, cache=cache)
        assert run.metrics["test_accuracy"] == reference.metrics["test_accuracy"]
        weights, expected = run.model.state_dict(), reference.model.state_dict()
        assert all(torch.equal(weights[key], expected[key]) for key in expected)
        assert cache.usable(config.run_id)


def test_an_atomic_text_write_is_whole_readable_and_keeps_the_mode_it_replaces(tmp_path):
    from fmnist_core.base.files import write_text_atomic

    path = tmp_path / "report.md"
    write_text_atomic(path, "first")
    assert path.read_text() == "first" and path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    write_text_atomic(path, "second")
    assert path.read_text() == "second" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left beside it


def test_a_full_disk_in_torchs_writer_keeps_the_run_and_leaves_nothing_behind(
    tiny_autoencoder_config, monkeypatch
):
    """torch.save reports a full disk as RuntimeError (inline_container.cc), not OSError."""
    cache = RunCache()
    real_save = torch.save

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    assert run.completed and "test_mse" in run.metrics
    assert "not saved" in run.note and "model.pt could not be written" in run.note
    assert "\n" not in run.note
    assert [p.name for p in cache.root.iterdir() if p.is_dir()] == []  # no staging folder, no entry
    with cache.lock(run.run_id).acquire(timeout=0):  # the lock was released
        pass
    monkeypatch.setattr(torch, "save", real_save)
    again = get_or_train(tiny_autoencoder_config, cache=cache)  # the next call works
    assert not again.cached and cache.exists(run.run_id) and not again.note


def test_a_second_process_says_at_once_that_it_waits_and_names_a_stopped_holder(tmp_path, monkeypatch):
    import signal

    from fmnist_core.base import locks

    cache = RunCache(tmp_path / "cache")
    run_id = "0123456789abcdef"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fmnist_core.store.cache import RunCache\n"
            f"with RunCache({str(cache.root)!r}).lock_if_writable({run_id!r}):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        os.kill(holder.pid, signal.SIGSTOP)
        monkeypatch.setattr(locks, "LOCK_POLL", 0.1)
        monkeypatch.setattr(locks, "LOCK_PATIENCE", 0.5)
        said = []
        stopped = pytest.raises(locks.LockedRunError, match=f"kill -CONT {holder.pid}")
        with stopped, cache.lock_if_writable(run_id, on_wait=said.append):
            pass
        assert said[0] == f"run {run_id} is being trained by process {holder.pid}; waiting for it"
        assert said[1].startswith(f"process {holder.pid}, which holds run {run_id}'s lock, is stopped")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with cache.lock_if_writable(run_id) as unlocked:  # its holder gone, the lock is free again
        assert unlocked is None


def test_links_in_an_entry_and_a_linked_lock_leave_their_targets_alone(tiny_autoencoder_config, tmp_path):
    cache = RunCache()
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    decoys = {name: tmp_path / f"decoy-{name}" for name in ("model.pt", "history.json", "lock")}
    for decoy in decoys.values():
        decoy.write_bytes(b"outside the cache: must stay as it is")
    folder = cache.folder(run.run_id)
    for name in ("model.pt", "history.json"):
        (folder / name).unlink()
        (folder / name).symlink_to(decoys[name])
    (cache.root / f".{run.run_id}.lock").unlink(missing_ok=True)
    (cache.root / f".{run.run_id}.lock").symlink_to(decoys["lock"])
    again = get_or_train(tiny_autoencoder_config, cache=cache)  # damaged: retrained, unlocked
    assert not again.cached and cache.exists(run.run_id)
    assert not (folder / "model.pt").is_symlink() and not (folder / "history.json").is_symlink()
    for decoy in decoys.values():
        assert decoy.read_bytes() == b"outside the cache: must stay as it is"


@pytest.mark.parametrize("name", ["config.json", "history.json", "manifest.json"])
def test_deeply_nested_json_in_an_entry_is_damage_not_a_traceback(tiny_autoencoder_config, name):
    from fmnist_core import cli

    cache = RunCache()
    run = get_or_train(tiny_autoencoder_config, cache=cache)
    folder = cache.folder(run.run_id)
    (folder / name).write_text("[" * 100_000)
    if name != "manifest.json":  # the checksum made to match: only the parser stands in the way
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    listed = list_runs(cache)
    assert (
        listed["status"].iloc[0].startswith("damaged: ")
        and "nested more than 32 deep" in listed["status"].iloc[0]
    )
    assert cli.main(["runs", "--prune"]) == 0
    assert cache.run_ids() == []
    assert not get_or_train(tiny_autoencoder_config, cache=cache).cached


def test_a_stopped_runs_checkpoint_past_its_last_epoch_is_not_used(tiny_autoencoder_config):
    cache = RunCache()
    config = tiny_autoencoder_config.replace(epochs=2)
    stop_after_one = iter([False] * 20 + [True] * 10_000)
    stopped = get_or_train(config, cache=cache, should_stop=lambda: next(stop_after_one))
    assert not stopped.completed and cache.stopped.load(config.run_id)["epoch"] == 1
    weights, _ = cache.stopped.paths(config.run_id)
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["epoch"] = 999
    summary = cache.stopped.summary(config.run_id)
    cache.stopped.save(config.run_id, checkpoint, {k: v for k, v in summary.items() if k != "sha256"})
    run = get_or_train(config, cache=cache)
    assert run.completed and "continued" not in run.note and run.metrics["epochs_done"] == 2


def test_a_new_process_lists_a_kept_cache_from_its_listing_and_still_sees_a_changed_entry():
    cache = RunCache()
    first = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000), cache=cache)
    second = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000, seed=1), cache=cache)
    listed = list_runs(cache).set_index("run_id")
    assert (cache.root / table.LISTING).is_file()
    (cache.folder(second.run_id) / "history.json").write_text("{}")  # changed since the listing was kept
    code = "\n".join(
        [
            "import sys",
            "from fmnist_core.store import table",
            "from fmnist_core.store.cache import RunCache",
            "checked, real = [], RunCache.check",
            "RunCache.check = lambda self, rid: checked.append(rid) or real(self, rid)",
            "rows = table.list_runs(RunCache(sys.argv[1])).set_index('run_id')",
            "print(','.join(checked))",
            "print(rows.loc[sys.argv[2], 'status'])",
            "print(rows.loc[sys.argv[3], 'test_accuracy'])",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache.root), second.run_id, first.run_id],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout.split("\n")
    assert out[0] == second.run_id  # only the changed entry was read again
    assert out[1].startswith("damaged") and float(out[2]) == listed.loc[first.run_id, "test_accuracy"]


@pytest.fixture(scope="module")
def listed_cache(tmp_path_factory):
    cache = RunCache(tmp_path_factory.mktemp("listing") / "cache")
    get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000), cache=cache)
    return cache


def listed_by_a_new_process(cache: RunCache, monkeypatch) -> pd.DataFrame:
    """list_runs as a fresh process runs it (nothing kept in memory), in a thread that must return."""
    monkeypatch.setattr(table, "_ROWS", {})
    monkeypatch.setattr(table, "_LOADED", set())
    listed = []
    thread = threading.Thread(target=lambda: listed.append(list_runs(cache)), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive() and listed, "the listing hung or raised"
    return listed[0]


def edit_listing(path: Path, change) -> None:
    kept = json.loads(path.read_text())
    change(kept["rows"][0])
    path.write_text(json.dumps(kept))


def a_row_naming_a_path_digest_and_all(entry) -> None:
    entry["seen"][0][0] = "../elsewhere"
    entry["digest"] = table._digest(
        tuple((rid, table._as_stamps(s)) for rid, s in entry["seen"]), entry["row"]
    )


def a_flood_of_brackets(path: Path) -> None:
    with open(path, "wb") as handle:
        for _ in range(384):
            handle.write(b"[" * (1 << 20))


LISTING_DAMAGE = {
    "a row edited, its stamps kept": lambda path: edit_listing(
        path, lambda entry: entry["row"].update(test_accuracy=0.999)
    ),
    "a row naming a path, digest and all": lambda path: edit_listing(
        path, a_row_naming_a_path_digest_and_all
    ),
    "a FIFO": lambda path: (path.unlink(), os.mkfifo(path)),
    "a folder": lambda path: (path.unlink(), path.mkdir()),
    "384 MB of [": a_flood_of_brackets,
    "nested past the JSON reader's depth": lambda path: path.write_text("[" * 100_000),
}


@pytest.mark.parametrize("damage", list(LISTING_DAMAGE))
def test_a_damaged_listing_or_an_edited_row_is_read_again_from_the_entries(listed_cache, monkeypatch, damage):
    cache = listed_cache
    path = cache.root / table.LISTING
    remove_path(path)
    fresh = listed_by_a_new_process(cache, monkeypatch)
    LISTING_DAMAGE[damage](path)
    tracemalloc.start()
    try:
        pd.testing.assert_frame_equal(listed_by_a_new_process(cache, monkeypatch), fresh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # a listing larger than its rows can be is never read (384 MB of it was)
    assert fresh["test_accuracy"].iloc[0] != 0.999
    if damage != "a folder":  # written again: the next process trusts it, reading no entry
        monkeypatch.setattr(table, "_row", lambda *args: pytest.fail("an entry was read again"))
        pd.testing.assert_frame_equal(listed_by_a_new_process(cache, monkeypatch), fresh)
