"""The registry and the architectures of the seed reports, each in torch's own layers as its
report wrote it. Importing this package registers every model."""

from fmnist_core.models.autoencoder import ConvAutoencoder, ConvAutoencoderSettings, start_at_pca
from fmnist_core.models.classifiers import (
    LAYER_HELP,
    ONE_CYCLE_TRAINING,
    S1_BEST_LAYERS,
    CNNSettings,
    EncoderClassifier,
    EncoderClassifierSettings,
    MLPSettings,
    ResNetSettings,
    plan_layers,
)
from fmnist_core.models.registry import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    ModelSpec,
    build_skeleton,
    create_model,
    describe,
    get_spec,
    initialise_weights,
    list_models,
    make_settings,
    register_model,
    settings_dict,
    spec_of_settings,
)
from fmnist_core.models.vae import VAE, VAESettings

__all__ = [
    "CNNSettings",
    "ConvAutoencoder",
    "ConvAutoencoderSettings",
    "EncoderClassifier",
    "EncoderClassifierSettings",
    "IMAGE_SHAPE",
    "LAYER_HELP",
    "MLPSettings",
    "ModelSpec",
    "NUM_CLASSES",
    "ONE_CYCLE_TRAINING",
    "ResNetSettings",
    "S1_BEST_LAYERS",
    "build_skeleton",
    "create_model",
    "describe",
    "get_spec",
    "initialise_weights",
    "list_models",
    "make_settings",
    "plan_layers",
    "register_model",
    "settings_dict",
    "spec_of_settings",
    "start_at_pca",
    "VAE",
    "VAESettings",
]
