"""Sidebar inputs that build RunConfigs; values persist across pages outside widget keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from fmnist_core.analysis.losses import get_loss, losses_for
from fmnist_core.base import environment
from fmnist_core.models import get_spec
from fmnist_core.training.config import (
    AUGMENTS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TEST_TIME_AUGMENTS,
    RunConfig,
)
from ui import keys

LEARNING_RATES = (1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
BATCH_SIZES = (8, 16, 32, 64, 100, 128, 256, 512)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 5e-4, 1e-3, 1e-2)
TRAINING_IMAGES = {"all 60,000": 0, "20,000": 20_000, "10,000": 10_000, "5,000": 5_000, "2,000": 2_000}


def kept(widget: Callable, label: str, key: str, default: Any, *, in_url: bool = True, **kwargs) -> Any:
    """A widget whose value survives page switches and runs that do not draw it (stored under a key
    no widget owns) and lives in the page's URL too (?key=value; not `in_url`: a session's own), so
    that a link reopens the same view."""
    store, widget_key = keys.kept(key), keys.WIDGET + key
    if store not in st.session_state and not in_url:
        st.session_state[store] = default
    if store not in st.session_state:  # a new session: the link's value, where it is a valid one
        given = st.query_params.get_all(key)
        text = " and ".join(given) if given else None
        if len(given) > 1:  # two answers to one question: neither is taken
            st.session_state[store], accepted = default, False
        else:
            st.session_state[store], accepted = read_url(text, default, kwargs)
        if not accepted:
            st.toast(
                f"The link's {label} ({text[:30]!r}) is not a value this page offers: it shows "
                f"{st.session_state[store]} instead.",
                icon=":material/link_off:",
            )
    st.session_state[widget_key] = st.session_state[store]

    def save() -> None:
        st.session_state[store] = st.session_state[widget_key]

    value = widget(label, key=widget_key, on_change=save, **kwargs)
    # A default is left out of an address that lacks it (it reopens the same view): a first visit adds
    # no second history step (Back did nothing once), and links stay short.
    asked = st.query_params.get(key)
    written = isinstance(value, str | int | float) and (asked is not None or value != default)
    if in_url and written and asked != str(value):
        st.query_params[key] = str(value)
    return value


NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e-?[0-9]+)?", re.ASCII)  # as the widgets write them


def from_url(text: str | None, default: Any, limits: dict) -> Any:
    """A widget value read from the URL, of the default's type and within the widget's options or
    range; the default where the text is absent, malformed or out of bounds."""
    return read_url(text, default, limits)[0]


def read_url(text: str | None, default: Any, limits: dict) -> tuple[Any, bool]:
    """from_url's value, and whether the URL's text was taken (False: there was one, refused)."""
    if text is None or not isinstance(default, str | int | float):
        return default, True
    try:
        if isinstance(default, bool):
            value = {"true": True, "false": False}[text.lower()]
        elif isinstance(default, int | float) and not NUMBER.fullmatch(text):
            return default, False  # int() and float() take "+10", "010", "1_0", " 10"
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, float):
            value = float(text)
        else:
            value = text
    except (KeyError, ValueError):
        return default, False
    options = limits.get("options")
    if options is not None and value not in list(options):
        return default, False
    low, high = limits.get("min_value"), limits.get("max_value")
    if (low is not None and value < low) or (high is not None and value > high) or value != value:
        return default, False
    return value, True


def radio_row(label: str, key: str, default: str, options, help: str | None = None) -> str:
    """A kept horizontal radio: a short list of named choices."""
    return kept(st.radio, label, key, default, options=options, horizontal=True, help=help)


# Where run_settings keeps each value (the key after the prefix and the model).
RUN_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch",
    "lr": "lr",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "weight_decay": "wd",
    "label_smoothing": "ls",
    "augment": "augment",
    "tta": "tta",
    "precision": "precision",
    "whiten": "whiten",
    "dirac": "dirac",
    "bn_bias_lr": "bnlr",
    "ema": "ema",
}
BN_BIAS_RATES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
EMA_DECAYS = (0.0, 0.9, 0.99, 0.999)


def nearest(options, value):
    return min(options, key=lambda option: abs(option - value))


def run_settings(model: str, prefix: str) -> dict[str, Any]:
    """Optimisation and data settings, starting from the model's seed recipe."""
    recipe = RunConfig.for_model(model).to_dict()
    key = f"{prefix}:{model}"
    values: dict[str, Any] = {}
    values["epochs"] = kept(st.slider, "Epochs", f"{key}:epochs", recipe["epochs"], min_value=1, max_value=60)
    values["batch_size"] = kept(
        st.select_slider,
        "Batch size",
        f"{key}:batch",
        nearest(BATCH_SIZES, recipe["batch_size"]),
        options=BATCH_SIZES,
    )
    values["lr"] = kept(
        st.select_slider,
        "Learning rate",
        f"{key}:lr",
        nearest(LEARNING_RATES, recipe["lr"]),
        options=LEARNING_RATES,
        format_func=lambda v: f"{v:g}",
    )
    values["optimizer"] = kept(
        st.selectbox, "Optimizer", f"{key}:optimizer", recipe["optimizer"], options=OPTIMIZERS
    )
    with st.expander("More training settings"):
        values |= more_run_settings(model, key, recipe, values["optimizer"])
    return values


def more_run_settings(model: str, key: str, recipe: dict, optimizer: str) -> dict[str, Any]:
    """The expander's settings: data size, seed, schedule, regularisation, precision, the loss."""
    values: dict[str, Any] = {}
    images = kept(
        st.selectbox,
        "Training images",
        f"{key}:images",
        "all 60,000",
        options=list(TRAINING_IMAGES),
        help="Fewer images train faster, for a quick look.",
    )
    values["train_subset"] = TRAINING_IMAGES[images]
    values["seed"] = kept(st.number_input, "Seed", f"{key}:seed", 0, min_value=0, max_value=2**31 - 1, step=1)
    values["schedule"] = radio_row("Learning-rate schedule", f"{key}:schedule", recipe["schedule"], SCHEDULES)
    values["weight_decay"] = kept(
        st.select_slider,
        "Weight decay",
        f"{key}:wd",
        recipe["weight_decay"],
        options=WEIGHT_DECAYS,
        format_func=lambda v: f"{v:g}",
    )
    values["precision"] = radio_row(
        "Precision",
        f"{key}:precision",
        recipe["precision"],
        PRECISIONS,
        "fp32: as the seed reports trained. bf16: convolutions and matrix products in bfloat16 "
        "while training (weights and evaluation stay fp32); about 1.5x faster for conv nets on a "
        "CPU with AVX-512 BF16 at the same accuracy, slower where bf16 is emulated. auto: bf16 "
        "where the hardware does it natively, else fp32; the run records which it was.",
    )
    if optimizer == "sgd":
        values["momentum"] = kept(
            st.slider,
            "SGD momentum",
            f"{key}:momentum",
            recipe["momentum"],
            min_value=0.0,
            max_value=0.99,
            step=0.01,
        )
    if get_spec(model).kind == "classifier":
        values["loss"] = kept(
            st.selectbox,
            "Loss",
            f"{key}:loss",
            recipe["loss"],
            options=losses_for(get_spec(model).kind),
            format_func=lambda name: get_loss(name).words,
        )
        if get_loss(values["loss"]).smoothing:
            values["label_smoothing"] = kept(
                st.slider,
                "Label smoothing",
                f"{key}:ls",
                recipe["label_smoothing"],
                min_value=0.0,
                max_value=0.3,
                step=0.05,
            )
        values["augment"] = radio_row(
            "Augmentation",
            f"{key}:augment",
            recipe["augment"],
            AUGMENTS,
            "flip: random mirror images; flip_shift: also moved by up to 2 pixels each way; alt_: each image "
            "mirrored on every other epoch instead of at random.",
        )
        values["tta"] = radio_row(
            "Test-time augmentation",
            f"{key}:tta",
            recipe["tta"],
            TEST_TIME_AUGMENTS,
            "flip: each test image and its mirror are classified, their logits averaged; flip_shift: both "
            "also moved one pixel up-left and down-right (six views).",
        )
        values |= speedrun_tricks(key, recipe)
    return values


def speedrun_tricks(key: str, recipe: dict) -> dict[str, Any]:
    """The speedrun's tricks (the Speedrun page's ladder), each a run setting of any classifier."""
    st.caption("The speedrun's tricks")
    values: dict[str, Any] = {}
    values["whiten"] = kept(
        st.toggle,
        "Whitened first conv",
        f"{key}:whiten",
        recipe["whiten"],
        help="The first conv's filters are set from the training images' patches so that its outputs "
        "are decorrelated with unit variance, then frozen (a CNN whose first conv has at most 18 filters).",
    )
    values["dirac"] = kept(
        st.toggle,
        "Convs start as the identity",
        f"{key}:dirac",
        recipe["dirac"],
        help="Each later conv starts by passing its inputs through unchanged (torch's dirac_), the rest as drawn.",
    )
    values["bn_bias_lr"] = kept(
        st.select_slider,
        "BatchNorm biases' learning rate (x)",
        f"{key}:bnlr",
        nearest(BN_BIAS_RATES, recipe["bn_bias_lr"]),
        options=BN_BIAS_RATES,
        format_func=lambda v: f"{v:g}x",
    )
    values["ema"] = kept(
        st.select_slider,
        "Moving average of the weights",
        f"{key}:ema",
        nearest(EMA_DECAYS, recipe["ema"]),
        options=EMA_DECAYS,
        format_func=lambda v: "off" if v == 0 else f"decay {v:g}",
        help="Validation, the test and the kept weights use an exponential moving average of the weights.",
    )
    return values


def build_config(model: str, settings: dict, run: dict) -> RunConfig:
    """The config, or a clear message in the page and a stop when a setting is invalid."""
    run = {"test_subset": environment.scored_test_images(), **run}  # 1,000 at the test scale
    try:
        return RunConfig.for_model(model, settings, **run)
    except ValueError as error:
        st.error(f"Invalid setting — {error}")
        st.stop()
