import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from fmnist_core.data.fashion import load_data
from fmnist_core.models import create_model
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.studies.reports import (
    REPORTS,
    ReportResult,
    Scale,
    check_conclusions,
    collect,
    fill_from_committed,
    load_committed,
    report_entries,
    reproduce,
    s1,
    to_markdown,
    write_report,
)
from fmnist_core.training.config import ENGINE_VERSION, RunConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs_scale=0.01, train_subset=400, test_subset=500)


def test_every_s1_row_is_its_table_row_exactly():
    rows = {e.label: e for e in report_entries("S1")}
    assert len([label for label in rows if label.startswith("row ")]) == 10  # 9 rows + the KL variant
    best = rows["row 9"].config
    assert (best.epochs, best.batch_size, best.optimizer, best.lr) == (12, 128, "adam", 5e-4)
    assert best.settings["layers"] == (
        "conv:35:3:valid:relu",
        "bn",
        "conv:50:3:valid:relu",
        "bn",
        "maxpool:2",
        "dropout:0.7",
        "dense:256:relu",
    )
    assert rows["row 4"].config.optimizer == "rmsprop" and rows["row 2"].config.batch_size == 8
    assert rows["row 9"].published == {"test_accuracy": 0.9252}
    model = create_model("cnn", layers=rows["row 6"].config.settings["layers"])
    convs = [m for m in model.features if m.__class__.__name__ == "Conv2d"]
    assert [c.out_channels for c in convs] == [32, 32, 16, 8, 8]
    assert len(s1.ROWS) == 9


def test_classifier_entries_point_at_their_own_grids_encoders():
    scale = Scale(epochs=0.5)
    entries = {e.label: e for e in report_entries("S0", scale)}
    encoder = entries["n=256"].config
    classifier = entries["classifier n=256 p=0.2 fine-tuned"].config
    assert classifier.settings["encoder_run"] == encoder.run_id and encoder.epochs == 5


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name == "S1" else []) for name in REPORTS]
)
def test_every_grid_trains_at_a_tiny_scale(name, tmp_path):
    result = reproduce(name, cache=RunCache(tmp_path / "cache"), out_dir=tmp_path / "reports", **TINY)
    assert (result.table["status"] == "ok").all(), result.table[["label", "status"]]
    assert all(holds is not None for _, holds, _ in result.conclusions)
    text = (tmp_path / "reports" / f"{name}.md").read_text()
    assert result.title in text and "Conclusions of the report" in text
    assert len(pd.read_csv(tmp_path / "reports" / f"{name}.csv")) == len(result.table)
    again = reproduce(name, cache=RunCache(tmp_path / "cache"), out_dir=None, **TINY)
    assert again.trained_seconds == 0.0  # everything came from the cache
    if name == "S0":  # the same run measured with its dropout on: the loss a training loop reports
        mse = result.table.set_index("label")["test_mse"]
        assert mse["n=64 p=0.2, dropout left on"] > 1.2 * mse["n=64 p=0.2, dropout off (model.eval())"]
        assert mse["n=64 p=0.2, dropout off (model.eval())"] == mse["n=64"]


def test_report_writer_on_a_hand_made_result(tmp_path):
    table = pd.DataFrame(
        [
            {
                "table": "Models",
                "run_id": "r1",
                "label": "a",
                "published_test_accuracy": 0.81,
                "test_accuracy": 0.85,
                "difference_test_accuracy": 0.04,
                "minutes": 1.5,
                "status": "ok",
                "config": "x",
            },
            {
                "table": "Models",
                "run_id": "r2",
                "label": "b",
                "published_test_accuracy": 0.893,
                "status": "missing",
                "config": "y",
            },
            {
                "table": "Other",
                "run_id": "r3",
                "label": "c",
                "test_mse": 0.0123,
                "minutes": 2.0,
                "status": "ok",
                "config": "z",
            },
            {
                "table": "Other",
                "run_id": "r1",
                "label": "a again",
                "minutes": 1.5,
                "status": "ok",
                "config": "x",
            },
        ]
    )
    result = ReportResult(
        "SX", "SX: a test", table, [("a beats b", True, "0.85 vs 0.80"), ("c", None, "not run yet")], 90.0
    )
    markdown, csv = write_report(result, tmp_path)
    text = markdown.read_text()
    assert "# SX: a test" in text
    assert f"Trained by engine {ENGINE_VERSION}" in text  # whose run ids the table holds
    assert (
        "| label | published_test_accuracy | test_accuracy | difference_test_accuracy | minutes | status | config |"
        in text
    )
    assert "| a | 0.8100 | 0.8500 | 0.0400 | 1.5000 | ok | x |" in text
    assert "| b | 0.8930 |  |  |  | missing | y |" in text
    assert "## Other" in text and "| c | 0.0123 | 2.0000 | ok | z |" in text
    assert "- a beats b: **holds** (0.85 vs 0.80)" in text and "- c: **not run**" in text
    # Run r1 shows in two tables and counts once; r2 never ran.
    assert "Training time of the 2 runs above, each counted once: 3.5 min." in text
    assert "trained for 1.5 min of it" in text
    assert to_markdown(result) == text
    assert pd.read_csv(csv)["label"].tolist() == ["a", "b", "c", "a again"]


def test_parallel_jobs_through_joblib_and_dask(tmp_path):
    configs = [RunConfig.for_model("mlp", epochs=1, train_subset=300, seed=seed) for seed in range(2)]
    from fmnist_core.studies.reports import train_missing

    for backend in ("loky", "dask"):
        cache = RunCache(tmp_path / backend)
        events = []
        if backend == "dask":
            from distributed import Client

            with Client(processes=False, n_workers=1, threads_per_worker=2):
                train_missing(configs, cache, jobs=2, backend="dask", on_event=events.append)
        else:
            train_missing(configs, cache, jobs=2, backend=backend, on_event=events.append)
        assert sorted(cache.run_ids()) == sorted(c.run_id for c in configs)
        assert any("min left" in e for e in events)


def test_bad_arguments_name_the_setting():
    with pytest.raises(ValueError, match="^report"):
        reproduce("S9", out_dir=None)
    with pytest.raises(ValueError, match="^epochs_scale"):
        reproduce("S3", epochs_scale=0, out_dir=None)
    with pytest.raises(ValueError, match="^backend"):
        reproduce("S3", backend="spark", out_dir=None)


def test_no_train_tabulates_the_cache_and_trains_nothing(tmp_path):
    cache = RunCache(tmp_path / "cache")
    entry = report_entries("S3", Scale(epochs=0.04, train_subset=500, test_subset=500))[1]
    get_or_train(entry.config, cache=cache)
    result = reproduce(
        "S3", cache=cache, out_dir=tmp_path, train=False, epochs_scale=0.04, train_subset=500, test_subset=500
    )
    assert result.table["status"].tolist() == ["missing", "ok", "missing", "missing", "missing"]
    assert len(cache.run_ids()) == 1
    assert "missing" in (tmp_path / "S3.md").read_text()


def test_parallel_waves_start_the_longest_run_first(tmp_path):
    from fmnist_core.studies.reports import forward_flops, longest_first

    cache = RunCache(tmp_path)
    small = RunConfig.for_model("conv_autoencoder", {"channels": (8, 8)}, epochs=2)
    large = RunConfig.for_model("conv_autoencoder", {"channels": (64, 96)}, epochs=2)
    longer = RunConfig.for_model("conv_autoencoder", {"channels": (8, 8)}, epochs=40)
    assert forward_flops(large, cache) > 10 * forward_flops(small, cache) > 0
    assert longest_first([small, large, longer], cache) == [large, longer, small]
    # A classifier whose encoder is not trained yet cannot be sized; it goes last, nothing raised.
    waiting = RunConfig.for_model("encoder_classifier", {"encoder_run": small.run_id})
    assert forward_flops(waiting, cache) == 0
    assert longest_first([waiting, small], cache) == [small, waiting]


def test_a_report_row_names_the_run_settings_that_left_their_defaults():
    from fmnist_core.studies.reports import _config_summary

    plain = _config_summary(RunConfig.for_model("mlp"))
    assert plain.endswith("adam lr=0.001 batch=100 epochs=30 loss=mse_onehot")
    tuned = _config_summary(
        RunConfig.for_model("resnet", precision="bf16", schedule="onecycle", weight_decay=5e-4)
    )
    for shown in (
        "schedule=onecycle",
        "weight_decay=0.0005",
        "label_smoothing=0.1",
        "augment=flip",
        "precision=bf16",
    ):
        assert shown in tuned
    assert "tta" not in tuned


@pytest.mark.parametrize("name", ["S0", "S1", "S2", "S3", "S4"])
def test_a_fresh_clone_shows_the_committed_figures_for_every_run(name):
    """An empty cache: every row takes the committed reproduction's figures, marked as such."""
    result = collect(name, Scale(), RunCache())
    assert (result.table["status"] == "missing").all()
    committed = load_committed(name, Scale())
    assert committed is not None and committed.shown_path == f"reports/{name}.csv"
    assert re.fullmatch(r"repository, engine \d+", committed.source)
    shown = fill_from_committed(result.table, committed)
    assert (shown["source"] == committed.source).all()
    csv = pd.read_csv(ROOT / "reports" / f"{name}.csv").set_index(["table", "label"])
    for row in shown.to_dict("records"):  # every run, autoencoder or classifier, has a test loss
        assert row["test_loss"] == csv.loc[(row["table"], row["label"]), "test_loss"] > 0
    # Its conclusions are checked on those figures, not left "not run".
    assert all(holds is not None for _, holds, _ in check_conclusions(name, shown))


def test_the_cache_wins_over_the_committed_figures_and_other_scales_have_none(tmp_path):
    result = collect("S3", Scale(), RunCache())
    committed = load_committed("S3", Scale())
    table = result.table.copy()
    table.loc[0, ["status", "test_accuracy"]] = ["ok", 0.5]  # as if this machine had trained row 0
    shown = fill_from_committed(table, committed)
    assert shown.loc[0, "source"] == "this machine" and shown.loc[0, "test_accuracy"] == 0.5
    assert shown.loc[1, "source"] == committed.source
    assert load_committed("S3", Scale(train_subset=300)) is None  # no committed table at that scale
    assert load_committed("S3", Scale(), root=tmp_path) is None  # a clone without reports/
    (tmp_path / "S3.csv").write_text("not,a\nreport,table\n")
    assert load_committed("S3", Scale(), root=tmp_path) is None


@pytest.mark.parametrize(
    "kind, firsts, seconds, options, verdict",
    [
        ("higher", [0.90, 0.91, 0.89], [0.80, 0.81, 0.79], {}, "holds"),  # margin 0.10, noise 0.016
        ("higher", [0.85, 0.86, 0.84], [0.845, 0.855, 0.835], {}, "within seed noise"),  # 0.005 < 0.016
        ("higher", [0.80, 0.81, 0.79], [0.90, 0.91, 0.89], {}, "fails"),
        ("lower", [0.02, 0.02, 0.02], [0.05, 0.05, 0.05], {"factor": 0.5}, "holds"),  # 0.025 - 0.02 > 0
        ("lower", [0.03, 0.03, 0.03], [0.05, 0.05, 0.05], {"factor": 0.5}, "fails"),
        ("close", [0.890, 0.890, 0.890], [0.893, 0.893, 0.893], {"tolerance": 0.01}, "holds"),
        ("close", [0.80, 0.80, 0.80], [0.893, 0.893, 0.893], {"tolerance": 0.01}, "fails"),
        ("higher", [0.90], [0.80], {}, "holds"),  # one seed: the single comparison decides
    ],
)
def test_a_claim_over_seeds_holds_fails_or_is_within_noise(kind, firsts, seconds, options, verdict):
    from fmnist_core.studies.reports.grid import seeds_verdict

    found, detail = seeds_verdict(kind, firsts, seconds, **options)
    assert found == verdict, detail
    assert f"over {len(firsts)} seed" in detail


def test_the_verdicts_noise_is_twice_the_standard_error_of_the_difference():
    from fmnist_core.studies.reports.grid import seeds_verdict

    # stds 0.01 each over 3 seeds: noise 2 * sqrt((1e-4 + 1e-4) / 3) = 0.01633
    _, detail = seeds_verdict("higher", [0.90, 0.91, 0.89], [0.80, 0.81, 0.79])
    assert "margin +0.1000 against noise 0.0163" in detail and "0.9000 ± 0.0100" in detail
    with pytest.raises(ValueError, match="seeds"):
        seeds_verdict("higher", [0.9, 0.8], [0.7])
    with pytest.raises(ValueError, match="kind"):
        seeds_verdict("bigger", [0.9], [0.7])


def test_a_grid_seed_reaches_every_run_and_the_encoder_it_builds_on():
    plain = report_entries("S0", Scale())
    second = report_entries("S0", Scale(seed=1))
    assert all(e.config.seed == 0 for e in plain) and all(e.config.seed == 1 for e in second)
    assert [e.config.run_id for e in plain] == [e.config.run_id for e in report_entries("S0")]
    by_id = {e.config.run_id: e.config for e in second}
    classifiers = [e.config for e in second if e.config.model == "encoder_classifier"]
    assert classifiers and all(by_id[c.settings["encoder_run"]].seed == 1 for c in classifiers)


def test_reproduce_over_seeds_writes_mean_and_std_and_judges_each_claim(tmp_path):
    from fmnist_core.studies.reports.seeds import reproduce_seeds

    cache = RunCache(tmp_path / "cache")
    scale = Scale(epochs=0.04, train_subset=500, test_subset=500)
    result = reproduce_seeds("S3", 2, scale, cache=cache, out_dir=tmp_path)
    assert len(cache.run_ids()) == 10  # five rows, two seeds
    row = result.table.set_index("label").loc["model 2: Adam, 30 epochs"]
    assert row["seeds_done"] == 2 and 0 < row["test_accuracy_mean"] < 1 and row["test_accuracy_std"] >= 0
    runs = [float(v) for v in row["test_accuracy_runs"].split()]
    assert row["test_accuracy_mean"] == pytest.approx(sum(runs) / 2)
    assert [v for _, v, _ in result.verdicts] and all(
        v in ("holds", "fails", "within seed noise") for _, v, _ in result.verdicts
    )
    text = (tmp_path / "S3-seeds2.md").read_text()
    assert " ± " in text and "over 2 seeds" in text and "cross-entropy" in text  # the note on model 1
    assert pd.read_csv(tmp_path / "S3-seeds2.csv")["seeds_done"].tolist() == [2] * 5
    partial = reproduce_seeds("S3", 3, scale, cache=cache, out_dir=None, train=False)
    assert {v for _, v, _ in partial.verdicts} == {"not run"}  # the third seed is not cached


def test_mse_with_dropout_on_repeats_leaves_the_random_state_and_batch_norm_alone():
    from fmnist_core.analysis import mse_with_dropout_on

    torch.manual_seed(5)
    model = create_model("conv_autoencoder", n=16, dropout=0.2, batchnorm=True).eval()
    images = load_data().test_images[:300]
    with torch.no_grad():
        eval_mse = torch.mean((model(images) - images) ** 2).item()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    means = [m.running_mean.clone() for m in norms]
    state = torch.random.get_rng_state()
    first = mse_with_dropout_on(model, images)
    assert torch.equal(torch.random.get_rng_state(), state)  # the process's draws are untouched
    assert mse_with_dropout_on(model, images) == first != mse_with_dropout_on(model, images, seed=1)
    assert first > 1.1 * eval_mse  # a fifth of the output zeroed, the rest scaled up
    assert all(torch.equal(m.running_mean, mean) for m, mean in zip(norms, means, strict=True))
    assert not model.training and not any(m.training for m in model.modules())
    without = create_model("conv_autoencoder", n=16, dropout=0.0).eval()
    with torch.no_grad():
        plain = torch.mean((without(images) - images) ** 2).item()
    assert mse_with_dropout_on(without, images) == pytest.approx(plain, rel=1e-5)
