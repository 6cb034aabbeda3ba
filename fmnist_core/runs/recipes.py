"""Named recipes: a model with settings and training chosen for quality per CPU-second."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmnist_core.models import ONE_CYCLE_TRAINING
from fmnist_core.training.config import RunConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def config(self, settings: dict | None = None, **overrides: Any) -> RunConfig:
        """The recipe's config, with settings and run settings overridden."""
        return RunConfig.for_model(
            self.model, {**self.settings, **(settings or {})}, **{**self.run, **overrides}
        )


# Each stage pools before its BatchNorm, so BatchNorm works on a quarter of the pixels. No dropout:
# in 6 epochs it cost accuracy (0.9303 with dropout 0.3 before the head, 0.9349 without).
FAST_CNN_LAYERS = (
    "conv:32:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:64:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:128:3:same:relu",
    "maxpool:2",
    "bn",
)

# fast_cnn's stages with a second conv at 14x14 and at 7x7, widened to 80 and 160 channels, and
# dropout before the head: about 4x its work per image, for the long recipe.
DEEP_CNN_LAYERS = (
    "conv:32:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:80:3:same:relu",
    "bn",
    "conv:80:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:160:3:same:relu",
    "bn",
    "conv:160:3:same:relu",
    "maxpool:2",
    "bn",
    "dropout:0.2",
)

# The speedrun's network (studies/speedrun.py: its ladder adds one trick a rung): a whitened first
# conv (9 directions of a 3x3 patch and their negatives), then three stages that each pool after
# their first conv (airbench's blocks on 28x28: 28 -> 14 -> 7 -> 3).
SPEEDRUN_LAYERS = (
    "conv:18:3:same:relu",
    "conv:32:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:32:3:same:relu",
    "bn",
    "conv:64:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:64:3:same:relu",
    "bn",
    "conv:128:3:same:relu",
    "maxpool:2",
    "bn",
    "conv:128:3:same:relu",
    "bn",
)
# The ladder's first rung: random flips, no smoothing (a rung of its own), validated on the holdout
# tenth so that every choice of settings is made there.
SPEEDRUN_BASE = dict(
    {**ONE_CYCLE_TRAINING, "label_smoothing": 0.0},
    epochs=10,
    batch_size=128,
    precision="auto",  # bf16 where the CPU does it natively
    validation="holdout",
)
# Every rung's trick on: the ladder's top rung is this recipe's run (tests/test_speedrun.py).
SPEEDRUN_TRICKS = dict(
    whiten=True,
    dirac=True,
    bn_bias_lr=8.0,
    ema=0.99,
    label_smoothing=0.2,
    augment="alt_flip_shift",
    tta="flip_shift",
)

RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "fast_cnn",
            "cnn",
            {"layers": FAST_CNN_LAYERS},
            # 6 epochs at batch 128: 0.9327 test accuracy in 80 s in bf16 (fp32: 0.9335 in 113 s).
            # auto: bf16 only where the hardware does it natively (emulated, it is slower than fp32).
            dict(epochs=6, batch_size=128, tta="flip", precision="auto", **ONE_CYCLE_TRAINING),
            "3 conv + BatchNorm stages (32/64/128), AdamW + OneCycle, label smoothing, flips, "
            "flip test-time augmentation, bf16 training where the hardware has it",
        ),
        Recipe(
            "long_cnn",
            "cnn",
            {"layers": DEEP_CNN_LAYERS},
            # 0.9461 test accuracy in 879 s on 2 cores in bf16 (0.945 first at 790 s, epoch 18).
            # On an AVX2-only machine (fp32, ~190 s an epoch): 0.9450 in 3755 s (2026-12-02).
            # Measured before: 64/128 channels, 28 epochs 0.9428 in 835 s; 20 epochs in fp32 0.9417
            # in 928 s. fast_cnn's own network with shifts, 36 epochs: 0.9359 in 1050 s.
            dict(
                epochs=20,
                batch_size=128,
                tta="flip",
                precision="auto",
                **{**ONE_CYCLE_TRAINING, "augment": "flip_shift"},
            ),
            "fast_cnn with a second, wider conv in its last two stages (32 / 80+80 / 160+160), trained "
            "for about 15 minutes on 2 cores with shifts of up to 2 pixels added to the flips",
        ),
        Recipe(
            "speedrun",
            "cnn",
            {"layers": SPEEDRUN_LAYERS},
            # The ladder's top rung, 10 epochs: 0.9439 test accuracy in 150 s on Intel AMX in bf16
            # (long_cnn 0.9457 in 457 s on the same machine); 20 epochs: 0.9488 in 287 s.
            {**SPEEDRUN_BASE, **SPEEDRUN_TRICKS},
            "the speedrun's network (a whitened first conv, then 32/64/128 in three stages of two "
            "convs) with every trick of its ladder: identity initialisation, a weight average, "
            "label smoothing, shifts and alternating flips, six-view test-time augmentation",
        ),
        Recipe(
            "fast_autoencoder",
            "conv_autoencoder",
            {
                "n": 64,
                "dropout": 0.0,
                "output_dropout": False,
                "batchnorm": True,
                "latent_activation": "none",
                "pca_path": True,
            },
            dict(epochs=10, batch_size=128, lr=3e-3, schedule="onecycle"),
            "S0's shape without dropout or the ReLU on the code, BatchNorm, OneCycle 3e-3, and a "
            "linear path started at PCA: it begins at PCA's reconstruction and improves on it",
        ),
    )
}


def list_recipes(model: str | None = None) -> list[str]:
    """Recipe names, optionally only those of one model."""
    return [name for name, recipe in RECIPES.items() if model is None or recipe.model == model]


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe: {name!r} is not one of {', '.join(RECIPES)}")
    return RECIPES[name]
