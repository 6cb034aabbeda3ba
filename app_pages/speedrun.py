"""Speedrun: one network and a ladder of tricks, one a rung; accuracy against seconds, this
machine's rungs beside the committed report's."""

import streamlit as st

from fmnist_core.base import environment
from fmnist_core.studies import speedrun
from ui import speedrun_sections
from ui.panels import train_missing
from ui.widgets import kept

RUNG_NAMES = {i: f"{i} {rung.name}: {rung.adds}" for i, rung in enumerate(speedrun.RUNGS)}

with st.sidebar:
    st.header("Speedrun")
    seeds = kept(
        st.radio,
        "Seeds per rung",
        "speedrun:seeds",
        1,
        options=(1, 3, 5),
        horizontal=True,
        help="A rung's figure is the mean over its seeds, its bar their spread.",
    )

st.title("The Fashion-MNIST speedrun")
st.markdown(
    "How fast can two CPU cores reach 0.95? One network (a whitened first conv, then three stages "
    "of two convs) and a ladder of tricks after airbench's: each rung adds one trick to the rungs "
    "below it, and is an ordinary run of the lab. A trick that does not help here stays in the table "
    "with its figures. Every rung validates on the holdout tenth of the training images; the test "
    "set is scored once, at the end."
)
if environment.scale() == "test":
    st.warning(
        "FMNIST_SCALE=test: each rung here is 1 epoch on 2,000 images, which says nothing about what the "
        "tricks do at full scale (the moving average, above all, needs a long run).",
        icon=":material/science:",
    )
here = speedrun_sections.cached_ladder(seeds)
committed = speedrun_sections.committed_ladder()
speedrun_sections.ladder_chart(here, committed)
if committed is not None:
    speedrun_sections.rung_table(committed, "The committed report (reports/speedrun.csv)")
if not here.empty:
    speedrun_sections.rung_table(here, "This machine's cached rungs")

st.subheader("A rung")
rung = kept(
    st.selectbox,
    "Rung",
    "speedrun:rung",
    len(speedrun.RUNGS) - 1,
    options=list(RUNG_NAMES),
    format_func=RUNG_NAMES.get,
)
configs = speedrun.ladder_configs([rung], seeds)
st.caption(speedrun.describe_run(configs[0]))
train_missing(configs, f"of rung {rung}", f"speedrun:{rung}:{seeds}")
speedrun_sections.rung_runs(rung, seeds)
