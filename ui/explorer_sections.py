"""The explorer's sections: parallel coordinates with a brush on every axis (Vega-Lite selections,
read back by views.runs_explorer), each metric against each setting, importance, the chosen runs
with a click through, seeds as mean ± std."""

from __future__ import annotations

import functools
import json

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core.views import runs_explorer
from ui import keys

MAX_LINES = 2000  # lines drawn; the brushes still select among every run
LOG_SETTINGS = {"lr", "weight_decay"}  # drawn on a log scale (as are a sweep's :log ranges)


def is_numeric(values: pd.Series) -> bool:
    return pd.to_numeric(values.dropna(), errors="coerce").notna().all() and values.notna().any()


def log_axis(values: pd.Series, logs: set[str]) -> bool:
    """Whether an axis is drawn on a log scale: one of `logs`, with positive values only."""
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return values.name in logs and is_numeric(values) and bool((numbers > 0).all())


def position(values: pd.Series, logs: set[str]) -> pd.Series:
    """An axis's values placed on 0..1 (log where its scale is log; categories evenly spaced)."""
    if not is_numeric(values):
        codes = values.astype(str).astype("category").cat.codes.astype(float)
        return codes / max(codes.max(), 1)
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    numbers = np.log10(numbers) if log_axis(values, logs) else numbers
    span = numbers.max() - numbers.min()
    return (numbers - numbers.min()) / span if span > 0 else numbers * 0 + 0.5


def parallel_chart(table: pd.DataFrame, axes: list[str], colour: str, logs: set[str]) -> dict:
    """Lines across the axes above, one brushable strip per axis below (drag on a number's strip,
    click a category's point, shift for several): a run stays coloured while inside every brush.
    A Vega-Lite spec whose views read the named data set "runs": the rest of the spec depends only
    on the axes and their kinds, so it is built once (altair's building and checking of it cost the
    page most of its time)."""
    data = table[["run_id", *dict.fromkeys([*axes, colour])]].copy()
    for axis in axes:
        data[f"~{axis}"] = position(table[axis], logs)
    kinds = tuple((is_numeric(table[axis]), log_axis(table[axis], logs)) for axis in axes)
    spec = _parallel_spec(tuple(axes), colour, kinds, runs_explorer.lower_is_better(colour))
    return {**json.loads(spec), "data": {"name": "runs"}, "datasets": {"runs": data}}


@functools.lru_cache(maxsize=64)
def _parallel_spec(axes: tuple[str, ...], colour: str, kinds: tuple, reverse: bool) -> str:
    """The chart for `axes` of `kinds` ((numeric, log) each), without data, as Vega-Lite JSON."""
    brushes = [
        alt.selection_interval(encodings=["y"], name=f"axis{i}")
        if numeric
        else alt.selection_point(fields=[axis], name=f"axis{i}")
        for i, (axis, (numeric, _)) in enumerate(zip(axes, kinds, strict=True))
    ]
    inside = brushes[0]
    for brush in brushes[1:]:
        inside = inside & brush
    painted = alt.condition(
        inside,
        alt.Color(f"{colour}:Q", scale=alt.Scale(scheme="viridis", reverse=reverse)),  # best: yellow
        alt.value("#d9d9d9"),
    )
    typed = {
        axis: f"{axis}:{'Q' if numeric else 'N'}" for axis, (numeric, _) in zip(axes, kinds, strict=True)
    }
    lines = (
        alt.Chart()
        .transform_fold([f"~{axis}" for axis in axes], as_=["axis", "position"])
        .mark_line(opacity=0.6, strokeWidth=1.2)
        .encode(
            x=alt.X(
                "axis:N",
                sort=[f"~{axis}" for axis in axes],
                title=None,
                axis=alt.Axis(labelAngle=0, orient="top", labelExpr="replace(datum.label, '~', '')"),
            ),
            y=alt.Y("position:Q", axis=None),
            detail="run_id:N",
            color=painted,
            tooltip=["run_id:N", *typed.values(), f"{colour}:Q"],
        )
        .properties(width=max(110 * len(axes), 300), height=220)
    )
    strips = []
    for axis, brush, (numeric, log) in zip(axes, brushes, kinds, strict=True):
        scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
        y = alt.Y(typed[axis], scale=scale, title=None)
        mark = alt.Chart().mark_tick(thickness=2, size=30) if numeric else alt.Chart().mark_circle(size=90)
        strips.append(
            mark.encode(y=y, color=painted, tooltip=["run_id:N", typed[axis], f"{colour}:Q"])
            .add_params(brush)
            .properties(width=70, height=220, title=axis)
        )
    spec = alt.vconcat(lines, alt.hconcat(*strips)).configure_view(stroke=None).to_dict()
    # altair gives each view an empty data set of its own: dropped, the views read the chart's
    spec.pop("datasets", None)
    for view in [spec["vconcat"][0], *spec["vconcat"][1]["hconcat"]]:
        view.pop("data", None)
    return json.dumps(spec)


def brushed(table: pd.DataFrame, axes: list[str], colour: str, key: str, logs: set[str]) -> pd.DataFrame:
    """The chart, and the runs inside every brush (all runs while nothing is brushed)."""
    shown = runs_explorer.best_first(table, colour).head(MAX_LINES)
    if len(shown) < len(table):
        st.caption(
            f"Drawn: the {MAX_LINES:,} best of {len(table):,} runs by {colour}; brushes select among all."
        )
    event = st.vega_lite_chart(spec=parallel_chart(shown, axes, colour, logs), on_select="rerun", key=key)
    ranges = runs_explorer.brushed_ranges(event.selection if event else {})
    chosen = runs_explorer.within(table, ranges)
    described = "; ".join(
        f"{axis} {v[0]:.4g}..{v[1]:.4g}"
        if len(v) == 2 and all(isinstance(x, float) for x in v)
        else f"{axis} in {', '.join(map(str, v))}"
        for axis, v in ranges.items()
    )
    st.caption(
        f"**{len(chosen)} of {len(table)} runs** inside "
        + (described or "no brush yet: drag on an axis strip")
    )
    return chosen


def against(table: pd.DataFrame, settings: list[str], metrics: list[str], logs: set[str]) -> alt.Chart:
    """Each metric (rows) against each setting (columns)."""
    rows = []
    for metric in metrics:
        charts = []
        for setting in settings:
            numeric = is_numeric(table[setting])
            scale = alt.Scale(type="log") if log_axis(table[setting], logs) else alt.Scale(zero=False)
            x = alt.X(f"{setting}:Q", scale=scale) if numeric else alt.X(f"{setting}:N")
            charts.append(
                alt.Chart(table)
                .mark_circle(size=40, opacity=0.7)
                .encode(
                    x=x,
                    y=alt.Y(f"{metric}:Q", scale=alt.Scale(zero=False)),
                    tooltip=["run_id", setting, metric],
                )
                .properties(width=180, height=150)
            )
        rows.append(alt.hconcat(*charts))
    return alt.vconcat(*rows)


def importance_chart(shares: pd.Series, title: str) -> alt.Chart:
    """A bar per setting, largest first, on a labelled 0-100% share axis, each bar's share written."""
    frame = pd.DataFrame({"setting": [str(name) for name in shares.index], "share": shares.to_numpy(float)})
    y = alt.Y("setting:N", sort="-x", title=None, axis=alt.Axis(labelLimit=240, labelFontSize=13))
    x = alt.X(
        "share:Q",
        scale=alt.Scale(domain=[0, 1]),
        axis=alt.Axis(format="%", title="share of what moves the metric (sums to 100%)"),
    )
    base = alt.Chart(frame, title=alt.Title(title, anchor="start")).encode(y=y, x=x)
    bars = base.mark_bar(size=26).encode(tooltip=["setting", alt.Tooltip("share", format=".1%")])
    labels = base.mark_text(align="left", dx=4, fontSize=12).encode(text=alt.Text("share:Q", format=".0%"))
    return (bars + labels).properties(height=alt.Step(40), width="container")


def open_run(chosen: pd.DataFrame, metric: str) -> None:
    """The chosen runs, best first; a ticked row opens on the Inside the network page."""
    columns = ["run_id", "model", metric, *[c for c in runs_explorer.varied(chosen) if c in chosen], "seed"]
    best = runs_explorer.best_first(chosen, metric)
    event = st.dataframe(
        best[list(dict.fromkeys(c for c in columns if c in best))],
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="explorer:runs",
    )
    if event and event.selection and event.selection.rows:
        row = best.iloc[event.selection.rows[0]]
        capability = "classifies" if bool(row.get("classifies")) else "reconstructs"
        if st.button(f"Open run {row['run_id']} inside the network", icon=":material/hub:"):
            st.session_state[keys.picked(capability)] = row["run_id"]
            st.session_state.pop(keys.INSIDE_RUN, None)
            st.switch_page("app_pages/inside.py")
