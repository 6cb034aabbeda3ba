"""Fashion-MNIST Lab core: real data, models, training, disk cache and analysis (no Streamlit)."""

from .cache import RunCache
from .config import RunConfig
from .data import CLASS_NAMES, load_data
from .models import create_model, get_spec, list_models
from .runs import TrainedRun, get_or_train, load_run, train
from .training import Progress

__all__ = [
    "CLASS_NAMES",
    "Progress",
    "RunCache",
    "RunConfig",
    "TrainedRun",
    "create_model",
    "get_or_train",
    "get_spec",
    "list_models",
    "load_data",
    "load_run",
    "train",
]
