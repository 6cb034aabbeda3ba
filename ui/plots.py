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
