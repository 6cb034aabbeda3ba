"""What lives for the whole server process: the data, the job queue, loaded models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis
from fmnist_core.base import environment
from fmnist_core.data.fashion import FashionMNIST, load_data
from fmnist_core.runs.jobs import JobQueue, Limits, workers_from_environment
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.runs.trained import load_run as load_cached_run
from fmnist_core.store.cache import RunCache, default_root
from fmnist_core.store.table import list_runs
from fmnist_core.views import ood


def run_cache() -> RunCache:
    return RunCache()


@st.cache_resource(show_spinner="Loading Fashion-MNIST...")
def fashion() -> FashionMNIST:
    return load_data()


@st.cache_resource
def _job_queue(root: str) -> JobQueue:
    return JobQueue(
        RunCache(root),
        Limits.from_environment(),
        estimate=_expected_seconds,
        workers=workers_from_environment(),
        scheduler=environment.scheduler(),  # the jobs train on a Dask cluster's workers
        scheduler_setting="FMNIST_SCHEDULER",
    )


def _expected_seconds(config) -> float:
    """A config's expected training time here, counted against its owner's minutes in the queue:
    from this machine's runs of the model, else a few of its steps timed now (never 0: a 60-epoch
    ResNet counted as nothing against FMNIST_MAX_QUEUE_MINUTES); a config that cannot train here
    is refused before this is asked."""
    from fmnist_core.views.architecture import expected_seconds

    cache = RunCache(job_queue().cache.root)
    runs = _runs_table(str(cache.root.resolve()), cache.stamp(), fashion().fingerprint)
    estimate = expected_seconds(config, runs, cache, probe=True)
    return estimate.seconds if estimate is not None else 0.0


def expected_time(config):
    """(its Estimate or None, whether it is still being timed): from this machine's runs of the
    model at once, else a few of its steps timed in the background (seconds) and kept."""
    from fmnist_core.views.architecture import probe_timing, timed_part
    from fmnist_core.views.explore import estimate_seconds

    cache = run_cache()
    estimate = estimate_seconds(config, runs_table())
    if estimate is not None:
        return estimate, False
    # Timed once per kind of config: another number of epochs or images is the same kind.
    done = in_background(
        f"probe:{cache.root.resolve()}:{timed_part(config).run_id}", lambda: [probe_timing(config, cache)]
    )
    if done is None:
        return None, True
    return (done[0].estimate(config) if done[0] is not None else None), False


_QUEUE_FAILED: dict[str, str] = {}  # cache folder -> why its queue could not be built (a scheduler)


def job_queue() -> JobQueue:
    """One queue (and one training thread) per process and cache folder. Where it cannot be built
    (FMNIST_SCHEDULER unreachable) the same one line at once on every later ask: the settings are
    read when the server starts, so only a restart can mend it."""
    root = str(default_root().resolve())
    if root in _QUEUE_FAILED:
        raise ValueError(_QUEUE_FAILED[root])
    try:
        return _job_queue(root)
    except ValueError as error:
        _QUEUE_FAILED[root] = " ".join(str(error).split())
        raise


@st.cache_resource(max_entries=24, show_spinner="Loading the model...")
def _load_run(run_id: str, root: str, stamp: float) -> TrainedRun:
    return load_cached_run(run_id, RunCache(root))


def load_run(run_id: str) -> TrainedRun:
    """A cached run's model kept in memory; the disk entry (and its timestamp) stays the truth."""
    cache = run_cache()
    manifest = cache.folder(run_id) / "manifest.json"
    return _load_run(run_id, str(cache.root.resolve()), manifest.stat().st_mtime)


def runs_table(all_data: bool = False) -> pd.DataFrame:
    """The usable cached runs on the data this lab has loaded, best first within each model (so
    every picker defaults to the best run of its kind): autoencoders by test MSE, classifiers by
    test accuracy, then newest first. `all_data`: runs on other data sets too, after them (their
    figures were measured on their own test set). Listed again only when a file of some entry
    changes: a page and its training panel, or a fragment's rerun, share one listing."""
    cache = run_cache()
    table = _runs_table(str(cache.root.resolve()), cache.stamp(), fashion().fingerprint)
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


@st.cache_data(max_entries=4, show_spinner=False)
def _runs_table(root: str, stamp: tuple, loaded: str) -> pd.DataFrame:
    table = list_runs(RunCache(root))
    if table.empty:
        return table
    table = table[table["status"] == "ok"]
    if table.empty:
        return table.assign(other_data=pd.Series(dtype=bool))
    score = table["test_mse"] if "test_mse" in table else pd.Series(np.nan, index=table.index)
    if "test_accuracy" in table:
        score = score.fillna(-table["test_accuracy"])
    return (
        table.assign(_score=score, other_data=table["data"] != loaded)
        .sort_values(["other_data", "_score", "created"], ascending=[True, True, False], na_position="last")
        .drop(columns="_score")
        .reset_index(drop=True)
    )


def seeds_result(name: str, scale, seeds: int):
    """A report's runs over seeds and its claims' verdicts (fmnist_core.studies.reports.seeds), read from
    the cache again only when some entry's files change."""
    cache = run_cache()
    return _seeds_result(name, scale, seeds, str(cache.root.resolve()), cache.stamp())


@st.cache_data(max_entries=8, show_spinner=False)
def _seeds_result(name: str, scale, seeds: int, root: str, stamp: tuple):
    from fmnist_core.studies.reports.seeds import collect_seeds

    return collect_seeds(name, scale, RunCache(root), seeds)


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


@st.cache_data(max_entries=2, show_spinner="Preparing the test images' thumbnails...")
def test_image_urls(count: int) -> list[str]:
    """The first `count` test images as PNG data URLs, for the latent map's tooltips."""
    from ui import plots  # plotly: imported by the pages that draw, not by the first page

    return plots.image_urls(fashion().test_images[:count, 0].numpy())


@st.cache_data(max_entries=8, show_spinner="Measuring every test image's reconstruction error...")
def _test_errors(run_id: str, stamp: float) -> np.ndarray:
    """An autoencoder's per-image error on the whole test set, computed once per run."""
    return analysis.reconstruction_errors(load_run(run_id).model, fashion().test_images)


@st.cache_resource
def _background() -> dict:
    """One worker thread per server process for first-use work, and what it was given."""
    return {"pool": ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-first-use"), "work": {}}


def in_background(key: str, compute):
    """compute() run once per process, off the page's thread: its result when done, else None
    (the page shows what it can meanwhile). A failure is raised to every page that asks."""
    state = _background()
    future = state["work"].get(key)
    if future is None:
        future = state["work"][key] = state["pool"].submit(compute)
    return future.result() if future.done() else None


def garment_check(run_id: str) -> ood.Detector | None:
    """The garment check built on one autoencoder: calibrated on 5,000 training images the first
    time (in the background, then kept beside the cache for every later start), else None."""
    from fmnist_core.runs.trained import load_run as load_from_disk

    cache = run_cache()
    path = cache.derived_path(run_id, "garment_check.npz")

    def calibrate() -> ood.Detector:
        run = load_from_disk(run_id, RunCache(cache.root))
        detector = ood.load_detector(run, path)
        if detector is None:
            detector = ood.fit_detector(run, load_data().train_images[-CALIBRATION:, 0].numpy())
            ood.save_detector(detector, path)
        return detector

    return in_background(f"garment_check:{path}", calibrate)


CALIBRATION = 5000


def _stamp(run_id: str) -> float:
    """When the run's entry last changed (its manifest is written last): the key of what is kept."""
    return (run_cache().folder(run_id) / "manifest.json").stat().st_mtime


@st.cache_data(max_entries=4, show_spinner="Comparing every image with every other (about 12 s)...")
def duplicates(threshold: float) -> pd.DataFrame:
    """Near-duplicate pairs within and across the splits, computed once per threshold."""
    from fmnist_core.analysis import suspects

    return suspects.dataset_duplicates(threshold)


@st.cache_data(
    max_entries=4,
    show_spinner="Predicting every training image's class without its label (5 folds, ~25 s)...",
)
def _label_issues(run_id: str, stamp: float) -> pd.DataFrame:
    """Likely mislabels from out-of-fold predictions on an autoencoder's codes ("": on pixels)."""
    from fmnist_core.analysis import suspects

    if not run_id:
        return suspects.pixel_label_issues()
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
        return _stamp(self.run_id)

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

    @property
    def probe_accuracy(self) -> float:
        """A linear read-out's test accuracy on its codes (the latent sweep's)."""
        return _probe_accuracy(self.run_id, self.version)


@st.cache_data(max_entries=16, show_spinner="Reading what each unit does over the test set...")
def _activity(run_id: str, version: float):
    from fmnist_core.views import inside

    return inside.activity(load_run(run_id), run_cache())


@st.cache_data(max_entries=16, show_spinner="Reading out the codes (a logistic regression)...")
def _probe_accuracy(run_id: str, version: float) -> float:
    from fmnist_core.studies import sweep

    return sweep.probe_accuracy(load_run(run_id))


def sweep_table(points, name: str) -> pd.DataFrame:
    """The latent sweep's table at these points (`name`: their scale's name), measured again only
    when one of its runs changes."""
    from fmnist_core.studies import sweep

    cache = run_cache()
    configs = sweep.sweep_configs(points)
    versions = tuple(_stamp(c.run_id) if cache.exists(c.run_id) else 0.0 for c in configs)
    return _sweep_table(points, name, versions)


@st.cache_data(max_entries=4, show_spinner="Measuring PCA at every k...")
def _sweep_table(_points, name: str, versions: tuple) -> pd.DataFrame:
    from fmnist_core.studies import sweep

    return sweep.sweep_table(_points, run_cache(), probe=lambda run_id: run_view(run_id).probe_accuracy)


def run_view(run_id: str) -> RunView:
    return RunView(run_id)


def pixel_label_issues() -> pd.DataFrame:
    """Likely mislabels from out-of-fold predictions on the training images' pixels (PCA)."""
    return _label_issues("", 0.0)


def hp_sweep(name: str) -> tuple[dict, pd.DataFrame]:
    """A kept sweep's plan and trials (with their runs' columns), read again when its journal or
    any run changes."""
    from fmnist_core.studies import hpsearch

    path = hpsearch.storage_path(run_cache(), name)
    try:
        info = path.lstat()  # a link is never followed: open_study refuses it in one line
        version = (info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:  # gone since it was listed: open_study says so in one line
        version = ()
    return _hp_sweep(name, version, run_cache().stamp())


@st.cache_data(max_entries=8, show_spinner="Reading the sweep...")
def _hp_sweep(name: str, version: tuple, stamp: tuple) -> tuple[dict, pd.DataFrame]:
    from fmnist_core.studies import hpsearch
    from fmnist_core.views.runs_explorer import sweep_runs

    study = hpsearch.open_study(run_cache(), name)
    return study.user_attrs.get("plan", {}), sweep_runs(study, runs_table(all_data=True))


@st.cache_data(max_entries=8, show_spinner="Measuring each setting's importance...")
def importance(table: pd.DataFrame, settings: list[str], metric: str, sweep: str = "") -> pd.Series:
    """fANOVA over a sweep's trials, else a random forest's permutation importance over the runs."""
    from fmnist_core.studies import hpsearch
    from fmnist_core.views import runs_explorer

    if sweep:
        return hpsearch.importance(hpsearch.open_study(run_cache(), sweep))
    return runs_explorer.importance(table, settings, metric)


@st.cache_resource
def _sweep_drivers(root: str) -> dict:
    return {}


def sweep_drivers() -> dict:
    """The sweeps this server drives through its job queue, by name (they outlive page reruns)."""
    return _sweep_drivers(str(default_root().resolve()))
