"""The cached runs as the pages see them: the ranked table, a run's label, and each run's
derived arrays (RunView) computed once per version of its files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.store.cache import RunCache
from fmnist_core.store.table import list_runs, rank_runs
from ui.resources import entry_version, fashion, load_run, run_cache


def runs_table(all_data: bool = False) -> pd.DataFrame:
    """The usable cached runs on the data this lab has loaded, best first within each model
    (store.table.rank_runs). `all_data`: runs on other data sets too, after them. Listed again
    only when a file of some entry changes: a page and its training panel, or a fragment's rerun,
    share one listing."""
    table = runs_in(run_cache())
    if all_data or table.empty:
        return table
    return table[~table["other_data"]].reset_index(drop=True)


def runs_that(capability: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs (of `runs`, default the runs table) whose model can do `capability` ("reconstructs",
    "classifies", "samples": ModelSpec.capabilities), best first."""
    runs = runs_table() if runs is None else runs
    if runs.empty or capability not in runs:
        return runs.iloc[0:0]
    return runs[runs[capability].fillna(False).astype(bool)]


def damaged_runs() -> pd.DataFrame:
    """The entries of the cache that failed their checks (status not ok), as the command lists them."""
    cache = run_cache()
    return _damaged(str(cache.root.resolve()), cache.stamp())


@st.cache_data(max_entries=4, show_spinner=False)
def _damaged(root: str, stamp: tuple) -> pd.DataFrame:
    table = list_runs(RunCache(root))
    return table if table.empty else table[table["status"] != "ok"].reset_index(drop=True)


def runs_in(cache: RunCache) -> pd.DataFrame:
    """`cache`'s ranked runs, every data set's, kept until a file of some entry changes."""
    return _runs_table(str(cache.root.resolve()), cache.stamp(), fashion().fingerprint)


@st.cache_data(max_entries=4, show_spinner=False)
def _runs_table(root: str, stamp: tuple, loaded: str) -> pd.DataFrame:
    return rank_runs(list_runs(RunCache(root)), loaded)


def present(value) -> bool:
    """A table cell that holds a value (other models leave their columns empty: None or NaN)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def run_label(row) -> str:
    """A run's name in pickers, most telling first (a select box cuts the end off): its test
    figure, the model and its settings, the data and epochs, when it was made, and its id."""
    model = row["model"]
    if row.get("reconstructs") is True or row.get("reconstructs") is np.True_:
        # The table's columns are float where other models leave them empty: n=256.0 reads as 256.
        shown = {"n": "n={:.0f}", "dropout": "p={:g}", "beta": "β={:g}"}
        detail = ", ".join(form.format(float(row[k])) for k, form in shown.items() if present(row.get(k)))
        if isinstance(row.get("pca_path"), bool | np.bool_) and row.get("pca_path"):
            detail += ", PCA path"
        metric = f"MSE {row.get('test_mse', float('nan')):.4f}"
    else:
        detail = "frozen" if row.get("freeze_encoder") is True else ""
        metric = f"acc {row.get('test_accuracy', float('nan')):.3f}"
    images = int(row["train_subset"]) if row.get("train_subset") else 60_000
    size = f"{images // 1000}k imgs" if images % 1000 == 0 else f"{images:,} imgs"
    precision = " bf16" if row.get("precision") == "bf16" else ""
    made = pd.to_datetime(row.get("created"), errors="coerce")
    when = f" · {made:%d %b %H:%M}" if not pd.isna(made) else ""
    name = f"{model} {detail}".strip()
    if isinstance(row.get("never_predicted"), str) and row["never_predicted"]:
        metric += f" (never answers {row['never_predicted']})"
    if row.get("other_data") is True or row.get("other_data") is np.True_:
        metric = f"[other data {row['data']}] {metric}"
    return (
        f"{metric} · {name} · {size}, {int(row['epochs'])} ep, {row['optimizer']} lr={row['lr']:g}{precision}"
        f"{when} · {row['run_id'][:6]}"
    )


@st.cache_data(max_entries=8, show_spinner="Encoding the test set...")
def _test_codes(run_id: str, stamp: float) -> np.ndarray:
    run = load_run(run_id)
    return analysis.latent_codes(run.model, fashion().test_images)


@st.cache_data(max_entries=8, show_spinner="Projecting the codes...")
def _projection(run_id: str, method: str, count: int, stamp: float) -> np.ndarray:
    codes = _test_codes(run_id, stamp)[:count]
    return analysis.latent_projection(codes, method)


@st.cache_data(max_entries=8, show_spinner="Classifying the test set...")
def _test_probabilities(run_id: str, stamp: float) -> np.ndarray:
    """A classifier's class probabilities (10,000, 10) on the test set, computed once per run."""
    return load_run(run_id).predict_proba(fashion().test_images)


@st.cache_data(max_entries=8)
def _calibration(run_id: str, stamp: float) -> tuple[pd.DataFrame, float]:
    """A classifier's reliability table and calibration error on the test set (15 bins)."""
    return analysis.calibration(_test_probabilities(run_id, stamp), fashion().test_labels.numpy(), bins=15)


@st.cache_data(max_entries=8, show_spinner="Measuring every test image's reconstruction error...")
def _test_errors(run_id: str, stamp: float) -> np.ndarray:
    """An autoencoder's per-image error on the whole test set, computed once per run."""
    return analysis.reconstruction_errors(load_run(run_id).model, fashion().test_images)


@st.cache_data(
    max_entries=4,
    show_spinner="Predicting every training image's class without its label (5 folds, ~25 s)...",
)
def _label_issues(run_id: str, stamp: float) -> pd.DataFrame:
    """Likely mislabels from out-of-fold predictions on an autoencoder's codes."""
    from fmnist_core.analysis import suspects

    images, labels = fashion().train_images, fashion().train_labels.numpy()
    features = suspects.encoder_features(load_run(run_id).model, images)
    return suspects.issues_from_features(features, labels)


@st.cache_data(max_entries=4, show_spinner="Reading the training dynamics...")
def _training_dynamics(run_id: str, stamp: float):
    """A cartography run's map (fmnist_core.analysis.suspects.Cartography)."""
    from fmnist_core.analysis import suspects

    return suspects.cartography(load_run(run_id).history)


@st.cache_data(max_entries=4, show_spinner=False)
def _training_positions(run_id: str, stamp: float) -> np.ndarray:
    """The training images (indices among the 60,000) a run trained on, in its order."""
    from fmnist_core.runs.trained import training_indices

    return training_indices(run_cache().load_config(run_id), run_cache())


@dataclass(frozen=True)
class RunView:
    """One cached run as the pages see it: each property is computed once per version of the run's
    files and kept (a retrained run is a new version: no page sees or passes a stamp)."""

    run_id: str

    @property
    def version(self) -> float:
        return entry_version(self.run_id)

    @property
    def trained(self) -> TrainedRun:
        return load_run(self.run_id)

    @property
    def codes(self) -> np.ndarray:
        """The test set's codes (an autoencoder's latent vectors, a classifier's last features)."""
        return _test_codes(self.run_id, self.version)

    def projection(self, method: str, count: int) -> np.ndarray:
        return _projection(self.run_id, method, count, self.version)

    @property
    def probabilities(self) -> np.ndarray:
        return _test_probabilities(self.run_id, self.version)

    @property
    def calibration(self) -> tuple[pd.DataFrame, float]:
        return _calibration(self.run_id, self.version)

    @property
    def errors(self) -> np.ndarray:
        return _test_errors(self.run_id, self.version)

    @property
    def label_issues(self) -> pd.DataFrame:
        return _label_issues(self.run_id, self.version)

    @property
    def training_dynamics(self):
        return _training_dynamics(self.run_id, self.version)

    @property
    def training_positions(self) -> np.ndarray:
        return _training_positions(self.run_id, self.version)

    @property
    def activity(self):
        """What every unit does over the test set (views.inside.activity: read from beside the
        cache, computed there first where it is not; ui.inside_sections.count_units shows that)."""
        return _activity(self.run_id, self.version)

    def matches(self, layer: str, other: str, other_layer: str) -> pd.DataFrame:
        """Each unit of `layer` matched to the unit of another run's layer whose activations over
        2,000 test images correlate with its own most (analysis.matching), once per version of both."""
        return _matches(self.run_id, self.version, layer, other, entry_version(other), other_layer)

    def upstream(self, layer: str, unit: int, upstream: str) -> np.ndarray:
        """Each unit of `upstream`'s share in `unit` of `layer` over 1,000 test images
        (analysis.upstream), once per version."""
        return _upstream(self.run_id, self.version, layer, unit, upstream)

    def feature_pictures(self, layer: str, units: tuple[int, ...], pictures: int = 1) -> np.ndarray:
        """(pictures, 28, 28): the inputs the sum of `units` responds to most (analysis.featureviz;
        several: pushed apart), found once per version."""
        return _feature_pictures(self.run_id, self.version, layer, tuple(units), pictures)

    @property
    def probe_accuracy(self) -> float:
        """A linear read-out's test accuracy on its codes (the latent sweep's)."""
        return _probe_accuracy(self.run_id, self.version)


@st.cache_data(max_entries=16, show_spinner="Matching the units of the two runs over 2,000 test images...")
def _matches(run_id: str, version: float, layer: str, other: str, other_version: float, other_layer: str):
    from fmnist_core.analysis import matching

    images = fashion().test_images[:MATCHED_IMAGES]
    return matching.match_units(load_run(run_id).model, layer, load_run(other).model, other_layer, images)


MATCHED_IMAGES = 2000


@st.cache_data(max_entries=64, show_spinner="Tracing which units feed this one over 1,000 test images...")
def _upstream(run_id: str, version: float, layer: str, unit: int, upstream: str) -> np.ndarray:
    from fmnist_core.analysis.upstream import FEEDING_IMAGES, upstream_shares

    images = fashion().test_images[:FEEDING_IMAGES]
    return upstream_shares(load_run(run_id).model, layer, unit, upstream, images)


@st.cache_data(
    max_entries=64, show_spinner="Optimising inputs for these units (256 steps of gradient ascent)..."
)
def _feature_pictures(run_id: str, version: float, layer: str, units: tuple, pictures: int) -> np.ndarray:
    from fmnist_core.views import inside

    return inside.feature_pictures(
        load_run(run_id), run_cache(), layer, units, pictures
    )  # kept beside the cache


@st.cache_data(max_entries=16, show_spinner="Reading what each unit does over the test set...")
def _activity(run_id: str, version: float):
    from fmnist_core.views import inside

    return inside.activity(load_run(run_id), run_cache())


@st.cache_data(max_entries=16, show_spinner="Reading out the codes (a logistic regression)...")
def _probe_accuracy(run_id: str, version: float) -> float:
    from fmnist_core.studies import sweep

    return sweep.probe_accuracy(load_run(run_id))


def run_view(run_id: str) -> RunView:
    return RunView(run_id)
