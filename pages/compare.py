"""Compare runs: every cached run in one table; overlay the curves of the ones you select."""

import plotly.graph_objects as go
import streamlit as st

from fmnist_core import bundle
from fmnist_core.cache import RunCache
from ui.navigation import enter_through_app
from ui.plots import PALETTE
from ui.state import run_cache, runs_table

enter_through_app()

st.title("Compare runs")
with st.expander("Bring a run in from another lab (a bundle .zip)", icon=":material/upload:"):
    limit = st.get_option("server.maxUploadSize")
    upload = st.file_uploader(
        f"A bundle made by Take a run away (at most {limit} MB; larger files are refused before reading)",
        type=["zip"],
        key="compare:bundle",
    )
    if upload is not None and st.session_state.get("compare:imported", (None,))[0] != upload.file_id:
        try:  # once per uploaded file: a rerun does not write the entries again
            with st.spinner("Checking the bundle and measuring its runs on the test set..."):
                message = bundle.import_summary(bundle.import_bundle(upload.getvalue(), run_cache()))
        except bundle.BundleError as error:
            message = f"Cannot bring this bundle in: {error}."
        st.session_state["compare:imported"] = (upload.file_id, message)
    if upload is not None:
        message = st.session_state["compare:imported"][1]
        (st.error if message.startswith("Cannot") else st.success)(message)
runs = runs_table(all_data=True)
if runs.empty:
    st.info("No cached runs yet. Train a model and it appears here.")
    st.stop()

with st.sidebar:
    st.header("Filter")
    models = st.multiselect("Models", sorted(runs["model"].unique()), default=sorted(runs["model"].unique()))
    text = st.text_input("Run id or setting contains", "")
shown = runs[runs["model"].isin(models)]
if text:
    shown = shown[
        shown.astype(str).apply(lambda row: row.str.contains(text, case=False, regex=False)).any(axis=1)
    ]
preferred = [
    "run_id",
    "model",
    "test_accuracy",
    "test_mse",
    "never_predicted",
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
columns = [c for c in preferred if c in shown] + [c for c in shown if c not in preferred and c != "status"]
cache = run_cache()
# A validation-loss sparkline per run, beside its figures (autoencoders' MSE, classifiers' loss).
shown = shown.assign(curve=[cache.load_record(run_id)[0].get("val_loss", []) for run_id in shown["run_id"]])
columns.insert(2, "curve")
st.caption(
    f"{len(shown)} of {len(runs)} runs. Click column headers to sort; tick rows to overlay their curves."
)
text_columns = [c for c in columns if shown[c].dtype == object and c != "curve"]
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
LOSS_NAMES = {
    "mse": "MSE",
    "cross_entropy": "cross-entropy",
    "mse_onehot": "MSE on one-hot",
    "kl_div": "KL divergence",
}
if not chosen.empty:
    # One chart per metric and loss function: an MSE and a cross-entropy never share an axis.
    panels = [("val_accuracy", None)] + [
        (metric, loss) for metric in ("val_loss", "train_loss") for loss in chosen["loss"].unique()
    ]
    colours = {run_id: PALETTE[i % len(PALETTE)] for i, run_id in enumerate(chosen["run_id"])}
    for metric, loss in panels:
        figure = go.Figure()
        rows = chosen if loss is None else chosen[chosen["loss"] == loss]
        for _, row in rows.iterrows():
            history, _ = cache.load_record(row["run_id"])
            if history.get(metric):
                figure.add_trace(
                    go.Scatter(
                        x=history["epoch"],
                        y=history[metric],
                        mode="lines+markers",
                        name=f"{row['model']} {row['run_id'][:8]}",
                        line=dict(color=colours[row["run_id"]]),  # one colour per run in every panel
                    )
                )
        if figure.data:
            figure.update_layout(
                title=metric.replace("_", " ") + (f" ({LOSS_NAMES.get(loss, loss)})" if loss else ""),
                height=300,
                margin=dict(l=10, r=10, t=40, b=10),
                xaxis_title="epoch",
            )
            st.plotly_chart(figure, key=f"overlay:{metric}:{loss}")
    st.subheader("Take a run away")
    run_id = st.selectbox("Run", chosen["run_id"].tolist())
    root = str(cache.root)
    columns = st.columns(3)
    columns[0].download_button(
        "Bundle (.zip: safetensors + JSON)",
        lambda: bundle.export_bundle(run_id, RunCache(root)),  # made on click, off the page's thread
        f"fmnist-lab-{run_id}.zip",
        icon=":material/download:",
        help="Weights in safetensors, config, history and metrics (and the encoder it builds on): "
        "another lab brings it in on this page, with no pickle on the way.",
    )
    if cache.load_config(run_id).kind != "autoencoder":
        columns[1].download_button(
            "ONNX model",
            lambda: bundle.export_onnx(run_id, RunCache(root)),
            f"fmnist-lab-{run_id}.onnx",
            icon=":material/download:",
            help="Input `images` (N, 1, 28, 28) in [0, 1], output `logits` (N, 10).",
        )
    columns[2].download_button(
        "config.json",
        (cache.folder(run_id) / "config.json").read_text(),
        f"{run_id}.json",
        icon=":material/download:",
    )
else:
    st.caption("Select rows to overlay their validation curves and take runs away.")
