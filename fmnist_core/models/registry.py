"""The model registry: a name gives a settings dataclass, a builder, a kind and the report's recipe.

The registry knows nothing of the cache or the data: whatever a model starts from (an encoder's
settings and weights, PCA of its training split) is resolved above it (fmnist_core.runs.trained).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from fmnist_core.base.settings import coerce, shown

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


# What the lab asks of a model beyond forward(), by what its spec says it can do (tests/test_models
# builds every registered model and checks each protocol its spec promises).
@runtime_checkable
class Encodes(Protocol):
    """Every model: `encode` gives its codes (an autoencoder's latent vectors, a classifier's last
    features), which the latent maps, the nearest-neighbour views and the garment check read."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, 1, 28, 28) -> (N, d)


@runtime_checkable
class Reconstructs(Encodes, Protocol):
    """kind "autoencoder" (ModelSpec.reconstructs): a code of `latent_size` and the way back; a
    sampling model (ModelSpec.samples, the VAE) decodes codes drawn from N(0, I) through it too."""

    latent_size: int

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...  # (N, latent_size) -> (N, 1, 28, 28)


@runtime_checkable
class HasLossTerms(Protocol):
    """A model whose loss has terms beyond its kind's (the VAE's KL divergence): after a forward
    pass, training.objectives adds each of `loss_terms()` weighted by `loss_weights()`, and keeps
    each term's epoch mean as train_<name>."""

    loss_term_names: tuple[str, ...]

    def loss_terms(self) -> dict[str, torch.Tensor]: ...

    def loss_weights(self) -> dict[str, float]: ...


@runtime_checkable
class Freezes(Protocol):
    """A model built around a cached encoder (ModelSpec.needs_encoder): its encoder frozen or not."""

    def set_frozen(self, frozen: bool) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "autoencoder" or "classifier"
    settings_type: type
    build: Callable[..., nn.Module]  # settings (and encoder=, where needs_encoder) -> model
    recipe: dict[str, Any]  # training defaults from the seed report
    description: str
    needs_encoder: bool = False  # built around a cached autoencoder's encoder (settings.encoder_run)
    samples: bool = False  # decodes codes drawn from N(0, I) into new images (a VAE)
    published: dict | None = None  # what its report published at these defaults, shown beside ours

    # What a model can do, which the app asks instead of its name.
    @property
    def reconstructs(self) -> bool:
        """Takes an image and gives one back through a code (`encode`, `decode`, `latent_size`)."""
        return self.kind == "autoencoder"

    @property
    def classifies(self) -> bool:
        return self.kind == "classifier"

    def capabilities(self) -> dict[str, bool]:
        return {"reconstructs": self.reconstructs, "classifies": self.classifies, "samples": self.samples}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    kind: str,
    settings: type,
    recipe: dict,
    description: str,
    needs_encoder: bool = False,
    samples: bool = False,
    published: dict | None = None,
):
    """Decorator: add a builder `settings -> nn.Module` to the registry under `name`."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, kind, settings, build, recipe, description, needs_encoder, samples, published
        )
        return build

    return wrap


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, optionally only one kind."""
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]


def spec_of_settings(settings) -> ModelSpec:
    """The registered model whose settings these are."""
    for spec in _REGISTRY.values():
        if type(settings) is spec.settings_type:
            return spec
    raise ValueError(f"settings: {type(settings).__name__} belongs to no registered model")


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"model: {shown(name)} is not one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_settings(name: str, values: dict[str, Any] | None = None):
    """The model's settings dataclass from a dict of values or strings (defaults filled in)."""
    spec = get_spec(name)
    return spec.settings_type(**coerce(spec.settings_type, dict(values or {})))


def settings_dict(settings) -> dict[str, Any]:
    return asdict(settings)


def build_skeleton(name: str, settings, encoder=None) -> nn.Module:
    """The model on the meta device: its shapes and parameter count, no memory, no random draws."""
    spec = get_spec(name)
    extra = {"encoder": encoder} if spec.needs_encoder else {}
    with torch.device("meta"):
        return spec.build(settings, **extra)


def create_model(
    name: str, /, *, encoder=None, generator: torch.Generator | None = None, **settings: Any
) -> nn.Module:
    """Build a registered model with the given settings, its weights drawn from `generator` (a
    fresh default one if None; torch's global generator is never read). Raises ValueError on bad
    names or settings. `encoder`: the autoencoder settings behind an encoder_run (fmnist_core.runs.trained)."""
    model = build_skeleton(name, make_settings(name, settings), encoder).to_empty(device="cpu")
    initialise_weights(model, generator if generator is not None else torch.Generator())
    return model


@torch.no_grad()
def initialise_weights(model: nn.Module, generator: torch.Generator) -> None:
    """torch's default initialisation, drawn from `generator`: weights Kaiming-uniform with
    a = sqrt(5), biases uniform in +-1/sqrt(fan_in), BatchNorm at one and zero."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()  # ones, zeros and fresh running statistics
        elif (
            next(module.parameters(recurse=False), None) is not None
            or next(module.buffers(recurse=False), None) is not None
        ):
            raise TypeError(f"initialise_weights: no rule for {type(module).__name__}")


def describe(model: nn.Module) -> dict[str, Any]:
    """Parameter counts for display (a frozen encoder's weights are not trained)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}
