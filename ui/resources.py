"""What lives for the whole server process: the data, the cache, loaded models, a thread for
first-use work (the floor under runs, jobs, people and results)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import streamlit as st

from fmnist_core.data.fashion import FashionMNIST, load_data
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.runs.trained import load_run as load_cached_run
from fmnist_core.store.cache import RunCache, default_root
from fmnist_core.views import ood


def run_cache() -> RunCache:
    return RunCache()


@st.cache_resource(show_spinner="Loading Fashion-MNIST...")
def fashion() -> FashionMNIST:
    return load_data()


@st.cache_resource(max_entries=24, show_spinner="Loading the model...")
def _load_run(run_id: str, root: str, stamp: float) -> TrainedRun:
    return load_cached_run(run_id, RunCache(root))


def load_run(run_id: str) -> TrainedRun:
    """A cached run's model kept in memory; the disk entry (and its timestamp) stays the truth."""
    cache = run_cache()
    manifest = cache.folder(run_id) / "manifest.json"
    return _load_run(run_id, str(cache.root.resolve()), manifest.stat().st_mtime)


@st.cache_data(max_entries=2, show_spinner="Preparing the test images' thumbnails...")
def test_image_urls(count: int) -> list[str]:
    """The first `count` test images as PNG data URLs, for the latent map's tooltips."""
    from ui import plots  # plotly: imported by the pages that draw, not by the first page

    return plots.image_urls(fashion().test_images[:count, 0].numpy())


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


def finished(key: str) -> bool:
    """Whether the work in_background holds under `key` is done (False where none was given)."""
    future = _background()["work"].get(key)
    return future is not None and future.done()


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


def entry_version(run_id: str) -> float:
    """When the run's entry last changed (its manifest is written last): the key of what is kept."""
    return (run_cache().folder(run_id) / "manifest.json").stat().st_mtime


@st.cache_resource
def _sweep_drivers(root: str) -> dict:
    return {}


def sweep_drivers() -> dict:
    """The sweeps this server drives through its job queue, by name (they outlive page reruns)."""
    return _sweep_drivers(str(default_root().resolve()))


@st.cache_resource(show_spinner=False)
def data_set_figures() -> tuple:
    """Home's figures of the data set, built once per process (plotly takes ~50 ms to build them,
    and the data never changes under a server): ten examples of each class, and the images per
    class in each split."""
    import numpy as np
    import pandas as pd
    import plotly.express as px

    from fmnist_core.data.labels import CLASS_NAMES
    from ui import plots

    data = fashion()
    rng = np.random.default_rng(0)
    examples = {}
    for cls, name in enumerate(CLASS_NAMES):
        index = rng.choice(np.flatnonzero(data.train_labels.numpy() == cls), size=10, replace=False)
        examples[name] = data.train_images[index, 0].numpy()
    counts = pd.DataFrame(
        {
            "class": list(CLASS_NAMES) * 2,
            "split": ["train"] * 10 + ["test"] * 10,
            "images": np.concatenate(
                [np.bincount(data.train_labels.numpy()), np.bincount(data.test_labels.numpy())]
            ),
        }
    )
    bars = px.bar(counts, x="class", y="images", color="split", barmode="group", height=280)
    bars.update_layout(margin=dict(l=10, r=10, t=10, b=10))
    return plots.image_rows(examples), bars
