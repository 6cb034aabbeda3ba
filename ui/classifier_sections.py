"""The Classifier page's tabs that hold more than a figure: the clickable confusion matrix with
its cells' images, the calibration, and a frozen encoder beside the fine-tuned one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.runs.trained import TrainedRun, frozen_sibling
from ui import events, keys, plots
from ui.panels import epoch_scrubber, why_panel
from ui.resources import fashion, load_run, run_cache
from ui.runs import run_view


def confusion(run: TrainedRun, matrix: np.ndarray, probabilities: np.ndarray) -> None:
    """The test confusion matrix; a click (or the pickers) shows that cell's images, surest first."""
    data = fashion()
    labels, predictions = data.test_labels.numpy(), probabilities.argmax(1)
    percent = st.segmented_control("Show", ["counts", "row percent"], default="counts") == "row percent"
    event = st.altair_chart(plots.confusion(matrix, percent), on_select="rerun", key="confusion")
    clicked = events.confusion_cell(event.selection if event else None)
    if clicked is not None and clicked != st.session_state.get(keys.CONFUSION_CLICKED):
        # A new click moves the pickers below; picking there afterwards is not undone by the click.
        st.session_state[keys.CONFUSION_CLICKED] = clicked
        st.session_state[keys.CONFUSION_TRUE], st.session_state[keys.CONFUSION_PREDICTED] = clicked
    st.caption("Click a cell to see its test images, most confident first — or pick one here:")
    st.session_state.setdefault(keys.CONFUSION_TRUE, 6)  # Shirt, the hardest class in every report
    st.session_state.setdefault(keys.CONFUSION_PREDICTED, 0)
    left, right = st.columns(2)
    true_class = left.selectbox(
        "True class", range(10), format_func=CLASS_NAMES.__getitem__, key=keys.CONFUSION_TRUE
    )
    predicted = right.selectbox(
        "Predicted class", range(10), format_func=CLASS_NAMES.__getitem__, key=keys.CONFUSION_PREDICTED
    )
    cell = np.flatnonzero((labels == true_class) & (predictions == predicted))
    cell = cell[np.argsort(-probabilities[cell, predicted])][:24]
    st.markdown(
        f"**{matrix[true_class, predicted]} test images** that are *{CLASS_NAMES[true_class]}* and were predicted *{CLASS_NAMES[predicted]}*"
    )
    columns = st.columns(8)
    for slot, index in enumerate(cell):
        with columns[slot % 8]:
            st.image(np.kron(data.test_images[index, 0].numpy(), np.ones((4, 4))), clamp=True)
            top = np.argsort(-probabilities[index])[:3]
            st.caption(" · ".join(f"{CLASS_NAMES[c]} {probabilities[index, c]:.2f}" for c in top))
    with st.expander("The confusion matrix during training", icon=":material/history:"):
        st.caption("On the validation images after each epoch (the test set, where the run validates on it).")
        epoch_scrubber(run.history, key=run.run_id)
    if len(cell):
        picked = st.selectbox(
            "Why this answer, for the image",
            cell.tolist(),
            format_func=lambda i: (
                f"#{i}: {CLASS_NAMES[labels[i]]}, taken for {CLASS_NAMES[predictions[i]]}"
                f" ({probabilities[i, predictions[i]]:.0%})"
            ),
            key="why:image",
        )
        why_panel(run, data.test_images[picked, 0].numpy(), key=f"cell:{picked}")


def calibrated(run: TrainedRun, probabilities: np.ndarray) -> None:
    """Expected calibration error and the reliability diagram, with where it is off in words."""
    labels, predictions = fashion().test_labels.numpy(), probabilities.argmax(1)
    table, error = run_view(run.run_id).calibration
    st.metric(
        "Expected calibration error",
        f"{error:.4f}",
        help="Over 15 confidence bins: the gap between how sure the model is and how often it is right, "
        "weighted by the bins' sizes (0: perfectly calibrated).",
    )
    confidence = probabilities.max(1)
    st.plotly_chart(plots.reliability(table, confidence, predictions == labels))
    sized = table[table["count"] >= 20]
    over = sized[sized["accuracy"] < sized["confidence"] - 0.1]
    under = sized[sized["accuracy"] > sized["confidence"] + 0.1]
    found = [
        f"surer than right (over-confident) between {part['low'].min():.2f} and {part['high'].max():.2f}"
        if part is over
        else f"right more often than it claims (under-confident) between {part['low'].min():.2f} and "
        f"{part['high'].max():.2f}"
        for part in (over, under)
        if not part.empty
    ]
    st.caption(
        "Bars under the diagonal: the model is surer than it is right; above it: right more often than "
        "it says. "
        + (
            "Here it is " + "; and ".join(found) + " (bins of 20 images or more, off by over 0.1)."
            if found
            else "No bin of 20 images or more is off by over 0.1 here."
        )
    )


def frozen_vs_fine_tuned(run: TrainedRun) -> None:
    """An encoder classifier beside its sibling with the encoder frozen (or fine-tuned)."""
    config, sibling = run.config, frozen_sibling(run.config)
    if sibling is None:
        st.info("Frozen vs fine-tuned applies to classifiers built on an autoencoder's encoder.")
        return
    pair = {config.settings["freeze_encoder"]: run}
    if run_cache().exists(sibling.run_id):
        pair[sibling.settings["freeze_encoder"]] = load_run(sibling.run_id)
    if len(pair) < 2:
        st.info(
            "Train the same classifier with the encoder "
            + ("fine-tuned" if config.settings["freeze_encoder"] else "frozen")
            + " (toggle in the sidebar) to see both side by side."
        )
    columns = st.columns(2)
    for column, frozen in zip(columns, (False, True), strict=True):
        with column:
            st.subheader("Frozen encoder" if frozen else "Fine-tuned encoder")
            if frozen in pair:
                st.metric("Test accuracy", f"{pair[frozen].metrics['test_accuracy']:.4f}")
                st.plotly_chart(plots.curves(pair[frozen].history), key=f"pair:{frozen}")
            else:
                st.caption("not trained yet")
    if len(pair) == 2:
        table = pd.DataFrame(
            {
                ("frozen" if k else "fine-tuned"): {
                    "test accuracy": v.metrics["test_accuracy"],
                    "test loss": v.metrics["test_loss"],
                    "seconds": v.metrics["train_seconds"],
                }
                for k, v in pair.items()
            }
        )
        st.dataframe(table)
