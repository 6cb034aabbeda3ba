"""The inside page's unit view: one unit up close (its output for the image, its weights, the input
it responds to most, its top and bottom test images, the units that feed it most), the unit picked
by a click, by a walk down from a unit it feeds, or by the page's address."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from fmnist_core.analysis.inside import Layer, UnitActivity
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.views import inside
from ui import events, keys, picture_sections, unit_plots
from ui.resources import fashion
from ui.runs import run_view


def pick_unit(run_id: str, layer: Layer, output: np.ndarray, shared: bool) -> int:
    """The layer's output as a chart whose clicks pick a unit; before any click, the unit a walk
    down or the page's address picked, else the unit this image excites most."""
    strongest = int(np.asarray(output).reshape(layer.units, -1).max(1).argmax())
    key = keys.unit_chart(run_id, layer.name)
    state = st.session_state.get(key)
    chosen = events.clicked_unit(state.get("selection") if isinstance(state, dict) else None, layer.units)
    walked = st.session_state.get(keys.walked_unit(run_id, layer.name))
    if (
        chosen is not None
    ):  # kept apart from the chart's state, which is forgotten when another layer is shown
        st.session_state[keys.walked_unit(run_id, layer.name)] = walked = chosen
    unit = chosen if chosen is not None else walked if walked is not None else strongest
    chart = (
        unit_plots.unit_grid(output, shared, unit)
        if layer.spatial
        else unit_plots.unit_bars(output.reshape(-1), unit)
    )
    st.altair_chart(chart, on_select="rerun", key=key, width="content" if layer.spatial else "stretch")
    if chosen is None and walked is None:
        st.caption(
            f"Click a {'channel' if layer.spatial else 'unit'}; shown: unit {unit}, the strongest for this image."
        )
    return unit


def walk_to(run_id: str, layer: Layer, unit: int | None) -> None:
    """Show `unit` of `layer` up close (a button's callback: before the page's widgets are drawn);
    None: the unit the image excites most."""
    st.session_state[keys.INSIDE_LAYER] = describe(layer)
    st.session_state.pop(keys.unit_chart(run_id, layer.name), None)  # its last click gives way
    st.session_state[keys.walked_unit(run_id, layer.name)] = unit


def describe(layer: Layer) -> str:
    shape = " × ".join(str(size) for size in layer.shape)
    role = " · the code" if layer.role == "code" else ""
    return f"{layer.name} · {layer.kind} · {shape}{role}"


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
        st.altair_chart(unit_plots.unit_bars(weights, None, height=110, axes=("its input", "weight")))
        st.caption(f"Its weight on each of its {weights.size:,} inputs.")


def unit_up_close(
    run: TrainedRun,
    activity: UnitActivity,
    layer: Layer,
    unit: int,
    output: np.ndarray,
    shared: bool,
    feeding: np.ndarray | None = None,
) -> None:
    """One unit: its output for this image, its learned weights, the input it responds to most, the
    test images that excite it most and least; with `feeding` (the page's image), the units below
    that feed it most, over the test set or for that image."""
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
        if detail.dead:  # measured: pictures optimised for dead units leave them at 0 (grey, alike)
            st.caption(
                "No picture of what it responds to: nothing in the test set moves it, nor noise optimised for it."
            )
        elif st.toggle(
            "The input it responds to most",
            key=f"inside:featureviz:{run.run_id}",
            help=picture_sections.FEATURE_HELP,
        ):
            picture_sections.feature_pictures(run.run_id, layer, unit)
    if detail.dead:  # its top and bottom images would be any images at 0
        if feeding is not None:
            feeders(run, activity, layer, unit, detail.weights, feeding)
        return
    labels = fashion().test_labels.numpy()
    box = " (the box: the pixels that move its peak)" if layer.spatial else ""  # a dense unit sees them all
    st.markdown(f"**The {len(detail.images)} test images that excite it most**{box}")
    captions = [
        f"#{i} {CLASS_NAMES[labels[i]]} · {v:.2f}"
        for i, v in zip(detail.indices, detail.values, strict=False)
    ]
    shown = (
        unit_plots.with_boxes(detail.images, detail.boxes)
        if layer.spatial
        else [np.kron(image, np.ones((3, 3))) for image in detail.images]
    )
    st.image(shown, caption=captions, width=96, clamp=True)
    if layer.spatial:
        st.markdown("**Their patches**, cut out")
        st.image([np.kron(p, np.ones((6, 6))) for p in inside.patches(detail)], clamp=True, width=72)
    count = len(detail.bottom_images)
    if layer.rectified and detail.bottom_values.max() <= 0:
        st.markdown(f"**{activity.images - detail.firing:,} test images leave it at 0**: the first {count}")
    else:
        st.markdown(f"**The {count} test images where it is lowest**")
    st.image(
        [np.kron(image, np.ones((3, 3))) for image in detail.bottom_images],
        caption=[
            f"#{i} {CLASS_NAMES[labels[i]]} · {v:.2f}"
            for i, v in zip(detail.bottom_indices, detail.bottom_values, strict=False)
        ],
        clamp=True,
        width=96,
    )
    if feeding is not None:
        feeders(run, activity, layer, unit, detail.weights, feeding)


FEEDING_HELP = (
    "Each unit of the layer below's share in this unit's value (a channel's mean over its map), as "
    "its activation times the value's gradient, summed over its map and averaged over 1,000 test "
    "images. Straight after a conv or dense layer this is exactly its sum split by input: weight "
    "times activation, the bias left over. Under each: the test image it fires on most and, for a "
    "conv, the kernel between the two (red positive, blue negative)."
)


OVER_TEST_SET, FOR_THIS_IMAGE = "over 1,000 test images", "for this image"


def feeders(
    run: TrainedRun,
    activity: UnitActivity,
    layer: Layer,
    unit: int,
    weights: np.ndarray | None,
    image: np.ndarray,
) -> None:
    """The units of the layer below that feed this one most (over the test set, or for the page's
    image), each with its strongest test image and the weights between them, a button to walk down."""
    from fmnist_core.analysis.upstream import feeding_layer, upstream_shares

    upstream = feeding_layer(run.model, layer.name)
    if upstream is None:
        st.caption("It reads the image itself: its weights above are what it looks at.")
        return
    below = activity.layer(upstream)
    heading, where = st.columns([3, 2])
    heading.markdown(f"**The units of {upstream} that feed it most**", help=FEEDING_HELP)
    over = where.segmented_control(
        "Over",
        [OVER_TEST_SET, FOR_THIS_IMAGE],
        default=OVER_TEST_SET,
        key="inside:feeding:over",
        label_visibility="collapsed",
    )
    if over == FOR_THIS_IMAGE:  # one image's pass and gradient: milliseconds
        shares = upstream_shares(
            run.model,
            layer.name,
            unit,
            upstream,
            torch.as_tensor(image, dtype=torch.float32).reshape(1, 1, 28, 28),
        )
    else:
        shares = run_view(run.run_id).upstream(layer.name, unit, upstream)
    strongest = np.argsort(-np.abs(shares), kind="stable")[:6]
    labels = fashion().test_labels.numpy()
    for column, feeder in zip(st.columns(len(strongest)), strongest, strict=False):
        with column:
            top = int(activity.top_index[upstream][0, feeder])
            st.image(np.kron(fashion().test_images[top, 0].numpy(), np.ones((3, 3))), clamp=True, width=84)
            sign = "excites" if shares[feeder] > 0 else "holds it back" if shares[feeder] < 0 else "no effect"
            st.caption(
                f"unit {feeder} · {shares[feeder]:+.3f} ({sign}) · its top: #{top} {CLASS_NAMES[labels[top]]}"
            )
            if weights is not None and weights.ndim == 3 and len(weights) == below.units:
                k = weights.shape[-1]
                st.image(
                    unit_plots.layer_mosaic(weights[feeder : feeder + 1], shared=True, scale=max(2, 48 // k))
                )
            elif weights is not None and weights.ndim == 1 and len(weights) == below.units:
                st.caption(f"weight {weights[feeder]:+.3f}")
            st.button(
                f"Look at unit {feeder}",
                key=f"inside:walk:{run.run_id}:{layer.name}:{unit}:{feeder}",
                on_click=walk_to,
                args=(run.run_id, below, int(feeder)),
            )
