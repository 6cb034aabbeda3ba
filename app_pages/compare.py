"""Compare runs: every cached run in one table; overlay the curves of the ones you select."""

import streamlit as st

from fmnist_core.views import runs_explorer
from ui import compare_sections, inside_sections
from ui.runs import damaged_runs, runs_table

st.title("Compare runs")
compare_sections.bring_in()
runs = runs_table(all_data=True)
if runs.empty:
    st.info("No cached runs yet. Train a model and it appears here.")
    st.stop()

with st.sidebar:
    st.header("Filter")
    models = st.multiselect("Models", sorted(runs["model"].unique()), default=sorted(runs["model"].unique()))
    text = st.text_input("Run id or setting contains", "")
shown = runs_explorer.matching(runs[runs["model"].isin(models)], text)
preferred = [
    "run_id",
    "model",
    "test_accuracy",
    "test_mse",
    "never_predicted",
    "dead_units",
    "data",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "n",
    "dropout",
    "freeze_encoder",
    "head",
    "layers",
    "channels",
    "train_subset",
    "train_seconds",
    "final_train_loss",
    "final_val_loss",
    "created",
]
shown = shown.assign(dead_units=inside_sections.dead_column(shown))
columns = [c for c in preferred if c in shown] + [c for c in shown if c not in preferred and c != "status"]
# A validation-loss sparkline per run, beside its figures (autoencoders' MSE, classifiers' loss).
shown = shown.rename(columns={"val_curve": "curve"})
columns = [c if c != "val_curve" else "curve" for c in columns]
columns.insert(2, columns.pop(columns.index("curve")))
st.caption(
    f"{len(shown)} of {len(runs)} runs. Click column headers to sort; tick rows to overlay their curves."
)
damaged = damaged_runs()
if not damaged.empty:
    st.warning(
        f"{len(damaged)} damaged run(s) not listed ({', '.join(damaged['run_id'].str[:8])}): "
        "`python -m fmnist_core runs` says what failed its check; `runs --prune` removes them "
        "(their configs kept, so a page can train them again)."
    )
text_columns = [  # text only: a column of True/False with gaps stays boolean (no '' among them)
    c
    for c in columns
    if c != "curve" and shown[c].dtype == object and shown[c].dropna().map(type).eq(str).all()
]
event = st.dataframe(
    shown[columns].fillna({c: "" for c in text_columns}),  # an empty cell, not the word None
    hide_index=True,
    on_select="rerun",
    selection_mode="multi-row",
    column_config={
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="%.4f"),
        "test_mse": st.column_config.NumberColumn("test MSE", format="%.4f"),
        "never_predicted": st.column_config.TextColumn(
            "classes never predicted", help="Classes the model never answers on the test images"
        ),
        "dead_units": st.column_config.TextColumn(
            "dead units",
            help="Units of rectified layers that are 0 on every test image (the Inside the network page "
            "counts them once per run; empty: not counted yet)",
        ),
        "data": st.column_config.TextColumn(
            "data set", help="fashion-mnist, or another data set's fingerprint"
        ),
        "train_seconds": st.column_config.NumberColumn("seconds", format="%.0f"),
        "curve": st.column_config.LineChartColumn("validation loss", width="small"),
    },
    key="runs_table",
)
st.download_button(
    "Download the table (CSV)",
    shown[[c for c in columns if c != "curve"]].to_csv(index=False),
    "fmnist_runs.csv",
    "text/csv",
    icon=":material/download:",
)

chosen = (
    shown.iloc[event.selection.rows] if event and event.selection and event.selection.rows else shown.head(0)
)
if not chosen.empty:
    uncounted = chosen[chosen["dead_units"].isna()]
    if not uncounted.empty and st.button(
        f"Count the dead units of the {len(uncounted)} selected run(s) not counted yet",
        icon=":material/hub:",
    ):
        for run_id in uncounted["run_id"]:
            inside_sections.count_units(run_id)
        st.rerun()
    compare_sections.overlays(chosen)
    compare_sections.take_away(chosen)
else:
    st.caption("Select rows to overlay their validation curves and take runs away.")
