"""Starting points for a setting that is a list (a CNN's layers): the seed reports' rows and the
lab's recipes, so a form can offer them by name."""

from __future__ import annotations

from fmnist_core.runs.recipes import RECIPES
from fmnist_core.studies.reports.s1 import ROWS as S1_ROWS


def recipe_preset(name: str) -> str:
    """The name a recipe's value has among a setting's presets."""
    return f"{name} (the lab's recipe)"


def setting_presets(model: str, setting: str) -> dict[str, str]:
    """Named values of a list setting of `model`, each as its comma-joined text."""
    presets: dict[str, str] = {}
    if (model, setting) == ("cnn", "layers"):  # S1's table: nine layer lists and their accuracy
        presets |= {f"S1 row {i}": layers for i, (*_, layers, _accuracy, _minutes) in enumerate(S1_ROWS, 1)}
    for name, recipe in RECIPES.items():
        if recipe.model == model and setting in recipe.settings:
            presets[recipe_preset(name)] = ",".join(recipe.settings[setting])
    return presets
