import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmnist_core.cache import CorruptRunError, MissingRunError, RunCache
from fmnist_core.config import RunConfig
from fmnist_core.runs import get_or_train, load_run

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
def test_corrupted_entry_is_detected_and_retrained(tiny_autoencoder_config, damage):
    cache = RunCache()
    first = get_or_train(tiny_autoencoder_config, cache=cache)
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
    assert "corrupt" in cache.list_runs().loc[0, "status"]
    again = get_or_train(tiny_autoencoder_config, cache=cache)
    assert not again.cached and "retrained" in again.note
    assert again.metrics["test_mse"] == pytest.approx(first.metrics["test_mse"])
    assert get_or_train(tiny_autoencoder_config, cache=cache).cached


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
    table = cache.list_runs().set_index("model")
    assert set(table.index) == {"conv_autoencoder", "mlp"}
    assert table.loc["mlp", "test_accuracy"] > 0.5
    assert table.loc["conv_autoencoder", "n"] == 64
    assert (table["status"] == "ok").all()


def test_prune_removes_damaged_and_stale_entries_and_keeps_good_ones(isolated_cache, tmp_path):
    cache = RunCache()
    config = RunConfig.for_model("mlp", epochs=1, train_subset=2000)
    good = get_or_train(config, cache=cache).run_id
    stale, damaged = "0" * 16, "f" * 16
    shutil.copytree(cache.folder(good), cache.folder(stale))  # its config hashes to another id
    shutil.copytree(cache.folder(good), cache.folder(damaged))
    (cache.folder(damaged) / "model.pt").write_bytes(b"not a model")
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
    assert "2 entries removed" in out.stdout
    assert cache.run_ids() == [good]
    assert get_or_train(config, cache=cache).cached
