"""Try it: draw or upload a picture, see what the models make of it."""

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import views
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.data.preprocess import ImageError, prepare_data_url, prepare_upload
from ui import canvas, keys, plots, try_sections
from ui.panels import why_panel
from ui.queue_panels import waiting_for
from ui.resources import load_run
from ui.runs import run_label, run_view, runs_table, runs_that

st.title("Try it")
runs = runs_table()
classifiers = runs_that("classifies", runs)
autoencoders = runs_that("reconstructs", runs)
if classifiers.empty and autoencoders.empty:
    waiting_for(
        kinds=("autoencoder", "classifier"),
        otherwise="No trained model yet: train a classifier (or an autoencoder) first.",
    )
    st.stop()

source = st.segmented_control("Input", ["Draw", "Upload"], default="Draw", key="try:source")
image = None
if source == "Upload":
    upload = st.file_uploader(
        f"A PNG, JPEG or WebP picture of a garment (at most {st.get_option('server.maxUploadSize')} MB; "
        "a larger file is refused by the browser before it is sent)",
        type=["png", "jpg", "jpeg", "webp"],
    )
    if upload is not None:
        try:
            image = prepare_upload(upload.getvalue())
        except ImageError as error:
            st.error(f"Cannot use this file: {error}.")
else:
    st.caption(
        "Draw one garment in white on the black square and **fill it in**: the models learnt from photos "
        "of solid garments, so an outline reads as something else. Each stroke updates the answer; it is "
        "cropped, scaled with its proportions kept and centred, as Fashion-MNIST's own images were."
    )
    drawing = canvas.draw("try:canvas")
    if drawing is not None:
        try:
            image = prepare_data_url(drawing)
        except ImageError as error:
            st.error(f"Cannot use this drawing: {error}.")
if image is None:
    st.stop()
st.session_state[keys.TRY_IMAGE] = image  # the inside page can follow it through a network

seen_column, answer_column = st.columns([1, 2])
with seen_column:
    st.markdown("**What the model sees** (28×28)")
    st.image(np.kron(image, np.ones((8, 8))), clamp=True)
if not autoencoders.empty:
    try_sections.garment_verdict(image, autoencoders, answer_column)
if not classifiers.empty:
    labels = {
        run_label(row): row["run_id"]
        for _, row in classifiers.iterrows()  # best first (runs_table's order)
    }
    with answer_column:
        chosen = st.selectbox("Classifier", list(labels))
        probabilities = views.classify(load_run(labels[chosen]), image)
        top = np.argsort(-probabilities)[:3]
        st.markdown("  \n".join(f"**{CLASS_NAMES[c]}** {probabilities[c]:.1%}" for c in top))
        table, _ = run_view(labels[chosen]).calibration
        at = table[(table["low"] < probabilities.max()) & (probabilities.max() <= table["high"])]
        if not at.empty and at["count"].iloc[0] >= 20 and at["accuracy"].iloc[0] < 0.6:
            st.warning(
                f"At {probabilities.max():.0%} confidence this model is right on only "
                f"{at['accuracy'].iloc[0]:.0%} of the {int(at['count'].iloc[0])} test images it is as sure "
                "of: an answer in the range where it is usually wrong.",
                icon=":material/warning:",
            )
        st.plotly_chart(plots.probability_bars(probabilities), config={"displayModeBar": False})
    st.markdown("**Why this answer**")
    why_panel(load_run(labels[chosen]), image, key="try")
    others = []
    for label, run_id in labels.items():
        p = views.classify(load_run(run_id), image)
        others.append(
            {"classifier": label, "answer": CLASS_NAMES[int(p.argmax())], "probability": float(p.max())}
        )
    st.markdown("**Every cached classifier's answer**")
    st.dataframe(
        pd.DataFrame(others),
        hide_index=True,
        column_config={
            "probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")
        },
    )

if not autoencoders.empty:
    try_sections.through_autoencoder(image, autoencoders)
