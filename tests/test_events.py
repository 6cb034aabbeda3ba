"""Chart events to indices: the pure functions behind every clickable chart."""

import json

import numpy as np
import pytest

from fmnist_core.data import CLASS_NAMES
from ui import events, plots


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
