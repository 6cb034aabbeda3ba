"""The Compare runs page's sections: bringing a bundle in, the chosen runs' curves overlaid, and
taking a run away (a bundle, ONNX, its config)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fmnist_core.analysis.losses import LOSSES, get_loss
from fmnist_core.models import get_spec
from fmnist_core.runs import bundle
from fmnist_core.store.cache import RunCache
from ui import keys
from ui.plots import PALETTE
from ui.resources import run_cache


def bring_in() -> None:
    """An uploaded bundle checked and its runs measured, once per uploaded file."""
    with st.expander("Bring a run in from another lab (a bundle .zip)", icon=":material/upload:"):
        limit = st.get_option("server.maxUploadSize")
        upload = st.file_uploader(
            f"A bundle made by Take a run away (at most {limit} MB; larger files are refused before reading)",
            type=["zip"],
            key="compare:bundle",
        )
        if upload is not None and st.session_state.get(keys.COMPARE_IMPORTED, (None,))[0] != upload.file_id:
            try:  # once per uploaded file: a rerun does not write the entries again
                with st.spinner("Checking the bundle and measuring its runs on the test set..."):
                    message = bundle.import_summary(bundle.import_bundle(upload.getvalue(), run_cache()))
            except bundle.BundleError as error:
                message = f"Cannot bring this bundle in: {error}."
            st.session_state[keys.COMPARE_IMPORTED] = (upload.file_id, message)
        if upload is not None:
            message = st.session_state[keys.COMPARE_IMPORTED][1]
            (st.error if message.startswith("Cannot") else st.success)(message)


def overlay_title(metric: str, loss: str | None) -> str:
    """A curve chart's title: the metric, and the loss in words (table of losses) where it has one."""
    if not loss:
        return metric.replace("_", " ")
    return f"{metric.replace('_', ' ')} ({get_loss(loss).words if loss in LOSSES else loss})"


def overlays(chosen: pd.DataFrame) -> None:
    """One chart per metric and loss function: an MSE and a cross-entropy never share an axis."""
    cache = run_cache()
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
                title=overlay_title(metric, loss),
                height=300,
                margin=dict(l=10, r=10, t=40, b=10),
                xaxis_title="epoch",
            )
            st.plotly_chart(figure, key=f"overlay:{metric}:{loss}")


def take_away(chosen: pd.DataFrame) -> None:
    """One chosen run as a bundle, an ONNX model (a classifier) or its config."""
    cache = run_cache()
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
    if get_spec(cache.load_config(run_id).model).classifies:
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
