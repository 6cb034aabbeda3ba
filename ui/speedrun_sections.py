"""The Speedrun page's sections: the ladder as a chart (this machine's rungs beside the committed
report's), the rungs' table, and a rung's runs a click from their curves and their inside."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from fmnist_core.base.device import cpu_kind
from fmnist_core.studies import speedrun
from ui import keys, plots
from ui.resources import load_run, run_cache

REPORT = speedrun.REPORT_FOLDER / "speedrun.csv"


@st.cache_data(show_spinner=False, max_entries=8)
def _cached_ladder(seeds: int, cached: tuple[str, ...], root: str) -> pd.DataFrame:
    return speedrun.ladder_table(
        list(range(len(speedrun.RUNGS))), seeds, run_cache(), train=False, scored=False
    )


def cached_ladder(seeds: int) -> pd.DataFrame:
    """This machine's cached rungs (up to `seeds` seeds each), from their records: read again when a
    rung's run lands."""
    configs = speedrun.ladder_configs(list(range(len(speedrun.RUNGS))), seeds)
    cache = run_cache()
    cached = tuple(c.run_id for c in configs if cache.exists(c.run_id))
    return _cached_ladder(seeds, cached, str(cache.root)) if cached else pd.DataFrame()


@st.cache_data(show_spinner=False)
def _committed(path: str, stamp: float) -> tuple[pd.DataFrame | None, str]:
    try:
        return speedrun.load_report(REPORT), ""
    except speedrun.ReportError as error:
        return None, str(error)


def committed_ladder() -> pd.DataFrame | None:
    """The committed report's table (reports/speedrun.csv), checked; None where there is none, or
    where the file is not the report's table (the page then says why)."""
    try:
        stamp = REPORT.lstat().st_mtime
    except OSError:
        return None
    table, problem = _committed(str(REPORT), stamp)
    if problem:
        st.warning(f"The committed report was found but not used: {problem}.", icon=":material/warning:")
    return table


def ladder_chart(here: pd.DataFrame, committed: pd.DataFrame | None) -> None:
    """Test accuracy against seconds, a point per rung with its spread over seeds."""
    frames = []
    if committed is not None:
        frames.append(committed.assign(source="committed report"))
    if not here.empty:
        frames.append(here.assign(source=f"this machine: {cpu_kind()}"))
    if not frames:
        st.info("No rung is cached here and the repository holds no report yet: queue a rung below.")
        return
    table = pd.concat(frames, ignore_index=True)
    table["label"] = [
        name if pd.isna(rung) else f"{int(rung)} {name}"
        for rung, name in zip(table["rung"], table["name"], strict=True)
    ]
    table["above"] = [pd.isna(rung) or int(rung) % 2 == 0 for rung in table["rung"]]  # labels alternate
    if committed is not None and not here.empty:  # both: one set of labels (the points pair up)
        table.loc[table["source"] != "committed report", "label"] = ""
    table["low"] = table["accuracy_mean"] - table["accuracy_std"]
    table["high"] = table["accuracy_mean"] + table["accuracy_std"]
    base = alt.Chart(table).encode(
        x=alt.X("seconds:Q", title="seconds to train (mean over seeds)", scale=alt.Scale(type="log")),
        color=alt.Color(
            "source:N",
            title=None,
            scale=alt.Scale(range=["#1f77b4", "#e8590c"]),  # two sources told apart at a glance
            legend=alt.Legend(orient="bottom", labelLimit=600),
        ),
    )
    tooltip = [
        "label",
        "adds",
        "seeds",
        alt.Tooltip("accuracy_mean:Q", format=".4f"),
        alt.Tooltip("accuracy_std:Q", format=".4f"),
        alt.Tooltip("seconds:Q", format=",.0f"),
        "source",
    ]
    points = base.mark_point(filled=True, size=80).encode(
        y=alt.Y("accuracy_mean:Q", title="test accuracy", scale=alt.Scale(zero=False)), tooltip=tooltip
    )
    bars = base.mark_rule().encode(y="low:Q", y2="high:Q")
    climb = (
        base.transform_filter("isValid(datum.rung)")
        .mark_line(opacity=0.35)
        .encode(y="accuracy_mean:Q", order="rung:Q")
    )  # the ladder's rungs in order, one line per source
    labels = alt.layer(
        *(
            base.transform_filter(f"datum.above == {'true' if above else 'false'}")
            .mark_text(align="left", dx=6, dy=-9 if above else 11, fontSize=11)
            .encode(y="accuracy_mean:Q", text="label:N")
            for above in (True, False)
        )
    )  # even rungs' names above their points, odd ones' below: neighbours collided
    goal = alt.Chart(pd.DataFrame({"y": [0.95]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="y:Q")
    st.altair_chart((climb + bars + points + labels + goal).properties(height=420), key="speedrun:ladder")
    st.caption(
        "The dashed line is the goal, 0.95. Bars: ± one standard deviation over the rung's seeds; the faint "
        "line climbs the ladder in rung order."
    )


def rung_table(table: pd.DataFrame, source: str) -> None:
    shown = table.drop(columns=["run_ids"])
    shown["rung"] = [f"{int(r)}" if pd.notna(r) else "(recipe)" for r in shown["rung"]]
    shown["accuracy_std"] = [
        f"{s:.4f}" if pd.notna(s) else "" for s in shown["accuracy_std"]
    ]  # one seed: none
    if shown["without_duplicates"].isna().all():  # read from the runs' records: not scored again
        shown = shown.drop(columns=["without_duplicates"])
    accuracy = {"format": "%.4f"}
    st.markdown(f"**{source}**")
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "rung": st.column_config.TextColumn("rung"),
            "accuracy_mean": st.column_config.NumberColumn("accuracy", **accuracy),
            "accuracy_std": st.column_config.TextColumn("± std"),
            "accuracy_min": st.column_config.NumberColumn("min", **accuracy),
            "without_duplicates": st.column_config.NumberColumn("without near-duplicates", **accuracy),
            "seconds": st.column_config.NumberColumn("seconds", format="%.0f"),
            "train_gflops": st.column_config.NumberColumn("training GFLOPs", format="%.0f"),
        },
    )


def rung_runs(rung: int, seeds: int) -> None:
    """The rung's cached runs: each one's curves, and a button into Inside the network."""
    cache = run_cache()
    cached = [c for c in speedrun.ladder_configs([rung], seeds) if cache.exists(c.run_id)]
    if not cached:
        return
    labels = {f"seed {c.seed} ({c.run_id[:6]})": c.run_id for c in cached}
    picked = st.radio("Its run", list(labels), horizontal=True, key=f"speedrun:run:{rung}")
    run = load_run(labels[picked])
    first, second, third = st.columns(3)
    first.metric("Test accuracy", f"{run.metrics['test_accuracy']:.4f}")
    second.metric("Seconds", f"{run.metrics['train_seconds']:,.0f}")
    third.metric("Epochs", run.metrics["epochs_done"])
    st.plotly_chart(plots.curves(run.history), key=f"speedrun:curves:{run.run_id}")
    if st.button("Look inside it", icon=":material/hub:", key=f"speedrun:inside:{run.run_id}"):
        st.session_state[keys.picked("classifies")] = run.run_id
        st.session_state.pop(keys.INSIDE_RUN, None)
        st.switch_page("app_pages/inside.py")
