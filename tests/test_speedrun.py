"""The speedrun's ladder: each rung one trick more, ordinary cached runs, a report rebuilt from
the cache without training, and its command's refusals in one line."""

import json
import os
import re
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


def test_the_speedrun_recipe_is_the_ladders_top_rung_so_a_sweep_or_the_form_starts_from_it(monkeypatch):
    from fmnist_core.runs.recipes import get_recipe

    monkeypatch.setenv("FMNIST_SCALE", "full")  # the ladder's own length, as the recipe's
    top = speedrun.rung_config(len(speedrun.RUNGS) - 1)
    recipe = get_recipe("speedrun").config()
    assert recipe == top and recipe.run_id == top.run_id  # one cached run for both
    assert (recipe.epochs, recipe.validation, recipe.precision) == (10, "holdout", "auto")
    assert get_recipe("speedrun").config(epochs=20).run_id == speedrun.rung_config(8, epochs=20).run_id


@pytest.mark.slow
def test_a_tiny_ladder_trains_once_and_its_report_is_rebuilt_from_the_cache(
    isolated_cache, tmp_path, monkeypatch
):
    cache = RunCache(isolated_cache)
    # 30 steps (the plain network, rung 0, is still at chance after them; whitened, it is not)
    tiny = dict(epochs=1, train_subset=1000, test_subset=500, batch_size=32, holdout_fraction=0.02)
    events = []
    table = speedrun.ladder_table([1, 2], 2, cache, on_event=events.append, **tiny)
    assert len(cache.run_ids()) == 4  # 2 rungs x 2 seeds
    assert [e for e in events if e.endswith("training...")] == [
        f"rung {rung} ({name}), seed {seed}: training..."
        for rung, name in ((1, "whiten"), (2, "dirac"))
        for seed in (0, 1)
    ]
    epochs = [e for e in events if ": epoch 1/1, validation accuracy 0." in e]
    assert len(epochs) == 4 and epochs[0].startswith("rung 1, seed 0: epoch 1/1") and epochs[0].endswith(" s")
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
    monkeypatch.setattr(speedrun, "BESIDE", ("fast_cnn",))
    beside = speedrun.ladder_table([1], 1, cache, beside=True, scored=False, **tiny)
    assert list(beside["name"]) == ["whiten", "fast_cnn"] and pd.isna(beside["rung"][1])
    fast = RunCache(isolated_cache).load_config(beside["run_ids"][1])
    assert (fast.epochs, fast.train_subset, fast.test_subset) == (1, 1000, 500)  # at the ladder's scale


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
        (("--seeds", "21"), "error: argument --seeds: '21' is not a whole number from 1 to 20"),
        (("--last-seeds", "0"), "error: argument --last-seeds: '0' is not a whole number"),
        (("--beside", "--no-train"), "error: --beside: it trains fast_cnn and long_cnn; --no-train only"),
        (("--epochs", "0"), "error: epochs: 0 is outside [1, 1000]"),
        (("--subset", "70000"), "error: train_subset: 70000 is outside [0, 60000]"),
    ],
)
def test_a_bad_rung_or_seed_count_is_one_line_before_any_training(
    args, words, isolated_cache, tmp_path, capsys
):
    from fmnist_core.cli import main

    try:
        code = main(["speedrun", *args, "--report", str(tmp_path / "out")])
    except SystemExit as stop:  # argparse's refusals
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == err.strip().splitlines()[0]
    assert err.startswith(words), err
    assert not [f for f in isolated_cache.rglob("*") if f.is_file()]  # nothing trained
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_the_command_writes_the_report_and_no_train_only_reads(tmp_path, isolated_cache, capsys):
    from fmnist_core.cli import main

    out = tmp_path / "out"
    assert main(["speedrun", "--no-train", "--report", str(out)]) == 1  # in this process: the reads
    assert "no rung is cached yet" in capsys.readouterr().err and not out.exists()
    quick = ("--rung", "0", "--seeds", "1", "--epochs", "1", "--subset", "600", "--report", str(out))
    done = cli(*quick, cache=isolated_cache)  # the command as typed, in a process of its own: it trains
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "speedrun.csv")
    assert list(table["name"]) == ["base"] and table["epochs"][0] == 1
    assert (out / "speedrun.md").read_text() in done.stdout
    first = (out / "speedrun.md").read_text()
    assert main(["speedrun", *quick, "--no-train"]) == 0
    assert "training" not in capsys.readouterr().err
    assert (out / "speedrun.md").read_text() == first


@pytest.mark.slow
def test_the_last_rung_takes_its_own_seed_count(tmp_path, isolated_cache, capsys):
    """--last-seeds: the goals ask 5 seeds of the last rung and 3 of the others."""
    from fmnist_core.cli import main

    out = tmp_path / "out"
    small = ("--epochs", "1", "--subset", "600", "--report", str(out))
    assert main(["speedrun", "--rung", "7", "--seeds", "1", "--last-seeds", "2", *small]) == 0
    assert main(["speedrun", "--rung", "8", "--seeds", "1", "--last-seeds", "2", *small]) == 0
    assert pd.read_csv(out / "speedrun.csv")["seeds"].tolist() == [2]  # rung 8: its own count
    assert main(["speedrun", "--seeds", "1", "--last-seeds", "2", "--no-train", *small]) == 0
    table = pd.read_csv(out / "speedrun.csv")
    assert table["rung"].tolist() == [7, 8] and table["seeds"].tolist() == [1, 2]
    assert len(table["run_ids"][1].split()) == 2


def committed_report(folder: Path) -> Path:
    """A report as `speedrun` writes it: two rungs and long_cnn beside them."""
    rows = []
    for rung, accuracy, seconds in ((0, 0.931, 600.0), (8, 0.951, 1100.0)):
        runs = pd.DataFrame(
            {
                "run_id": [f"{rung}a", f"{rung}b"],
                "test_accuracy": [accuracy - 0.001, accuracy + 0.001],
                "accuracy_without_duplicates": [accuracy - 0.003] * 2,
                "seconds": [seconds] * 2,
                "epochs": [10, 10],
                "train_flops": [1e15, 1e15],
                "precision": ["fp32", "fp32"],
            }
        )
        rows.append(speedrun.summarise(rung, speedrun.RUNGS[rung].name, speedrun.RUNGS[rung].adds, runs))
    long = pd.DataFrame(
        {
            "run_id": ["long"],
            "test_accuracy": [0.945],
            "accuracy_without_duplicates": [0.944],
            "seconds": [3755.0],
            "epochs": [20],
            "train_flops": [4e15],
            "precision": ["fp32"],
        }
    )
    rows.append(speedrun.summarise(None, "long_cnn", "the lab's recipe, for comparison", long))
    speedrun.write_report(pd.DataFrame(rows), folder)
    return folder / "speedrun.csv"


def test_a_committed_report_is_read_back_checked_and_a_damaged_one_is_refused_saying_why(tmp_path):
    path = committed_report(tmp_path)
    table = speedrun.load_report(path)
    assert list(table["name"]) == ["base", "tta", "long_cnn"] and table["accuracy_mean"][1] == pytest.approx(
        0.951
    )
    assert pd.isna(table["rung"][2]) and table["seeds"].tolist() == [2, 2, 1]
    assert pd.isna(table["accuracy_std"][2])  # one seed: no spread measured, none written
    assert (
        "| long_cnn | the lab's recipe, for comparison | 1 | 0.9450 | 0.9450 |"
        in path.with_suffix(".md").read_text()
    )
    text = path.read_text()
    lines = text.splitlines()
    for damaged, why in (
        (text.replace("0.951", "1.951"), "accuracy_mean has a value outside 0 to 1"),
        (text.replace("1100.0", "-5"), "seconds has a value that is not above 0"),
        (text.replace("1100.0", "0.0"), "seconds has a value that is not above 0"),  # a log axis
        (text.replace("1100.0", "inf"), "seconds has a value that is not finite"),
        (text.replace(",2,0.931", ",0,0.931"), "seeds has a value that is not a whole number"),
        (text.replace("\n8.0,tta", "\n3.7,tta"), "rung has a value that is not a rung (0 to 8)"),
        (text.replace("\n8.0,tta", "\n99,tta"), "rung has a value that is not a rung"),
        (
            text.replace(",0.0014142135623730963,0.95,", ",0.3,0.95,"),
            "an accuracy's spread reaches outside 0 to 1",
        ),
        (
            text.replace("accuracy_mean", "accuracy"),
            "its columns are not the report's (accuracy_mean is missing)",
        ),
        ("\n".join(lines[:1] + lines[1:2] * 13), "13 rows, where a ladder has 1 to 11"),
        ("rung,name\n1,x\n", "its columns are not the report's"),
        ("", "not readable as the report's table"),
    ):
        path.write_text(damaged)
        with pytest.raises(speedrun.ReportError, match=f"^speedrun.csv: {re.escape(why)}"):
            speedrun.load_report(path)
    path.write_text(text + "x" * speedrun.MAX_REPORT_BYTES)  # its size checked before it is read
    with pytest.raises(speedrun.ReportError, match="larger than"):
        speedrun.load_report(path)
    path.unlink()
    path.symlink_to(tmp_path / "speedrun.md")  # a link is refused, not followed
    with pytest.raises(speedrun.ReportError, match="not a regular file"):
        speedrun.load_report(path)
    assert speedrun.load_report(tmp_path / "absent.csv") is None


@pytest.mark.slow
def test_the_speedrun_page_draws_the_committed_ladder_queues_a_rung_and_shows_its_run(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import speedrun_sections, warmup
    from ui.jobs import job_queue

    monkeypatch.setattr(speedrun_sections, "REPORT", committed_report(tmp_path))
    warmup.wait()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page("app_pages/speedrun.py").run()
    assert not at.exception, at.exception
    [chart] = at.get("vega_lite_chart")
    assert len(json.loads(chart.proto.spec)["layer"]) == 5  # the climb, spread, points, labels, the goal
    assert any("1 epoch on 2,000 training images" in c.value for c in at.caption)
    [shown] = [d.value for d in at.dataframe]
    assert list(shown["name"]) == ["base", "tta", "long_cnn"]
    assert shown["accuracy_std"].tolist()[2] == "" and float(shown["accuracy_std"][0]) > 0  # one seed: blank
    at.selectbox(key="widget:speedrun:rung").set_value(1).run()
    at.button(key="missing:speedrun:1:1").click().run()
    config = speedrun.rung_config(1, 0)  # at FMNIST_SCALE=test: one epoch on 2,000 images
    assert config.epochs == 1 and config.whiten and not config.dirac
    queue = job_queue()
    assert [job.run_id for job in queue.jobs()] == [config.run_id]
    queue.wait(config.run_id, timeout=900)
    assert queue.get(config.run_id).state == "done"
    at.run()
    assert not at.exception, at.exception
    here = [d.value for d in at.dataframe][1]  # this machine's rungs beside the committed ones
    assert list(here["name"]) == ["whiten"] and here["seeds"][0] == 1
    assert any(m.label == "Test accuracy" for m in at.metric)
    at.button(key=f"speedrun:inside:{config.run_id}").click().run()
    assert not at.exception, at.exception
    assert any("Inside the network" in t.value for t in at.title)


@pytest.mark.slow
def test_the_page_says_why_a_committed_report_was_not_used(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import speedrun_sections, warmup

    path = committed_report(tmp_path)
    path.write_text(path.read_text().replace("1100.0", "0.0"))  # a log axis cannot draw it
    monkeypatch.setattr(speedrun_sections, "REPORT", path)
    warmup.wait()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page("app_pages/speedrun.py").run()
    assert not at.exception, at.exception
    [warning] = [w.value for w in at.warning if "committed report" in w.value]
    assert "found but not used: speedrun.csv: seconds has a value that is not above 0" in warning
    assert not at.dataframe  # nothing drawn from it
    assert any("FMNIST_SCALE=test" in w.value for w in at.warning)  # the test scale says what it is


def test_the_committed_report_is_the_whole_ladder_and_loads_as_the_app_reads_it():
    table = speedrun.load_report(speedrun.REPORT_FOLDER / "speedrun.csv")
    ladder = table.dropna(subset=["rung"])
    assert ladder["rung"].tolist() == list(range(len(speedrun.RUNGS)))
    assert (ladder["seeds"].iloc[:-1] >= 3).all() and ladder["seeds"].iloc[-1] >= 5
    assert ladder["accuracy_mean"].iloc[-1] > ladder["accuracy_mean"].iloc[0]  # the tricks together help
