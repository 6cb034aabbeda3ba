"""Fashion-MNIST Lab core: real data, models, training, disk cache and analysis (no Streamlit).

The names below load on first use (PEP 562), so that `import fmnist_core.data.labels` and the app's
first page do not wait for torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "CLASS_NAMES": "data.labels",
    "Progress": "training.loop",
    "RunCache": "store.cache",
    "RunConfig": "training.config",
    "TrainedRun": "runs.trained",
    "create_model": "models",
    "get_or_train": "runs.trained",
    "get_spec": "models",
    "list_models": "models",
    "load_data": "data.fashion",
    "load_run": "runs.trained",
    "train": "runs.trained",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fmnist_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
