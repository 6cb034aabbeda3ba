"""The throughput bench compares against a real textbook model: check that it is one."""

import importlib.util
from pathlib import Path

import torch
from torch import nn

from fmnist_core.config import RunConfig
from fmnist_core.models import ConvPoolReLU, ConvTranspose2d, Dropout, Flatten, PoolReLU
from fmnist_core.train import build_model

spec = importlib.util.spec_from_file_location(
    "train_throughput", Path(__file__).parents[1] / "bench" / "train_throughput.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def layer_names(sequential: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in sequential]


def test_the_textbook_autoencoder_is_the_reports_layers_in_the_reports_order():
    config = bench.CASES["S0 autoencoder p=0.2"]
    ours = build_model(config, torch.device("cpu")).eval()
    book = bench.as_textbook(build_model(config, torch.device("cpu"))).eval()
    # S0: Conv2d, ReLU, Dropout, MaxPool2d per stage (ours pools first: the same numbers).
    assert layer_names(book.encoder)[:8] == ["Conv2d", "ReLU", "Dropout", "MaxPool2d"] * 2
    assert layer_names(ours.encoder)[:5] == ["ConvPoolReLU", "Identity", "Identity", "Identity", "Conv2d"]
    stock = (nn.Dropout, nn.Flatten, nn.ConvTranspose2d)
    for module in book.modules():
        assert not isinstance(
            module, (Dropout, Flatten, ConvTranspose2d, PoolReLU, ConvPoolReLU, nn.Identity)
        )
    assert (
        sum(isinstance(module, stock) for module in book.modules()) == 6 + 1 + 2
    )  # dropouts, flatten, transposed
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(book(x), ours(x))


def test_the_textbook_order_puts_back_what_pooling_first_moved_and_nothing_else():
    config = RunConfig.for_model(
        "cnn",
        {"layers": ("conv:8:3:same:relu", "maxpool:2", "dropout:0.3", "conv:8:3:same:tanh", "maxpool:2")},
        epochs=1,
    )
    ours = build_model(config, torch.device("cpu"))
    assert layer_names(ours.features)[:4] == ["Conv2d", "PoolReLU", "Identity", "Dropout"]
    book = bench.as_textbook(build_model(config, torch.device("cpu")))
    assert layer_names(book.features) == [
        "Conv2d", "ReLU", "MaxPool2d", "Dropout", "Conv2d", "Tanh", "MaxPool2d", "Flatten",
    ]  # fmt: skip


def test_the_textbook_cnn_is_s1s_row_9_with_torchs_own_layers():
    config = bench.CASES["S1 best CNN"]
    ours = build_model(config, torch.device("cpu")).eval()
    book = bench.as_textbook(build_model(config, torch.device("cpu"))).eval()
    assert "ReLUBatchNorm" in layer_names(ours.features) and "PoolDropout" in layer_names(ours.features)
    assert layer_names(book.features) == [
        "Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout",
        "Flatten", "Linear", "ReLU",
    ]  # fmt: skip
    assert all(type(module).__module__.startswith("torch.nn") for module in book.features)
    assert list(book.state_dict()) == list(ours.state_dict())  # the same weights, the same names
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(book(x), ours(x))
