import os
import shutil
import sys

import pytest

from fmnist_core.base.device import use_threads
from fmnist_core.runs import jobs, shared
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the 2 cores: each keeps to one thread, and so does every process it starts
    # (a job's, a test server's): two trainings with both cores each ran far slower than one each.
    use_threads(1)  # torch's, and numpy's BLAS (an SVD took both cores from the other worker)
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["FMNIST_JOB_THREADS"] = "1"


# The files that take longest, longest first: with `--dist loadfile --no-loadscope-reorder`
# (scripts/test.sh) the two workers take them first and the many short files fill in after. xdist's
# own order (most tests first) left the browser tests, 400 s on one worker, for the end.
LONGEST_FIRST = [
    "test_browser",
    "test_app",
    "test_dask",
    "test_train",
    "test_hpsearch",
    "test_cache",
    "test_jobs",
    "test_cli",
]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty models_cache."""
    root = tmp_path / "models_cache"
    monkeypatch.setenv("FMNIST_CACHE", str(root))
    monkeypatch.setenv("FMNIST_DEBUG", "1")  # a page's failure is a test's exception, not a message
    monkeypatch.setenv("FMNIST_STARTER", "0")  # no starter set training behind the tests' backs
    # The runs the lab picks by itself (the starter set, Suspect data's map) at 1-2 epochs on 2,000
    # images: the pages prove the same on them; bench/ times the full ones.
    monkeypatch.setenv("FMNIST_SCALE", "test")
    return root


@pytest.fixture(autouse=True)
def queues_end_with_their_test(monkeypatch):
    """Every queue (JobQueue, SharedQueue) a test builds (itself or through the app's pages) is closed when the test
    ends: its jobs stopped and its trainer threads ended (they polled for the rest of the session,
    and a held job went on training into later tests)."""
    built = []
    build = jobs.JobQueue.__init__

    def recording(self, *args, **kwargs):
        build(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(jobs.JobQueue, "__init__", recording)
    build_shared = shared.SharedQueue.__init__

    def recording_shared(self, *args, **kwargs):
        build_shared(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(shared.SharedQueue, "__init__", recording_shared)
    yield built
    for queue in built:
        queue.close(timeout=300)  # a training stops at its next step: seconds, even on a busy machine
    if "ui.jobs" in sys.modules:
        sys.modules["ui.jobs"]._job_queue.clear()


@pytest.fixture
def tiny_autoencoder_config():
    # Scored on 1,000 test images: on all 10,000, scoring took 60% of such a run (1.0 of 1.7 s).
    return RunConfig.for_model(
        "conv_autoencoder",
        {"dropout": 0.0, "output_dropout": False},
        epochs=1,
        train_subset=2000,
        test_subset=1000,
    )


@pytest.fixture(scope="session")
def small_autoencoder():
    """Train (or find) a small autoencoder (n=8, one epoch) in a cache: the shared start of the
    module fixtures that need a trained encoder."""

    def trained(cache, train_subset: int):
        config = RunConfig.for_model(
            "conv_autoencoder", {"n": 8, "dropout": 0.0}, epochs=1, train_subset=train_subset
        )
        return get_or_train(config, cache=cache)

    return trained


@pytest.fixture(scope="session")
def _run_pool(tmp_path_factory):
    return RunCache(tmp_path_factory.mktemp("run_pool"))


@pytest.fixture
def pooled(_run_pool):
    """`pooled(config, cache=None)`: a small run trained once per test process, its entry copied
    into `cache` (the test's own by default) and loaded from there. For tests whose subject is what
    happens to an entry after training (damage, links, listings): each still has an entry of its
    own, as if it had trained it; the tests of training itself train."""

    def trained(config: RunConfig, cache: RunCache | None = None):
        cache = cache or RunCache()
        if not _run_pool.exists(config.run_id):
            get_or_train(config, cache=_run_pool)
        if not cache.folder(config.run_id).exists():
            cache.root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(_run_pool.folder(config.run_id), cache.folder(config.run_id))
        return get_or_train(config, cache=cache)

    return trained
