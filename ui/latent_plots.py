"""Figures of a latent space (the Latent space and Suspect data pages): the map of codes with its
thumbnails, the atlas of decoded points, the walk between two classes, the time-lapse's k-NN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fmnist_core.data.fashion import CLASS_NAMES
from ui.plots import PALETTE, image_urls


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
