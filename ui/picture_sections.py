"""The inside page's feature pictures (analysis.featureviz): a unit's, four of it pushed apart, it
with other units added, and every unit's of a layer, drawn in the background."""

from __future__ import annotations

import numpy as np
import streamlit as st

from fmnist_core.analysis.inside import Layer
from ui import keys
from ui.resources import entry_version, finished, in_background, run_cache
from ui.runs import run_view
from ui.widgets import kept

FEATURE_HELP = (
    "Found by gradient ascent from noise (256 steps, seed 0): the image is optimised as its Fourier "
    "spectrum, low frequencies first, and seen moved at each step (shifted up to 2 pixels, scaled "
    "by up to 5%, turned up to 10 degrees), so that what comes out is a pattern this unit looks for "
    "rather than noise only this network reads."
)
SEVERAL_HELP = (
    "Four pictures from four starts, each pushed away from the others (their activations at this "
    "layer made unlike): a unit that answers to several patterns shows them side by side."
)
ADDED_HELP = "The picture that drives the sum of these units: what they look for together."


def feature_pictures(run_id: str, layer: Layer, unit: int) -> None:
    """The unit's picture; on asking, four unlike each other, or the picture of it with other units added."""
    several = st.toggle("Four, unlike each other", key=keys.feature_several(run_id), help=SEVERAL_HELP)
    others = [other for other in range(layer.units) if other != unit]
    added = st.multiselect(
        "Add units", others, key=keys.feature_added(run_id, layer.name), help=ADDED_HELP, max_selections=3
    )
    units = (unit, *added)
    pictures = run_view(run_id).feature_pictures(layer.name, units, 4 if several else 1)
    named = " + ".join(f"unit {u}" for u in units)
    st.image(
        [np.kron(picture, np.ones((6 if len(pictures) == 1 else 3,) * 2)) for picture in pictures],
        clamp=True,
        width=168 if len(pictures) == 1 else 84,
        caption=[f"{named}, optimised from noise"] * len(pictures),
    )


EVERY_HELP = (
    "Each unit's picture, all of the layer at once, optimised in the background (you can go on "
    "meanwhile) and kept beside the cache: the next time they are read back at once. They start "
    "from other random images than a unit's own picture, so the two may differ in the details."
)


def every_picture(run_id: str, layer: Layer, dead: np.ndarray | None = None) -> None:
    """On asking: every unit's picture of `layer`, drawn in the background with its progress told;
    the `dead` units (a boolean per unit) said so under theirs."""
    # kept: walking to another layer and back finds it as it was (a toggle not drawn is forgotten)
    if not kept(
        st.toggle,
        "Every unit's picture",
        f"inside:every:{run_id}:{layer.name}",
        False,
        in_url=False,
        help=EVERY_HELP,
    ):
        return
    key = f"layer-pictures:{run_id}:{entry_version(run_id)}:{layer.name}"
    progress = _progress()
    root = run_cache().root

    def compute() -> np.ndarray:
        from fmnist_core.runs.trained import load_run as load_from_disk
        from fmnist_core.store.cache import RunCache
        from fmnist_core.views import inside

        cache = RunCache(root)
        return inside.layer_pictures(
            load_from_disk(run_id, cache),
            cache,
            layer.name,
            on_progress=lambda done, total: progress.update({key: done / total}),
        )

    pictures = in_background(key, compute)
    if pictures is None:
        _waiting(key, layer)
        return
    st.image(
        [np.kron(picture, np.ones((2, 2))) for picture in pictures],
        caption=[
            f"unit {unit}" + (" (dead)" if dead is not None and dead[unit] else "")
            for unit in range(len(pictures))
        ],
        width=56,
        clamp=True,
    )


@st.cache_resource
def _progress() -> dict:
    """How far each layer's pictures are (0 to 1), by the key in_background holds them under."""
    return {}


@st.fragment(run_every=1.0)
def _waiting(key: str, layer: Layer) -> None:
    done = _progress().get(key, 0.0)
    if finished(key):  # the page draws them (or says why they failed)
        st.rerun()
    st.progress(done, text=f"Optimising {layer.units} pictures of {layer.name} in the background: {done:.0%}")
