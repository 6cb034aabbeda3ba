"""RunConfig: one frozen, validated object that drives a training run everywhere."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from fmnist_core.analysis.losses import losses_for
from fmnist_core.base.device import PRECISIONS
from fmnist_core.base.files import checksum
from fmnist_core.base.settings import check_choice, check_int, check_range, coerce, shown
from fmnist_core.data.fashion import REAL_DATA
from fmnist_core.models import build_skeleton, get_spec, make_settings, plan_layers, settings_dict

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adamax")
SCHEDULES = ("constant", "onecycle")
AUGMENTS = ("none", "flip", "flip_shift", "alt_flip", "alt_flip_shift")
TEST_TIME_AUGMENTS = ("none", "flip", "flip_shift")
VALIDATIONS = ("test", "holdout")
# Bumped whenever training changes what a config produces, so old cache entries are not reused.
# 2: the cheaper dropout, channels_last; 3: dropout masks in (N, H, W, C) order, sub-pixel transposed
# conv; 4: compiled kernels whose sums run in another order (ConvPoolReLU, ReLUBatchNorm); 5:
# ReLUBatchNorm and PoolDropout under bf16 autocast too; 6: every draw from the run's own generators
# (weights, order, augmentation, dropout), PCA starts fitted on the run's own training images.
ENGINE_VERSION = 6


@dataclass(frozen=True)
class RunConfig:
    model: str
    settings: dict[str, Any] = field(default_factory=dict)  # the model's own settings
    epochs: int = 10
    batch_size: int = 100  # images per step
    lr: float = 1e-3  # peak learning rate under onecycle
    optimizer: str = "adam"
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    loss: str = ""  # "" -> the model's recipe
    schedule: str = "constant"
    label_smoothing: float = 0.0  # cross_entropy only
    # flip: random horizontal flips; flip_shift: and shifts of up to 2 pixels; alt_*: each image
    # mirrored on every other epoch (which ones first drawn once per run), not at random
    augment: str = "none"
    # flip: classifiers are evaluated on each image and its mirror, logits averaged; flip_shift: and
    # on both moved one pixel up-left and one down-right (six views), at the test only: each epoch's
    # validation sees each image once (six passes an epoch cost a speedrun a fifth of its time)
    tta: str = "none"
    # The speedrun's tricks (fmnist_core.training.tricks), each off by default:
    whiten: bool = False  # the first conv's filters whiten its patches of the training images; frozen
    dirac: bool = False  # each later conv starts as the identity on its first input channels
    bn_bias_lr: float = 1.0  # BatchNorm biases learn at this multiple of the learning rate
    ema: float = 0.0  # >0: validation, the test and the run's weights use this moving average of them
    # bf16: training's convolutions and matrix products run in bfloat16 (autocast; the weights, the
    # optimizer and evaluation stay fp32), 1.6x faster a step for conv nets on AVX-512 BF16. auto:
    # bf16 where the hardware does it natively, else fp32, decided when the run trains and recorded.
    precision: str = "fp32"
    seed: int = 0
    validation: str = "test"  # test: validate on the test set, as the seeds did; holdout: on train
    holdout_fraction: float = 0.1  # of train, when validation is holdout
    train_subset: int = 0  # 0: all 60,000 training images; else a fixed random subset
    test_subset: int = 0  # 0: all 10,000 test images; else a fixed subset (quick looks only)
    # A list of training images left out (data.exclusions.save_exclusion's digest), e.g. the
    # images the lab flagged as mislabelled or duplicated; "": none.
    exclude: str = ""
    # Keep each training image's confidence in its label after every epoch (dataset cartography):
    # one extra pass over the training images an epoch; the weights come out the same.
    cartography: bool = False
    # The data it trains on: the original files, or another data set's fingerprint (only with
    # FMNIST_OTHER_DATA=1; runs.trained sets it from the files loaded), so that a run id never
    # names runs on two data sets.
    data: str = REAL_DATA

    def __post_init__(self):
        spec = get_spec(self.model)
        # Resolving the settings fills defaults in, so equal runs get equal keys.
        resolved = settings_dict(make_settings(self.model, self.settings))
        object.__setattr__(self, "settings", resolved)
        if self.loss == "":
            object.__setattr__(self, "loss", spec.recipe["loss"])
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 1, 60_000)
        check_range("lr", self.lr, 1e-7, 10.0)  # finite numbers only, here and below
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("loss", self.loss, losses_for(spec.kind))
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_choice("augment", self.augment, AUGMENTS)
        check_choice("tta", self.tta, TEST_TIME_AUGMENTS)
        if self.tta != "none" and spec.kind != "classifier":
            raise ValueError("tta: test-time augmentation is for classifiers only")
        for name in ("whiten", "dirac"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: {shown(getattr(self, name))} is not true or false")
        if self.whiten:
            check_whitenable(self.model, self.settings)
        if self.dirac and not spec.needs_encoder and conv_count(self.model, json.dumps(self.settings)) < 2:
            raise ValueError(f"dirac: this {self.model} has no conv after its first to start as the identity")
        check_range("bn_bias_lr", self.bn_bias_lr, 0.01, 100.0)
        check_range("ema", self.ema, 0.0, 1.0, high_open=True)
        check_choice("precision", self.precision, PRECISIONS)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_choice("validation", self.validation, VALIDATIONS)
        check_range("holdout_fraction", self.holdout_fraction, 0.01, 0.5)
        check_int("train_subset", self.train_subset, 0, 60_000)
        check_int("test_subset", self.test_subset, 0, 10_000)
        if not isinstance(self.exclude, str) or not re.fullmatch(r"([0-9a-f]{16})?", self.exclude):
            raise ValueError(f"exclude: {str(self.exclude)[:40]!r} is not a list digest (16 hex digits)")
        if not isinstance(self.cartography, bool):
            raise ValueError(f"cartography: {shown(self.cartography)} is not true or false")
        if self.cartography and spec.kind == "autoencoder":
            raise ValueError("cartography: it follows a classifier's answers; autoencoders give none")
        if not isinstance(self.data, str) or not (
            self.data == REAL_DATA or re.fullmatch(r"other-[0-9a-f]{16}", self.data)
        ):
            raise ValueError(
                f"data: {str(self.data)[:40]!r} is not {REAL_DATA} or another data set's fingerprint"
            )

    @classmethod
    def for_model(cls, model: str, settings: dict | None = None, **overrides: Any) -> RunConfig:
        """A config with the seed report's recipe for `model`, then `overrides` on top."""
        values = {**get_spec(model).recipe, **overrides}
        return cls(model=model, settings=dict(settings or {}), **coerce(cls, values))

    @property
    def kind(self) -> str:
        return get_spec(self.model).kind

    @property
    def validation_tta(self) -> str:
        """The test-time augmentation of each epoch's validation pass."""
        return "none" if self.tta == "flip_shift" else self.tta

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """A config from a mapping (parsed JSON); ValueError, naming the setting, where it is not one."""
        if not isinstance(values, dict):
            raise ValueError(f"a config is a mapping of settings, not {type(values).__name__}")
        if not isinstance(values.get("settings", {}), dict):
            raise ValueError("settings: a mapping of the model's settings is expected")
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown run setting")
        try:
            return cls(**values)
        except TypeError as error:  # e.g. the model's name missing
            raise ValueError(" ".join(str(error).split())) from None

    @property
    def run_id(self) -> str:
        """A hash of the config (and the engine version) that names its cache folder.

        Run settings still at their default are left out of the hash, so adding a new setting
        with a default later keeps every existing run id valid; model settings marked `since`
        (added after the first release) likewise.
        """
        values = {**self.changed_settings(), "settings": self.telling_settings()}
        payload = json.dumps({"engine": ENGINE_VERSION, **values}, sort_keys=True)
        return checksum(payload)[:16]

    def changed_settings(self) -> dict[str, Any]:
        """The run settings that differ from their defaults (and those without one: model, settings)."""
        defaults = {f.name: f.default for f in fields(self) if f.default is not dataclasses.MISSING}
        return {k: v for k, v in self.to_dict().items() if k not in defaults or v != defaults[k]}

    def telling_settings(self) -> dict[str, Any]:
        """The model settings less those added later (marked `since`) that are at their default."""
        spec = get_spec(self.model)
        later = {f.name: f.default for f in fields(spec.settings_type) if "since" in f.metadata}
        return {k: v for k, v in self.settings.items() if not (k in later and v == later[k])}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def __hash__(self) -> int:
        return hash(self.run_id)


@functools.lru_cache(maxsize=256)
def conv_count(model: str, settings_json: str) -> int:
    """The convs of a model with these settings (built on the meta device once per settings: the
    Speedrun page makes dozens of configs a rerun)."""
    skeleton = build_skeleton(model, make_settings(model, json.loads(settings_json)))
    return sum(isinstance(m, torch.nn.Conv2d) for m in skeleton.modules())


def check_whitenable(model: str, settings: dict) -> None:
    """ValueError naming `whiten` unless the model is a cnn whose first layer is a conv with at most
    twice its patch's pixels as filters (the patch's directions and their negatives)."""
    if model != "cnn":
        raise ValueError("whiten: only a cnn's first conv is whitened")
    kind, arguments, *_ = plan_layers(tuple(settings["layers"])).layers[0]  # read as the cnn reads it
    if kind != "conv":
        raise ValueError(f"whiten: the first layer is {settings['layers'][0]!r}, not a conv")
    filters, kernel = arguments[:2]
    if filters > 2 * kernel * kernel:
        raise ValueError(
            f"whiten: the first conv has {filters} filters; its {kernel}x{kernel} patches give at most "
            f"{2 * kernel * kernel} (their directions and their negatives)"
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_record(config: RunConfig, history, metrics) -> None:
    """The fields the lab reads from a run's history and metrics, with their types: a TypeError
    naming the first that is missing or wrong (a record from a damaged file or a bundle)."""
    if not isinstance(history, dict) or not isinstance(metrics, dict):
        raise TypeError("history and metrics must be objects")
    if not all(isinstance(values, list) for values in history.values()):
        raise TypeError("every history entry must be a list")
    done = metrics.get("epochs_done")
    if not isinstance(done, int) or isinstance(done, bool) or not 1 <= done <= config.epochs:
        raise TypeError(f"epochs_done is {str(done)[:20]!r}, not a number of epochs in 1..{config.epochs}")
    for key in ("epoch", "train_loss", "val_loss", "seconds"):
        values = history.get(key)
        if not isinstance(values, list) or len(values) != done or not all(map(_is_number, values)):
            raise TypeError(f"history {key} is not {done} numbers")
    needed = ["train_seconds", "test_loss"]
    needed.append("test_mse" if config.kind == "autoencoder" else "test_accuracy")
    for key in needed:
        if not _is_number(metrics.get(key)):
            raise TypeError(f"{key} is {str(metrics.get(key))[:20]!r}, not a number")
    if config.kind != "autoencoder":
        confusion = metrics.get("test_confusion")
        square = isinstance(confusion, list) and len(confusion) == 10
        if not square or not all(
            isinstance(row, list) and len(row) == 10 and all(isinstance(c, int) and c >= 0 for c in row)
            for row in confusion
        ):
            raise TypeError("test_confusion is not a 10 x 10 table of counts")
        if not 0 <= metrics["test_accuracy"] <= 1:
            raise TypeError(f"test_accuracy {metrics['test_accuracy']} is not in [0, 1]")
