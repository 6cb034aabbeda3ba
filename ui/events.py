"""Chart events to data indices: pure functions (no Streamlit), each tested in tests/test_events.py.

A chart's selection arrives as plain data (dicts and lists, as Streamlit passes Vega-Lite's and
ECharts' selections on); these functions read it defensively, so a selection of another shape
(cleared, a shift-click of several cells, a stale event after the chart changed) means "nothing
chosen", never a wrong cell.
"""

from __future__ import annotations

from collections.abc import Mapping

CELL = "cell"  # the confusion heatmap's point-selection parameter


def confusion_cell(selection: Mapping | None, classes: int = 10) -> tuple[int, int] | None:
    """The (true, predicted) class indices of the confusion cell last clicked, or None."""
    if not isinstance(selection, Mapping):
        return None
    points = selection.get(CELL)
    if isinstance(points, Mapping):
        points = [points]
    if not isinstance(points, list):
        return None
    for point in reversed(points):  # with shift-clicks, the latest cell counts
        if not isinstance(point, Mapping):
            continue
        try:
            true, predicted = int(point["true_index"]), int(point["predicted_index"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= true < classes and 0 <= predicted < classes:
            return true, predicted
    return None
