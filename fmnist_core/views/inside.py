"""What the inside page asks of a trained run: each layer's output for one image, what each unit
does over the test set (kept beside the cache, computed once per run), a unit's weights and the
test images that excite it most."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fmnist_core.analysis import classes_never_predicted
from fmnist_core.analysis.inside import (
    Layer,
    UnitActivity,
    driving_boxes,
    layer_outputs,
    network_layers,
    unit_activity,
    unit_weights,
)
from fmnist_core.base.files import ArraySpec
from fmnist_core.data.fashion import CLASS_NAMES, load_data
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.store.cache import RunCache, keep_derived, read_derived

TOP = 9  # top-activating test images kept per unit
ACTIVITY_FILE = "unit_activity.npz"
FIELDS = ("top_index", "top_value", "top_where", "firing", "bottom_index", "bottom_value")


def layers(run: TrainedRun) -> list[Layer]:
    return network_layers(run.model)


@dataclass(frozen=True)
class ImagePass:
    """One image through a run: every layer's output (for that image) and what comes out."""

    outputs: dict[str, np.ndarray]  # layer name -> (C, H, W) or (units,)
    probabilities: np.ndarray | None  # (10,) for a classifier
    reconstruction: np.ndarray | None  # (28, 28) for an autoencoder


def image_pass(run: TrainedRun, image: np.ndarray) -> ImagePass:
    batch = torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(1, 1, 28, 28))
    outputs = {name: output[0].numpy() for name, output in layer_outputs(run.model, batch).items()}
    if run.config.kind == "classifier":
        return ImagePass(outputs, run.predict_proba(batch)[0], None)
    with torch.no_grad():
        reconstruction = run.model.eval()(batch)[0, 0].float().numpy()
    return ImagePass(outputs, None, reconstruction)


def answer(probabilities: np.ndarray) -> str:
    """A classifier's answer in words: its class and probability."""
    best = int(np.argmax(probabilities))
    return f"{CLASS_NAMES[best]} ({probabilities[best]:.0%})"


def _arrays(activity: UnitActivity) -> dict[str, np.ndarray]:
    arrays = {
        "names": np.array([layer.name for layer in activity.layers]),
        "images": np.array(activity.images, dtype=np.int64),
    }
    for field in FIELDS:
        arrays |= {f"{field}:{name}": values for name, values in getattr(activity, field).items()}
    return arrays


def _expected(current: list[Layer], images: int) -> dict[str, ArraySpec]:
    """The shape and type of every array an activity of these layers over `images` images keeps."""
    top = min(TOP, images)
    expected = {
        "names": ((len(current),), np.array([layer.name for layer in current]).dtype),
        "images": ((), np.int64),
    }
    for layer in current:
        expected |= {
            f"top_index:{layer.name}": ((top, layer.units), np.int64),
            f"top_value:{layer.name}": ((top, layer.units), np.float32),
            f"top_where:{layer.name}": ((top, layer.units), np.int64),
            f"firing:{layer.name}": ((layer.units,), np.int64),
            f"bottom_index:{layer.name}": ((top, layer.units), np.int64),
            f"bottom_value:{layer.name}": ((top, layer.units), np.float32),
        }
    return expected


def _plausible(activity: UnitActivity) -> bool:
    """Whether the kept numbers could come from a pass over the test set: images and map positions
    in range, counts from 0 to the image count, and each unit's positive top peaks as many as its
    count says (min(firing, top)); an edited file rarely keeps all of that."""
    for layer in activity.layers:
        index, where = activity.top_index[layer.name], activity.top_where[layer.name]
        firing, top = activity.firing[layer.name], activity.top_value[layer.name]
        in_range = (
            _within(index, activity.images)
            and _within(where, math.prod(layer.shape[1:]))
            and _within(firing, activity.images + 1)
        )
        if not in_range or not np.array_equal((top > 0).sum(axis=0), np.minimum(firing, len(top))):
            return False
        bottom = activity.bottom_value[layer.name]
        if (
            not _within(activity.bottom_index[layer.name], activity.images)
            or (np.diff(bottom, axis=0) < 0).any()
        ):
            return False
    return True


def _within(values: np.ndarray, end: int) -> bool:
    return values.size == 0 or (int(values.min()) >= 0 and int(values.max()) < end)


def _load(path, current: list[Layer], images: int) -> UnitActivity | None:
    """The kept activity where it reads whole, was computed for this run over `images` images with
    this model's layers and is plausible; None otherwise (it is computed again)."""
    kept = read_derived(path, _expected(current, images))
    if kept is None or [str(name) for name in kept["names"]] != [layer.name for layer in current]:
        return None
    fields = {field: {layer.name: kept[f"{field}:{layer.name}"] for layer in current} for field in FIELDS}
    activity = UnitActivity(current, int(kept["images"]), **fields)
    return activity if activity.images == images and _plausible(activity) else None


def activity(run: TrainedRun, cache: RunCache, on_batch=None) -> UnitActivity:
    """What every unit does over the 10,000 test images: computed once per run (one pass, ~1-10 s
    here) and kept beside the cache under the weights' checksum, so a retrained run never reads it."""
    path = cache.derived_path(run.run_id, ACTIVITY_FILE)
    current = layers(run)
    test_images = load_data().test_images
    kept = _load(path, current, len(test_images))
    if kept is not None:
        return kept
    computed = unit_activity(run.model, test_images, top=TOP, on_batch=on_batch)
    keep_derived(path, _arrays(computed))
    return computed


FEATURE_STEPS = 256
FEATURE_METHOD = "redirected"  # in the kept file's name: pictures found by an older method are found again
DIVERSITY = 4.0  # where several pictures of one objective are asked for (analysis.featureviz)


def feature_picture(run: TrainedRun, cache: RunCache, layer: str, unit: int, seed: int = 0) -> np.ndarray:
    """The 28x28 input `unit` of `layer` responds to most, found alone (feature_pictures' first; a
    whole layer's, layer_pictures, are found in batches from other random starts)."""
    return feature_pictures(run, cache, layer, (unit,), seed=seed)[0]


def _layer_path(run: TrainedRun, cache: RunCache, layer: str, seed: int):
    return cache.derived_path(
        run.run_id, f"featureviz-{FEATURE_METHOD}-{layer}-every-s{seed}-{FEATURE_STEPS}.npz"
    )


def kept_layer_pictures(run: TrainedRun, cache: RunCache, layer: str, seed: int = 0) -> np.ndarray | None:
    """Every unit's picture of `layer` where layer_pictures kept them (whole and in [0, 1]), else None."""
    known = {found.name: found for found in layers(run)}
    if layer not in known:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(known)}")
    shape = (known[layer].units, 28, 28)
    kept = read_derived(_layer_path(run, cache, layer, seed), {"pictures": (shape, np.float32)})
    if kept is None or not np.isfinite(kept["pictures"]).all():
        return None
    return kept["pictures"] if 0 <= kept["pictures"].min() <= kept["pictures"].max() <= 1 else None


LAYER_BATCH = 32  # units optimised together: one batch each, progress told between batches


def layer_pictures(
    run: TrainedRun, cache: RunCache, layer: str, seed: int = 0, on_progress=None
) -> np.ndarray:
    """(units, 28, 28): every unit's picture of `layer`, optimised LAYER_BATCH units at a time and
    kept beside the cache in one file (read back in milliseconds); `on_progress(done, total)` is
    told in steps. A kept file is read where it is whole."""
    from fmnist_core.analysis.featureviz import visualise

    kept = kept_layer_pictures(run, cache, layer, seed)
    if kept is not None:
        return kept
    units = {found.name: found for found in layers(run)}[layer].units
    batches = [list(range(start, min(start + LAYER_BATCH, units))) for start in range(0, units, LAYER_BATCH)]
    total = len(batches) * FEATURE_STEPS
    found = []
    for done, batch in enumerate(batches):
        tell = (
            None
            if on_progress is None
            else (lambda step, _steps, done=done: on_progress(done * FEATURE_STEPS + step, total))
        )
        found.append(visualise(run.model, layer, batch, steps=FEATURE_STEPS, seed=seed + done, on_step=tell))
    pictures = np.concatenate(found).astype(np.float32)
    keep_derived(_layer_path(run, cache, layer, seed), {"pictures": pictures})
    if on_progress is not None:
        on_progress(total, total)
    return pictures


def feature_pictures(
    run: TrainedRun, cache: RunCache, layer: str, units: tuple[int, ...], pictures: int = 1, seed: int = 0
) -> np.ndarray:
    """(pictures, 28, 28): the inputs the sum of `units` of `layer` responds to most
    (analysis.featureviz, 256 steps of `seed`; several pushed apart by its diversity term): found
    once per run and kept beside the cache under the weights' checksum (kept_pictures)."""
    known = {found.name: found for found in layers(run)}
    if layer not in known:
        raise ValueError(f"layer: {layer!r} is not one of {', '.join(known)}")
    units = tuple(sorted(set(units)))
    if not units or not all(0 <= unit < known[layer].units for unit in units):
        raise ValueError(f"unit: {layer!r} has no unit {units[-1] if units else '(none given)'}")
    if not 1 <= pictures <= 16:
        raise ValueError(f"pictures: {pictures} is not between 1 and 16")
    named = "+".join(map(str, units))
    direction = np.zeros(known[layer].units, np.float32)
    direction[list(units)] = 1
    return kept_pictures(
        run, cache, f"{layer}-{named}-x{pictures}-s{seed}", layer, direction[None], pictures, seed
    )


def kept_pictures(
    run: TrainedRun,
    cache: RunCache,
    name: str,
    layer: str,
    directions: np.ndarray,
    pictures: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """(objectives x pictures, 28, 28): analysis.featureviz's pictures of `directions` over `layer`'s
    units, kept beside the cache as `name` (which must say what they are of) and read back where
    they are of that shape, finite and in [0, 1]; found again otherwise."""
    from fmnist_core.analysis.featureviz import visualise

    path = cache.derived_path(run.run_id, f"featureviz-{FEATURE_METHOD}-{name}-{FEATURE_STEPS}.npz")
    shape = (len(directions) * pictures, 28, 28)
    kept = read_derived(path, {"pictures": (shape, np.float32)})
    if (
        kept is not None
        and np.isfinite(kept["pictures"]).all()
        and 0 <= kept["pictures"].min() <= kept["pictures"].max() <= 1
    ):
        return kept["pictures"]
    found = visualise(
        run.model,
        layer,
        directions=directions,
        steps=FEATURE_STEPS,
        seed=seed,
        pictures=pictures,
        diversity=DIVERSITY if pictures > 1 else 0.0,
    ).astype(np.float32)
    keep_derived(path, {"pictures": found})
    return found


def has_activity(run_id: str, cache: RunCache) -> bool:
    return cache.derived_path(run_id, ACTIVITY_FILE).is_file()


def dead_units(activity: UnitActivity) -> pd.DataFrame:
    """Per rectified layer: its units, how many never fire on the test set (dead) and how many
    fire on fewer than 1% of it (dying)."""
    rows = [
        {
            "layer": layer.name,
            "type": layer.kind + (" (code)" if layer.role == "code" else ""),
            "units": layer.units,
            "dead": int(activity.dead(layer.name).sum()),
            "dying": int(activity.dying(layer.name).sum()),
        }
        for layer in activity.layers
        if layer.rectified
    ]
    table = pd.DataFrame(rows, columns=["layer", "type", "units", "dead", "dying"])
    return table.assign(dead_share=table["dead"] / table["units"].clip(lower=1))


def dead_summary(activity: UnitActivity) -> str:
    """One line for a table cell: the dead units of the rectified layers, e.g. '12 of 340 (4%)'."""
    table = dead_units(activity)
    dead, units = int(table["dead"].sum()), int(table["units"].sum())
    return f"{dead} of {units} ({dead / max(units, 1):.0%})" if units else "none can die"


def never_predicted(run: TrainedRun) -> list[str]:
    """The classes a classifier never answers on the test set; [] for an autoencoder."""
    confusion = run.metrics.get("test_confusion")
    return classes_never_predicted(confusion) if confusion is not None else []


def ends_with_relu(model) -> bool:
    """Whether the model's last layer that computes (dropout passes values on) is a ReLU: a head
    that can silence a class for good."""
    passing = (torch.nn.Dropout, torch.nn.Identity, torch.nn.Flatten)
    leaves = [
        m for m in model.modules() if not any(True for _ in m.children()) and not isinstance(m, passing)
    ]
    return bool(leaves) and isinstance(leaves[-1], torch.nn.ReLU)


def warnings(run: TrainedRun, activity: UnitActivity | None) -> list[str]:
    """What is wrong inside a run, in words: classes never predicted, dead code units, layers
    mostly dead."""
    said = []
    never = never_predicted(run)
    if never:
        why = (
            "Their scores are 0 for every image (this run's head ends with a ReLU on the logits, as "
            "S0's does), so no gradient brings them back."
            if ends_with_relu(run.model)
            else "Another class outscores them on every image: the network has not learned them yet "
            "(more epochs, or a lower learning rate, usually brings them in)."
        )
        said.append(
            f"{len(never)} of 10 classes are never predicted on the test set: {', '.join(never)}. {why}"
        )
    if activity is None:
        return said
    for row in dead_units(activity).itertuples():
        if row.dead and (row.type.endswith("(code)") or row.dead_share >= 0.5):
            if not row.type.endswith("(code)"):
                where = f"units of {row.layer} ({row.type})"
            elif run.config.kind == "autoencoder":
                where = "code units"
            else:  # a classifier's code is its last hidden layer, the features its head reads
                where = f"units of {row.layer}, the last hidden layer (the features the head reads),"
            said.append(f"{row.dead} of {row.units} {where} never fire on the test set: they are dead.")
    return said


@dataclass(frozen=True)
class UnitDetail:
    layer: Layer
    unit: int
    weights: np.ndarray | None  # a conv's filter (inputs, k, k) or a dense unit's weights (inputs,)
    images: np.ndarray  # (k, 28, 28): the test images with the largest peak, largest first
    indices: np.ndarray  # (k,): their test-set indices
    values: np.ndarray  # (k,): the peaks
    boxes: np.ndarray  # (k, 4): top, left, bottom, right of the pixels that move that peak
    firing: int  # on how many test images the unit fires
    dead: bool
    bottom_images: np.ndarray  # (k, 28, 28): the test images with the smallest peak, smallest first
    bottom_indices: np.ndarray  # (k,)
    bottom_values: np.ndarray  # (k,)


def unit_detail(run: TrainedRun, activity: UnitActivity, name: str, unit: int) -> UnitDetail:
    """One unit up close: its weights, its top-activating test images and their driving patches,
    and the test images that move it least (for a rectified unit, many sit at 0: the first ones)."""
    layer = activity.layer(name)
    if not 0 <= unit < layer.units:
        raise ValueError(f"unit: {unit} is not a unit of {name} (0..{layer.units - 1})")
    indices = activity.top_index[name][:, unit]
    where = activity.top_where[name][:, unit]
    images = load_data().test_images[torch.as_tensor(indices)]
    width = layer.shape[-1] if len(layer.shape) == 3 else 1
    boxes = driving_boxes(run.model, name, images, unit, where, width)
    firing = int(activity.firing[name][unit])
    bottom = activity.bottom_index[name][:, unit]
    return UnitDetail(
        layer,
        unit,
        unit_weights(run.model, activity.layers, name, unit),
        images[:, 0].numpy(),
        indices,
        activity.top_value[name][:, unit],
        boxes,
        firing,
        layer.rectified and firing == 0,
        load_data().test_images[torch.as_tensor(bottom)][:, 0].numpy(),
        bottom,
        activity.bottom_value[name][:, unit],
    )


def patches(detail: UnitDetail) -> list[np.ndarray]:
    """The driving patch of each top image (its box cut out)."""
    return [
        image[top:bottom, left:right]
        for image, (top, left, bottom, right) in zip(detail.images, detail.boxes, strict=False)
    ]


def aligned(first: list[Layer], second: list[Layer]) -> list[tuple[Layer | None, Layer | None]]:
    """Two runs' layers paired for side-by-side viewing. Where most layers share a name and a type
    (one architecture, e.g. a frozen and a fine-tuned classifier on one encoder, or two heads on
    it) by name, a layer the other lacks standing alone; else by position."""
    by_name = {(layer.name, layer.kind): layer for layer in second}
    shared = [by_name.get((layer.name, layer.kind)) for layer in first]
    if sum(layer is not None for layer in shared) * 2 >= max(len(first), len(second)):
        pairs = list(zip(first, shared, strict=False))
        matched = {id(layer) for layer in shared if layer is not None}
        return pairs + [(None, layer) for layer in second if id(layer) not in matched]
    count = max(len(first), len(second))
    return [
        (first[i] if i < len(first) else None, second[i] if i < len(second) else None) for i in range(count)
    ]
