"""Classifier: an encoder (frozen or fine-tuned), an MLP, a CNN or a ResNet; curves, confusion, per class."""

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis
from fmnist_core.data import CLASS_NAMES
from fmnist_core.models import get_spec, list_models
from fmnist_core.recipes import list_recipes
from fmnist_core.starter import STARTER_CNN
from ui import events, plots
from ui.navigation import enter_through_app
from ui.panels import epoch_scrubber, training_panel, waiting_for, why_panel
from ui.state import (
    calibration,
    fashion,
    load_run,
    run_cache,
    run_label,
    runs_table,
    stamp,
    test_probabilities,
)
from ui.widgets import (
    build_config,
    classifier_model_settings,
    kept,
    recipe_button,
    run_settings,
    start_from_recipe,
)

enter_through_app()

runs = runs_table()
autoencoders = {}
if not runs.empty:
    for _, row in runs[runs["model"] == "conv_autoencoder"].iterrows():
        autoencoders[run_label(row)] = row["run_id"]

with st.sidebar:
    st.header("Classifier")
    model = kept(
        st.selectbox,
        "Architecture",
        "cls:model",
        "encoder_classifier",
        options=list_models("classifier"),
        format_func=lambda name: f"{name} — {get_spec(name).description.split(':')[0]}",
    )
    if model == "cnn":
        for name in list_recipes("cnn"):
            recipe_button(name, "cls")
        start_from_recipe(STARTER_CNN, "cls")  # the page opens on the run the starter set trains
    settings = classifier_model_settings(model, autoencoders)
    if settings is not None:
        run_values = run_settings(model, "cls")

st.title("Classifier")
st.caption(get_spec(model).description)
if settings is None:
    waiting_for(
        kinds=("autoencoder",),
        otherwise="A classifier on an encoder needs a trained autoencoder first. Train one on the "
        "Autoencoder page, or pick another architecture.",
    )
    st.page_link("pages/autoencoder.py", label="Go to the Autoencoder page", icon=":material/compress:")
    st.stop()
config = build_config(model, settings, run_values)
run = training_panel(config)
if run is None:
    st.stop()


data = fashion()
labels = data.test_labels.numpy()
probabilities = test_probabilities(run.run_id, stamp(run.run_id))
predictions = probabilities.argmax(1)
matrix = analysis.confusion_matrix(labels, predictions)
report = analysis.per_class_report(matrix)

first, second, third = st.columns(3)
first.metric("Test accuracy", f"{run.metrics['test_accuracy']:.4f}")
second.metric("Test loss", f"{run.metrics['test_loss']:.4f}")
hardest = report.sort_values("recall").iloc[0]
third.metric("Hardest class", hardest["class"], help=f"recall {hardest['recall']:.3f}")
never = analysis.classes_never_predicted(matrix)
if never:
    st.warning(
        f"This classifier never answers **{', '.join(never)}** on the 10,000 test images: those classes "
        "are dead (their score is 0 for every image, and no gradient brings them back). A head without "
        "a ReLU on its logits (e.g. `fc` or `wide`) does not lose classes.",
        icon=":material/warning:",
    )

curves_tab, confusion_tab, class_tab, calibration_tab, compare_tab = st.tabs(
    ["Curves", "Confusion matrix", "Per class", "Calibration", "Frozen vs fine-tuned"]
)
with curves_tab:
    st.plotly_chart(plots.curves(run.history))
with confusion_tab:
    percent = st.segmented_control("Show", ["counts", "row percent"], default="counts") == "row percent"
    event = st.altair_chart(plots.confusion(matrix, percent), on_select="rerun", key="confusion")
    clicked = events.confusion_cell(event.selection if event else None)
    if clicked is not None and clicked != st.session_state.get("confusion:clicked"):
        # A new click moves the pickers below; picking there afterwards is not undone by the click.
        st.session_state["confusion:clicked"] = clicked
        st.session_state["confusion:true"], st.session_state["confusion:predicted"] = clicked
    st.caption("Click a cell to see its test images, most confident first — or pick one here:")
    st.session_state.setdefault("confusion:true", 6)  # Shirt, the hardest class in every report
    st.session_state.setdefault("confusion:predicted", 0)
    left, right = st.columns(2)
    true_class = left.selectbox(
        "True class", range(10), format_func=CLASS_NAMES.__getitem__, key="confusion:true"
    )
    predicted = right.selectbox(
        "Predicted class", range(10), format_func=CLASS_NAMES.__getitem__, key="confusion:predicted"
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
with class_tab:
    st.dataframe(
        report.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}"}), hide_index=True
    )
with calibration_tab:
    table, error = calibration(run.run_id, stamp(run.run_id))
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
with compare_tab:
    if model != "encoder_classifier":
        st.info("Frozen vs fine-tuned applies to classifiers built on an autoencoder's encoder.")
    else:
        sibling = config.replace(
            settings={**config.settings, "freeze_encoder": not config.settings["freeze_encoder"]}
        )
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
