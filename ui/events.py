"""Chart events to data indices: pure functions (no Streamlit), each tested in tests/test_events.py.

A chart's selection arrives as plain data (dicts and lists, as Streamlit passes Vega-Lite's and
ECharts' selections on); these functions read it defensively, so a selection of another shape
(cleared, a shift-click of several cells, a stale event after the chart changed) means "nothing
chosen", never a wrong cell.
"""

from __future__ import annotations

from collections.abc import Mapping

CELL = "cell"  # the confusion heatmap's point-selection parameter
UNIT = "unit"  # a layer chart's point selection: the unit clicked (ui.unit_plots.unit_grid, unit_bars)


def _points(selection: Mapping | None, name: str) -> list:
    """The points a Vega-Lite point selection `name` holds (one point may come unlisted), or []."""
    points = selection.get(name) if isinstance(selection, Mapping) else None
    if isinstance(points, Mapping):
        points = [points]
    return points if isinstance(points, list) else []


def confusion_cell(selection: Mapping | None, classes: int = 10) -> tuple[int, int] | None:
    """The (true, predicted) class indices of the confusion cell last clicked, or None."""
    for point in reversed(_points(selection, CELL)):  # with shift-clicks, the latest cell counts
        if not isinstance(point, Mapping):
            continue
        try:
            true, predicted = int(point["true_index"]), int(point["predicted_index"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= true < classes and 0 <= predicted < classes:
            return true, predicted
    return None


def selected_rows(state: Mapping | None, rows: int, series: int | None = None) -> list[int]:
    """The dataset rows an ECharts selection holds (clicked points, then brushed ones), in order, once
    each; rows outside [0, rows) (a selection left from a larger chart) are dropped. `series`: only
    that series' selection."""
    if not isinstance(state, Mapping):
        return []
    selection = state.get("selection")
    groups = selection.get("selected") if isinstance(selection, Mapping) else None
    if not isinstance(groups, list):
        return []
    chosen: dict[int, None] = {}
    for group in groups:
        if series is not None and isinstance(group, Mapping) and group.get("series_index") != series:
            continue
        indices = group.get("data_indices") if isinstance(group, Mapping) else None
        for index in indices if isinstance(indices, list) else []:
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < rows:
                chosen[index] = None
    return list(chosen)


def clicked_x(selection: Mapping | None) -> int | None:
    """The x of the point last clicked on a plotly chart (as an int: the sweep's latent size), or None."""
    if not isinstance(selection, Mapping):
        return None
    points = selection.get("points")
    if not isinstance(points, list):
        return None
    for point in reversed(points):
        x = point.get("x") if isinstance(point, Mapping) else None
        if isinstance(x, int | float) and not isinstance(x, bool) and x == x:
            return int(x)
    return None


def clicked_unit(selection: Mapping | None, units: int) -> int | None:
    """The unit last clicked on a layer chart (unit_plots.UNIT's point selection), or None; a unit outside
    [0, units) (a click left from a wider layer) is no unit."""
    for point in reversed(_points(selection, UNIT)):
        unit = point.get("unit") if isinstance(point, Mapping) else None
        if (
            isinstance(unit, int | float)
            and not isinstance(unit, bool)
            and unit == unit
            and 0 <= unit < units
        ):
            return int(unit)
    return None
