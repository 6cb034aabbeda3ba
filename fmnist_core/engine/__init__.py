"""The training engine's speed work, kept apart from the models: a rewrite that puts faster
layers in place of torch's own in a model being trained, compiled kernels, and memory tricks.

`fmnist_core.training.loop` is its only user; the models never import it.
"""

from fmnist_core.engine.fused import compiled_kernels_available
from fmnist_core.engine.memory import join_parameters, keep_freed_memory, separate_parameters
from fmnist_core.engine.rewrite import accelerate

__all__ = [
    "accelerate",
    "compiled_kernels_available",
    "join_parameters",
    "keep_freed_memory",
    "separate_parameters",
]
