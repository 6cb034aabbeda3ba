"""Classifier: an encoder (frozen or fine-tuned), an MLP, a CNN or a ResNet; curves, confusion, per class."""

import streamlit as st

from fmnist_core import analysis
from fmnist_core.models import get_spec
from fmnist_core.runs.starter import starter_of
from ui import classifier_sections, inside_sections, plots
from ui.forms import NoRunToBuildOn, architecture, model_form, recipe_buttons, start_from_starter
from ui.panels import training_panel
from ui.queue_panels import waiting_for
from ui.resources import fashion
from ui.runs import run_view, runs_table
from ui.widgets import build_config, run_settings

runs = runs_table()
with st.sidebar:
    st.header("Classifier")
    model = architecture("classifier", "cls:model", runs)
    recipe_buttons(model, "cls")
    start_from_starter(starter_of(model), "cls")  # the page opens on the run the starter set trains
    try:
        settings = model_form(model, runs)
    except NoRunToBuildOn:
        settings = None
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
    st.page_link("app_pages/autoencoder.py", label="Go to the Autoencoder page", icon=":material/compress:")
    st.stop()
config = build_config(model, settings, run_values)
inside_sections.architecture_panel(config)  # its layers and cost, before it trains
run = training_panel(config)
if run is None:
    st.stop()


data = fashion()
labels = data.test_labels.numpy()
probabilities = run_view(run.run_id).probabilities
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
    classifier_sections.confusion(run, matrix, probabilities)
with class_tab:
    st.dataframe(
        report.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}"}), hide_index=True
    )
with calibration_tab:
    classifier_sections.calibrated(run, probabilities)
with compare_tab:
    classifier_sections.frozen_vs_fine_tuned(run)
