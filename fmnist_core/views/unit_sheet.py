"""One unit's sheet as a picture, for reports and for people who do not run the app: the input it
responds to most, its top and bottom test images, and the units of the layer below that feed it
most (`python -m fmnist_core inside --run ID --layer L --unit U`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fmnist_core.analysis.upstream import FEEDING_IMAGES, feeding_layer, upstream_shares
from fmnist_core.data.fashion import CLASS_NAMES, load_data
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.store.cache import RunCache
from fmnist_core.views import inside

SCALE = 3  # each 28x28 image drawn at 84x84
CELL = 28 * SCALE
GAP, LINE = 8, 18
FEEDERS = 6


def _tile(image: np.ndarray) -> Image.Image:
    """A 28x28 array in [0, 1] (or any range: stretched) as a greyscale tile."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return Image.fromarray((np.clip(scaled, 0, 1) * 255).astype(np.uint8)).resize((CELL, CELL), Image.NEAREST)


def _row(sheet: Image.Image, draw: ImageDraw.ImageDraw, top: int, title: str, tiles, captions) -> int:
    font = ImageFont.load_default(size=13)
    draw.text((GAP, top), title, fill=0, font=font)
    top += LINE + 2
    for column, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        left = GAP + column * (CELL + GAP)
        sheet.paste(_tile(tile), (left, top))
        draw.multiline_text((left, top + CELL + 2), caption, fill=0, font=ImageFont.load_default(size=11))
    return top + CELL + 2 * LINE + GAP


def unit_sheet(run: TrainedRun, cache: RunCache, layer: str, unit: int, seed: int = 0) -> Image.Image:
    """The sheet of `unit` of `layer` (a ValueError names a layer or unit the run lacks)."""
    activity = inside.activity(run, cache)
    detail = inside.unit_detail(run, activity, layer, unit)
    labels = load_data().test_labels.numpy()
    picture = inside.feature_picture(run, cache, layer, unit, seed)
    if detail.dead:  # every test image leaves it at 0: its "top" and "bottom" images are any nine
        from fmnist_core.analysis.featureviz import response

        value = float(response(run.model, layer, torch.from_numpy(picture)[None, None], unit)[0])
        return _sheet(
            [
                (
                    f"{run.run_id} · unit {unit} of {layer}: dead, 0 on every one of the "
                    f"{activity.images:,} test images",
                    [picture],
                    [f"optimised from noise\ngives it {value:.3f}"],
                )
            ]
        )
    rows = [
        (
            f"{run.run_id} · unit {unit} of {layer}: the input it responds to most (256 steps, seed {seed})",
            [picture],
            ["optimised from noise"],
        ),
        (
            "the test images that excite it most",
            detail.images,
            [
                f"#{i} {CLASS_NAMES[labels[i]]}\n{v:.2f}"
                for i, v in zip(detail.indices, detail.values, strict=True)
            ],
        ),
        (
            "the test images that move it least",
            detail.bottom_images,
            [
                f"#{i} {CLASS_NAMES[labels[i]]}\n{v:.2f}"
                for i, v in zip(detail.bottom_indices, detail.bottom_values, strict=True)
            ],
        ),
    ]
    upstream = feeding_layer(run.model, layer)
    if upstream is not None:
        shares = upstream_shares(run.model, layer, unit, upstream, load_data().test_images[:FEEDING_IMAGES])
        strongest = np.argsort(-np.abs(shares), kind="stable")[:FEEDERS]
        top = activity.top_index[upstream][0]
        rows.append(
            (
                f"the units of {upstream} that feed it most (share over {FEEDING_IMAGES:,} test images; their top image)",
                [load_data().test_images[int(top[k]), 0].numpy() for k in strongest],
                [f"unit {k}\n{shares[k]:+.3f}" for k in strongest],
            )
        )
    return _sheet(rows)


def _sheet(rows: list) -> Image.Image:
    width = GAP + 9 * (CELL + GAP) + 120
    height = GAP + len(rows) * (LINE + 2 + CELL + 2 * LINE + GAP)
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)
    top = GAP
    for title, tiles, captions in rows:
        top = _row(sheet, draw, top, title, tiles, captions)
    return sheet
