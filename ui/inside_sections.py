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
from ui import events, keys, plots, unit_plots
from ui.resources import fashion, run_cache
from ui.runs import run_view

SOURCES = ("A test image", "A confusion cell", "Try it's drawing or upload")


def describe(layer: Layer) -> str:
    shape = " × ".join(str(size) for size in layer.shape)
    role = " · the code" if layer.role == "code" else ""
    return f"{layer.name} · {layer.kind} · {shape}{role}"


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


def pick_unit(layer: Layer, output: np.ndarray, shared: bool, key: str) -> int:
    """The layer's output as a chart whose clicks pick a unit; before any click, the unit this
    image excites most."""
    strongest = int(np.asarray(output).reshape(layer.units, -1).max(1).argmax())
    state = st.session_state.get(key)
    chosen = events.clicked_unit(state.get("selection") if isinstance(state, dict) else None, layer.units)
    unit = strongest if chosen is None else chosen
    chart = (
        unit_plots.unit_grid(output, shared, unit)
        if layer.spatial
        else unit_plots.unit_bars(output.reshape(-1), unit)
    )
    st.altair_chart(chart, on_select="rerun", key=key, width="content" if layer.spatial else "stretch")
    if chosen is None:
        st.caption(
            f"Click a {'channel' if layer.spatial else 'unit'}; shown: unit {unit}, the strongest for this image."
        )
    return unit


def weights_figure(weights: np.ndarray | None) -> None:
    if weights is None:
        st.caption("No weights of its own (its values come from a layer of another width).")
    elif weights.ndim == 3:  # a conv filter: one k x k kernel per input channel, one colour scale
        k = weights.shape[-1]
        st.image(unit_plots.layer_mosaic(weights, shared=True, columns=8, scale=max(2, 72 // k)))
        st.caption(f"{len(weights)} input channel(s) × {k}×{k}; red positive, blue negative.")
    elif weights.size == 784:  # a dense unit on the pixels: its weights are a picture
        st.image(unit_plots.layer_mosaic(weights.reshape(1, 28, 28), shared=True, scale=6))
        st.caption("Its weight on each pixel; red positive, blue negative.")
    else:
        st.altair_chart(unit_plots.unit_bars(weights, None, height=110))
        st.caption(f"Its weight on each of its {weights.size:,} inputs.")


FEATURE_HELP = (
    "Found by gradient ascent from noise (256 steps, seed 0): the image is optimised as its Fourier "
    "spectrum, low frequencies first, and seen shifted by up to 2 pixels at each step, so that what "
    "comes out is a pattern this unit looks for rather than noise only this network reads."
)


def unit_up_close(
    run: TrainedRun, activity: UnitActivity, layer: Layer, unit: int, output: np.ndarray, shared: bool
) -> None:
    """One unit: its output for this image, its learned weights, the test images that excite it most."""
    detail = inside.unit_detail(run, activity, layer.name, unit)
    what = "channel" if layer.spatial else "unit"
    st.markdown(f"#### {what.capitalize()} {unit} of {layer.name}")
    if detail.dead:
        st.error(f"This {what} is dead: 0 on every one of the {activity.images:,} test images.")
    else:
        st.caption(f"Fires on {detail.firing:,} of {activity.images:,} test images.")
    first, second = st.columns(2)
    with first:
        st.markdown("**Its output for this image**")
        if layer.spatial:
            single = output[unit : unit + 1]
            st.image(unit_plots.layer_mosaic(single, shared=True, scale=max(1, 224 // single.shape[-1])))
        else:
            st.metric("value", f"{float(output.reshape(-1)[unit]):.4f}")
    with second:
        st.markdown("**Its learned weights**")
        weights_figure(detail.weights)
        if st.toggle(
            "The input it responds to most", key=f"inside:featureviz:{run.run_id}", help=FEATURE_HELP
        ):
            picture = run_view(run.run_id).feature_picture(layer.name, unit)
            st.image(np.kron(picture, np.ones((6, 6))), clamp=True, width=168, caption="optimised from noise")
    labels = fashion().test_labels.numpy()
    st.markdown(
        f"**The {len(detail.images)} test images that excite it most** (the box: the pixels that move its peak)"
    )
    captions = [
        f"#{i} {CLASS_NAMES[labels[i]]} · {v:.2f}"
        for i, v in zip(detail.indices, detail.values, strict=False)
    ]
    st.image(unit_plots.with_boxes(detail.images, detail.boxes), caption=captions, width=96)
    if layer.spatial:
        st.markdown("**Their patches**, cut out")
        st.image([np.kron(p, np.ones((6, 6))) for p in inside.patches(detail)], clamp=True, width=72)
    count = len(detail.bottom_images)
    if layer.rectified and detail.bottom_values.max() <= 0:
        st.markdown(f"**{activity.images - detail.firing:,} test images leave it at 0**: the first {count}")
    else:
        st.markdown(f"**The {count} test images that move it least**")
    st.image(
        [np.kron(image, np.ones((3, 3))) for image in detail.bottom_images],
        caption=[
            f"#{i} {CLASS_NAMES[labels[i]]} · {v:.2f}"
            for i, v in zip(detail.bottom_indices, detail.bottom_values, strict=False)
        ],
        clamp=True,
        width=96,
    )


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
    if run.config.kind == "classifier":
        st.markdown(
            f"**Classes never predicted:** {', '.join(never)}"
            if never
            else "**Classes never predicted:** none"
        )


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
