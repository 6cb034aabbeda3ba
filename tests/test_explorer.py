"""The explorer over runs: a brushed range on any axis selects exactly the runs inside it, runs
that differ only by seed are read as mean ± std, importance finds the setting that matters."""

import numpy as np
import pandas as pd
import pytest

from fmnist_core.views import runs_explorer
from fmnist_core.views.runs_explorer import brushed_ranges, seed_groups, within


def runs(count=8):
    return pd.DataFrame(
        {
            "run_id": [f"{i:016x}" for i in range(count)],
            "model": ["mlp"] * count,
            "lr": [1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-3, None][:count],
            "optimizer": ["adam", "sgd"] * (count // 2),
            "seed": [0] * count,
            "test_accuracy": np.linspace(0.80, 0.88, count),
        }
    )


def test_a_brushed_range_selects_exactly_the_runs_inside_it_ends_included():
    table = runs()
    selection = {"brush_lr": {"lr": [1e-3, 5e-3]}}  # as Streamlit's on_select hands it over
    chosen = within(table, brushed_ranges(selection))
    assert list(chosen["run_id"]) == [table.run_id[i] for i in (2, 3, 4, 6)]  # the ends are inside
    # A reversed brush is the same range; a run with no lr is outside any lr brush.
    assert within(table, {"lr": (5e-3, 1e-3)}).equals(chosen)
    assert table.run_id[7] not in set(within(table, {"lr": (0.0, 1.0)})["run_id"])


def test_brushes_on_several_axes_intersect_and_categories_select_by_value():
    table = runs()
    selection = {
        "brush_lr": {"lr": [1e-3, 1e-2]},
        "brush_optimizer": [{"optimizer": "adam"}],  # a category's clicked point
        "brush_test_accuracy": {},  # an axis brushed then cleared: no constraint
    }
    ranges = brushed_ranges(selection)
    assert ranges == {"lr": (1e-3, 1e-2), "optimizer": ("adam",)}
    chosen = within(table, ranges)
    assert list(chosen.index) == [2, 4, 6]
    assert within(table, {}).equals(table)
    both = brushed_ranges({"brush_optimizer": [{"optimizer": "sgd"}, {"optimizer": "adam"}]})
    assert both == {"optimizer": ("sgd", "adam")} and len(within(table, both)) == len(table)
    with pytest.raises(ValueError, match="brush: 'colour'"):
        within(table, {"colour": ("red",)})


def test_runs_that_differ_only_by_seed_are_one_row_with_mean_and_std():
    table = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "model": ["mlp"] * 4,
            "lr": [1e-3, 1e-3, 1e-3, 1e-2],
            "seed": [0, 1, 2, 0],
            "test_accuracy": [0.80, 0.82, 0.84, 0.70],
        }
    )
    groups = seed_groups(table, ["test_accuracy"]).set_index("run_ids")
    assert groups.loc["a,b,c", "seeds"] == 3
    assert groups.loc["a,b,c", "test_accuracy mean"] == pytest.approx(0.82)
    assert groups.loc["a,b,c", "test_accuracy std"] == pytest.approx(0.02)
    assert groups.loc["d", "seeds"] == 1 and np.isnan(groups.loc["d", "test_accuracy std"])
    assert "lr" in groups and "seed" not in groups  # the varied setting shown, the seed folded


def test_importance_finds_the_setting_the_metric_depends_on():
    generator = np.random.default_rng(0)
    lr = 10 ** generator.uniform(-4, -2, 40)
    table = pd.DataFrame(
        {
            "run_id": [str(i) for i in range(40)],
            "lr": lr,
            "dropout": generator.uniform(0, 0.5, 40),
            "optimizer": generator.choice(["adam", "sgd"], 40),
            "test_accuracy": 0.9 - 0.02 * (np.log10(lr) + 3) ** 2 + generator.normal(0, 1e-4, 40),
        }
    )
    shares = runs_explorer.importance(table, ["lr", "dropout", "optimizer"], "test_accuracy")
    assert shares.index[0] == "lr" and shares["lr"] > 0.8
    assert shares.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="test_accuracy: importance needs 6 runs"):
        runs_explorer.importance(table.head(3), ["lr"], "test_accuracy")


def test_the_settings_that_vary_are_the_axes():
    table = runs()
    assert runs_explorer.varied(table) == ["lr", "optimizer"]
    assert runs_explorer.metrics_of(table) == ["test_accuracy"]
    assert {"lr", "n", "dropout", "batch_size"} <= set(runs_explorer.setting_names())
    assert "seed" not in runs_explorer.setting_names()


def test_a_setting_varies_with_two_different_values_gaps_aside_and_a_layer_list_is_one_value():
    table = pd.DataFrame(
        {
            "lr": [1e-3, np.nan, 1e-3],  # one value and a gap
            "dropout": pd.array([0.1, pd.NA, 0.2], dtype="Float64"),
            "layers": [("conv:8", "bn"), ("conv:8", "bn"), ("conv:16",)],
            "head": [["a"], ["a"], None],  # the same list twice
            "optimizer": pd.array(["adam", "adam", None], dtype="string"),
            "channels": [None, None, None],
            "seed": [0, 1, 2],  # not a setting that varies a run's kind
        }
    )
    assert runs_explorer.varied(table) == ["dropout", "layers"]
    assert runs_explorer.varied(table.iloc[[0, 1]]) == []


def test_best_first_ranks_accuracy_high_first_and_losses_low_first():
    table = pd.DataFrame(
        {"run_id": list("abc"), "test_accuracy": [0.8, None, 0.9], "test_mse": [0.03, 0.01, 0.02]}
    )
    assert list(runs_explorer.best_first(table, "test_accuracy")["run_id"]) == ["c", "a", "b"]
    assert list(runs_explorer.best_first(table, "test_mse")["run_id"]) == ["b", "c", "a"]


def test_a_text_filter_keeps_the_runs_with_it_in_any_cell():
    table = runs()
    assert list(runs_explorer.matching(table, "SGD")["optimizer"].unique()) == ["sgd"]
    assert list(runs_explorer.matching(table, table.run_id[3][-4:])["run_id"]) == [table.run_id[3]]
    assert runs_explorer.matching(table, "  ").equals(table)


def test_the_sweep_page_counts_the_epochs_the_pruner_spared():
    from ui.hpsweep_sections import epochs_skipped

    table = pd.DataFrame(
        {"state": ["complete", "pruned", "pruned", "running"], "pruned_at_epoch": [None, 1, 3, None]}
    )
    assert epochs_skipped(table, {"fixed": {"epochs": 4}}) == (
        3 + 1,
        12,
    )  # 3 trials that ended, 4 epochs each
    assert epochs_skipped(table.head(1), {"fixed": {"epochs": 4}}) is None  # nothing pruned yet


def test_the_importance_chart_has_a_bar_per_setting_and_a_labelled_share_axis():
    """It was 80 px tall with both settings on one row and no readable axis."""
    import pandas as pd

    from ui.explorer_sections import importance_chart

    spec = importance_chart(pd.Series({"lr": 0.83, "dropout": 0.17}), "What moves val_accuracy").to_dict()
    assert spec["height"] == {"step": 40}  # each setting its own 40 px row
    bars, labels = spec["layer"]
    assert bars["mark"]["type"] == "bar" and labels["mark"]["type"] == "text"
    x = bars["encoding"]["x"]
    assert x["scale"]["domain"] == [0, 1] and x["axis"]["format"] == "%" and "share" in x["axis"]["title"]
    values = next(iter(spec["datasets"].values()))
    assert [row["setting"] for row in values] == ["lr", "dropout"]
    assert [row["share"] for row in values] == [0.83, 0.17]


def test_a_pruned_trial_is_listed_with_the_seed_it_trained_with():
    """A pruned trial's run is not cached, so the runs table has no seed for it: it showed "None"."""
    import optuna

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("plan", {"model": "mlp", "metric": "val_accuracy", "fixed": [["epochs", 2]]})
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for number, (state, value) in enumerate([("COMPLETE", 0.8), ("PRUNED", None)]):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=value,
                params={"lr": 1e-3 * (number + 1)},
                distributions={"lr": lr},
                intermediate_values={1: 0.7},
                user_attrs={"run_id": f"{number:016x}"},
            )
        )
    cached = pd.DataFrame({"run_id": ["0" * 16], "seed": [0], "test_accuracy": [0.79]})
    rows = runs_explorer.sweep_runs(study, cached)
    assert rows["seed"].tolist() == [0, 0] and rows["state"].tolist() == ["complete", "pruned"]
    assert rows["val_accuracy"].tolist() == [0.8, 0.7]  # the pruned one: the last figure it reported


def test_the_parallel_chart_is_one_spec_per_set_of_axes_reading_the_runs_it_is_given():
    """Its views read the named data set "runs" (no view of its own data: a view with its own
    drew nothing), one brush per axis; the spec apart from the data is built once for the axes."""
    from ui.explorer_sections import parallel_chart

    table = runs()
    chart = parallel_chart(table, ["lr", "optimizer"], "test_accuracy", {"lr"})
    views = [chart["vconcat"][0], *chart["vconcat"][1]["hconcat"]]
    assert chart["data"] == {"name": "runs"} and not any("data" in view for view in views)
    data = chart["datasets"]["runs"]
    assert list(data["run_id"]) == list(table["run_id"]) and data["~lr"].max() == pytest.approx(1.0)
    brushes = {param["name"]: param["views"] for param in chart["params"]}
    assert brushes == {"axis0": [views[1]["name"]], "axis1": [views[2]["name"]]}  # one per strip
    assert views[1]["encoding"]["y"]["scale"] == {"type": "log"}  # lr on a log scale
    other = parallel_chart(runs(6), ["lr", "optimizer"], "test_accuracy", {"lr"})
    assert {**other, "datasets": None} == {**chart, "datasets": None}  # the same spec, other runs
    assert len(other["datasets"]["runs"]) == 6
