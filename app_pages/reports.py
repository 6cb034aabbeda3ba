"""Reports: each seed report's experiments, the published figures beside ours, and what is still missing."""

import streamlit as st

from fmnist_core.studies.reports import (
    REPORTS,
    Scale,
    collect,
    fill_from_committed,
    load_committed,
    report_entries,
)
from ui import report_sections
from ui.panels import train_missing
from ui.resources import run_cache
from ui.widgets import kept

SCALES = {"full (the report's epochs)": 1.0, "quick look (a fifth of the epochs)": 0.2}

with st.sidebar:
    st.header("Reports")
    name = kept(
        st.radio,
        "Report",
        "reports:name",
        "S0",
        options=list(REPORTS),
        format_func=lambda n: REPORTS[n].TITLE,
    )
    scale_label = kept(st.radio, "Scale", "reports:scale", list(SCALES)[0], options=list(SCALES))
scale = Scale(epochs=SCALES[scale_label])
module = REPORTS[name]
st.title(module.TITLE)
st.markdown(module.SUMMARY)
st.caption(f"The report's file: `{module.SOURCE}`. Validation on the test set, as the report did.")

result = collect(name, scale, run_cache())
committed = load_committed(name, scale)
table = fill_from_committed(result.table, committed)
missing = table[table["status"] != "ok"].drop_duplicates("run_id")  # rows may share one run
from_repository = table["source"].str.startswith("repository")


if len(missing):
    text = (
        f"{len(missing)} of {table['run_id'].nunique()} runs of this report are not in this machine's cache."
    )
    if from_repository.any():
        text += (
            f" Rows whose source is *{committed.source}* show the reproduction committed in the repository "
            f"(`{committed.shown_path}`); train them to "
            "get this machine's own figures."
        )
    st.warning(text)
    # In grid order: autoencoders come before the classifiers built on their encoders.
    train_missing([entry.config for entry in report_entries(name, scale)], "of this report", f"report:{name}")
else:
    st.success("Every experiment of this report is cached.")

report_sections.experiment_tables(name, scale, table)
report_sections.claims(name, scale, table)

st.caption("The same tables come from the command line: `python -m fmnist_core reproduce " + name + "`.")
