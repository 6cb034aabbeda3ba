"""The inside page's sections: the image to follow, every layer's output for it, one unit up close
(its weights, its output, the test images that excite it most), dead units, the layer table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core.analysis.inside import Layer, UnitActivity
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.views import inside
from fmnist_core.views.architecture import architecture
from fmnist_core.views.explore import commonest_mistakes
from ui import keys, plots, unit_plots
from ui.resources import fashion, run_cache
from ui.runs import run_view
from ui.unit_sections import describe

SOURCES = ("A test image", "A confusion cell", "Try it's drawing or upload")


def pick_image(run: TrainedRun) -> tuple[np.ndarray | None, str]:
    """The image to follow through the network, and what it is."""
    data = fashion()
    labels = data.test_labels.numpy()
    sources = SOURCES if run.config.kind == "classifier" else (SOURCES[0], SOURCES[2])
    source = st.segmented_control("Image", sources, default=SOURCES[0], key="inside:source") or SOURCES[0]
    if source == SOURCES[2]:
        image = st.session_state.get(keys.TRY_IMAGE)
        if image is None:
            st.info("Nothing drawn or uploaded yet: draw a garment on Try it, then come back.")
            st.page_link("app_pages/try_it.py", label="Go to Try it", icon=":material/draw:")
            return None, ""
        return image, "your drawing or upload from Try it"
    left, right = st.columns(2)
    if source == SOURCES[1]:
        predictions = run_view(run.run_id).probabilities.argmax(1)
        # The cell last clicked on the Classifier page, else this run's commonest mistake.
        start = st.session_state.get(keys.CONFUSION_CLICKED) or next(
            ((t, p) for t, p, _ in commonest_mistakes(labels, predictions, 1)), (6, 0)
        )
        true = left.selectbox(
            "True class", range(10), index=start[0], format_func=CLASS_NAMES.__getitem__, key="inside:true"
        )
        guess = right.selectbox(
            "Predicted class",
            range(10),
            index=start[1],
            format_func=CLASS_NAMES.__getitem__,
            key="inside:predicted",
        )
        indices = np.flatnonzero((labels == true) & (predictions == guess))
        what = f"a {CLASS_NAMES[true]} the model takes for a {CLASS_NAMES[guess]}"
    else:
        true = left.selectbox("Class", range(10), format_func=CLASS_NAMES.__getitem__, key="inside:class")
        indices = np.flatnonzero(labels == true)
        what = f"a {CLASS_NAMES[true]}"
    if len(indices) == 0:
        st.info("No test image falls in this cell: pick another.")
        return None, ""
    which = right.number_input(
        f"Which of its {len(indices):,} test images", 1, len(indices), 1, key=f"inside:which:{source}"
    )
    index = int(indices[which - 1])
    return data.test_images[index, 0].numpy(), f"test image #{index}, {what}"


def count_units(run_id: str) -> None:
    """Compute a run's unit activity where it is not kept yet, with a progress bar (1-10 s here)."""
    cache = run_cache()
    if inside.has_activity(run_id, cache):
        return
    from ui.resources import load_run

    bar = st.progress(0.0, text="Passing the 10,000 test images through every layer, once for this run...")
    inside.activity(
        load_run(run_id),
        cache,
        on_batch=lambda done, total: bar.progress(done / total, text=f"{done:,} images"),
    )
    bar.empty()


def layer_output(layer: Layer, output: np.ndarray, shared: bool) -> None:
    """One layer's output for the image: a grid of maps, or bars."""
    if layer.spatial:
        st.image(unit_plots.layer_mosaic(output, shared, **unit_plots.mosaic_layout(output)))
    else:
        st.altair_chart(unit_plots.unit_bars(output.reshape(-1), None, height=110))


def every_layer(passes: list[inside.ImagePass], pairs: list[tuple], shared: bool, names: list[str]) -> None:
    """Each layer's output in the order the network runs them; with a second run, side by side."""
    for pair in pairs:
        columns = st.columns(len(passes))
        for column, layer, shown, name in zip(columns, pair, passes, names, strict=False):
            with column:
                if layer is None:
                    st.caption(f"{name}: no such layer")
                    continue
                st.markdown(f"**{describe(layer)}**")
                layer_output(layer, shown.outputs[layer.name], shared)
    columns = st.columns(len(passes))
    for column, shown, name in zip(columns, passes, names, strict=False):
        with column:
            if shown.probabilities is not None:
                st.markdown(f"**What comes out** ({name}): class probabilities")
                st.plotly_chart(plots.probability_bars(shown.probabilities), config={"displayModeBar": False})
            else:
                st.markdown(f"**What comes out** ({name}): the reconstruction")
                st.image(np.kron(np.clip(shown.reconstruction, 0, 1), np.ones((6, 6))), clamp=True)


def dead_units(run: TrainedRun, activity: UnitActivity) -> None:
    table = inside.dead_units(activity)
    never = inside.never_predicted(run)
    if table.empty:
        st.info("No layer of this network is rectified: its units cannot die.")
    else:
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "dead": st.column_config.NumberColumn("dead", help="0 on every test image"),
                "dying": st.column_config.NumberColumn(
                    "dying", help="fires on fewer than 1% of the test images"
                ),
                "dead_share": st.column_config.ProgressColumn(
                    "dead share", min_value=0.0, max_value=1.0, format="percent"
                ),
            },
        )
        dead_links(run.run_id, activity)
    if run.config.kind == "classifier":
        st.markdown(
            f"**Classes never predicted:** {', '.join(never)}"
            if never
            else "**Classes never predicted:** none"
        )


DEAD_LINKS = 40  # dead units linked per layer, at most


def dead_links(run_id: str, activity: UnitActivity) -> None:
    """Each dead unit a link to its own view (its address; a new tab)."""
    for layer in activity.layers:
        dead = np.flatnonzero(activity.dead(layer.name)) if layer.rectified else []
        if len(dead):
            links = ", ".join(  # a unit's address opens its view (the tab's default there)
                f"[{unit}](inside?run={run_id}&layer={layer.name}&unit={unit})" for unit in dead[:DEAD_LINKS]
            )
            more = f" and {len(dead) - DEAD_LINKS} more" if len(dead) > DEAD_LINKS else ""
            st.markdown(f"Dead in **{layer.name}**: units {links}{more}")


def layer_table(run: TrainedRun) -> None:
    architecture_table(architecture(run.config, run_cache()))


def architecture_table(table) -> None:
    st.dataframe(
        table.layers,
        hide_index=True,
        column_config={
            "parameters": st.column_config.NumberColumn("parameters", format="localized"),
            "multiply_adds": st.column_config.NumberColumn("multiply-adds", format="localized"),
        },
    )
    st.caption(
        f"{table.parameters:,} parameters ({table.trainable_parameters:,} trained), "
        f"{table.multiply_adds:,} multiply-adds per image."
    )


def architecture_panel(config) -> None:
    """The layers of the model these settings build, before it trains: the totals in a line that
    follows the settings, the table in an expander (its label stays, so it stays open)."""
    # The expected time is the Train button's own line (ui.panels.training_panel): not worked out here.
    try:
        table = architecture(config, run_cache())
    except ValueError as error:
        st.caption(f"Architecture: {error}")
        return
    st.caption(
        f"**Architecture:** {len(table.layers)} layers · {table.parameters:,} parameters "
        f"({table.trainable_parameters:,} trained) · {table.multiply_adds / 1e6:.2f} M multiply-adds per image"
    )
    with st.expander(
        "Layer by layer: output shapes, parameters, multiply-adds", icon=":material/account_tree:"
    ):
        architecture_table(table)


def dead_column(runs: pd.DataFrame) -> pd.Series:
    """Each run's dead units where its activity is kept (None elsewhere: count_units makes it)."""
    cache = run_cache()
    return pd.Series(
        [
            inside.dead_summary(run_view(run_id).activity) if inside.has_activity(run_id, cache) else None
            for run_id in runs["run_id"]
        ],
        index=runs.index,
        dtype=object,
    )
