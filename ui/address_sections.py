"""The inside page's address: ?run=ID&layer=NAME&unit=K (&tab=, bound to the tabs; &beside=ID),
read when the page opens and whenever the browser's Back or Forward brings another, written as the
view changes (each change a step Back returns to)."""

from __future__ import annotations

import streamlit as st

from fmnist_core.analysis.inside import Layer
from fmnist_core.base.settings import shown
from fmnist_core.store.cache import ids_named, why_not_named
from ui import keys
from ui.unit_sections import describe, walk_to

ADDRESS = ("run", "layer", "unit")  # the page's address: ?run=ID&layer=NAME&unit=K (&tab=, bound to the tabs)
UNIT_TAB = "One unit up close"


def read_address(labels: dict[str, str]) -> None:
    """The page's address, the first time and whenever it is not the one the page last wrote (the
    browser's Back or Forward, or an address typed): its run picked (by id, or an id's first 6+
    characters), its layer and unit kept until that run's layers are known (follow_address)."""
    run, layer, unit = (st.query_params.get(name) for name in ADDRESS)
    if keys.INSIDE_ADDRESS in st.session_state and (run, layer, unit) == st.session_state.get(
        keys.INSIDE_WRITTEN
    ):
        return
    st.session_state[keys.INSIDE_ADDRESS] = None
    if run is None:
        if layer is not None or unit is not None:
            note("The link names a layer or a unit but no run (&run=ID): the page shows its own choice.")
        return
    found, problem = run_named(run, labels)
    if found is None:
        note(f"The link's run {shown(run)} {problem}: the page shows another run.")
        return
    st.session_state[keys.INSIDE_RUN] = found
    st.session_state[keys.INSIDE_ADDRESS] = (labels[found], layer, unit)
    if layer is not None and keys.INSIDE_OPENED_AT_UNIT not in st.session_state:
        # A unit's address opens its view: the tabs' default for the session (unit_tab_default). A
        # bound tab cannot be set from here once drawn, and follows its default where the address
        # names no tab (Back to the link first opened).
        st.session_state[keys.INSIDE_OPENED_AT_UNIT] = True


def run_named(asked: str, labels: dict[str, str]) -> tuple[str | None, str | None]:
    """(the label of the run an address's id names, None) or (None, why it names none)."""
    found = ids_named(asked, labels.values())
    problem = why_not_named(asked, found)
    return (
        (next(label for label, run_id in labels.items() if run_id == found[0]), None)
        if problem is None
        else (None, problem)
    )


def note(text: str) -> None:
    """Something wrong with the page's address, said on this render (show_notes)."""
    st.session_state.setdefault(keys.INSIDE_NOTES, []).append(text)


def show_notes(where) -> None:
    """The address's problems found on this render, as warnings in `where` (a container at the page's top)."""
    for text in st.session_state.pop(keys.INSIDE_NOTES, []):
        where.warning(text, icon=":material/link_off:")


def check_tab(tabs: list[str]) -> None:
    """A link's &tab= that names none of the page's tabs is said (the tabs open at their default)."""
    asked = st.query_params.get(keys.INSIDE_TAB)
    if asked is not None and asked not in tabs:
        why = (
            "it needs a run beside: &beside=ID"
            if asked == "Matched units"
            else "its tabs: " + ", ".join(tabs)
        )
        note(f"The link's tab {shown(asked)} is not a tab of this page ({why}).")


def pick_layer(run_id: str, layers: list[Layer]) -> Layer:
    """The unit view's layer: the one picked last for this run (coming back to a run finds it), else
    its first rectified layer."""
    choices = {describe(layer): layer for layer in layers}
    if st.session_state.get(keys.INSIDE_LAYER) not in choices:  # another run's layer, or none yet
        last = st.session_state.get(keys.layer_of(run_id))
        first = next((text for text, layer in choices.items() if layer.rectified), next(iter(choices)))
        st.session_state[keys.INSIDE_LAYER] = last if last in choices else first
    text = st.selectbox("Layer", list(choices), key=keys.INSIDE_LAYER)
    st.session_state[keys.layer_of(run_id)] = text
    return choices[text]


def unit_tab_default() -> str | None:
    """The tab a link without &tab= opens: the unit's view where the session began at a unit's address."""
    return UNIT_TAB if st.session_state.get(keys.INSIDE_OPENED_AT_UNIT) else None


BESIDE = "beside"  # the address's second run: ?beside=ID


def read_beside(labels: dict[str, str], chosen: str) -> None:
    """Once a session, the address's run beside (an id or its first 6+ characters), into its picker."""
    if keys.INSIDE_BESIDE in st.session_state:
        return
    asked = st.query_params.get(BESIDE)
    found, problem = run_named(asked, labels) if asked else (None, None)
    if asked and found == chosen:
        note(f"The link's run beside ({shown(asked)}) is the run itself: nothing is put beside it.")
    elif asked and found is None:
        note(f"The link's run beside ({shown(asked)}) {problem}.")
    st.session_state[keys.INSIDE_BESIDE] = found if found not in (None, chosen) else "(none)"


def write_beside(run_id: str | None) -> None:
    """The run beside, in the page's URL (or none)."""
    if run_id is None:
        if BESIDE in st.query_params:
            del st.query_params[BESIDE]
    elif st.query_params.get_all(BESIDE) != [run_id]:
        st.query_params[BESIDE] = run_id


def follow_address(run_id: str, layers: list[Layer]) -> None:
    """The address's layer and unit, once its run is shown (a wrong one is said, and left out)."""
    asked = st.session_state.get(keys.INSIDE_ADDRESS)
    if not isinstance(asked, tuple) or asked[0] != run_id:
        return
    st.session_state[keys.INSIDE_ADDRESS] = None
    _, name, unit = asked
    by_name = {layer.name: layer for layer in layers}
    if name is None:
        if unit is not None:
            note(f"The link's unit {shown(unit)} needs its layer (&layer=...): left out.")
        return
    if name not in by_name:
        note(f"The link's layer {shown(name)} is not a layer of this run (its layers: {', '.join(by_name)}).")
        return
    layer = by_name[name]
    # decimal digits of any script, as int() and the command line read them (not '²', not 10**5000)
    digits = unit is not None and unit.isdecimal() and len(unit) <= 6
    number = int(unit) if digits and int(unit) < layer.units else None
    if unit is not None and number is None:
        note(f"The link's unit {shown(unit)} is not a unit of {name} (0 to {layer.units - 1}).")
    walk_to(run_id, layer, number)


def write_address(run_id: str, layer: Layer, unit: int) -> None:
    """The unit shown, in the page's URL: a link to it reopens it, and each change is a step the
    browser's Back button returns to (Streamlit pushes a history entry per change of the URL)."""
    given = [st.query_params.get_all(name) for name in ADDRESS]
    short = (
        given[0]
        if len(given[0]) == 1 and len(given[0][0]) >= 6 and run_id.startswith(given[0][0])
        else [run_id]
    )
    address = (short[0], layer.name, str(unit))  # a link's short id stays: no second step for the same view
    if given != [[value] for value in address]:  # &unit=3&unit=9: written back with one
        st.query_params.update(dict(zip(ADDRESS, address, strict=True)))  # one change, one step back
    st.session_state[keys.INSIDE_WRITTEN] = address
