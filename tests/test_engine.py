import copy

import pytest
import torch

from fmnist_core import engine
from fmnist_core.engine.fused import ConvPoolReLU, PoolDropout, PoolReLU, ReLUBatchNorm
from fmnist_core.engine.layers import ConvTranspose2d, Dropout, Flatten
from fmnist_core.models import create_model


def names(sequential: torch.nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in sequential]


def views(model: torch.nn.Module, seed: int = 3):
    """The engine's training view of `model` and the model as written with the same dropout draws."""
    fast = engine.accelerate(model, torch.device("cpu"), torch.Generator().manual_seed(seed))
    plain = engine.accelerate(
        model, torch.device("cpu"), torch.Generator().manual_seed(seed), fast_layers=False
    )
    return fast, plain


@pytest.mark.parametrize(
    "name, settings, part",
    [
        (
            "cnn",
            {"layers": ("conv:8:3:same:relu", "maxpool:2", "conv:8:3:same:tanh", "maxpool:2")},
            "features",
        ),
        ("conv_autoencoder", {"dropout": 0.0}, "encoder"),
        ("conv_autoencoder", {"dropout": 0.2}, "encoder"),  # ReLU, Dropout, MaxPool -> one PoolReLU
        ("conv_autoencoder", {"dropout": 0.35, "pooling": ("max", "avg")}, "encoder"),
        ("cnn", {}, "features"),  # S1 row 9: ReLUBatchNorm, PoolDropout
    ],
)
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])  # compiled; stock
def test_the_training_view_changes_nothing_but_the_cost(name, settings, part, layout):
    model = create_model(name, **settings).train().to(memory_format=layout)
    fast, plain = views(model)
    kinds = names(getattr(fast, part))
    assert {"PoolReLU", "ConvPoolReLU", "ReLUBatchNorm"} & set(kinds)
    assert names(getattr(model, part)) == names(getattr(plain, part))  # the model as written
    # Seeded: after ReLU -> BatchNorm the zeros become ties that rounding may break either way.
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # negatives: clipped
    x = x.contiguous(memory_format=layout)
    if "ReLUBatchNorm" not in kinds:  # after a BatchNorm, rounding would break ties either way
        x[:4, :, :10] = 0.0  # flat regions: ties in the pooling windows
    outputs, gradients = [], []
    for view in (fast, plain):
        model.zero_grad()
        y = getattr(view, part)(x)
        y.square().sum().backward()
        outputs.append(y)
        gradients.append([p.grad.clone() for p in getattr(model, part).parameters()])
    if {"ConvPoolReLU", "ReLUBatchNorm"} & set(kinds):
        # their sums run in another order than oneDNN's and torch's (the BatchNorm's in float64);
        # a conv bias before a BatchNorm has a gradient of rounding noise only, hence one scale
        scale = outputs[1].abs().max().item()
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4 * scale)
        scale = max(b.abs().max().item() for b in gradients[1])
        for a, b in zip(*gradients, strict=True):
            # A pooling window whose two largest values are a rounding apart sends its gradient to
            # either: on one thread (two xdist workers) 3 of 15,750 weights moved so. At most one in
            # a thousand may differ so; every other one must agree.
            off = ~torch.isclose(a, b, rtol=1e-3, atol=1e-4 * scale)
            assert off.float().mean() <= 1e-3, (off.sum().item(), a.numel())
    else:
        assert torch.equal(outputs[0], outputs[1])
        assert all(torch.equal(a, b) for a, b in zip(*gradients, strict=True))
    # The view shares the model's weights and statistics: training it trains the model.
    shared = fast.state_dict()
    for key, value in model.state_dict().items():
        assert shared[key].data_ptr() == value.data_ptr(), key


def test_the_view_draws_dropout_from_the_runs_generator_only():
    model = create_model("mlp").train()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    fast, _ = views(model, seed=5)
    again, _ = views(model, seed=5)
    x = torch.ones(64, 1, 28, 28)
    assert torch.equal(fast(x), again(x))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator untouched
    other, _ = views(model, seed=6)
    assert not torch.equal(fast(x), other(x))


def test_a_stack_may_start_with_pooling():
    model = create_model("cnn", layers=("maxpool:2", "conv:4:3:same:relu", "maxpool:2"))
    fast, _ = views(model.to(memory_format=torch.channels_last))
    assert names(fast.features) == ["MaxPool2d", "Conv2d", "PoolReLU", "Identity", "Flatten"]
    assert fast(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.7])
def test_dropout_drops_the_right_share_and_keeps_the_mean(p):
    layer = Dropout(p, torch.Generator().manual_seed(0)).train()
    x = torch.ones(200, 50, 50)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - round(p * 256) / 256) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # survivors are scaled up
    assert torch.equal(layer.eval()(x), x)  # nothing dropped at evaluation
    x.requires_grad_(True)
    y = layer.train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # on ones, the gradient is the mask times the scale


def test_dropout_gives_the_same_mask_in_either_memory_layout():
    x = torch.rand(4, 6, 5, 5) + 0.5  # no zeros, so a zero in the output marks a dropped element
    layer = Dropout(0.3).train()
    torch.manual_seed(1)
    plain = layer(x)
    torch.manual_seed(1)
    channels_last = layer(x.contiguous(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, channels_last)
    assert 0.2 < (plain == 0).float().mean().item() < 0.4


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("size", [26, 11, 2])  # even; odd (the last row and column are left out)
def test_pool_relu_matches_dropout_max_pool_and_relu_bit_for_bit(p, size):
    layers = PoolReLU(Dropout(p) if p else None, torch.nn.MaxPool2d(2), torch.nn.ReLU()).train()
    stock = torch.nn.Sequential(*[m for m in (layers.dropout, layers.pool, layers.relu) if m is not None])
    x = torch.randn(6, 5, size, size)
    x[0] = 0.0  # ties everywhere
    x[1, 0, 0, 0] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for module in (layers, stock):
        torch.manual_seed(11)
        leaf = x.clone().requires_grad_()
        y = module(leaf)
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
        y.backward(grad)
        results.append((y, leaf.grad))
    (y, grad_x), (y_stock, grad_x_stock) = results
    assert type(y.grad_fn).__name__ == "_PooledBackward"  # the compiled kernels ran
    assert y.shape == (6, 5, size // 2, size // 2) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(
        y,
        y_stock,
    ) or torch.allclose(y, y_stock, equal_nan=True)
    assert torch.equal(y.isnan(), y_stock.isnan()) and y.isnan().any()
    finite = ~y.isnan()
    assert torch.equal(y[finite], y_stock[finite])
    assert torch.equal(grad_x, grad_x_stock)
    if p:  # the masks really drop: some positive maxima were dropped to zero
        assert (grad_x == 0).float().mean() > 0.75


@pytest.mark.parametrize(
    "c_in, c_out, kernel, padding, size",
    [(16, 1, 6, 1, 13), (32, 16, 5, 0, 5), (3, 2, 4, 1, 7)],  # S0's two; another
)
def test_transposed_conv_matches_torch_and_gives_its_gradients(c_in, c_out, kernel, padding, size):
    torch.manual_seed(0)
    stock = torch.nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=padding)
    ours = ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=padding)
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(4, c_in, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    expected, got = stock(x), ours(x)
    assert got.shape == expected.shape
    # Two oneDNN primitives (backward-data with the bias added apart, against torch's transposed
    # forward): equal bits only where both pick one kernel, which depends on the CPU's instructions.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())
    grad = torch.randn_like(expected)
    wanted = torch.autograd.grad(expected, (x, stock.weight, stock.bias), grad)
    given = torch.autograd.grad(got, (x, ours.weight, ours.bias), grad)
    assert all(torch.equal(a, b) for a, b in zip(wanted, given, strict=True))  # the stock backward


def test_transposed_conv_runs_under_bf16_autocast():
    layer = ConvTranspose2d(4, 1, 6, stride=2, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 4, 13, 13))
    assert y.shape == (2, 1, 28, 28)


def _gradient_reaching(flatten: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient that arrives at the layer below `flatten` (a leaf's .grad would be restrided)."""
    below = x.requires_grad_(True) * 1.0  # keeps x's layout
    arrived = []
    below.register_hook(arrived.append)
    (flatten(below) @ weight).sum().backward()
    return arrived[0]


def test_flatten_sends_the_gradient_back_in_the_input_layout_with_the_same_values():
    x = torch.randn(3, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4 * 5 * 5, 2)
    assert torch.equal(Flatten()(x), torch.nn.Flatten()(x))
    ours = _gradient_reaching(Flatten(), x, weight)
    stock = _gradient_reaching(torch.nn.Flatten(), x, weight)
    assert ours.is_contiguous(memory_format=torch.channels_last) and not ours.is_contiguous()
    assert stock.is_contiguous()  # what made the layers below convert
    assert torch.equal(ours, stock)
    assert _gradient_reaching(Flatten(), torch.randn(3, 4, 5, 5), weight).is_contiguous()


@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("size", [28, 13])  # S0's images; an odd map (the last row is left out)
def test_conv_pool_relu_matches_the_convolution_and_the_layers_after_it(p, size):
    conv = torch.nn.Conv2d(1, 16, 3)
    after = PoolReLU(Dropout(p) if p else None, torch.nn.MaxPool2d(2), torch.nn.ReLU())
    stock = copy.deepcopy(conv)
    fused = ConvPoolReLU.fuse(conv, after).train()
    assert list(fused.state_dict()) == ["weight", "bias"]  # saved weights keep the conv's names
    x = torch.rand(12, 1, size, size)
    x[:3] = 0.0  # blank images: every window a tie
    results = []
    for run, layer in (
        (fused, fused),
        (lambda images: after(stock(images).contiguous(memory_format=torch.channels_last)), stock),
    ):
        torch.manual_seed(4)  # the same dropout mask
        y = run(x)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(2)))
        results.append((y.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    (y, grad_w, grad_b), (y_ref, grad_w_ref, grad_b_ref) = results
    assert y.shape == (12, 16, (size - 2) // 2, (size - 2) // 2)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(y == 0, y_ref == 0)  # the same windows dropped or cut by the ReLU
    torch.testing.assert_close(grad_w, grad_w_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_b, grad_b_ref, rtol=1e-4, atol=1e-4)
    assert grad_w.abs().sum() > 0
    fused.eval()  # evaluation: the stock convolution and layers
    torch.testing.assert_close(fused(x), torch.relu(torch.nn.functional.max_pool2d(stock(x), 2)))


def test_fused_layers_run_torchs_own_where_numba_is_missing(monkeypatch):
    from fmnist_core.engine import fused

    model = create_model("conv_autoencoder").train().to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 28, 28)
    view, _ = views(model, seed=0)
    compiled = view(x)
    assert type(view.encoder[0].after).__name__ == "PoolReLU"
    monkeypatch.setattr(fused, "_kernels", lambda: None)
    assert not engine.compiled_kernels_available()
    view, _ = views(model, seed=0)
    stock = view(x)
    torch.testing.assert_close(stock, compiled, rtol=1e-5, atol=1e-6)  # the same masks, too
    assert not {"_PooledBackward", "_ConvPoolReLUBackward"} & _graph_names(stock)
    assert {"_PooledBackward", "_ConvPoolReLUBackward"} <= _graph_names(compiled)


def _graph_names(output: torch.Tensor) -> set[str]:
    """The names of every backward step in output's autograd graph."""
    seen, todo = set(), [output.grad_fn]
    while todo:
        step = todo.pop()
        if step is not None and step not in seen:
            seen.add(step)
            todo += [following for following, _ in step.next_functions]
    return {type(step).__name__ for step in seen}


@pytest.mark.parametrize("size", [24, 11])
def test_pool_dropout_matches_max_pool_and_dropout_bit_for_bit(size):
    layers = PoolDropout(torch.nn.MaxPool2d(2), Dropout(0.7)).train()
    stock = torch.nn.Sequential(layers.pool, layers.dropout)
    x = torch.randn(6, 5, size, size)
    x[0] = 0.0  # ties everywhere
    x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for module in (layers, stock):
        torch.manual_seed(8)
        leaf = x.clone().requires_grad_()
        y = module(leaf)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(5)))
        results.append((y, leaf.grad))
    (y, grad_x), (y_stock, grad_x_stock) = results
    assert type(y.grad_fn).__name__ == "_PooledBackward"
    assert torch.equal(y, y_stock) and torch.equal(grad_x, grad_x_stock)
    assert 0.6 < (y == 0).float().mean() < 0.8  # p = 0.7 of the pooled map dropped


def test_relu_batchnorm_matches_relu_then_batchnorm_and_keeps_the_running_statistics():
    norm = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    reference = torch.nn.BatchNorm2d(6).double()
    reference.load_state_dict(norm.state_dict())
    fused = ReLUBatchNorm.fuse(torch.nn.ReLU(), norm).train()
    assert list(fused.state_dict()) == list(reference.state_dict())  # saved weights keep their names
    z = torch.randn(8, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # two steps: the running statistics move twice
        leaf = z.clone().requires_grad_()
        y = fused(leaf)
        y.backward(grad)
        leaf64 = z.double().requires_grad_()
        y64 = reference(torch.relu(leaf64))
        y64.backward(grad.double())
    assert type(y.grad_fn).__name__ == "_ReLUBatchNormBackward"
    # Against float64 torch: our sums run in float64, so the error is float32 rounding only.
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(leaf.grad.double(), leaf64.grad, rtol=1e-5, atol=1e-5)
    for name in ("weight", "bias"):
        torch.testing.assert_close(
            getattr(fused, name).grad.double(), getattr(reference, name).grad, rtol=1e-5, atol=1e-4
        )
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(
            getattr(fused, name).double(), getattr(reference, name), rtol=1e-5, atol=1e-6
        )
    assert int(fused.num_batches_tracked) == 2
    fused.eval()  # evaluation: torch's own layers with the running statistics
    torch.testing.assert_close(
        fused(z).double(), reference.eval()(torch.relu(z.double())), rtol=1e-5, atol=1e-5
    )


def test_under_bf16_autocast_the_batchnorm_and_pool_dropout_kernels_train_the_widened_map():
    norm = ReLUBatchNorm.fuse(torch.nn.ReLU(), torch.nn.BatchNorm2d(6)).train()
    pool_dropout = PoolDropout(torch.nn.MaxPool2d(2), Dropout(0.5)).train()
    z = torch.randn(8, 6, 10, 10).contiguous(memory_format=torch.channels_last).bfloat16()
    grad = torch.randn(8, 6, 5, 5, generator=torch.Generator().manual_seed(3))
    results = []
    for autocast, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        torch.manual_seed(6)  # the same dropout mask
        leaf = z.to(dtype, copy=True).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = pool_dropout(norm(leaf))
        y.backward(grad)
        assert {"_ReLUBatchNormBackward", "_PooledBackward"} <= _graph_names(y)
        results.append((y, leaf.grad))
    (y, grad_z), (y_fp32, grad_z_fp32) = results
    assert y.dtype == torch.float32 and grad_z.dtype == torch.bfloat16  # widened, then narrowed back
    assert torch.equal(y, y_fp32)  # bf16 -> fp32 is exact, so the kernels saw the same numbers
    assert torch.equal(grad_z, grad_z_fp32.bfloat16())
    pool_relu = PoolReLU(None, torch.nn.MaxPool2d(2), torch.nn.ReLU()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # widening a conv's full map costs more here
        pooled = pool_relu(z.clone().requires_grad_())
    assert pooled.dtype == torch.bfloat16 and "_PooledBackward" not in _graph_names(pooled)
    sixteen = ReLUBatchNorm.fuse(torch.nn.ReLU(), torch.nn.BatchNorm2d(16)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch's own is quick on 16 channels
        normed = sixteen(torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last).bfloat16())
    assert "_ReLUBatchNormBackward" not in _graph_names(normed)
