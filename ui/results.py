"""The studies' results the pages show, computed once per version of the runs they read:
seeds, duplicates and mislabels, the latent sweep, hyperparameter sweeps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from fmnist_core.store.cache import RunCache
from ui.resources import entry_version, run_cache
from ui.runs import run_view, runs_table


def seeds_result(name: str, scale, seeds: int):
    """A report's runs over seeds and its claims' verdicts (fmnist_core.studies.reports.seeds), read from
    the cache again only when some entry's files change."""
    cache = run_cache()
    return _seeds_result(name, scale, seeds, str(cache.root.resolve()), cache.stamp())


@st.cache_data(max_entries=8, show_spinner=False)
def _seeds_result(name: str, scale, seeds: int, root: str, stamp: tuple):
    from fmnist_core.studies.reports.seeds import collect_seeds

    return collect_seeds(name, scale, RunCache(root), seeds)


@st.cache_data(max_entries=4, show_spinner="Comparing every image with every other (about 12 s)...")
def duplicates(threshold: float) -> pd.DataFrame:
    """Near-duplicate pairs within and across the splits, computed once per threshold."""
    from fmnist_core.analysis import suspects

    return suspects.dataset_duplicates(threshold)


def sweep_table(points, name: str) -> pd.DataFrame:
    """The latent sweep's table at these points (`name`: their scale's name), measured again only
    when one of its runs changes."""
    from fmnist_core.studies import sweep

    cache = run_cache()
    configs = sweep.sweep_configs(points)
    versions = tuple(entry_version(c.run_id) if cache.exists(c.run_id) else 0.0 for c in configs)
    return _sweep_table(points, name, versions)


@st.cache_data(max_entries=4, show_spinner="Measuring PCA at every k...")
def _sweep_table(_points, name: str, versions: tuple) -> pd.DataFrame:
    from fmnist_core.studies import sweep

    return sweep.sweep_table(_points, run_cache(), probe=lambda run_id: run_view(run_id).probe_accuracy)


@st.cache_data(
    max_entries=1,
    show_spinner="Predicting every training image's class without its label (5 folds, ~25 s)...",
)
def pixel_label_issues() -> pd.DataFrame:
    """Likely mislabels from out-of-fold predictions on the training images' pixels (PCA)."""
    from fmnist_core.analysis import suspects

    return suspects.pixel_label_issues()


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
