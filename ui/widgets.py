"""Sidebar inputs that build RunConfigs; values persist across pages outside widget keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from fmnist_core.config import AUGMENTS, OPTIMIZERS, PRECISIONS, SCHEDULES, TEST_TIME_AUGMENTS, RunConfig
from fmnist_core.models import (
    ConvAutoencoderSettings,
    EncoderClassifierSettings,
    MLPSettings,
    ResNetSettings,
    get_spec,
)
from fmnist_core.recipes import RECIPES, get_recipe
from fmnist_core.reports.s1 import ROWS as S1_ROWS
from fmnist_core.starter import DEFAULT_HEAD

LEARNING_RATES = (1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
BATCH_SIZES = (8, 16, 32, 64, 100, 128, 256, 512)
TRAINING_IMAGES = {"all 60,000": 0, "20,000": 20_000, "10,000": 10_000, "5,000": 5_000, "2,000": 2_000}


def kept(widget: Callable, label: str, key: str, default: Any, **kwargs) -> Any:
    """A widget whose value survives page switches (stored under a key no widget owns) and lives in
    the page's URL too (?key=value), so that a link reopens the same view."""
    store, widget_key = f"keep:{key}", f"widget:{key}"
    if store not in st.session_state:  # a new session: the link's value, where it is a valid one
        text = st.query_params.get(key)
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
    if isinstance(value, str | int | float) and st.query_params.get(key) != str(value):
        st.query_params[key] = str(value)
    return value


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


def recipe_preset(name: str) -> str:
    """The name a cnn recipe's layer list has among the layer presets."""
    return f"{name} (the lab's recipe)"


# Where run_settings / autoencoder_settings keep each value (the key after the prefix).
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
}
AUTOENCODER_KEYS = {
    "n": "n",
    "dropout": "dropout",
    "output_dropout": "outdrop",
    "batchnorm": "bn",
    "linear": "linear",
    "latent_activation": "latact",
    "pca_path": "pca",
}


def recipe_values(name: str, run_prefix: str, settings_prefix: str = "ae") -> dict[str, Any]:
    """The kept widget keys a named recipe sets, with its values."""
    recipe = get_recipe(name)
    run_key = f"{run_prefix}:{recipe.model}"
    values = {f"{run_key}:{RUN_KEYS[s]}": v for s, v in recipe.run.items() if s in RUN_KEYS}
    values |= {
        f"{settings_prefix}:{AUTOENCODER_KEYS[s]}": v
        for s, v in recipe.settings.items()
        if s in AUTOENCODER_KEYS
    }
    if recipe.model == "cnn":
        values["cnn:preset"] = recipe_preset(name)
    return values


def recipe_button(name: str, run_prefix: str, settings_prefix: str = "ae") -> None:
    """A button that sets the widgets below it to a named fast recipe (call it before them)."""
    if not st.button(f"Use the {name} recipe", help=get_recipe(name).description, width="stretch"):
        return
    for key, value in recipe_values(name, run_prefix, settings_prefix).items():
        st.session_state[f"keep:{key}"] = value
    st.rerun()


def start_from_recipe(name: str, run_prefix: str, settings_prefix: str = "ae") -> None:
    """The widgets below start at a recipe's values, where neither this session nor the page's link
    has set them (call it before them)."""
    for key, value in recipe_values(name, run_prefix, settings_prefix).items():
        if f"keep:{key}" not in st.session_state and key not in st.query_params:
            st.session_state[f"keep:{key}"] = value


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
        images = kept(
            st.selectbox,
            "Training images",
            f"{key}:images",
            "all 60,000",
            options=list(TRAINING_IMAGES),
            help="Fewer images train faster, for a quick look.",
        )
        values["train_subset"] = TRAINING_IMAGES[images]
        values["seed"] = kept(
            st.number_input, "Seed", f"{key}:seed", 0, min_value=0, max_value=2**31 - 1, step=1
        )
        values["schedule"] = radio_row(
            "Learning-rate schedule", f"{key}:schedule", recipe["schedule"], SCHEDULES
        )
        values["weight_decay"] = kept(
            st.select_slider,
            "Weight decay",
            f"{key}:wd",
            recipe["weight_decay"],
            options=(0.0, 1e-5, 1e-4, 5e-4, 1e-3, 1e-2),
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
        if values["optimizer"] == "sgd":
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
                options=("cross_entropy", "kl_div", "mse_onehot"),
            )
            if values["loss"] == "cross_entropy":
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
                "flip: random mirror images; flip_shift: also moved by up to 2 pixels each way.",
            )
            values["tta"] = radio_row(
                "Test-time augmentation",
                f"{key}:tta",
                recipe["tta"],
                TEST_TIME_AUGMENTS,
                "flip: each test image and its mirror are classified, their logits averaged.",
            )
    return values


def autoencoder_settings(prefix: str = "ae") -> dict[str, Any]:
    """Every knob of the S0/S2/S4 autoencoder, starting at S0's."""
    d = ConvAutoencoderSettings()
    s: dict[str, Any] = {}
    s["n"] = kept(st.slider, "Latent size n", f"{prefix}:n", d.n, min_value=2, max_value=512)
    s["dropout"] = kept(
        st.slider, "Dropout p", f"{prefix}:dropout", d.dropout, min_value=0.0, max_value=0.7, step=0.05
    )
    with st.expander("Architecture", expanded=False):
        s["output_dropout"] = kept(
            st.toggle, "Dropout after the output Sigmoid (S0)", f"{prefix}:outdrop", d.output_dropout
        )
        s["batchnorm"] = kept(st.toggle, "BatchNorm before pooling (S2)", f"{prefix}:bn", d.batchnorm)
        s["linear"] = kept(st.toggle, "Middle linear layer (S4 removes it)", f"{prefix}:linear", d.linear)
        s["latent_activation"] = kept(
            st.radio,
            "Activation on the code",
            f"{prefix}:latact",
            d.latent_activation,
            options=("relu", "none"),
            horizontal=True,
        )
        s["pca_path"] = (
            kept(
                st.toggle,
                "Linear path started at PCA",
                f"{prefix}:pca",
                d.pca_path,
                disabled=not s["linear"],
                help="A linear encoder/decoder beside the conv one, set to the top-n principal components: "
                "training starts at PCA's reconstruction and the conv path learns what PCA misses.",
            )
            and s["linear"]
        )
        first, second = st.columns(2)
        with first:
            pool_1 = kept(st.selectbox, "Pooling 1", f"{prefix}:pool1", d.pooling[0], options=("max", "avg"))
            channels_1 = kept(
                st.select_slider,
                "Channels 1",
                f"{prefix}:ch1",
                d.channels[0],
                options=(8, 16, 32, 64, 96, 128),
            )
        with second:
            pool_2 = kept(st.selectbox, "Pooling 2", f"{prefix}:pool2", d.pooling[1], options=("max", "avg"))
            channels_2 = kept(
                st.select_slider,
                "Channels 2",
                f"{prefix}:ch2",
                d.channels[1],
                options=(8, 16, 32, 64, 96, 128),
            )
        s["pooling"] = (pool_1, pool_2)
        s["channels"] = (channels_1, channels_2)
    return s


def s1_presets() -> dict[str, str]:
    """Layer lists to start from: S1's nine rows and the lab's CNN recipes."""
    presets = {f"S1 row {i}": layers for i, (*_, layers, _accuracy, _minutes) in enumerate(S1_ROWS, start=1)}
    for name, recipe in RECIPES.items():
        if recipe.model == "cnn":
            presets[recipe_preset(name)] = ",".join(recipe.settings["layers"])
    return presets


def classifier_model_settings(model: str, autoencoders: dict[str, str]) -> dict[str, Any] | None:
    """Settings of the chosen classifier; None when an encoder is needed but none is cached."""
    s: dict[str, Any] = {}
    if model == "encoder_classifier":
        d = EncoderClassifierSettings()
        if not autoencoders:
            return None
        labels = list(autoencoders)
        default = st.session_state.get("selected_autoencoder")
        start = next((label for label, rid in autoencoders.items() if rid == default), labels[0])
        choice = kept(st.selectbox, "Encoder (a cached autoencoder)", "cls:encoder", start, options=labels)
        if choice not in autoencoders:
            choice = labels[0]
        s["encoder_run"] = autoencoders[choice]
        s["freeze_encoder"] = kept(
            st.toggle, "Freeze the encoder (train the head only)", "cls:frozen", d.freeze_encoder
        )
        # S0's head puts a ReLU and a dropout on the logits: measured on a p=0 encoder it learns poorly
        # (0.39 test accuracy after 10 epochs), so the page starts from S2's wide head.
        s["head"] = kept(
            st.radio,
            "Head",
            "cls:head",
            DEFAULT_HEAD,
            options=("s0", "fc", "wide"),
            horizontal=True,
            help="s0: Linear+ReLU+Dropout on the logits, as S0 wrote it (learns poorly here) · "
            "fc: one Linear (S2) · wide: a hidden layer (S2)",
        )
        if s["head"] == "wide":
            s["head_hidden"] = kept(
                st.select_slider,
                "Hidden units",
                "cls:hidden",
                d.head_hidden,
                options=(64, 128, 256, 512, 1024),
            )
        s["dropout"] = kept(
            st.slider, "Head dropout", "cls:dropout", d.dropout, min_value=0.0, max_value=0.7, step=0.05
        )
    elif model == "mlp":
        d = MLPSettings()
        s["n1"] = kept(st.select_slider, "n1", "mlp:n1", d.n1, options=(32, 64, 128, 256, 512, 1024))
        s["n2"] = kept(st.select_slider, "n2", "mlp:n2", d.n2, options=(16, 32, 64, 128, 256, 512))
        s["dropout"] = kept(
            st.slider, "Dropout", "mlp:dropout", d.dropout, min_value=0.0, max_value=0.7, step=0.05
        )
    elif model == "cnn":
        presets = s1_presets()
        preset = kept(st.selectbox, "Start from", "cnn:preset", "S1 row 9", options=list(presets))
        text = st.text_area(
            "Layers, one per line",
            value="\n".join(presets[preset].split(",")),
            height=180,
            key=f"cnn:layers:{preset}",
            help="conv:FILTERS:KERNEL:same|valid:relu|tanh · maxpool:2 · avgpool:2 · bn · dropout:P · dense:UNITS:relu|tanh",
        )
        s["layers"] = tuple(line.strip() for line in text.splitlines() if line.strip())
    elif model == "resnet":
        d = ResNetSettings()
        stages = kept(st.select_slider, "Stages", "resnet:stages", len(d.channels), options=(1, 2, 3))
        width = kept(
            st.select_slider,
            "Channels of the first stage",
            "resnet:width",
            d.channels[0],
            options=(8, 16, 32, 64),
        )
        s["channels"] = tuple(width * 2**i for i in range(stages))
        s["blocks"] = kept(
            st.slider, "Identity blocks per stage", "resnet:blocks", d.blocks, min_value=0, max_value=3
        )
        s["dropout"] = kept(
            st.slider, "Dropout", "resnet:dropout", d.dropout, min_value=0.0, max_value=0.7, step=0.05
        )
    return s


def build_config(model: str, settings: dict, run: dict) -> RunConfig:
    """The config, or a clear message in the page and a stop when a setting is invalid."""
    try:
        return RunConfig.for_model(model, settings, **run)
    except ValueError as error:
        st.error(f"Invalid setting — {error}")
        st.stop()
