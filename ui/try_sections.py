"""The Try it page's sections beside the classifiers' answers: the garment check's verdict on the
picture and the picture through an autoencoder (its reconstruction and nearest test images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import views
from fmnist_core.data.fashion import CLASS_NAMES
from ui import plots
from ui.queue_panels import until_ready
from ui.resources import fashion, garment_check, load_run
from ui.runs import run_label, run_view


def garment_verdict(image: np.ndarray, autoencoders: pd.DataFrame, answer_column) -> None:
    """The garment check, on the best autoencoder (runs_table puts it first)."""
    checker = autoencoders.iloc[0]["run_id"]
    detector = garment_check(checker)
    verdict = detector.check(image) if detector is not None else None
    with answer_column:
        if verdict is None:
            until_ready(
                lambda: garment_check(checker) is not None,
                "Calibrating the garment check on 5,000 training images (once per autoencoder, kept "
                "for next time); the answers below do not wait for it.",
            )
        elif verdict.flagged:
            st.warning(
                "This does not look like a Fashion-MNIST garment: "
                + "; ".join(verdict.reasons[:3])
                + ". **The answers below are not to be trusted**: the classifiers know ten kinds of "
                "clothes and give one of them, often with high confidence, whatever they are shown.",
                icon=":material/help:",
            )
        else:
            st.caption(
                "Garment check passed: its reconstruction, latent code, texture, ink and shape are all "
                f"within the range of real images (autoencoder `{checker[:6]}`). It catches noise, "
                "patterns, solid colours and most text, but not every photo of a scene: a single bright "
                "shape on a dark ground passes as a garment."
            )


def through_autoencoder(image: np.ndarray, autoencoders: pd.DataFrame) -> None:
    """The picture's reconstruction by a chosen autoencoder and its nearest test images in code space."""
    st.subheader("Through an autoencoder")
    labels = {run_label(row): row["run_id"] for _, row in autoencoders.iterrows()}
    chosen = st.selectbox("Autoencoder", list(labels))
    run_id = labels[chosen]
    run = load_run(run_id)
    seen = views.reconstruct(run, image)
    reconstruction, error = seen.image, seen.error
    st.image(
        np.kron(reconstruction, np.ones((8, 8))),
        clamp=True,
        caption=f"reconstruction (MSE {error:.4f})",
        width=224,
    )
    codes = run_view(run_id).codes
    nearest = views.nearest(codes, seen.code)
    st.markdown("**Nearest test images in latent space**")
    data = fashion()
    st.plotly_chart(
        plots.image_rows(
            {"nearest": data.test_images[nearest, 0].numpy()},
            [CLASS_NAMES[int(data.test_labels[i])] for i in nearest],
        ),
        config={"displayModeBar": False},
    )
