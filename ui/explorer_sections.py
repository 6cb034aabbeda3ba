"""The explorer's sections: parallel coordinates with a brush on every axis (Vega-Lite selections,
read back by views.runs_explorer), each metric against each setting, importance, the chosen runs
with a click through, seeds as mean ± std."""

from __future__ import annotations

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


def parallel_chart(table: pd.DataFrame, axes: list[str], colour: str, logs: set[str]) -> alt.VConcatChart:
    """Lines across the axes above, one brushable strip per axis below (drag on a number's strip,
    click a category's point, shift for several): a run stays coloured while inside every brush."""
    data = table[["run_id", *dict.fromkeys([*axes, colour])]].copy()
    for axis in axes:
        data[f"~{axis}"] = position(table[axis], logs)
    brushes = [
        alt.selection_interval(encodings=["y"], name=f"axis{i}")
        if is_numeric(table[axis])
        else alt.selection_point(fields=[axis], name=f"axis{i}")
        for i, axis in enumerate(axes)
    ]
    inside = brushes[0]
    for brush in brushes[1:]:
        inside = inside & brush
    painted = alt.condition(
        inside,
        alt.Color(
            f"{colour}:Q",
            scale=alt.Scale(scheme="viridis", reverse=runs_explorer.lower_is_better(colour)),  # best: yellow
        ),
        alt.value("#d9d9d9"),
    )
    lines = (
        alt.Chart(data)
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
            tooltip=["run_id", *axes, colour],
        )
        .properties(width=max(110 * len(axes), 300), height=220)
    )
    strips = []
    for axis, brush in zip(axes, brushes, strict=True):
        numeric = is_numeric(table[axis])
        scale = alt.Scale(type="log") if log_axis(table[axis], logs) else alt.Scale(zero=False)
        y = alt.Y(f"{axis}:Q", scale=scale, title=None) if numeric else alt.Y(f"{axis}:N", title=None)
        mark = (
            alt.Chart(data).mark_tick(thickness=2, size=30)
            if numeric
            else alt.Chart(data).mark_circle(size=90)
        )
        strips.append(
            mark.encode(y=y, color=painted, tooltip=["run_id", axis, colour])
            .add_params(brush)
            .properties(width=70, height=220, title=axis)
        )
    return alt.vconcat(lines, alt.hconcat(*strips)).configure_view(stroke=None)


def brushed(table: pd.DataFrame, axes: list[str], colour: str, key: str, logs: set[str]) -> pd.DataFrame:
    """The chart, and the runs inside every brush (all runs while nothing is brushed)."""
    shown = runs_explorer.best_first(table, colour).head(MAX_LINES)
    if len(shown) < len(table):
        st.caption(
            f"Drawn: the {MAX_LINES:,} best of {len(table):,} runs by {colour}; brushes select among all."
        )
    event = st.altair_chart(parallel_chart(shown, axes, colour, logs), on_select="rerun", key=key)
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
