"""The speedrun's ladder: each rung one trick more, ordinary cached runs, a report rebuilt from
the cache without training, and its command's refusals in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fmnist_core.runs.trained import untrained_model
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import speedrun
from fmnist_core.training import tricks

ROOT = Path(__file__).resolve().parents[1]
TRICK_SETTINGS = ("whiten", "dirac", "bn_bias_lr", "ema", "label_smoothing", "augment", "tta")


def test_each_rung_adds_its_trick_to_every_trick_below_it():
    configs = [speedrun.rung_config(rung) for rung in range(len(speedrun.RUNGS))]
    assert len({c.run_id for c in configs}) == len(configs)
    base = configs[0]
    assert not base.whiten and not base.dirac and base.ema == 0 and base.tta == "none"
    assert base.validation == "holdout"  # settings are chosen on the holdout tenth, never on the test set
    for below, config, rung in zip(configs[:-1], configs[1:], speedrun.RUNGS[1:], strict=True):
        changed = {k for k in TRICK_SETTINGS if getattr(config, k) != getattr(below, k)}
        assert changed == set(rung.run), (rung.name, changed)  # one trick a rung, the others kept
    last = configs[-1]
    assert last.whiten and last.dirac and last.bn_bias_lr == 8.0 and last.ema == 0.99
    assert (last.augment, last.tta, last.label_smoothing) == ("alt_flip_shift", "flip_shift", 0.2)
    first_conv = tricks.convs(untrained_model(last))[0]
    assert first_conv.out_channels == 2 * first_conv.kernel_size[0] ** 2  # whitening fills it exactly


def test_a_tiny_ladder_trains_once_and_its_report_is_rebuilt_from_the_cache(isolated_cache, tmp_path):
    cache = RunCache(isolated_cache)
    # 30 steps (the plain network, rung 0, is still at chance after them; whitened, it is not)
    tiny = dict(epochs=1, train_subset=1000, test_subset=500, batch_size=32)
    events = []
    table = speedrun.ladder_table([1, 2], 2, cache, on_event=events.append, **tiny)
    assert len(events) == 4 and len(cache.run_ids()) == 4  # 2 rungs x 2 seeds
    assert list(table["name"]) == ["whiten", "dirac"] and list(table["seeds"]) == [2, 2]
    for row in table.itertuples():
        assert 0.3 < row.accuracy_mean < 1 and row.accuracy_std > 0  # two seeds, two results
        assert row.accuracy_min <= row.accuracy_mean and row.seconds > 0 and row.epochs == 1
        assert 0.3 < row.without_duplicates < 1 and row.train_gflops > 0
    again = speedrun.ladder_table([1, 2], 2, cache, train=False, **tiny)
    pd.testing.assert_frame_equal(table, again)
    assert len(cache.run_ids()) == 4  # nothing trained the second time
    path = speedrun.write_report(table, tmp_path)
    text = path.read_text()
    assert "| 1 whiten | the first conv whitens its patches, frozen | 2 |" in text
    assert f"{table['accuracy_mean'][0]:.4f} ± {table['accuracy_std'][0]:.4f}" in text
    assert pd.read_csv(tmp_path / "speedrun.csv")["run_ids"].str.split().map(len).tolist() == [2, 2]
    assert speedrun.ladder_table([3], 1, cache, train=False, **tiny).empty  # not cached: left out


def test_duplicated_test_images_leave_the_accuracy_without_them():
    duplicated = speedrun.duplicated_test_images()
    assert 0 < len(duplicated) < 10_000 and duplicated.max() < 10_000


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FMNIST_CACHE": str(cache)}
    command = [sys.executable, "-m", "fmnist_core", "speedrun", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--rung", "9"), "error: rung: 9 is outside [0, 8]"),
        (("--rung", "-1"), "error: rung: -1 is outside [0, 8]"),
        (("--seeds", "0"), "error: argument --seeds: '0' is not a whole number"),
        (("--seeds", "21"), "error: seeds: 21 is outside [1, 20]"),
        (("--epochs", "0"), "error: epochs: 0 is outside [1, 1000]"),
        (("--subset", "70000"), "error: train_subset: 70000 is outside [0, 60000]"),
    ],
)
def test_a_bad_rung_or_seed_count_is_one_line_before_any_training(args, words, tmp_path):
    done = cli(*args, cache=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == done.stderr.strip().splitlines()[0]
    assert done.stderr.startswith(words), done.stderr
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_the_command_writes_the_report_and_no_train_only_reads(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    done = cli("--no-train", "--report", str(out), cache=cache)
    assert done.returncode == 1 and "no rung is cached yet" in done.stderr and not out.exists()
    done = cli(
        "--rung", "0", "--seeds", "1", "--epochs", "1", "--subset", "600", "--report", str(out), cache=cache
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "speedrun.csv")
    assert list(table["name"]) == ["base"] and table["epochs"][0] == 1
    assert (out / "speedrun.md").read_text() in done.stdout
    first = (out / "speedrun.md").read_text()
    done = cli(
        "--rung",
        "0",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--subset",
        "600",
        "--no-train",
        "--report",
        str(out),
        cache=cache,
    )
    assert done.returncode == 0 and "training" not in done.stderr
    assert (out / "speedrun.md").read_text() == first
