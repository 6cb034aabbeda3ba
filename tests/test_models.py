import pytest
import torch
from torch import nn

from fmnist_core.models import (
    build_skeleton,
    create_model,
    describe,
    get_spec,
    list_models,
    make_settings,
    plan_layers,
)
from fmnist_core.studies.reports.s1 import ROWS as S1_ROWS


def layer_names(sequential: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in sequential]


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_right_shapes_no_nan_and_gradients_everywhere(name):
    model = create_model(name, generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    expected = (4, 1, 28, 28) if get_spec(name).kind == "autoencoder" else (4, 10)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    for pname, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, pname
    assert model.encode(x).shape[0] == 4


@pytest.mark.parametrize("name", list_models())
def test_every_model_offers_the_protocols_its_spec_promises(name):
    from fmnist_core.models import registry

    spec, model = get_spec(name), create_model(name, generator=torch.Generator().manual_seed(0))
    assert isinstance(model, registry.Encodes)
    assert isinstance(model, registry.Reconstructs) == spec.reconstructs
    assert isinstance(model, registry.Freezes) == spec.needs_encoder
    if spec.samples:  # a sampling model decodes N(0, I) codes and adds its own loss terms
        assert isinstance(model, registry.Reconstructs) and isinstance(model, registry.HasLossTerms)
    if isinstance(model, registry.HasLossTerms):
        model(torch.rand(2, 1, 28, 28))
        assert set(model.loss_terms()) == set(model.loss_term_names) == set(model.loss_weights())


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="model: 'vgg'"):
        create_model("vgg")


@pytest.mark.parametrize(
    "settings, latent",
    [
        ({}, 64),
        ({"n": 256, "batchnorm": True, "pooling": ("max", "avg"), "channels": (64, 96)}, 256),
        ({"linear": False}, 32 * 25),
        ({"latent_activation": "none", "output_dropout": False}, 64),
    ],
)
def test_autoencoder_variants_encode_and_decode(settings, latent):
    model = create_model("conv_autoencoder", **settings).eval()
    z = model.encode(torch.rand(3, 1, 28, 28))
    assert z.shape == (3, latent)
    image = model.decode(z)
    assert image.shape == (3, 1, 28, 28)
    assert image.min() >= 0.0 and image.max() <= 1.0  # the Sigmoid output


def test_autoencoder_s0_layer_sizes():
    model = create_model("conv_autoencoder")
    linear = [m for m in model.encoder if isinstance(m, torch.nn.Linear)][0]
    assert (linear.in_features, linear.out_features) == (800, 64)
    assert isinstance(model.decoder[-1], torch.nn.Dropout)  # S0's dropout after the Sigmoid


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"n": 0}, "n"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": 0.995}, "dropout"),  # the engine's dropout keeps some of every 256
        ({"dropout": float("nan")}, "dropout"),
        ({"pooling": ("max", "median")}, "pooling"),
        ({"channels": (16,)}, "channels"),
        ({"latent_activation": "gelu"}, "latent_activation"),
        ({"size": 3}, "size"),
    ],
)
def test_bad_autoencoder_settings_name_the_setting(settings, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        create_model("conv_autoencoder", **settings)


def test_frozen_encoder_has_no_trainable_encoder_weights():
    model = create_model("encoder_classifier", freeze_encoder=True)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.encoder.training  # dropout off in a frozen feature extractor
    sizes = describe(model)
    head = sum(p.numel() for p in model.head.parameters())
    assert sizes["trainable_parameters"] == head < sizes["parameters"]


@pytest.mark.parametrize("head, layers", [("s0", 3), ("fc", 1), ("wide", 4)])
def test_encoder_classifier_heads(head, layers):
    assert len(create_model("encoder_classifier", head=head).head) == layers


@pytest.mark.parametrize("name", list_models())
def test_every_model_is_built_from_torchs_own_layers(name):
    for module in create_model(name).modules():
        home = type(module).__module__
        assert home.startswith("torch.nn") or home.startswith("fmnist_core.models"), (name, home)


def test_s0_reads_as_the_report_drew_it():
    model = create_model("conv_autoencoder")
    stage = ["Conv2d", "ReLU", "Dropout", "MaxPool2d"]
    assert layer_names(model.encoder) == [*stage, *stage, "Flatten", "Linear", "ReLU", "Dropout"]
    assert layer_names(model.decoder) == [
        "Linear", "ReLU", "Dropout", "Unflatten", "ConvTranspose2d", "ReLU", "Dropout",
        "ConvTranspose2d", "Sigmoid", "Dropout",
    ]  # fmt: skip


def test_s1_row_9_reads_as_its_layer_list():
    model = create_model("cnn")
    assert layer_names(model.features) == [
        "Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout",
        "Flatten", "Linear", "ReLU",
    ]  # fmt: skip
    for *_, layers, _accuracy, _minutes in S1_ROWS:  # every S1 row builds
        assert create_model("cnn", layers=layers.split(","))(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_weights_come_from_the_generator_and_never_from_torchs_global_one():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = create_model("conv_autoencoder", generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from the global generator
    torch.manual_seed(999)
    second = create_model("conv_autoencoder", generator=torch.Generator().manual_seed(7))
    other = create_model("conv_autoencoder", generator=torch.Generator().manual_seed(8))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(first.encoder[0].weight, other.encoder[0].weight)


def test_initialisation_follows_torchs_default_ranges():
    model = create_model("mlp", n1=300, generator=torch.Generator().manual_seed(0))
    layer = model.features[1]  # Linear(784 -> 300): Kaiming-uniform a=sqrt(5) gives +-1/sqrt(784)
    bound = 1 / 784**0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
    assert layer.bias.abs().max() <= bound and layer.weight.std() > 0.5 * bound
    norm = create_model("cnn").features[2]
    assert torch.equal(norm.weight, torch.ones(35)) and torch.equal(norm.running_var, torch.ones(35))


def test_a_layer_list_is_checked_without_building_anything():
    plan = plan_layers(("conv:35:3:valid:relu", "bn", "maxpool:2", "dense:256:relu"))
    assert plan.features == 256
    model = create_model("cnn", layers=("conv:35:3:valid:relu", "bn", "maxpool:2", "dense:256:relu"))
    assert plan.parameters == describe(model)["parameters"]
    with pytest.raises(ValueError, match="layers: 'dense:16384:relu'.*limit of 25,000,000"):
        plan_layers(("conv:64:3:same:relu", "dense:16384:relu"))
    with pytest.raises(ValueError, match="layers: 'conv:256:3:same:relu'.*activations"):
        plan_layers(("conv:256:3:same:relu",) * 25)  # 200,704 values each at 28x28


def test_a_skeleton_has_the_shapes_and_no_memory():
    skeleton = build_skeleton("cnn", make_settings("cnn"))
    assert all(p.is_meta for p in skeleton.parameters())
    assert describe(skeleton) == describe(create_model("cnn"))
