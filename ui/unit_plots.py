"""Figures of a network's units (the Inside the network page): activation maps in colour, grids
and bars to pick a unit by, images with the boxes that drive a unit."""

from __future__ import annotations

import base64
import io

import altair as alt
import numpy as np
import pandas as pd
import plotly.express as px
from PIL import Image

from ui import events
from ui.plots import PALETTE

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


def unit_bars(
    values: np.ndarray, selected: int | None, height: int = 160, axes: tuple[str, str] = ("unit", "output")
) -> alt.Chart:
    """A dense layer's (or a code's) values, one bar per unit, its `axes` so named; a click picks a
    unit (plots.UNIT)."""
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
            x=alt.X("unit:O", axis=alt.Axis(labels=len(values) <= 64, ticks=False, title=axes[0])),
            y=alt.Y("value:Q", title=axes[1]),
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
