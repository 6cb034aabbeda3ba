"""Floor 9: what the app asks of trained runs (reconstructions of a drawing, boundary walks, the
latent atlas, the quiz, the garment check)."""

from fmnist_core.views.explore import *  # noqa: F403
