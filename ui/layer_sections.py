"""The inside page's views of a layer as a whole: its dictionary (a few NMF features of its
activations, each with its picture, its strongest test images and the units it weighs) and its
units matched one by one to a second run's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core.analysis.inside import Layer
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.runs.trained import TrainedRun
from ui.resources import entry_version, fashion, load_run, run_cache
from ui.runs import run_view

CLEAR = 0.05  # a match this far above the next best is a clear one (the table's caption, the unit view)


def clear_match(correlation, runner_up):
    """Whether a match stands clear of the next best (numbers or columns alike)."""
    return correlation - runner_up >= CLEAR


DICTIONARY_HELP = (
    "Non-negative matrix factorisation of what the layer says at every place over 2,000 test "
    "images: each feature is a mix of units (weights of 1 at most) that tends to fire together. "
    "People find such features easier to name than single units (arXiv 2411.03993), most in "
    "deeper layers."
)


def dictionary(run: TrainedRun, layers: list[Layer], current: Layer) -> None:
    """A rectified layer's NMF features, each with its picture, strongest test images and units;
    first the unit view's `current` layer (or the first rectified one after it)."""
    rectified = [layer for layer in layers if layer.rectified and layer.units >= 3]
    if not rectified:
        st.info("This network has no rectified layer of 3 units or more: NMF reads only outputs >= 0.")
        return
    choices = {f"{layer.name} · {layer.kind} · {layer.units} units": layer for layer in rectified}
    after = layers[layers.index(current) :] if current in layers else []
    start = next((rectified.index(x) for x in after if x in rectified), 0)
    first, second = st.columns([2, 1])
    layer = choices[
        first.selectbox("Layer", list(choices), index=start, key=f"inside:nmf:layer:{run.run_id}")
    ]
    count = second.slider(
        "Features",
        3,
        min(12, layer.units),
        min(6, layer.units),
        key=f"inside:nmf:k:{run.run_id}",
        help=DICTIONARY_HELP,
    )
    version = entry_version(run.run_id)
    found = _dictionary(run.run_id, version, layer.name, count)
    st.caption(
        f"{count} features account for {found.explained:.0%} of what {layer.name} says (NMF over "
        f"2,000 test images, each place a row). Under each: the test images it is strongest on."
    )
    pictures = (
        _pictures(run.run_id, version, layer.name, count)
        if st.toggle("Their pictures (optimised from noise)", key=f"inside:nmf:pictures:{run.run_id}")
        else None
    )
    labels = fashion().test_labels.numpy()
    for feature in range(count):
        units = ", ".join(f"{unit} ({weight:.2f})" for unit, weight in found.top_units(feature))
        st.markdown(f"**Feature {feature}** · weighs units {units}")
        top = found.top_images(feature, 8)
        images = [np.kron(fashion().test_images[i, 0].numpy(), np.ones((3, 3))) for i in top]
        captions = [f"#{i} {CLASS_NAMES[labels[i]]}" for i in top]
        if pictures is not None:
            images, captions = (
                [np.kron(pictures[feature], np.ones((3, 3)))] + images,
                ["its picture"] + captions,
            )
        st.image(images, caption=captions, width=72, clamp=True)


@st.cache_data(max_entries=16, show_spinner="Factorising the layer's activations over 2,000 test images...")
def _dictionary(run_id: str, version: float, layer: str, features: int):
    from fmnist_core.views.dictionary import dictionary as layer_dictionary

    return layer_dictionary(load_run(run_id), run_cache(), layer, features)


@st.cache_data(max_entries=16, show_spinner="Optimising a picture for each feature (256 steps)...")
def _pictures(run_id: str, version: float, layer: str, features: int) -> np.ndarray:
    from fmnist_core.views.dictionary import dictionary_pictures

    found = _dictionary(run_id, version, layer, features)
    return dictionary_pictures(load_run(run_id), run_cache(), found)


def matching(
    run: TrainedRun, other: TrainedRun, pairs: list[tuple], names: list[str], current: Layer
) -> None:
    """Each unit of a layer matched to the unit of a layer of the run beside it whose activations
    correlate with its own most (the same feature, whatever its index). Any two layers can be
    compared; the second starts at the first's counterpart (by name in one architecture, else by
    place)."""
    mine = run_view(run.run_id).activity.layers
    theirs = run_view(other.run_id).activity.layers
    counterpart = {a.name: b.name for a, b in (p for p in pairs if len(p) == 2 and None not in p)}

    def named(layer: Layer) -> str:
        return f"{layer.name} · {layer.kind} · {layer.units} units"

    first, second = st.columns(2)
    start = next((i for i, x in enumerate(mine) if x.name == current.name), 0)  # the unit view's layer
    layer = {named(x): x for x in mine}[
        first.selectbox(names[0], [named(x) for x in mine], index=start, key="inside:match:layer")
    ]
    options = [named(x) for x in theirs]
    start = next((i for i, x in enumerate(theirs) if x.name == counterpart.get(layer.name)), 0)
    twin = {named(x): x for x in theirs}[
        second.selectbox(names[1], options, index=start, key=f"inside:match:twin:{layer.name}")
    ]
    table = run_view(run.run_id).matches(layer.name, other.run_id, twin.name)
    shown = pd.DataFrame(
        {
            "unit": table["unit"],
            f"its match in {names[1]}": table["match"],
            "correlation": table["correlation"],
            "the next best": table["runner_up"],
            # several units of this layer on one partner: a shared signal (brightness), not one feature each
            "units on that partner": table["match"].map(table["match"].value_counts()),
        }
    ).sort_values("correlation", ascending=False, na_position="last")
    close = int((table["correlation"] >= 0.9).sum())
    clear = int(((table["correlation"] >= 0.9) & clear_match(table["correlation"], table["runner_up"])).sum())
    st.caption(
        f"Over 2,000 test images: {close} of {len(table)} units of {layer.name} ({names[0]}) have a partner "
        f"in {twin.name} ({names[1]}) at a correlation of 0.9 or more; {clear} of them clearly (the next "
        f"best at least {CLEAR} lower), the likeliest to be the same feature found again. Where several "
        "units share a partner, or the next best is as close, they share something broader (how bright, "
        "how big) rather than one feature. A unit without a partner at 0.9 follows no unit of the other "
        "layer that closely; one with no partner at all does not vary over these images."
    )
    st.dataframe(shown, hide_index=True, width="stretch")
