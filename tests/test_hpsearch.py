"""Hyperparameter sweeps (Optuna): ranges read or refused in one line, trials as cached runs on a
holdout split, pruned trials kept and marked, a sweep killed and continued with its trials intact."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fmnist_core.store.cache import RunCache
from fmnist_core.studies import hpsearch, journal
from fmnist_core.studies.hpsearch import Param, SweepPlan, parse_param

ROOT = Path(__file__).resolve().parents[1]
QUICK = (("epochs", 2), ("test_subset", 500), ("train_subset", 1500))
# A trial the pruner stops must still have epochs to come when the sweep reads its second one (it
# polls every 0.2 s): with 6 epochs of 1,500 images (the test's first form) a fast machine finished whole trials between two
# looks, so none was pruned. 20 leave 18 epochs of margin whatever the machine's speed.
PRUNABLE = (("epochs", 20), ("test_subset", 500), ("train_subset", 1500))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr=1e-4..1e-2:log", Param("lr", 1e-4, 1e-2, log=True)),
        ("dropout=0..0.5", Param("dropout", 0.0, 0.5)),
        ("n1=16..256:int,log", Param("n1", 16, 256, log=True, integer=True)),
        ("optimizer=adam,sgd", Param("optimizer", choices=("adam", "sgd"))),
    ],
)
def test_a_range_is_read_as_optuna_will_sample_it(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize(
    "text, named",
    [
        ("lr", "--param"),
        ("lr=1e-2..1e-4", "lr: the range 0.01..0.0001 is empty"),
        ("lr=0..1:log", "lr: a log range needs LOW above 0"),
        ("lr=a..1", "lr: 'a' is not a number"),
        ("n1=1.5..8:int", "n1: an int range needs whole bounds"),
        ("dropout=0..1:cube", "dropout: unknown flag(s) cube"),
        ("optimizer=adam", "optimizer: give a range"),
        ("lr=nan..1", "lr: 'nan' is not a finite number"),
    ],
)
def test_a_bad_range_is_refused_naming_it(text, named):
    with pytest.raises(ValueError, match="--param") as error:
        parse_param(text)
    assert named in str(error.value)


def test_a_plan_refuses_what_no_run_can_hold():
    with pytest.raises(ValueError, match="--param colour: not a setting of mlp"):
        SweepPlan("s", "mlp", (parse_param("colour=red,blue"),), 3)
    with pytest.raises(ValueError, match="sampler"):
        SweepPlan("s", "mlp", (parse_param("lr=1e-4..1e-2:log"),), 3, sampler="annealing")
    with pytest.raises(ValueError, match="dropout"):  # the model's own check, on a trial's values
        SweepPlan("s", "mlp", (parse_param("dropout=0.5..1.5"),), 3)


@pytest.mark.slow
def test_a_sweep_from_a_recipe_starts_each_trial_from_it_and_the_trial_s_value_wins(isolated_cache, capsys):
    from fmnist_core.cli import main
    from fmnist_core.runs.recipes import get_recipe

    recipe = get_recipe("fast_cnn")
    plan = SweepPlan("r", "cnn", (parse_param("lr=1e-3..1e-2:log"),), 2, fixed=tuple(recipe.run.items()))
    with pytest.raises(ValueError, match="--set colour: not a setting of cnn"):
        SweepPlan("r", "cnn", (parse_param("lr=1e-3..1e-2:log"),), 2, fixed=(("colour", "red"),))
    args = [
        "fast_cnn",
        "--param",
        "lr=1e-3..1e-2:log",
        "--trials",
        "2",
        "--prune",
        "none",
        "--name",
        "from_recipe",
    ]
    assert main(["sweep-hp", *args, "--epochs", "1", "--subset", "1000", "--set", "test_subset=100"]) == 0
    assert "2 complete" in capsys.readouterr().out
    study = hpsearch.open_study(RunCache(isolated_cache), "from_recipe")
    for trial in study.trials:
        config = RunCache(isolated_cache).recover_config(trial.user_attrs["run_id"])
        assert config.settings["layers"] == recipe.settings["layers"]  # the recipe's network
        assert (config.augment, config.tta, config.schedule) == ("flip", "flip", "onecycle")  # its training
        assert config.lr == pytest.approx(trial.params["lr"]) and config.lr != recipe.run["lr"]
        assert (config.epochs, config.train_subset, config.validation) == (1, 1000, "holdout")
    assert plan.config({"lr": 0.002}).lr == 0.002


def test_the_grid_tries_the_ends_and_evenly_spaced_values_between():
    assert parse_param("lr=1e-4..1e-1:log").grid() == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert parse_param("n1=16..64:int").grid() == [16, 32, 48, 64]
    assert parse_param("optimizer=adam,sgd").grid() == ["adam", "sgd"]


def test_a_sweep_trains_cached_runs_on_holdout_prunes_and_keeps_the_pruned(isolated_cache):
    cache = RunCache(isolated_cache)
    plan = SweepPlan(
        "mlp_quick",
        "mlp",
        (parse_param("lr=1e-5..1e-2:log"), parse_param("dropout=0..0.5")),
        8,
        sampler="random",
        pruner="median",
        fixed=QUICK,
    )
    events = []
    study = hpsearch.sweep(plan, cache, on_event=events.append)
    table = hpsearch.trials_table(study)
    assert len(table) == 8 and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    finished = table[table["state"] == "COMPLETE"]
    pruned = table[table["state"] == "PRUNED"]
    assert len(pruned) >= 1, table  # lr down to 1e-5 learns too slowly for the median
    for row in finished.itertuples():
        config = cache.load_config(row.run_id)
        assert config.validation == "holdout" and config.epochs == 2  # tuned on held-out training images
        assert row.value == pytest.approx(
            json.loads((cache.folder(row.run_id) / "history.json").read_text())["history"]["val_accuracy"][-1]
        )
        assert 0 < row.test_accuracy <= 1  # the test set, scored once and kept apart
    for row in pruned.itertuples():
        assert not cache.exists(row.run_id)  # never shown as a finished run...
        assert cache.stopped.summary(row.run_id)["epochs_done"] == 1  # ...but its epoch is kept
    assert study.best_value == finished["value"].max()
    # The sweep is kept by name, with its plan; its parameters ranked by fANOVA.
    assert hpsearch.sweep_names(cache) == ["mlp_quick"]
    kept = hpsearch.open_study(cache, "mlp_quick")
    assert kept.user_attrs["plan"]["params"] == ["lr=1e-05..0.01:log", "dropout=0..0.5"]
    assert len(kept.trials) == 8
    shares = hpsearch.importance(kept)
    assert set(shares.index) == {"lr", "dropout"} and shares.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no sweep named 'nope'"):
        hpsearch.open_study(cache, "nope")
    # Its report: the plan, the trials by state, importance, the chosen trial, every trial.
    report = hpsearch.write_report(kept, isolated_cache / "reports")
    text = report.read_text()
    assert f"{len(pruned)} pruned" in text and "Importance (fANOVA): " in text
    assert f"**Chosen**: trial {study.best_trial.number}, val_accuracy {study.best_value:.4f}" in text
    assert len(pd.read_csv(report.with_suffix(".csv"))) == 8
    # Asked again, the same plan trains nothing: every trial is done, every run cached.
    again = hpsearch.sweep(plan, cache, on_event=events.append)
    assert len(again.trials) == 8 and events[-1] == "sweep mlp_quick: all 8 trials done"


def test_a_sweep_killed_midway_continues_with_its_finished_trials_intact(isolated_cache, tmp_path):
    args = ["mlp", "--param", "lr=1e-3..1e-2:log", "--trials", "4", "--prune", "none", "--name", "killed"]
    args += ["--epochs", "2", "--subset", "1500", "--set", "test_subset=500"]
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist_core", "sweep-hp", *args],
        cwd=ROOT,
        env={**os.environ, "FMNIST_CACHE": str(isolated_cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cache = RunCache(isolated_cache)
    plan = SweepPlan(
        "killed",
        "mlp",
        (parse_param("lr=1e-3..1e-2:log"),),
        4,
        pruner="none",
        fixed=(("epochs", 2), ("test_subset", "500"), ("train_subset", 1500)),
    )
    deadline = time.monotonic() + 900
    while True:  # kill it once two trials have finished, in the middle of the third
        study = hpsearch.load_study(plan, cache) if hpsearch.storage_path(cache, "killed").exists() else None
        complete = [t for t in study.trials if t.state.name == "COMPLETE"] if study else []
        if len(complete) >= 2:
            break
        assert process.poll() is None and time.monotonic() < deadline, "the sweep did not get going"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {
        t.number: (t.params, t.value)
        for t in hpsearch.load_study(plan, cache).trials
        if t.state.name == "COMPLETE"
    }
    study = hpsearch.sweep(plan, cache)
    after = {t.number: (t.params, t.value) for t in study.trials if t.state.name == "COMPLETE"}
    assert {k: after[k] for k in before} == before  # the finished trials, untouched
    assert len(after) == 4  # and the sweep ran the rest


@pytest.mark.slow
def test_a_sweep_from_the_app_queues_its_trials_as_jobs_and_prunes_them_there(isolated_cache):
    from fmnist_core.runs.jobs import JobQueue
    from fmnist_core.studies.hpqueue import QueuedSweep

    cache = RunCache(isolated_cache)
    queue = JobQueue(cache)
    plan = SweepPlan(
        "app_quick",
        "mlp",
        (parse_param("lr=1e-5..1e-2:log"), parse_param("dropout=0..0.5")),
        6,
        sampler="random",
        fixed=PRUNABLE,  # a pruned job's stop lands while epochs are still to come, however fast
    )
    driver = QueuedSweep(plan, queue).start()
    driver.wait(timeout=600)
    assert not driver.active and driver.error == "", driver.events
    study = hpsearch.load_study(plan, cache)
    table = hpsearch.trials_table(study)
    assert len(table) == 6 and set(table["state"]) <= {"COMPLETE", "PRUNED"}, driver.events
    assert {job.run_id for job in queue.jobs()} == set(table["run_id"])  # each trial an ordinary job
    pruned = table[table["state"] == "PRUNED"]
    assert len(pruned) >= 1, driver.events  # lr near 1e-5 trails the median after its first epoch
    for row in pruned.itertuples():
        assert queue.get(row.run_id).state == "stopped" and not cache.exists(row.run_id)
        kept = cache.stopped.summary(row.run_id)["epochs_done"]  # the child may finish the epoch under way
        assert 1 <= row.pruned_at_epoch <= kept < 20  # epochs can arrive together: pruned at the later
    for row in table[table["state"] == "COMPLETE"].itertuples():
        assert queue.get(row.run_id).state == "done" and cache.exists(row.run_id)
        assert 0 < row.test_accuracy <= 1
    # Another sweep whose trials land on cached configs queues nothing: the runs are its trials.
    again = SweepPlan("app_again", "mlp", plan.params, 2, sampler="random", fixed=PRUNABLE)
    done = table[table["state"] == "COMPLETE"].head(2)
    for row in done.itertuples():
        hpsearch.load_study(again, cache).enqueue_trial({"lr": row.lr, "dropout": row.dropout})
    jobs = len(queue.jobs())
    second = QueuedSweep(again, queue).start()
    second.wait(timeout=600)
    assert len(queue.jobs()) == jobs and all("from the cache" in line for line in second.events)
    assert sorted(hpsearch.trials_table(hpsearch.load_study(again, cache))["value"]) == sorted(done["value"])


def test_a_sweep_in_the_app_stops_when_asked_and_refuses_a_bad_budget(isolated_cache):
    from fmnist_core.runs.jobs import JobQueue
    from fmnist_core.studies.hpqueue import QueuedSweep

    cache = RunCache(isolated_cache)
    queue = JobQueue(cache)
    plan = SweepPlan("app_stop", "mlp", (parse_param("lr=1e-4..1e-2:log"),), 50, fixed=QUICK)
    with pytest.raises(ValueError, match="minutes"):
        QueuedSweep(plan, queue, minutes=0)
    driver = QueuedSweep(plan, queue).start()
    deadline = time.monotonic() + 900
    while driver.current is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    running = driver.current
    driver.stop()
    driver.wait(timeout=900)
    assert not driver.active and queue.get(running).state == "stopped"
    states = [t.state.name for t in hpsearch.load_study(plan, cache).trials]
    assert states == ["FAIL"]  # the trial stopped by a person is not counted as finished nor pruned


@pytest.mark.parametrize(
    "text", ["lr=0.0001..0.01:log", "dropout=0..0.5", "n1=16..256:int,log", "batch_size=64,128"]
)
def test_a_parameter_reads_back_from_its_own_text(text):
    param = parse_param(text)
    assert param.text() == text and parse_param(param.text()) == param
    assert parse_param("batch_size=64,128").choices == (64, 128)  # numbers stay numbers


TINY = (("epochs", 1), ("test_subset", 200), ("train_subset", 300))
TINY_ARGS = ["mlp", "--param", "lr=1e-3..1e-2:log", "--trials", "1", "--prune", "none", "--name", "tiny"]
TINY_ARGS += ["--epochs", "1", "--subset", "300", "--set", "test_subset=200"]


def tiny_plan(trials: int = 1) -> SweepPlan:
    return SweepPlan("tiny", "mlp", (parse_param("lr=1e-3..1e-2:log"),), trials, pruner="none", fixed=TINY)


@pytest.fixture(scope="module")
def tiny_journal(tmp_path_factory) -> bytes:
    """The journal a real one-trial sweep wrote (seconds), for tests that damage copies of it."""
    cache = RunCache(tmp_path_factory.mktemp("tiny") / "models_cache")
    hpsearch.sweep(tiny_plan(), cache)
    return hpsearch.storage_path(cache, "tiny").read_bytes()


def keep_journal(cache_root: Path, data: bytes, name: str = "tiny") -> Path:
    path = hpsearch.storage_path(RunCache(cache_root), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sweep_hp_error(capsys, *args: str) -> str:
    """`sweep-hp` run on the tiny plan: it exits 2 with one line, returned."""
    from fmnist_core.cli import main

    capsys.readouterr()
    assert main(["sweep-hp", *TINY_ARGS, *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_journal_cut_mid_line_by_a_kill_is_mended_and_the_sweep_goes_on(
    isolated_cache, tiny_journal, caplog
):
    from fmnist_core.cli import main

    path = keep_journal(isolated_cache, tiny_journal[:-30])  # the last line, half written
    whole_lines = tiny_journal[: tiny_journal.rstrip(b"\n").rfind(b"\n") + 1]
    with caplog.at_level(logging.WARNING, logger="fmnist_core"):
        assert main(["sweep-hp", *TINY_ARGS]) == 0
    assert f"sweep journal {path}: its last line was cut" in caplog.text
    mended = path.read_bytes()
    assert mended.startswith(whole_lines) and mended.endswith(b"\n")
    assert all(json.loads(line) for line in mended.splitlines())
    states = [t.state.name for t in hpsearch.open_study(RunCache(isolated_cache), "tiny").trials]
    assert states == ["RUNNING", "COMPLETE"]  # the cut trial's end is lost; the next one ran
    assert [p.name for p in path.parent.iterdir()] == ["tiny.journal"]  # no temporary left behind


DAMAGES = {
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested more than 16 deep"),
    "an unknown op code": (b'{"op_code":99,"worker_id":"w"}', "op code 99 is not one Optuna's journal knows"),
    "a plan that is text": (
        b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"plan":"lr"}}',
        "the sweep's plan is damaged (a str, not a mapping)",
    ),
    "a plan of wrong fields": (
        b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"plan":{"model":"mlp","params":5}}}',
        "the sweep's plan is damaged (params missing or of a wrong type)",
    ),
    "a field Optuna needs missing": (b'{"op_code":4,"worker_id":"w"}', "Optuna cannot replay it (KeyError"),
    "a trial's value that is text": (
        b'{"op_code":6,"worker_id":"w","trial_id":0,"state":1,"values":["0.9"],"datetime_complete":null}',
        "a trial's values (['0.9']) are not one finite number",
    ),
    "a trial's value that is a mapping": (
        b'{"op_code":6,"worker_id":"w","trial_id":0,"state":1,"values":{"a":1},"datetime_complete":null}',
        "are not one finite number",
    ),
    "a study of two objectives": (
        b'{"op_code":0,"worker_id":"w","study_name":"tiny","directions":[1,2]}',
        "the sweep's direction ([1, 2]) is not one minimised or maximised value",
    ),
    "a study of no objective": (
        b'{"op_code":0,"worker_id":"w","study_name":"tiny","directions":[]}',
        "the sweep's direction ([]) is not one",
    ),
    "two values for one objective": (
        b'{"op_code":6,"worker_id":"w","trial_id":0,"state":1,"values":[0.5,0.5],"datetime_complete":null}',
        "a trial's values ([0.5, 0.5]) are not one finite number",
    ),
    "a complete trial without its value": (
        b'{"op_code":6,"worker_id":"w","trial_id":0,"state":1,"values":null,"datetime_complete":null}',
        "a complete trial has no value",
    ),
    "a trial state Optuna lacks": (
        b'{"op_code":6,"worker_id":"w","trial_id":0,"state":7,"values":null,"datetime_complete":null}',
        "a trial's state (7) is not one Optuna knows",
    ),
    "an epoch's value that is text": (
        b'{"op_code":7,"worker_id":"w","trial_id":0,"step":1,"intermediate_value":"x"}',
        "an epoch's value or step is not a number",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_journal_is_one_line_naming_it_and_is_not_listed(
    isolated_cache, tiny_journal, damage, capsys
):
    added, cause = DAMAGES[damage]
    path = keep_journal(isolated_cache, tiny_journal + added + b"\n")
    with pytest.raises(journal.JournalError) as error:
        hpsearch.open_study(RunCache(isolated_cache), "tiny")  # what the pages open
    assert str(path) in str(error.value) and cause in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)  # shown by the pages with st.error
    assert hpsearch.sweep_names(RunCache(isolated_cache)) == []
    assert cause in sweep_hp_error(capsys)


def test_an_empty_journal_is_not_listed_nor_opened_and_a_sweep_starts_it_afresh(isolated_cache):
    cache = RunCache(isolated_cache)
    path = keep_journal(isolated_cache, b"")  # a kill before Optuna wrote its first line
    assert hpsearch.sweep_names(cache) == []
    with pytest.raises(journal.JournalError, match=f"{path}: holds no study"):
        hpsearch.open_study(cache, "tiny")
    hpsearch.load_study(tiny_plan(), cache)
    assert hpsearch.sweep_names(cache) == ["tiny"]
    assert hpsearch.open_study(cache, "tiny").user_attrs["plan"] == tiny_plan().describe()


def test_a_journal_copied_under_another_name_is_refused_and_not_listed_first(
    isolated_cache, tiny_journal, capsys
):
    cache = RunCache(isolated_cache)
    keep_journal(isolated_cache, tiny_journal)
    copy = keep_journal(isolated_cache, tiny_journal, "copy")
    os.utime(copy, (time.time() + 60, time.time() + 60))  # the newest: the pages' default before
    assert hpsearch.sweep_names(cache) == ["tiny"]
    with pytest.raises(journal.JournalError, match="line 1 holds sweep 'tiny', not 'copy'"):
        hpsearch.open_study(cache, "copy")
    assert f"{copy}: line 1 holds sweep 'tiny'" in sweep_hp_error(capsys, "--name", "copy")


@pytest.mark.parametrize("linked", ["journal", "sweeps folder"])
def test_a_journal_that_is_a_link_is_refused_and_nothing_is_written_through_it(
    isolated_cache, tmp_path, linked, capsys
):
    outside = tmp_path / "outside"
    outside.mkdir()
    path = hpsearch.storage_path(RunCache(isolated_cache), "tiny")
    path.parent.parent.mkdir(parents=True)
    if linked == "journal":
        path.parent.mkdir()
        path.symlink_to(outside / "elsewhere.journal")
    else:
        path.parent.symlink_to(outside, target_is_directory=True)
    assert "a symbolic link" in sweep_hp_error(capsys)
    assert list(outside.iterdir()) == []
    assert hpsearch.sweep_names(RunCache(isolated_cache)) == []
    with pytest.raises(journal.JournalError, match="a symbolic link"):
        hpsearch.open_study(RunCache(isolated_cache), "tiny")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "model, params, fixed",
    [
        ("cnn", ("batch_size=64..512:int",), (("layers", ("conv:1024:3:same:relu",) * 2),)),
        ("mlp", ("n1=4096..8192:int", "batch_size=30000..60000:int"), ()),
    ],
)
def test_a_plan_whose_ranges_reach_a_run_over_the_memory_limit_is_refused_naming_it(
    monkeypatch, model, params, fixed
):
    monkeypatch.setenv("FMNIST_MEMORY_LIMIT_GB", "8")
    with pytest.raises(ValueError) as error:
        SweepPlan("big", model, tuple(parse_param(text) for text in params), 4, fixed=fixed)
    message = str(error.value)
    assert message.startswith(("--param batch_size: a trial at ", "--param n1: a trial at "))
    assert "cannot train here: batch_size: " in message and "over the lab's limit of 8.0 GB" in message
    assert "\n" not in message
    SweepPlan("small", "mlp", (parse_param("n1=32..256:int"), parse_param("batch_size=64..512:int")), 4)


def test_a_trial_refused_past_the_plan_s_check_ends_pruned_in_one_line(isolated_cache, monkeypatch, capsys):
    plan = tiny_plan(trials=2)  # checked under this machine's limit
    monkeypatch.setenv("FMNIST_MEMORY_LIMIT_GB", "0.001")  # then the limit falls (another machine)
    events = []
    study = hpsearch.sweep(plan, RunCache(isolated_cache), on_event=events.append)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    for trial in study.trials:
        assert "over the lab's limit of 0.0 GB" in trial.user_attrs["refused"]
    assert sum("cannot train here: batch_size:" in line for line in events) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_continued_sweep_asks_for_new_trials_not_its_first_ones_again(sampler):
    """From its first seed again, a continued sweep's sampler asked for trials 0 and 1 a second time."""
    plan = SweepPlan(
        "again", "mlp", (parse_param("lr=1e-4..1e-1:log"), parse_param("dropout=0..0.7")), 4, sampler
    )

    def ask(study):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("dropout", 0.0, 0.7)
        return trial

    first = hpsearch.load_study(plan, RunCache())
    for value in (0.5, 0.6):
        first.tell(ask(first), value)
    later = hpsearch.load_study(plan, RunCache())  # as after a restart
    asked = [ask(later).params for _ in range(2)]
    before = [trial.params for trial in later.trials[:2]]
    assert all(params not in before for params in asked), (before, asked)
