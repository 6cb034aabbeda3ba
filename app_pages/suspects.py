"""Suspect data: near-duplicates, likely mislabels, how each training image was learnt, and what
training without the flagged images changes."""

import streamlit as st

from fmnist_core.analysis import suspects
from ui import suspect_sections
from ui.jobs import job_queue
from ui.queue_panels import until_ready
from ui.resources import fashion, in_background, run_cache
from ui.results import duplicates, pixel_label_issues
from ui.runs import run_label, run_view, runs_table, runs_that
from ui.widgets import kept

PIXELS = "Pixels (their first 64 principal components)"


st.title("Suspect data")
st.caption(
    "Fashion-MNIST was labelled by people from a shop's catalogue: some images are there twice, "
    "some carry the wrong label. The lab looks for both itself, maps how a classifier learnt each "
    "training image, and trains again without the flagged images to see what they cost."
)
data = fashion()
train_labels = data.train_labels.numpy()
runs = runs_table()
cache = run_cache()
queue = job_queue()
autoencoders = runs_that("reconstructs", runs)
sources = {PIXELS: ""} | {run_label(row): row["run_id"] for _, row in autoencoders.iterrows()}
mapped_runs = runs[runs["cartography"] == True] if "cartography" in runs else runs.iloc[:0]  # noqa: E712
maps = {run_label(row): row["run_id"] for _, row in mapped_runs.iterrows()}
with st.sidebar:
    st.header("Suspect data")
    source = kept(
        st.selectbox,
        "Features for the mislabel search",
        "suspects:source",
        PIXELS,
        options=list(sources),
        help="A logistic regression on these features predicts each training image's class from "
        "models that never saw its label (5 folds); cleanlab compares those predictions with the labels.",
    )
    threshold = kept(
        st.slider,
        "Near-duplicate distance (pixel RMS)",
        "suspects:rms",
        suspects.NEAR_DUPLICATE_RMS,
        min_value=0.005,
        max_value=0.05,
        step=0.005,
        format="%.3f",
    )
    mapped_label = st.selectbox("Training map of", list(maps)) if maps else None

features_run = sources[source]
features = run_view(features_run) if features_run else None
first_use = f"suspects:{threshold}:{features_run}:{features.version if features else ''}"
found = in_background(
    first_use, lambda: (duplicates(threshold), features.label_issues if features else pixel_label_issues())
)
if found is None:  # the first visit: ~30 s over all 70,000 images, off the page's thread
    until_ready(
        lambda: in_background(first_use, None) is not None,
        "Looking for near-duplicates and doubted labels over all 70,000 images (the first visit: "
        "about 30 s, kept while the server runs). The page fills in when they are found.",
    )
    st.stop()
pairs, issues = found
map_, positions, hard = None, None, None
if mapped_label is not None:
    mapped_run = maps[mapped_label]
    map_ = run_view(mapped_run).training_dynamics
    positions = run_view(mapped_run).training_positions  # map row -> training image
    hard = suspects.hard_images(map_, positions)
mislabels = suspects.likely_mislabels(issues, hard)
flagged = suspects.flagged_images(pairs, mislabels)

suspect_sections.near_duplicates(pairs, threshold)
suspect_sections.likely_mislabels(issues, mislabels, hard)
suspect_sections.training_map(map_, positions, flagged, mapped_label)
suspect_sections.without_flagged(flagged, mislabels)
