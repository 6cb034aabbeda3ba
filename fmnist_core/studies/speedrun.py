"""The Fashion-MNIST speedrun: one network and a ladder of tricks, one trick a rung (after
airbench's ablations, KellerJordan/cifar10-airbench). Each rung is an ordinary cached run whose
id follows from its config; `python -m fmnist_core speedrun` trains what the cache lacks and
writes reports/speedrun.md and .csv. Runs validate on the holdout tenth of the training images
(any choice of settings is made there); the test set is scored once, at the end."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_core.base import environment
from fmnist_core.base.device import cpu_kind
from fmnist_core.base.files import write_text_atomic
from fmnist_core.base.settings import check_int
from fmnist_core.runs.recipes import SPEEDRUN_BASE, SPEEDRUN_LAYERS, get_recipe
from fmnist_core.runs.trained import get_or_train, load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.studies.reports import forward_flops
from fmnist_core.training.config import RunConfig
from fmnist_core.training.splits import make_splits

# At FMNIST_SCALE=test: seconds a rung (validated on 1,200 holdout images, not 6,000)
TEST_SCALE = dict(epochs=1, train_subset=2000, test_subset=1000, holdout_fraction=0.02)


@dataclass(frozen=True)
class Rung:
    name: str
    adds: str  # what the rung turns on, in words
    run: dict  # the run settings it changes, on top of every rung below it


RUNGS = (
    Rung("base", "the network, AdamW + OneCycle, random flips", {}),
    Rung("whiten", "the first conv whitens its patches, frozen", {"whiten": True}),
    Rung("dirac", "later convs start as the identity", {"dirac": True}),
    Rung("bn_bias_lr", "BatchNorm biases at 8x the learning rate", {"bn_bias_lr": 8.0}),
    Rung("ema", "the weights' moving average is what is tested", {"ema": 0.99}),
    Rung("label_smoothing", "label smoothing 0.2", {"label_smoothing": 0.2}),
    Rung("shift", "shifts of up to 2 pixels", {"augment": "flip_shift"}),
    Rung("alt_flip", "flips on alternate epochs, not at random", {"augment": "alt_flip_shift"}),
    Rung("tta", "six-view test-time augmentation", {"tta": "flip_shift"}),
)
REPORT_FOLDER = Path(__file__).resolve().parents[2] / "reports"  # the repository's committed reports
BESIDE = ("fast_cnn", "long_cnn")  # the lab's recipes, in the table where their runs are cached


def check_rung(rung: int) -> int:
    check_int("rung", rung, 0, len(RUNGS) - 1)
    return rung


def rung_config(rung: int, seed: int = 0, **overrides) -> RunConfig:
    """Rung `rung`'s run: the base and every trick up to it, then `overrides` (epochs, images)."""
    run = {**SPEEDRUN_BASE, **(TEST_SCALE if environment.scale() == "test" else {})}
    for step in RUNGS[: check_rung(rung) + 1]:
        run.update(step.run)
    return RunConfig.for_model("cnn", {"layers": SPEEDRUN_LAYERS}, seed=seed, **{**run, **overrides})


def describe_run(config: RunConfig) -> str:
    """A rung's length in words: "10 epochs on 54,000 training images (...), batches of 128"."""
    images = config.train_subset or round(60_000 * (1 - config.holdout_fraction))
    epochs = f"{config.epochs} epoch{'s' if config.epochs > 1 else ''}"
    held = f"{config.holdout_fraction:.0%} of the training images held out to validate"
    return f"{epochs} on {images:,} training images ({held}), batches of {config.batch_size}"


def ladder_configs(rungs: list[int], seeds: int, **overrides) -> list[RunConfig]:
    check_int("seeds", seeds, 1, 20)
    return [rung_config(rung, seed, **overrides) for rung in rungs for seed in range(seeds)]


def duplicated_test_images() -> np.ndarray:
    """Test images with a near-duplicate among the training images (Suspect data's pairs)."""
    from fmnist_core.analysis.suspects import dataset_duplicates

    pairs = dataset_duplicates()
    return np.unique(pairs.loc[pairs["splits"] == "test-train", "first"].to_numpy())


def run_row(config: RunConfig, cache: RunCache, duplicated: np.ndarray | None) -> dict:
    """One cached run's figures: test accuracy, and without the `duplicated` test images where
    given (the run's test images scored again: seconds; else from its record alone)."""
    _, metrics = cache.load_record(config.run_id)  # the weights only where the run is scored again
    without = float("nan")
    if duplicated is not None:
        splits = make_splits(config, cache.root)  # the test images the run was scored on
        index = splits.test_index if splits.test_index is not None else np.arange(len(splits.test_labels))
        keep = ~np.isin(np.asarray(index), duplicated)
        run = load_run(config.run_id, cache)
        correct = run.predict_proba(splits.test_images).argmax(1) == splits.test_labels.numpy()
        without = float(correct[keep].mean())
    trained_images = metrics.get("train_images", 0)
    return {
        "run_id": config.run_id,
        "seed": config.seed,
        "test_accuracy": metrics["test_accuracy"],
        "accuracy_without_duplicates": without,
        "seconds": metrics["train_seconds"],
        "epochs": metrics["epochs_done"],
        "train_flops": 3 * forward_flops(config, cache) * trained_images * metrics["epochs_done"],
        "precision": metrics.get("execution", {}).get("precision", ""),
    }


def ladder_table(
    rungs: list[int],
    seeds: int,
    cache: RunCache,
    train: bool = True,
    on_event: Callable | None = None,
    scored: bool = True,
    beside: bool = False,
    last_seeds: int | None = None,
    **overrides,
) -> pd.DataFrame:
    """A row per rung: mean ± std over its seeds of the test accuracy, its seconds and the rest;
    what the cache lacks is trained first (unless not `train`: such seeds are left out, and a rung
    with none). `scored`: each run's test images scored again for the accuracy without the
    near-duplicates (else that column is NaN and the rows come from the runs' records). `beside`:
    fast_cnn and long_cnn trained too where missing (at their own length), to compare on one machine.
    `last_seeds`: the ladder's last rung over this many seeds instead (the goals ask 5 of it)."""
    say = on_event or (lambda message: None)
    duplicated = duplicated_test_images() if scored else None
    rows = []
    for rung in rungs:
        runs = []
        count = last_seeds if last_seeds and rung == len(RUNGS) - 1 else seeds
        for config in ladder_configs([rung], count, **overrides):
            if not cache.exists(config.run_id):
                if not train:
                    continue
                say(f"rung {rung} ({RUNGS[rung].name}), seed {config.seed}: training...")
                get_or_train(
                    config, cache=cache, on_progress=epoch_lines(say, f"rung {rung}, seed {config.seed}")
                )
            runs.append(run_row(config, cache, duplicated))
        if runs:
            rows.append(summarise(rung, RUNGS[rung].name, RUNGS[rung].adds, pd.DataFrame(runs)))
    for name in BESIDE:  # at the ladder's scale: its epochs and images where they are set
        scale = {k: v for k, v in overrides.items() if k in TEST_SCALE}
        config = get_recipe(name).config(**{**(TEST_SCALE if environment.scale() == "test" else {}), **scale})
        if beside and not cache.exists(config.run_id):
            say(f"{name}, for comparison: training...")
            get_or_train(config, cache=cache, on_progress=epoch_lines(say, name))
        if cache.exists(config.run_id):
            frame = pd.DataFrame([run_row(config, cache, duplicated)])
            rows.append(summarise(None, name, "the lab's recipe, for comparison", frame))
    return pd.DataFrame(rows)


def epoch_lines(say: Callable, what: str) -> Callable:
    """A progress callback that says a line at each epoch's end: its validation figures and time."""

    def on_progress(progress) -> None:
        if progress.epoch_done:
            accuracy = progress.metrics.get("val_accuracy")
            shown = f", validation accuracy {accuracy:.4f}" if accuracy is not None else ""
            say(f"{what}: epoch {progress.epoch}/{progress.epochs}{shown}, {progress.seconds:.0f} s")

    return on_progress


def summarise(rung: int | None, name: str, adds: str, runs: pd.DataFrame) -> dict:
    accuracy = runs["test_accuracy"]
    return {
        "rung": rung,
        "name": name,
        "adds": adds,
        "seeds": len(runs),
        "accuracy_mean": accuracy.mean(),
        "accuracy_std": accuracy.std(ddof=1) if len(runs) > 1 else float("nan"),  # one seed: no spread
        "accuracy_min": accuracy.min(),
        "without_duplicates": runs["accuracy_without_duplicates"].mean(),
        "seconds": runs["seconds"].mean(),
        "epochs": int(runs["epochs"].iloc[0]),
        "train_gflops": runs["train_flops"].mean() / 1e9,
        "precision": runs["precision"].iloc[0],
        "run_ids": " ".join(runs["run_id"]),
    }


COLUMNS = {  # the report's CSV: what the app reads back from a committed one, and its checks
    "rung": "number",
    "name": "text",
    "adds": "text",
    "seeds": "number",
    "accuracy_mean": "fraction",
    "accuracy_std": "fraction",
    "accuracy_min": "fraction",
    "without_duplicates": "fraction",
    "seconds": "number",
    "epochs": "number",
    "train_gflops": "number",
    "precision": "text",
    "run_ids": "text",
}
MAX_REPORT_BYTES = 100_000


class ReportError(ValueError):
    """A speedrun.csv that is not the table write_report writes: why, in one line."""


def load_report(path: Path) -> pd.DataFrame | None:
    """A speedrun.csv as write_report wrote it (a committed one: the app shows it beside this
    machine's rungs), checked before use: None where there is none, ReportError (why) where the
    file is there but is not such a table."""
    from io import StringIO

    from fmnist_core.base.files import read_regular

    if not os.path.lexists(path):
        return None
    try:
        table = pd.read_csv(StringIO(read_regular(path, MAX_REPORT_BYTES).decode("utf-8")))
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ReportError(
            f"{path.name}: not readable as the report's table ({' '.join(str(error).split())[:120]})"
        ) from None
    if list(table.columns) != list(COLUMNS):
        missing = [c for c in COLUMNS if c not in table.columns]
        raise ReportError(
            f"{path.name}: its columns are not the report's"
            + (f" ({missing[0]} is missing)" if missing else "")
        )
    if table.empty or len(table) > len(RUNGS) + len(BESIDE):
        raise ReportError(
            f"{path.name}: {len(table)} rows, where a ladder has 1 to {len(RUNGS) + len(BESIDE)}"
        )
    for column, kind in COLUMNS.items():
        if kind == "text":
            if not table[column].fillna("").map(lambda v: isinstance(v, str) and len(v) < 2000).all():
                raise ReportError(f"{path.name}: {column} holds something other than short text")
            continue
        table[column] = pd.to_numeric(table[column], errors="coerce")
        problem = _number_problem(column, kind, table[column])
        if problem:
            raise ReportError(f"{path.name}: {column} {problem}")
    if ((table["accuracy_mean"] - table["accuracy_std"].fillna(0)) < 0).any() or (
        (table["accuracy_mean"] + table["accuracy_std"].fillna(0)) > 1
    ).any():
        raise ReportError(f"{path.name}: an accuracy's spread reaches outside 0 to 1")
    return table


MAY_BE_MISSING = ("rung", "accuracy_std", "without_duplicates")  # a recipe's row, one seed, not scored


def _number_problem(column: str, kind: str, values: pd.Series) -> str:
    """What is wrong with a numeric column of the report ("" where nothing is)."""
    present = values.dropna()
    if column not in MAY_BE_MISSING and len(present) < len(values):
        return "has a value that is missing or not a number"
    if not np.isfinite(present).all():
        return "has a value that is not finite"
    if kind == "fraction" and ((present < 0) | (present > 1)).any():
        return "has a value outside 0 to 1"
    if column == "rung" and not present.isin(range(len(RUNGS))).all():
        return f"has a value that is not a rung (0 to {len(RUNGS) - 1})"
    if column in ("seeds", "epochs") and not ((present >= 1) & (present == present.round())).all():
        return "has a value that is not a whole number of at least 1"
    if column in ("seconds", "train_gflops") and not (present > 0).all():
        return "has a value that is not above 0"
    return ""


def spread(std: float) -> str:
    """ " ± 0.0012" over several seeds; nothing for one (no spread was measured)."""
    return "" if pd.isna(std) else f" ± {std:.4f}"


def write_report(table: pd.DataFrame, out_dir: str | os.PathLike) -> Path:
    """speedrun.md and speedrun.csv in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "speedrun.csv", table.to_csv(index=False))
    lines = [
        "# The Fashion-MNIST speedrun",
        "",
        "Written by `python -m fmnist_core speedrun`; each rung adds one trick to the rung above it.",
        f"CPU: {cpu_kind()}. Runs validate on the holdout tenth; the test set is scored once, at the end.",
        "",
        "| rung | adds | seeds | test accuracy | min | without near-duplicates | seconds | epochs "
        "| training GFLOPs | precision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        rung = "" if pd.isna(row.rung) else f"{int(row.rung)} {row.name}"
        lines.append(
            f"| {rung or row.name} | {row.adds} | {row.seeds} | {row.accuracy_mean:.4f}{spread(row.accuracy_std)} "
            f"| {row.accuracy_min:.4f} | {row.without_duplicates:.4f} | {row.seconds:.0f} | {row.epochs} "
            f"| {row.train_gflops:,.0f} | {row.precision} |"
        )
    write_text_atomic(out / "speedrun.md", "\n".join(lines) + "\n")
    return out / "speedrun.md"
