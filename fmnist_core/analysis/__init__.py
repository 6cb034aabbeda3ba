"""Floor 4: what a model tells on a set of images (metrics, latent maps, attributions, suspect data).
Takes models and tensors, returns arrays and DataFrames; knows nothing of runs or the cache."""

from fmnist_core.analysis.latent import *  # noqa: F403
from fmnist_core.analysis.metrics import *  # noqa: F403
