"""Which units feed this one: on a network built by hand the shares are the hand computation, and
on a trained CNN a conv unit's shares add up to its value."""

import numpy as np
import pytest
import torch
from torch import nn

from fmnist_core.analysis.inside import layer_output, network_layers
from fmnist_core.analysis.upstream import feeding_layer, upstream_shares
from fmnist_core.data.fashion import load_data


class TwoLayers(nn.Module):
    """A 3x3 conv of three channels, ReLU, a 1x1 conv of two set by hand, ReLU, a dense head."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.randn(3, 1, 3, 3, generator=generator))
            self.features[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
            self.features[2].weight.copy_(
                torch.tensor([[0.5, -2.0, 1.0], [3.0, 0.25, -1.5]]).view(2, 3, 1, 1)
            )
            self.features[2].bias.copy_(torch.tensor([0.7, -0.4]))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def images():
    return load_data().test_images[:300]


def test_a_units_shares_are_its_weights_times_the_mean_activation_of_each_input(images):
    model = TwoLayers()
    feeding = layer_output(model, "features.1", images).detach().double()
    for unit in (0, 1):
        weights = model.features[2].weight[unit, :, 0, 0].detach().double()
        by_hand = (weights * feeding.mean((2, 3))).mean(0).numpy()  # w_uc x mean of a_c, over images
        shares = upstream_shares(model, "features.2", unit, "features.1", images)
        np.testing.assert_allclose(shares, by_hand, rtol=1e-5, atol=1e-7)
        assert list(np.argsort(-shares)) == list(np.argsort(-by_hand))  # the ranking the page shows
        value = layer_output(model, "features.2", images)[:, unit].detach().double().mean().item()
        assert shares.sum() + model.features[2].bias[unit].item() == pytest.approx(value, rel=1e-5)
    one = upstream_shares(model, "features.2", 1, "features.1", images[:1])  # one image
    np.testing.assert_allclose(
        one,
        (model.features[2].weight[1, :, 0, 0].double() * feeding[0].mean((1, 2))).detach().numpy(),
        rtol=1e-5,
    )


def test_the_feeding_layer_is_the_input_of_the_weighted_layer_at_or_before_a_unit():
    model = TwoLayers()
    assert feeding_layer(model, "features.2") == "features.1"
    assert feeding_layer(model, "features.3") == "features.1"  # a ReLU: fed through its conv
    assert feeding_layer(model, "features.1") is None  # the first conv's input is the image
    assert feeding_layer(model, "head.1") == "features.3"


def test_a_bad_layer_unit_or_order_is_one_line_naming_it(images):
    model = TwoLayers()
    with pytest.raises(ValueError, match="^layer: 'features.9' is not one of"):
        upstream_shares(model, "features.9", 0, "features.1", images[:2])
    with pytest.raises(ValueError, match="^unit: 2 is outside 0..1 of 'features.2'"):
        upstream_shares(model, "features.2", 2, "features.1", images[:2])
    with pytest.raises(ValueError, match="^upstream: 'features.3' does not run before 'features.2'"):
        upstream_shares(model, "features.2", 0, "features.3", images[:2])


def test_on_a_trained_cnn_a_conv_units_shares_add_up_to_its_value(pooled, images):
    from fmnist_core.training.config import RunConfig

    run = pooled(RunConfig.for_model("cnn", epochs=1, train_subset=1000, test_subset=500))
    model = run.model.eval()
    layers = network_layers(model)
    convs = [layer.name for layer in layers if layer.kind == "Conv2d"]
    second = convs[1]
    upstream = feeding_layer(model, second)
    assert upstream is not None and [layer.name for layer in layers].index(upstream) < [
        layer.name for layer in layers
    ].index(second)
    modules = dict(model.named_modules())
    for unit in (0, 3):
        shares = upstream_shares(model, second, unit, upstream, images[:100])
        value = layer_output(model, second, images[:100])[:, unit].detach().double().mean().item()
        bias = modules[second].bias[unit].item() if modules[second].bias is not None else 0.0
        assert shares.sum() + bias == pytest.approx(value, rel=1e-3, abs=1e-4)
