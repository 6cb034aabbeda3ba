"""A model's sidebar form, drawn from its settings' `knob` fields alone (label, options or range,
group, when it applies): a model registered with knobs gets its form on every page without an edit
here. Recipes set the same widgets."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from typing import Any

import pandas as pd
import streamlit as st

from fmnist_core.models import get_spec, list_models
from fmnist_core.runs.recipes import get_recipe, list_recipes
from fmnist_core.studies.presets import recipe_preset, setting_presets
from ui import keys
from ui.runs import run_label
from ui.widgets import RUN_KEYS, TRAINING_IMAGES, kept, radio_row


class NoRunToBuildOn(LookupError):
    """A setting names a cached run of some capability and none is cached."""

    def __init__(self, needs: str):
        super().__init__(needs)
        self.needs = needs


def architecture(kind: str, key: str, runs: pd.DataFrame | None = None) -> str:
    """A choice among the registered models of a kind, each with its description's first words.
    Given `runs`, it starts on the model of the best of them of that kind, else on the first that
    can train now (an MLP while the starter set's autoencoder still trains, not a classifier
    waiting for it); else on the first registered."""
    names = list_models(kind)
    if runs is None or runs.empty:
        runs = pd.DataFrame({"model": [], "reconstructs": []})
    mine = runs[runs["model"].isin(names)]
    encoder_here = bool(runs.get("reconstructs", pd.Series(dtype=bool)).fillna(False).astype(bool).any())
    buildable = [name for name in names if encoder_here or not get_spec(name).needs_encoder]
    start = mine["model"].iloc[0] if not mine.empty else (buildable or names)[0]
    return kept(
        st.selectbox,
        "Architecture",
        key,
        start,
        options=names,
        format_func=lambda name: f"{name} — {get_spec(name).description.split(':')[0]}",
    )


def form_fields(model: str) -> list[Field]:
    return [f for f in fields(get_spec(model).settings_type) if "label" in f.metadata]


def start_value(f: Field) -> Any:
    """Where the form starts: the knob's `start`, else the setting's default."""
    return f.metadata.get("start", f.default if f.default is not MISSING else None)


def model_form(model: str, runs: pd.DataFrame) -> dict[str, Any]:
    """The model's settings as the sidebar's widgets set them; NoRunToBuildOn where a setting needs
    a cached run that is not there. Knobs in a `group` sit in an expander of that name."""
    values: dict[str, Any] = {}
    groups: dict[str, list[Field]] = {}
    for f in form_fields(model):
        groups.setdefault(f.metadata.get("group", ""), []).append(f)
    for group, members in groups.items():
        if group:
            with st.expander(group, expanded=False):
                values |= {f.name: knob_widget(model, f, values, runs) for f in members if applies(f, values)}
        else:
            values |= {f.name: knob_widget(model, f, values, runs) for f in members if applies(f, values)}
    return values


def applies(f: Field, values: dict) -> bool:
    when = f.metadata.get("when")
    return when is None or values.get(when[0], when[1]) == when[1]


def per_element(f: Field) -> bool:
    """A tuple setting offered one widget per element (channels 1 and 2), not one choice of tuples."""
    options = f.metadata.get("options")
    return isinstance(f.default, tuple) and bool(options) and not isinstance(options[0], tuple)


def knob_widget(model: str, f: Field, values: dict, runs: pd.DataFrame) -> Any:
    meta, key, start = f.metadata, f"{model}:{f.name}", start_value(f)
    label, options, help = meta["label"], meta.get("options"), meta.get("help")
    widget = meta.get("widget")
    if widget == "run":
        return run_picker(label, key, meta["needs"], runs)
    if widget == "lines":
        return lines_widget(model, f, key)
    if isinstance(start, bool):
        return kept(st.toggle, label, key, start, help=help)
    if per_element(f):
        columns = st.columns(len(start))
        picked = []
        for i, (column, value) in enumerate(zip(columns, start, strict=True)):
            with column:
                picked.append(each_widget(f"{label} {i + 1}", f"{key}:{i + 1}", value, options, help))
        return tuple(picked)
    if options is not None:
        return each_widget(label, key, start, options, help)
    step = meta.get("step", 1 if isinstance(start, int) else 0.05)
    return kept(
        st.slider, label, key, start, min_value=meta["low"], max_value=meta["high"], step=step, help=help
    )


def each_widget(label: str, key: str, start: Any, options, help: str | None) -> Any:
    if all(isinstance(option, str) for option in options):
        return radio_row(label, key, start, options, help)
    if isinstance(options[0], tuple):
        # By name: select_slider reads a tuple value as a range's two ends (a ResNet's (16, 32, 64)
        # came back as ((8,), (64, 128, 256)) and the form refused it); a name also reads from a link.
        named = {" → ".join(map(str, option)): option for option in options}
        picked = kept(
            st.select_slider, label, key, " → ".join(map(str, start)), options=list(named), help=help
        )
        return named[picked]
    return kept(
        st.select_slider, label, key, start, options=options, format_func=lambda v: f"{v:g}", help=help
    )


def run_picker(label: str, key: str, needs: str, runs: pd.DataFrame) -> str:
    """A cached run with the capability `needs`, the one last picked or trained first."""
    usable = runs[runs[needs].fillna(False).astype(bool)] if needs in runs else runs.iloc[0:0]
    if usable.empty:
        raise NoRunToBuildOn(needs)
    choices = {run_label(row): row["run_id"] for _, row in usable.iterrows()}
    labels = list(choices)
    preferred = st.session_state.get(keys.picked(needs))
    start = next((name for name, run_id in choices.items() if run_id == preferred), labels[0])
    choice = kept(st.selectbox, label, key, start, options=labels)
    return choices.get(choice, choices[labels[0]])


def lines_widget(model: str, f: Field, key: str) -> tuple[str, ...]:
    """A list of strings as lines of text, started from one of the setting's presets."""
    default = ",".join(f.default)
    presets = setting_presets(model, f.name)
    if default not in presets.values():
        presets = {"the default": default, **presets}
    start = next(name for name, value in presets.items() if value == default)
    preset = kept(st.selectbox, "Start from", f"{key}:preset", start, options=list(presets))
    text = st.text_area(
        f.metadata["label"],
        value="\n".join(presets.get(preset, default).split(",")),
        height=180,
        key=f"{key}:{preset}",
        help=f.metadata.get("help"),
    )
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def recipe_values(name: str, run_prefix: str) -> dict[str, Any]:
    """The kept widget keys a named recipe sets, with its values."""
    recipe = get_recipe(name)
    values = {f"{run_prefix}:{recipe.model}:{RUN_KEYS[s]}": v for s, v in recipe.run.items() if s in RUN_KEYS}
    for f in form_fields(recipe.model):
        if f.name not in recipe.settings:
            continue
        value = recipe.settings[f.name]
        key = f"{recipe.model}:{f.name}"
        if f.metadata.get("widget") == "lines":
            values[f"{key}:preset"] = recipe_preset(name)
        elif per_element(f):
            values |= {f"{key}:{i + 1}": item for i, item in enumerate(value)}
        else:
            values[key] = value
    return values


def recipe_buttons(model: str, run_prefix: str) -> None:
    """A button per named recipe of the model, setting the widgets below it (call it before them)."""
    for name in list_recipes(model):
        if st.button(f"Use the {name} recipe", help=get_recipe(name).description, width="stretch"):
            for key, value in recipe_values(name, run_prefix).items():
                st.session_state[keys.kept(key)] = value
            st.rerun()


def start_from_starter(starter, run_prefix: str) -> None:
    """The widgets below start at the starter set's run of the model (its recipe's values, its
    epochs and images), where neither this session nor the page's link has set them (call it
    before them): a newcomer's page opens on the run the lab trained for them."""
    if starter is None:
        return
    config = starter.config
    values = recipe_values(starter.recipe, run_prefix) if starter.recipe else {}
    images = {count: label for label, count in TRAINING_IMAGES.items()}[config.train_subset]
    values |= {
        f"{run_prefix}:{config.model}:epochs": config.epochs,
        f"{run_prefix}:{config.model}:images": images,
    }
    for key, value in values.items():
        if keys.kept(key) not in st.session_state and key not in st.query_params:
            st.session_state[keys.kept(key)] = value
