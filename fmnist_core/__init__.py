"""Fashion-MNIST Lab core: real data, models, training, disk cache and analysis (no Streamlit)."""

from .cache import RunCache, TrainedRun
from .config import RunConfig
from .data import CLASS_NAMES, load_data
from .models import create_model, get_spec, list_models
from .train import Progress, train

__all__ = [
    "CLASS_NAMES",
    "Progress",
    "RunCache",
    "RunConfig",
    "TrainedRun",
    "create_model",
    "get_spec",
    "list_models",
    "load_data",
    "train",
]
