"""Figures for the pages, Plotly and Altair (the core returns numbers; the pictures are drawn here)."""

from __future__ import annotations

import base64
import io

import altair as alt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from fmnist_core.data.fashion import CLASS_NAMES
from ui import events

PALETTE = px.colors.qualitative.T10


def curves(
    history: dict,
    title: str = "",
    published: dict | None = None,
    trace: list[tuple[float, float]] | None = None,
) -> go.Figure:
    """Train and validation loss (and accuracy, when present) per epoch; while a run trains, `trace`
    adds the running training loss within each epoch, (epochs done as a fraction, loss), as a thin line."""
    metrics = ["loss", "accuracy"] if history.get("val_accuracy") else ["loss"]
    # A loss made of terms (a VAE's reconstruction and KL) shows each term too, each on its own scale.
    terms = [
        key for key in history if key.startswith("train_") and key[6:] not in ("loss", "accuracy", "dynamics")
    ]
    figure = make_subplots(
        rows=1, cols=len(metrics) + len(terms), subplot_titles=metrics + [f"term: {key[6:]}" for key in terms]
    )
    epochs = history.get("epoch", [])
    styles = {"train": dict(color=PALETTE[0]), "validation": dict(color=PALETTE[1])}
    for column, key in enumerate(terms, start=len(metrics) + 1):
        line = go.Scatter(
            x=epochs, y=history[key], name=f"train {key[6:]}", mode="lines+markers", line=styles["train"]
        )
        figure.add_trace(line, row=1, col=column)
    for column, metric in enumerate(metrics, start=1):
        for split, key in (("train", f"train_{metric}"), ("validation", f"val_{metric}")):
            if history.get(key):
                figure.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=history[key],
                        name=f"{split} {metric}",
                        mode="lines+markers",
                        line=styles[split],
                    ),
                    row=1,
                    col=column,
                )
        if metric == "loss" and trace:
            position, loss = zip(*trace[:: max(1, len(trace) // 400)], strict=True)  # 400 points at most
            figure.add_trace(
                go.Scatter(
                    x=position,
                    y=loss,
                    name="train loss, running mean within the epoch",
                    mode="lines",
                    line=dict(color=PALETTE[0], width=1),
                    opacity=0.5,
                ),
                row=1,
                col=column,
            )
        if published and published.get(metric) is not None:
            figure.add_hline(
                y=published[metric], line_dash="dot", annotation_text="published", row=1, col=column
            )
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(
        height=320, margin=dict(l=10, r=10, t=40, b=10), title=title, legend=dict(orientation="h", y=-0.25)
    )
    return figure


def image_rows(rows: dict[str, np.ndarray], captions: list[str] | None = None) -> go.Figure:
    """Rows of 28x28 images (each row a name and an array (k, 28, 28)), as one figure."""
    names = list(rows)
    stacked = np.stack([rows[name] for name in names])  # (R, K, 28, 28)
    count = stacked.shape[1]
    grid = stacked.transpose(0, 2, 1, 3).reshape(len(names) * 28, count * 28)
    figure = px.imshow(np.clip(grid, 0, 1), color_continuous_scale="gray", zmin=0, zmax=1, binary_string=True)
    figure.update_xaxes(
        tickvals=[28 * i + 14 for i in range(count)], ticktext=captions or [""] * count, showgrid=False
    )
    figure.update_yaxes(tickvals=[28 * i + 14 for i in range(len(names))], ticktext=names, showgrid=False)
    figure.update_layout(
        height=90 * len(names) + 40, margin=dict(l=10, r=10, t=10, b=10), coloraxis_showscale=False
    )
    return figure


def confusion(matrix: np.ndarray, percent: bool = False) -> alt.LayerChart:
    """The confusion matrix as a heatmap (Altair) whose cells can be clicked: the point selection
    `events.CELL` carries the cell's true and predicted class indices (events.confusion_cell)."""
    values = 100.0 * matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if percent else matrix.astype(float)
    true_index, predicted_index = np.meshgrid(range(10), range(10), indexing="ij")
    table = pd.DataFrame(
        {
            "true_index": true_index.ravel(),
            "predicted_index": predicted_index.ravel(),
            "true": [CLASS_NAMES[i] for i in true_index.ravel()],
            "predicted": [CLASS_NAMES[i] for i in predicted_index.ravel()],
            "value": values.ravel(),
            "shade": np.log1p(values.ravel()),
            "label": [f"{v:.1f}" if percent else f"{int(v)}" for v in values.ravel()],
            "dark": values.ravel() > values.max() * 0.5,
        }
    )
    cell = alt.selection_point(name=events.CELL, fields=["true_index", "predicted_index"], on="click")
    order = list(CLASS_NAMES)
    base = alt.Chart(table).encode(
        x=alt.X(
            "predicted:N", sort=order, title="predicted class", axis=alt.Axis(orient="top", labelAngle=-40)
        ),
        y=alt.Y("true:N", sort=order, title="true class"),
    )
    tiles = base.mark_rect(stroke="white", strokeWidth=1, cursor="pointer").encode(
        color=alt.Color("shade:Q", scale=alt.Scale(scheme="blues"), legend=None),
        opacity=alt.when(cell).then(alt.value(1.0)).otherwise(alt.value(0.55)),
        tooltip=[
            alt.Tooltip("true:N", title="true"),
            alt.Tooltip("predicted:N", title="predicted"),
            alt.Tooltip("label:N", title="row %" if percent else "test images"),
        ],
    )
    numbers = base.mark_text(fontSize=12).encode(
        text="label:N",
        color=alt.when(alt.datum.dark).then(alt.value("white")).otherwise(alt.value("black")),
    )
    return (tiles.add_params(cell) + numbers).properties(height=520)


def mosaic(images: np.ndarray, columns: int = 6, scale: int = 2) -> np.ndarray:
    """(N, 28, 28) images tiled row by row into one picture, one grey pixel between them."""
    rows = -(-len(images) // columns)
    size = images.shape[1] * scale + 1
    sheet = np.full((rows * size + 1, columns * size + 1), 0.35, dtype=np.float32)
    for i, image in enumerate(images):
        top, left = 1 + (i // columns) * size, 1 + (i % columns) * size
        sheet[top : top + size - 1, left : left + size - 1] = np.kron(image, np.ones((scale, scale)))
    return sheet


def _limits(bounds: tuple | None, first: int) -> dict:
    """Fixed axis limits (a margin of 5%) from (x min, x max, y min, y max); none without bounds."""
    if bounds is None:
        return {}
    low, high = bounds[first], bounds[first + 1]
    margin = 0.05 * (high - low)
    return {"min": round(low - margin, 3), "max": round(high + margin, 3)}


def atlas(atlas, bounds: tuple, size: int) -> dict:
    """An ECharts atlas (fmnist_core.views.Atlas): per occupied cell, its decoded mean code as the
    marker, on a square tinted by the class a classifier gives it, both sized by the cell's count.
    Clicking a cell selects it (series 1, data index = the cell's row in atlas.cells)."""
    cell = 520 / size  # pixels per cell, roughly: the chart is 600 high
    largest = max(int(atlas.cells["count"].max()), 1)
    tiles, pictures = [], []
    for (_, row), url in zip(atlas.cells.iterrows(), image_urls(atlas.images), strict=True):
        side = round(cell * (0.35 + 0.65 * np.sqrt(row["count"] / largest)), 1)
        known = int(row["class"]) >= 0
        name = CLASS_NAMES[int(row["class"])] if known else "cell"
        colour = PALETTE[int(row["class"]) % len(PALETTE)] if known else "#999999"
        value = [float(row["x"]), float(row["y"]), int(row["count"])]
        tiles.append({"value": value, "name": name, "symbolSize": side, "itemStyle": {"color": colour}})
        pictures.append({"value": value, "name": name, "symbol": f"image://{url}", "symbolSize": side * 0.8})
    axis = {
        "type": "value",
        "axisLabel": {"show": False},
        "splitLine": {"show": False},
        "axisLine": {"show": False},
        "axisTick": {"show": False},
    }
    return {
        "grid": {"left": 20, "right": 20, "top": 20, "bottom": 20},
        "xAxis": {**axis, **_limits(bounds, 0)},
        "yAxis": {**axis, **_limits(bounds, 2)},
        "tooltip": {"trigger": "item", "formatter": "{b} · {@[2]} test images"},
        "series": [
            {
                "type": "scatter",
                "symbol": "roundRect",
                "data": tiles,
                "itemStyle": {"opacity": 0.45},
                "silent": True,
            },
            {
                "type": "scatter",
                "data": pictures,
                "selectedMode": "single",
                "select": {"itemStyle": {"borderColor": "#000", "borderWidth": 3}},
            },
        ],
    }


def timelapse_knn(at: list[float], knn: list[float], current: int) -> go.Figure:
    """The codes' kNN accuracy over training, the frame shown marked."""
    figure = go.Figure(go.Scatter(x=at, y=knn, mode="lines+markers", line=dict(color=PALETTE[0])))
    figure.add_trace(
        go.Scatter(x=[at[current]], y=[knn[current]], mode="markers", marker=dict(size=14, color=PALETTE[1]))
    )
    figure.update_layout(
        height=260,
        margin=dict(l=10, r=10, t=30, b=10),
        title="class separation (5-NN accuracy on the codes)",
        xaxis_title="epoch",
        showlegend=False,
    )
    return figure


def image_urls(images: np.ndarray) -> list[str]:
    """(N, 28, 28) images in [0, 1] as PNG data URLs (about 450 characters each), for tooltips."""
    urls = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(
            buffer, format="PNG", optimize=True
        )
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def latent_map(
    points: np.ndarray,
    labels: np.ndarray,
    urls: list[str],
    bounds: tuple | None = None,
    selectable: bool = True,
    numbers: np.ndarray | None = None,
    what: str = "test image",
    axes: tuple[str, str] | None = None,
) -> dict:
    """An ECharts scatter of 2-D points coloured by class: the hovered garment's image in the
    tooltip; `selectable`: click and lasso (brush) select points. Row i of the dataset is image
    `numbers[i]` (default i) of the split `what` names; `axes`: titled, numbered axes (a map of
    codes has neither: its directions mean nothing)."""
    frame = pd.DataFrame(
        {
            "x": points[:, 0].astype(float),
            "y": points[:, 1].astype(float),
            "class": [CLASS_NAMES[int(c)] for c in labels],
            "index": np.arange(len(points)) if numbers is None else np.asarray(numbers),
            "image": urls,
        }
    )

    def axis(number: int) -> dict:
        shown = {"axisLabel": {"show": axes is not None}}
        if axes is not None:
            shown.update(name=axes[number], nameLocation="middle", nameGap=28)
        return {"type": "value", "scale": True, **shown, **_limits(bounds, 2 * number)}

    spec = {
        "dataset": {"source": frame},
        "grid": {
            "left": 40 if axes is None else 60,
            "right": 120,
            "top": 40,
            "bottom": 30 if axes is None else 50,
        },
        "xAxis": axis(0),
        "yAxis": axis(1),
        "tooltip": {
            "trigger": "item",
            "formatter": "<img src='{@image}' width='84' height='84' style='image-rendering:pixelated'/>"
            f"<br/>{{@class}} · {what} #{{@index}}",
        },
        "visualMap": {
            "type": "piecewise",
            "dimension": "class",
            "categories": list(CLASS_NAMES),
            "inRange": {"color": [PALETTE[c % len(PALETTE)] for c in range(len(CLASS_NAMES))]},
            "right": 0,
            "top": "middle",
        },
        "series": [
            {
                "type": "scatter",
                "encode": {"x": "x", "y": "y"},
                "symbolSize": 5,
                "itemStyle": {"opacity": 0.75},
            }
        ],
    }
    if selectable:
        spec["brush"] = {"toolbox": ["polygon", "rect", "clear"], "xAxisIndex": 0, "yAxisIndex": 0}
        spec["toolbox"] = {"left": 0, "top": 0}
        spec["series"][0]["selectedMode"] = "multiple"
        spec["series"][0]["select"] = {"itemStyle": {"borderColor": "#000", "borderWidth": 2, "opacity": 1}}
    return spec


def walk_probabilities(walk, first_class: int, second_class: int) -> go.Figure:
    """Along a boundary walk (fmnist_core.views.BoundaryWalk), each classifier's probability of the
    first image's class (solid) and of the second's (dotted): code path left, pixel blend right."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("code path", "pixel blend"), shared_yaxes=True)
    classes = [(first_class, "solid")] + ([(second_class, "dot")] if second_class != first_class else [])
    for number, name in enumerate(walk.decoded_probabilities):
        colour = PALETTE[number % len(PALETTE)]
        for column, probabilities in enumerate(
            (walk.decoded_probabilities[name], walk.blended_probabilities[name]), start=1
        ):
            for cls, dash in classes:
                figure.add_trace(
                    go.Scatter(
                        x=walk.weights,
                        y=probabilities[:, cls],
                        mode="lines+markers",
                        line=dict(color=colour, dash=dash),
                        name=f"{name[:28]}: p({CLASS_NAMES[cls]})",
                        legendgroup=f"{name}:{cls}",
                        showlegend=column == 1,
                    ),
                    row=1,
                    col=column,
                )
    figure.update_yaxes(range=[0, 1], title_text="probability", row=1, col=1)
    figure.update_xaxes(title_text="0 = first image, 1 = second")
    figure.update_layout(
        height=340, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.3)
    )
    return figure


def sweep(table: pd.DataFrame) -> go.Figure:
    """The latent size sweep: errors (the autoencoder's and PCA's at k=n) and accuracies (the linear
    read-out, frozen and fine-tuned classifiers) against n, on a log-2 axis."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("test MSE", "test accuracy"))
    lines = [
        (1, "test_mse", "autoencoder"),
        (1, "pca_mse", "PCA, k=n"),
        (2, "probe_accuracy", "linear read-out of the code"),
        (2, "frozen_accuracy", "classifier, frozen encoder"),
        (2, "fine_tuned_accuracy", "classifier, fine-tuned"),
    ]
    for colour, (column, key, name) in enumerate(lines):
        figure.add_trace(
            go.Scatter(
                x=table["n"],
                y=table[key],
                mode="lines+markers",
                name=name,
                line=dict(color=PALETTE[colour], dash="dot" if key == "pca_mse" else "solid"),
            ),
            row=1,
            col=column,
        )
    figure.update_xaxes(
        type="log", tickvals=list(table["n"]), ticktext=[str(n) for n in table["n"]], title_text="n"
    )
    figure.update_yaxes(type="log", row=1, col=1)
    figure.update_layout(
        height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25)
    )
    return figure


def reliability(table: pd.DataFrame, confidence: np.ndarray, right: np.ndarray) -> go.Figure:
    """Left: accuracy per confidence bin against the diagonal a calibrated model would follow, the
    bins' sizes on hover; right: how sure the model is when right and when wrong."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("reliability", "confidence of right and wrong answers")
    )
    filled = table[table["count"] > 0]
    figure.add_trace(
        go.Bar(
            x=(filled["low"] + filled["high"]) / 2,
            y=filled["accuracy"],
            width=filled["high"] - filled["low"],
            marker_color=PALETTE[0],
            name="accuracy in the bin",
            customdata=filled["count"],
            hovertemplate="confidence %{x:.2f}: accuracy %{y:.3f} over %{customdata} images<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="calibrated"),
        row=1,
        col=1,
    )
    for mask, name, colour in ((right, "right", PALETTE[4]), (~right, "wrong", PALETTE[2])):
        figure.add_trace(
            go.Histogram(x=confidence[mask], nbinsx=30, name=name, marker_color=colour, opacity=0.7),
            row=1,
            col=2,
        )
    figure.update_xaxes(range=[0, 1], title_text="confidence")
    figure.update_yaxes(range=[0, 1], title_text="accuracy", row=1, col=1)
    figure.update_yaxes(type="log", title_text="test images", row=1, col=2)
    figure.update_layout(barmode="overlay", height=360, margin=dict(l=10, r=10, t=30, b=10))
    return figure


def attributions(image: np.ndarray, maps: dict[str, np.ndarray]) -> go.Figure:
    """The image, then each attribution map (red: pushes towards the class, blue: away), one scale."""
    figure = make_subplots(rows=1, cols=1 + len(maps), subplot_titles=["the image", *maps])
    figure.add_trace(go.Heatmap(z=image[::-1], colorscale="gray", showscale=False), row=1, col=1)
    top = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
    for column, values in enumerate(maps.values(), start=2):
        figure.add_trace(
            go.Heatmap(
                z=values[::-1], colorscale="RdBu_r", zmin=-top, zmax=top, showscale=column == 1 + len(maps)
            ),
            row=1,
            col=column,
        )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False, scaleanchor="x")
    figure.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10))
    return figure


def probability_bars(probabilities: np.ndarray) -> go.Figure:
    order = np.argsort(probabilities)
    figure = go.Figure(
        go.Bar(
            x=probabilities[order],
            y=[CLASS_NAMES[i] for i in order],
            orientation="h",
            marker_color=PALETTE[0],
        )
    )
    figure.update_layout(
        height=300, margin=dict(l=10, r=10, t=10, b=10), xaxis=dict(range=[0, 1], title="probability")
    )
    return figure


def histogram(values: np.ndarray, title: str) -> go.Figure:
    figure = px.histogram(x=values, nbins=60)
    figure.update_layout(
        height=260, margin=dict(l=10, r=10, t=30, b=10), title=title, xaxis_title="", yaxis_title="images"
    )
    return figure


# ---------------------------------------------------------------- inside the network

UNIT = events.UNIT
_SIGNED = px.colors.sample_colorscale("RdBu_r", list(np.linspace(0, 1, 256)), colortype="tuple")
_POSITIVE = px.colors.sample_colorscale("Viridis", list(np.linspace(0, 1, 256)), colortype="tuple")


def coloured(maps: np.ndarray, shared: bool = True) -> np.ndarray:
    """Maps (C, H, W) as RGB (C, H, W, 3) uint8: a diverging scale centred on 0 where any value is
    negative, else a sequential one from 0. `shared`: one scale for the whole layer (channels compare
    with each other, as CNN Explainer's default); else each channel stretched to its own range."""
    maps = np.asarray(maps, dtype=np.float32)
    signed = bool((maps < 0).any())
    reach = np.abs(maps).max(axis=(1, 2), keepdims=True) if not shared else np.abs(maps).max()
    scaled = maps / np.maximum(reach, 1e-12)  # [-1, 1] or [0, 1]
    table = np.array(_SIGNED if signed else _POSITIVE, dtype=np.float32)
    index = ((scaled + 1) / 2 if signed else scaled) * 255
    return (table[np.clip(index, 0, 255).astype(np.int64)] * 255).astype(np.uint8)


def _png_url(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def layer_mosaic(maps: np.ndarray, shared: bool = True, columns: int = 16, scale: int = 1) -> np.ndarray:
    """A layer's channel maps (C, H, W) tiled as one RGB picture, each pixel `scale` pixels wide
    (sharp when enlarged), a white line between them."""
    tiles = coloured(maps, shared)
    if scale > 1:
        tiles = np.kron(tiles, np.ones((1, scale, scale, 1), dtype=np.uint8))
    count, height, width = tiles.shape[:3]
    columns = min(columns, count)
    rows = -(-count // columns)
    sheet = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = 1 + (i // columns) * (height + 1), 1 + (i % columns) * (width + 1)
        sheet[top : top + height, left : left + width] = tile
    return sheet


def mosaic_layout(maps: np.ndarray, width: int = 880) -> dict:
    """Columns and enlargement that show a layer's maps at least ~44 pixels each within `width`."""
    count, height = maps.shape[0], maps.shape[1]
    scale = max(1, min(8, -(-44 // height)))
    columns = max(1, min(count, width // (height * scale + 1)))
    return {"columns": columns, "scale": scale}


def unit_grid(maps: np.ndarray, shared: bool, selected: int | None, columns: int = 10) -> alt.LayerChart:
    """A conv layer's channels as a grid of small images whose clicks pick a channel (the point
    selection plots.UNIT carries its `unit`)."""
    tiles = coloured(maps, shared)
    count = len(tiles)
    size = max(36, min(72, 720 // min(columns, count)))
    table = pd.DataFrame(
        {
            "unit": range(count),
            "column": [i % columns for i in range(count)],
            "row": [i // columns for i in range(count)],
            "url": [_png_url(np.kron(t, np.ones((2, 2, 1), dtype=np.uint8))) for t in tiles],
            "peak": [float(m.max()) for m in maps],
            "chosen": [i == selected for i in range(count)],
        }
    )
    pick = alt.selection_point(name=UNIT, fields=["unit"], on="click")
    axis = dict(axis=None)
    base = alt.Chart(table).encode(
        x=alt.X("column:O", **axis),
        y=alt.Y("row:O", **axis),
        tooltip=["unit", alt.Tooltip("peak", format=".3f")],
    )
    images = base.mark_image(
        width=size - 6, height=size - 6, smooth=False, align="center", baseline="middle"
    ).encode(url="url:N")
    frames = base.mark_rect(cursor="pointer", fillOpacity=0.001, strokeWidth=3).encode(
        stroke=alt.when(alt.datum.chosen).then(alt.value("#e4572e")).otherwise(alt.value("#dddddd")),
    )
    rows = -(-count // columns)
    return (images + frames.add_params(pick)).properties(width=size * min(columns, count), height=size * rows)


def unit_bars(values: np.ndarray, selected: int | None, height: int = 160) -> alt.Chart:
    """A dense layer's (or a code's) values, one bar per unit; a click picks a unit (plots.UNIT)."""
    table = pd.DataFrame(
        {"unit": range(len(values)), "value": np.asarray(values, dtype=float), "chosen": False}
    )
    if selected is not None and 0 <= selected < len(values):
        table.loc[selected, "chosen"] = True
    pick = alt.selection_point(name=UNIT, fields=["unit"], on="click")
    return (
        alt.Chart(table)
        .mark_bar(cursor="pointer")
        .encode(
            x=alt.X("unit:O", axis=alt.Axis(labels=len(values) <= 64, ticks=False, title="unit")),
            y=alt.Y("value:Q", title="output"),
            color=alt.when(alt.datum.chosen).then(alt.value("#e4572e")).otherwise(alt.value(PALETTE[0])),
            tooltip=["unit", alt.Tooltip("value", format=".4f")],
        )
        .add_params(pick)
        .properties(height=height)
    )


def with_boxes(images: np.ndarray, boxes: np.ndarray, scale: int = 3) -> list[np.ndarray]:
    """Grey images (k, 28, 28) as RGB, enlarged, each with its box (top, left, bottom, right) drawn in."""
    drawn = []
    for image, (top, left, bottom, right) in zip(images, boxes, strict=False):
        rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
        rgb = np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))
        t, left_, b, r = top * scale, left * scale, bottom * scale - 1, right * scale - 1
        for edge in (rgb[t, left_ : r + 1], rgb[b, left_ : r + 1], rgb[t : b + 1, left_], rgb[t : b + 1, r]):
            edge[:] = (228, 87, 46)
        drawn.append(rgb)
    return drawn
