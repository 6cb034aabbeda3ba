"""Reports: each seed report's experiments, the published figures beside ours, and what is still missing."""

import streamlit as st

from fmnist_core.reports import REPORTS, Scale, collect, report_entries
from ui.navigation import enter_through_app
from ui.state import job_queue, run_cache
from ui.widgets import kept

enter_through_app()

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
st.caption(f"Source: `shared/seeds/{module.SOURCE}`. Validation on the test set, as the report did.")

result = collect(name, scale, run_cache())
table = result.table
missing = table[table["status"] != "ok"].drop_duplicates("run_id")  # rows may share one run
queue = job_queue()
active = [job for job in queue.jobs() if job.active]


@st.fragment(run_every=2.0)
def queue_status() -> None:
    jobs = [job for job in job_queue().jobs() if job.active]
    if not jobs:
        st.rerun()
    running = next((job for job in jobs if job.state == "running"), None)
    text = f"{len(jobs)} training(s) in the queue."
    if running is not None and running.latest is not None:
        p = running.latest
        text += f" Now: {running.config.model} `{running.run_id}` epoch {p.epoch}/{p.epochs}, ETA {p.eta_seconds:.0f} s."
    st.info(text)


if active:
    queue_status()
elif len(missing):
    st.warning(f"{len(missing)} of {table['run_id'].nunique()} runs of this report are not in the cache yet.")
    if st.button(f"Train the {len(missing)} missing runs", type="primary", icon=":material/play_arrow:"):
        # Queued in grid order: autoencoders come before the classifiers built on their encoders.
        wanted = set(missing["run_id"])
        for entry in report_entries(name, scale):
            if entry.config.run_id in wanted:
                queue.submit(entry.config)
        st.rerun()
else:
    st.success("Every experiment of this report is cached.")

for group_name, group in table.groupby("table", sort=False):
    st.subheader(group_name)
    columns = (
        ["label"]
        + [
            c
            for c in group.columns
            if (c.startswith(("published_", "final_", "test_", "difference_")) or c == "minutes")
            and group[c].notna().any()
        ]
        + ["status"]
    )
    st.dataframe(
        group[columns],
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in columns if c not in ("label", "status")
        },
    )

st.subheader("The report's conclusions, checked against ours")
for claim, holds, seen in result.conclusions:
    icon = {True: ":material/check_circle:", False: ":material/cancel:", None: ":material/hourglass_empty:"}[
        holds
    ]
    verdict = {True: "holds", False: "does not hold", None: "not run yet"}[holds]
    st.markdown(f"{icon} **{claim}** — {verdict} ({seen})")
st.caption("The same tables come from the command line: `python -m fmnist_core reproduce " + name + "`.")
