"""Reading many runs at once (the explorer): which settings vary, the runs inside a brushed range
of every axis, runs that differ only by seed as mean ± std, and how much each setting matters to a
metric (a random forest's permutation importance; Optuna's fANOVA for a sweep's trials)."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pandas as pd

from fmnist_core.models.registry import list_models, make_settings, settings_dict
from fmnist_core.training.config import RunConfig

# Columns of the run table that are outcomes, best first: what an axis can be coloured by.
METRICS = ("test_accuracy", "final_val_accuracy", "test_mse", "final_val_loss", "train_seconds")
NOT_SETTINGS = {"model", "settings", "data", "exclude", "seed", "encoder_run"}
MIN_RUNS_FOR_IMPORTANCE = 6


def matching(table: pd.DataFrame, text: str) -> pd.DataFrame:
    """The runs with `text` in any cell (run id, a setting's value...), case aside; all for ""."""
    if not text.strip():
        return table
    cells = table.drop(columns=[c for c in ("val_curve",) if c in table]).astype(str)
    return table[
        cells.apply(lambda column: column.str.contains(text.strip(), case=False, regex=False)).any(axis=1)
    ]


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("mse", "loss", "seconds"))


def best_first(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs ordered best first by `metric` (highest accuracy, lowest loss), those without it last."""
    return table.sort_values(metric, ascending=lower_is_better(metric), na_position="last")


def setting_names() -> list[str]:
    """Every setting a run can have: the run's own (epochs, lr...) and every model's (n, dropout...)."""
    names = {f.name for f in fields(RunConfig)}
    for model in list_models():
        names |= set(settings_dict(make_settings(model, {})))
    return sorted(names - NOT_SETTINGS)


def varied(table: pd.DataFrame) -> list[str]:
    """The settings that take more than one value among these runs (the seed aside), values
    compared as text (a layer list is a value)."""
    return [name for name in setting_names() if name in table and _two_values(table[name].tolist())]


def _two_values(values: list) -> bool:
    first = None
    for value in values:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value)
        if first is None:
            first = text
        elif text != first:
            return True
    return False


def metrics_of(table: pd.DataFrame) -> list[str]:
    return [name for name in METRICS if name in table and table[name].notna().any()]


def within(table: pd.DataFrame, ranges: dict) -> pd.DataFrame:
    """The runs inside every brushed range: `ranges` maps a column to (low, high) for a number (both
    ends included) or to the chosen values for a category. A run with no value on a brushed axis is
    outside it; no ranges: every run."""
    keep = pd.Series(True, index=table.index)
    for column, chosen in ranges.items():
        if column not in table:
            raise ValueError(f"brush: {column!r} is not a column of these runs")
        values = table[column]
        if isinstance(chosen, tuple) and len(chosen) == 2 and all(_is_number(v) for v in chosen):
            low, high = sorted(float(v) for v in chosen)
            numbers = pd.to_numeric(values, errors="coerce")
            keep &= numbers.between(low, high) & numbers.notna()
        else:
            keep &= values.astype(str).isin({str(v) for v in chosen}) & values.notna()
    return table[keep]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def brushed_ranges(selection: dict) -> dict:
    """A chart's selection state as `within`'s ranges. Streamlit hands Vega-Lite's over as
    {param: {field: [low, high]}} for an interval brush and {param: [{field: value}, ...]} for
    clicked points (a category's values); empty brushes are left out."""
    ranges: dict = {}
    for brush in (selection or {}).values():
        if isinstance(brush, dict):
            for column, chosen in brush.items():
                if not isinstance(chosen, (list, tuple)) or not chosen or column.startswith("vlPoint"):
                    continue
                numeric = len(chosen) == 2 and all(_is_number(v) for v in chosen)
                ranges[column] = (float(chosen[0]), float(chosen[1])) if numeric else tuple(chosen)
        elif isinstance(brush, list):  # clicked points: the values of each field, in click order
            picked: dict[str, list] = {}
            for point in brush:
                for column, value in point.items() if isinstance(point, dict) else ():
                    if not column.startswith("vlPoint") and value not in picked.setdefault(column, []):
                        picked[column].append(value)
            ranges |= {column: tuple(values) for column, values in picked.items() if values}
    return ranges


def seed_groups(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Runs that differ only by their seed, as one row each: how many seeds, each metric's mean
    and standard deviation, and the run ids; a run alone keeps its figure with a std of NaN."""
    keys = ["model", *[name for name in setting_names() if name in table]]
    filled = table.assign(**{key: table[key].astype(str) for key in keys if key in table})
    grouped = filled.groupby(keys, sort=False, dropna=False)
    summary = grouped.agg(
        seeds=("run_id", "size"),
        run_ids=("run_id", lambda ids: ",".join(ids)),
        **{f"{m} mean": (m, "mean") for m in metrics},
        **{f"{m} std": (m, "std") for m in metrics},
    ).reset_index()
    shown = ["model", *varied(table)]
    return summary[[*shown, "seeds", *[c for c in summary if c.endswith((" mean", " std"))], "run_ids"]]


def importance(table: pd.DataFrame, settings: list[str], metric: str, seed: int = 0) -> pd.Series:
    """How much each setting moves `metric` among these runs: a random forest fitted on the
    settings, then each setting's values shuffled and the drop in the forest's fit measured
    (sklearn's permutation importance), as shares that sum to 1, largest first."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    if not settings:
        raise ValueError("settings: none vary among these runs")
    rows = table.dropna(subset=[metric])
    if len(rows) < MIN_RUNS_FOR_IMPORTANCE:
        raise ValueError(
            f"{metric}: importance needs {MIN_RUNS_FOR_IMPORTANCE} runs with it, these have {len(rows)}"
        )
    features = pd.DataFrame(
        {
            name: (
                pd.to_numeric(rows[name], errors="coerce")
                if pd.to_numeric(rows[name], errors="coerce").notna().all()
                else rows[name].astype(str).astype("category").cat.codes
            )
            for name in settings
        }
    )
    forest = RandomForestRegressor(n_estimators=200, random_state=seed).fit(features, rows[metric])
    result = permutation_importance(forest, features, rows[metric], n_repeats=10, random_state=seed)
    shares = pd.Series(np.clip(result.importances_mean, 0, None), index=settings)
    total = shares.sum()
    return (shares / total if total > 0 else shares).sort_values(ascending=False)


def sweep_runs(study, runs: pd.DataFrame) -> pd.DataFrame:
    """A sweep's trials as explorer rows: state, its parameters, the holdout metric it optimised
    (named as the plan names it), the test figures kept apart, and the run table's columns for
    the trials whose runs are cached (pruned ones keep only what the sweep recorded)."""
    from fmnist_core.studies.hpsearch import trials_table

    plan = study.user_attrs.get("plan", {})
    metric = plan.get("metric", "value")
    trials = trials_table(study).rename(columns={"value": metric})
    if trials.empty:
        return trials
    # A pruned trial's figure is the last one it reported (its state says it stopped early).
    reported = {
        t.number: t.intermediate_values[max(t.intermediate_values)]
        for t in study.trials
        if t.intermediate_values
    }
    trials[metric] = trials[metric].fillna(trials["number"].map(reported))
    trials = trials.assign(state=trials["state"].str.lower(), model=plan.get("model"))
    if "run_id" not in trials:
        return trials
    extra = [c for c in runs if c not in trials or c == "run_id"]
    merged = trials.merge(runs[extra], on="run_id", how="left") if not runs.empty else trials
    # A pruned trial's run is not cached: its seed is the one every trial of the plan trains with.
    seed = dict(plan.get("fixed", {})).get("seed", RunConfig.__dataclass_fields__["seed"].default)
    return merged.assign(seed=merged["seed"].fillna(seed).astype(int) if "seed" in merged else seed)
