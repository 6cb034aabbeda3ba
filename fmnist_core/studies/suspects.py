"""The suspect-data study end to end, as `python -m fmnist_core suspects` runs it: it trains, so
it lives apart from fmnist_core.analysis.suspects (which the training loop itself uses), with the
retraining over seeds that tests the study's claim."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_core.analysis.suspects import (
    NEAR_DUPLICATE_RMS,
    RETRAIN_SEEDS,
    cartography,
    dataset_duplicates,
    flagged_images,
    hard_images,
    likely_mislabels,
    pixel_label_issues,
)
from fmnist_core.base import environment
from fmnist_core.base.files import write_text_atomic
from fmnist_core.base.settings import check_int
from fmnist_core.data.exclusions import EXCLUSIONS, save_exclusion
from fmnist_core.runs.trained import get_or_train, training_indices
from fmnist_core.studies.reports.grid import seeds_verdict
from fmnist_core.training.config import RunConfig


@dataclass(frozen=True)
class Study:
    duplicates: pd.DataFrame
    issues: pd.DataFrame  # doubted out of fold
    mislabels: np.ndarray  # doubted and never learnt by the mapped run
    flagged: np.ndarray
    digest: str
    regions: dict[str, int]  # the map's counts
    result: RetrainResult


def study(cache, seeds: int = RETRAIN_SEEDS, train: bool = True, on_event=None) -> Study:
    """The whole of it, as the page shows it with its defaults: duplicates, pixel-based doubts,
    the map run (trained if missing), the flagged list, and the runs with and without it over
    `seeds` (trained where missing, unless train=False)."""
    check_int("seeds", seeds, 1, 10)  # before a minute of work, not after
    say = on_event or (lambda message: None)
    say("near-duplicates...")
    pairs = dataset_duplicates()
    say("out-of-fold predictions and cleanlab...")
    issues = pixel_label_issues()
    hard, regions = None, {}
    mapped_config = retrain_base(0, cartography=True)
    if train or cache.exists(mapped_config.run_id):
        say("the training map (a 15-epoch classifier that keeps its training dynamics)...")
        mapped = get_or_train(mapped_config, cache=cache)
        map_ = cartography(mapped.history)
        hard = hard_images(map_, training_indices(mapped.config, cache))
        regions = map_.region_counts()
    mislabels = likely_mislabels(issues, hard)
    flagged = flagged_images(pairs, mislabels)
    digest = save_exclusion(cache.root, flagged)
    if train:
        for everything, without in retrain_configs(digest, seeds):
            for config in (everything, without):
                say(f"seed {config.seed}, {'without the flagged' if config.exclude else 'all images'}...")
                get_or_train(config, cache=cache)
    return Study(pairs, issues, mislabels, flagged, digest, regions, retrain_result(cache, digest, seeds))


def write_study(found: Study, out_dir: str | os.PathLike) -> Path:
    """reports/suspects.md: the counts, the flagged list's digest and the runs' table."""
    counts = found.duplicates.groupby("splits").size()
    lines = [
        "# Suspect data",
        "",
        "Written by `python -m fmnist_core suspects`; the Suspect data page shows the same with images.",
        "",
        f"- Near-duplicates (pixel RMS < {NEAR_DUPLICATE_RMS}): {int(counts.get('train', 0))} pairs within "
        f"train, {int(counts.get('test', 0))} within test, {int(counts.get('test-train', 0))} test-train; "
        f"{int(found.duplicates['identical'].sum())} byte-identical, "
        f"{int((~found.duplicates['same_label']).sum())} with two labels.",
        f"- Labels doubted out of fold (cleanlab, logistic regression on 64 principal components, "
        f"5 folds): {len(found.issues)}.",
        f"- The map's classifier ({retrain_base(0, cartography=True).run_id}): "
        + (", ".join(f"{count} {name}" for name, count in found.regions.items()) or "not trained")
        + ".",
        f"- Flagged as mislabels (doubted{' and hard to learn' if found.regions else ''}): "
        f"{len(found.mislabels)}; flagged in all: "
        f"{len(found.flagged)} (list {found.digest} in models_cache/{EXCLUSIONS}/).",
        "",
        "| seed | all images | without the flagged |",
        "|---:|---:|---:|",
    ]
    for row in found.result.table.itertuples(index=False):
        lines.append(
            f"| {row.seed} | {row.with_all:.4f} | {row.without_flagged:.4f} |".replace("nan", "not run")
        )
    if found.result.verdict is not None:
        lines += [
            "",
            f"Leaving them out raises test accuracy: **{found.result.verdict}** ({found.result.detail}).",
        ]
    path = Path(out_dir) / "suspects.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


# --- Retraining without the flagged images over seeds -----------------------------------


def retrain_base(seed: int = 0, cartography: bool = False) -> RunConfig:
    """The classifier the study retrains: S3's network with cross-entropy and Adam, 15 epochs on
    all training images (88-89% on the test set, about 30 s a run on 2 CPU cores); at
    FMNIST_SCALE=test 2 epochs on 2,000 (a map needs two epochs to vary over)."""
    test = {"epochs": 2, "train_subset": 2000, "test_subset": environment.scored_test_images()}
    size = test if environment.scale() == "test" else {"epochs": 15}
    return RunConfig.for_model(
        "mlp", loss="cross_entropy", optimizer="adam", lr=1e-3, seed=seed, cartography=cartography, **size
    )


def retrain_configs(digest: str, seeds: int = RETRAIN_SEEDS) -> list[tuple[RunConfig, RunConfig]]:
    """(all images, without the flagged ones) for each seed 0..seeds-1."""
    return [(retrain_base(seed), retrain_base(seed).replace(exclude=digest)) for seed in range(seeds)]


@dataclass(frozen=True)
class RetrainResult:
    table: pd.DataFrame  # seed, with_all, without_flagged (test accuracy; NaN where not trained yet)
    verdict: str | None  # holds / fails / within seed noise, once every seed has both runs
    detail: str


def retrain_result(cache, digest: str, seeds: int = RETRAIN_SEEDS) -> RetrainResult:
    """The test accuracy of each seed's pair of runs from `cache`, and the verdict on "leaving out
    the flagged images raises test accuracy" (studies.reports.grid.seeds_verdict's rule)."""

    def accuracy(config: RunConfig) -> float:
        if not cache.exists(config.run_id):
            return float("nan")
        return float(cache.load_record(config.run_id)[1]["test_accuracy"])

    rows = [
        {"seed": everything.seed, "with_all": accuracy(everything), "without_flagged": accuracy(without)}
        for everything, without in retrain_configs(digest, seeds)
    ]
    table = pd.DataFrame(rows)
    if table[["with_all", "without_flagged"]].isna().any().any():
        return RetrainResult(table, None, "")
    verdict, detail = seeds_verdict("higher", list(table["without_flagged"]), list(table["with_all"]))
    return RetrainResult(table, verdict, detail)
