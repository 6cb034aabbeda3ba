"""Chart events to indices: the pure functions behind every clickable chart."""

import json

import numpy as np
import pytest

from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.data.preprocess import prepare_data_url
from ui import events, latent_plots, plots


@pytest.mark.parametrize(
    "selection, cell",
    [
        ({"cell": [{"true_index": 2, "predicted_index": 4}]}, (2, 4)),  # Pullover predicted Coat
        ({"cell": [{"true_index": 4, "predicted_index": 6}]}, (4, 6)),
        ({"cell": [{"true_index": 9, "predicted_index": 7}]}, (9, 7)),
        ({"cell": [{"true_index": 1.0, "predicted_index": "3"}]}, (1, 3)),  # numbers as JSON sends them
        (
            {"cell": [{"true_index": 0, "predicted_index": 0}, {"true_index": 6, "predicted_index": 2}]},
            (6, 2),
        ),
        ({"cell": {"true_index": 5, "predicted_index": 5}}, (5, 5)),
        ({"cell": []}, None),  # cleared
        ({}, None),
        (None, None),
        ({"cell": [{"true": "Shirt"}]}, None),  # another shape: nothing, never a wrong cell
        ({"cell": [{"true_index": 10, "predicted_index": 0}]}, None),
        ({"cell": [{"true_index": -1, "predicted_index": 0}]}, None),
        ({"cell": "x"}, None),
        ({"cell": [None, {"true_index": "a", "predicted_index": 1}]}, None),
    ],
)
def test_a_confusion_selection_names_the_cell_clicked_or_none(selection, cell):
    assert events.confusion_cell(selection) == cell


def test_the_heatmap_selects_by_the_same_fields_the_mapping_reads():
    matrix = np.arange(100).reshape(10, 10)
    spec = plots.confusion(matrix).to_dict()
    tiles = [layer for layer in spec["layer"] if layer["mark"]["type"] == "rect"][0]
    parameter = [p for p in spec["params"] if p["name"] == events.CELL][0]
    assert parameter["views"] == [tiles["name"]]  # the tiles are what a click selects
    assert parameter["select"]["fields"] == ["true_index", "predicted_index"]
    rows = next(iter(spec["datasets"].values()))
    # Each tile's data: its indices name its classes and its value is the matrix's cell.
    for row in rows:
        assert row["value"] == matrix[row["true_index"], row["predicted_index"]]
        assert (row["true"], row["predicted"]) == (
            CLASS_NAMES[row["true_index"]],
            CLASS_NAMES[row["predicted_index"]],
        )
    assert len(rows) == 100 and json.dumps(spec)


def group(indices):
    return {"series_index": 0, "data_type": "main", "data_indices": indices}


@pytest.mark.parametrize(
    "state, rows",
    [
        ({"selection": {"selected": [group([1217])], "areas": []}}, [1217]),  # a click
        ({"selection": {"selected": [group([5, 3, 5]), group([3, 9])]}}, [5, 3, 9]),  # click + brush
        ({"selection": {"selected": [group([2999, 3000, -1])]}}, [2999]),  # outside the map: dropped
        ({"selection": {"selected": [group([1.5, "7", True, None])]}}, []),  # not row numbers
        ({"selection": {"selected": []}}, []),  # cleared by a double-click
        ({"selection": {"selected": "x"}}, []),
        ({"selection": None}, []),
        ({}, []),
        (None, []),
        ({"selection": {"selected": [None, {"data_indices": "12"}]}}, []),
    ],
)
def test_a_latent_selection_lists_the_rows_chosen_once_each(state, rows):
    assert events.selected_rows(state, 3000) == rows


def test_the_latent_map_row_is_the_test_image_and_its_tooltip_shows_it():
    points = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 10
    images = np.random.default_rng(1).random((30, 28, 28)).astype(np.float32)
    spec = latent_plots.latent_map(points, labels, plots.image_urls(images))
    frame = spec["dataset"]["source"]
    assert list(frame["index"]) == list(range(30))  # row i is test image i: selected_rows' indices
    assert list(frame["class"]) == [CLASS_NAMES[c] for c in labels]
    assert np.allclose(frame[["x", "y"]].to_numpy(), points)
    assert "{@image}" in spec["tooltip"]["formatter"] and spec["series"][0]["selectedMode"]
    decoded = prepare_data_url(frame["image"].iloc[7])  # the tooltip's picture is that image
    assert decoded.shape == (28, 28)
    assert spec["visualMap"]["categories"] == list(CLASS_NAMES) and spec["brush"]


def test_a_mosaic_tiles_images_in_rows():
    images = np.stack([np.full((28, 28), i / 10, dtype=np.float32) for i in range(8)])
    sheet = plots.mosaic(images, columns=3, scale=1)
    assert sheet.shape == (3 * 29 + 1, 3 * 29 + 1)
    assert sheet[1 + 29 + 5, 1 + 2 * 29 + 5] == pytest.approx(0.5)  # image 5: row 1, column 2
    assert sheet[0, 0] == pytest.approx(0.35)  # the grid line


def test_a_selection_can_be_read_for_one_series_only():
    state = {"selection": {"selected": [{"series_index": 0, "data_indices": [4]}, group([7, 2])]}}
    state["selection"]["selected"][1]["series_index"] = 1
    assert events.selected_rows(state, 10, series=1) == [7, 2]
    assert events.selected_rows(state, 10, series=0) == [4]
    assert events.selected_rows(state, 10) == [4, 7, 2]


def test_the_atlas_draws_each_cell_as_its_decoded_image_sized_by_its_count():
    import pandas as pd

    from fmnist_core.views import Atlas

    cells = pd.DataFrame(
        {
            "row": [0, 1],
            "column": [0, 1],
            "x": [0.25, 0.75],
            "y": [0.25, 0.75],
            "count": [1, 9],
            "class": [3, -1],
        }
    )
    atlas = Atlas(cells, np.zeros((2, 28, 28), np.float32), [np.array([0]), np.arange(1, 10)])
    spec = latent_plots.atlas(atlas, (0.0, 1.0, 0.0, 1.0), size=2)
    tiles, pictures = spec["series"][0]["data"], spec["series"][1]["data"]
    assert [p["symbol"].startswith("image://data:image/png;base64,") for p in pictures] == [True, True]
    assert pictures[1]["symbolSize"] > pictures[0]["symbolSize"]  # nine images against one
    assert [t["name"] for t in tiles] == ["Dress", "cell"]  # the classifier's class; none: a plain cell
    assert spec["series"][1]["selectedMode"] == "single" and spec["series"][0]["silent"]
    assert spec["xAxis"]["min"] < 0 < 1 < spec["xAxis"]["max"]


@pytest.mark.parametrize(
    "selection, x",
    [
        ({"points": [{"x": 64, "y": 0.01, "curve_number": 0}]}, 64),
        ({"points": [{"x": 2.0}, {"x": 512}]}, 512),  # the latest click
        ({"points": []}, None),
        ({"points": [{"y": 3}]}, None),
        ({"points": [{"x": "64"}]}, None),
        ({"points": [{"x": float("nan")}]}, None),
        ({}, None),
        (None, None),
    ],
)
def test_a_sweep_click_names_the_latent_size_or_nothing(selection, x):
    assert events.clicked_x(selection) == x
