"""The sweep page's sections: the knobs a sweep can vary (read from the same knob metadata and
option lists as the model's own form), a range widget for each, and a sweep's progress."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from fmnist_core.studies.hpsearch import Param
from fmnist_core.training.config import OPTIMIZERS, SCHEDULES
from ui.forms import form_fields, per_element, start_value
from ui.widgets import BATCH_SIZES, LEARNING_RATES, WEIGHT_DECAYS


@dataclass(frozen=True)
class Knob:
    name: str
    label: str
    options: tuple = ()  # a list to pick from (numbers on a log scale where `log`)
    low: float | None = None  # else a slider's range
    high: float | None = None
    step: float | None = None
    log: bool = False


RUN_KNOBS = (
    Knob("lr", "Learning rate", LEARNING_RATES, log=True),
    Knob("batch_size", "Batch size", BATCH_SIZES),
    Knob("optimizer", "Optimizer", OPTIMIZERS),
    Knob("weight_decay", "Weight decay", WEIGHT_DECAYS),
    Knob("schedule", "Learning-rate schedule", SCHEDULES),
)


def knobs(model: str) -> dict[str, Knob]:
    """What a sweep of `model` can vary: the run's knobs, then the model form's (a knob that picks
    a run, a list of lines or one value per element is left out)."""
    found = {knob.name: knob for knob in RUN_KNOBS}
    for f in form_fields(model):
        meta = f.metadata
        if meta.get("widget") in ("run", "lines") or per_element(f):
            continue
        start = start_value(f)
        if isinstance(start, bool):
            found[f.name] = Knob(f.name, meta["label"], (False, True))
        elif meta.get("options") is not None:
            found[f.name] = Knob(f.name, meta["label"], tuple(meta["options"]))
        elif "low" in meta:
            step = meta.get("step", 1 if isinstance(start, int) else 0.05)
            found[f.name] = Knob(f.name, meta["label"], low=meta["low"], high=meta["high"], step=step)
    return found


def sweepable(model: str) -> bool:
    """A model whose every setting has a default (an encoder classifier needs a run picked first)."""
    return not any(f.metadata.get("widget") == "run" for f in form_fields(model))


def range_widget(knob: Knob, key: str) -> Param | None:
    """The knob's range or choices as a sweep parameter; None until two values are picked."""
    if knob.options and knob.log:  # numbers on a log scale: a continuous range between two of them
        low, high = st.select_slider(
            knob.label,
            knob.options,
            value=(knob.options[0], knob.options[-1]),
            key=key,
            format_func=lambda v: f"{v:g}",
        )
        return Param(knob.name, low, high, log=True) if low < high else None
    if knob.options:
        chosen = st.multiselect(knob.label, knob.options, default=list(knob.options[:2]), key=key)
        return Param(knob.name, choices=tuple(chosen)) if len(chosen) >= 2 else None
    integer = all(float(v).is_integer() for v in (knob.low, knob.high, knob.step))
    kind = int if integer else float
    low, high = st.slider(
        knob.label,
        kind(knob.low),
        kind(knob.high),
        value=(kind(knob.low), kind(knob.high)),
        step=kind(knob.step),
        key=key,
    )
    return Param(knob.name, low, high, integer=integer) if low < high else None


def trials_frame(study) -> pd.DataFrame:
    """The trials as the page lists them: newest first, states in words."""
    from fmnist_core.studies.hpsearch import trials_table

    table = trials_table(study)
    if table.empty:
        return table
    table = table.assign(state=table["state"].str.lower())
    if "duration" in table:
        seconds = pd.to_timedelta(table["duration"], errors="coerce").dt.total_seconds().round(1)
        table = table.assign(seconds=seconds).drop(columns="duration")
    return table.sort_values("number", ascending=False)


def epochs_skipped(table: pd.DataFrame, plan: dict) -> tuple[int, int] | None:
    """(epochs the pruner spared, epochs the finished and pruned trials would have trained in all)."""
    epochs = dict(plan.get("fixed", {})).get("epochs")
    if table.empty or not epochs or "pruned_at_epoch" not in table:
        return None
    ended = table[table["state"].isin(["complete", "pruned"])]
    spared = int((epochs - ended["pruned_at_epoch"].dropna()).clip(lower=0).sum())
    return (spared, int(epochs * len(ended))) if spared else None
