"""The model registry and every architecture of the seed reports.

Each model has a frozen settings dataclass (validated on construction), a builder, a kind
(`autoencoder` or `classifier`) and the training recipe its seed report used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .device import fast_precision
from .settings import check_choice, check_int, check_range, coerce

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "autoencoder" or "classifier"
    settings_type: type
    build: Callable[[Any], nn.Module]
    recipe: dict[str, Any]  # training defaults from the seed report (precision: where bf16 measured equal)
    description: str
    initialise: Callable[[nn.Module, Any], None] | None = None  # e.g. load pretrained weights


_REGISTRY: dict[str, ModelSpec] = {}


class Dropout(nn.Module):
    """Dropout whose mask costs one random draw per 8 elements, not one per element.

    The stock CPU dropout spends most of its time drawing random numbers: it halved the
    S0 autoencoder's training speed. Here each 64-bit draw gives 8 random bytes, and a byte
    below round(256 p) drops its element; p is thus rounded to a multiple of 1/256. A 4-D
    input's mask is drawn in (N, H, W, C) order, the channels_last layout the engine trains in:
    the mask is then a view of the draw in the input's own layout (converting it cost as much
    as drawing it), and it is the same mask in either layout.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        mask = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        # Straight into x's dtype: a bool mask and its conversion were 6x slower than this.
        torch.ge(self.random_bytes(x.numel(), x.device), self.threshold, out=mask)
        mask.mul_(self.scale)  # survivors scaled by 1 / (1 - p)
        if x.dim() == 4:
            n, c, h, w = x.shape
            return x * mask.view(n, h, w, c).permute(0, 3, 1, 2)
        return x * mask.view(x.shape)

    @property
    def scale(self) -> float:
        return 256 / (256 - self.threshold)

    def random_bytes(self, count: int, device: torch.device) -> torch.Tensor:
        """`count` fresh random bytes, one per element (a 4-D map's in (N, H, W, C) order); an
        element is kept where its byte is at least `threshold`."""
        words = torch.empty((count + 7) // 8, dtype=torch.int64, device=device).random_(-(2**63), None)
        return words.view(torch.uint8)[:count]

    def keep_bytes(self, n: int, c: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """random_bytes for an (n, c, h, w) map, as the (N, H, W, C) array the kernels read."""
        return self.random_bytes(n * c * h * w, device).view(n, h, w, c)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@functools.cache
def _kernels():
    """fmnist_core.kernels, imported on first use (numba's import would slow the app's start), or
    None where numba is missing: the fused layers then run torch's own."""
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels


def _runs_compiled(module: nn.Module, x: torch.Tensor, under_bf16: bool = False) -> bool:
    """Whether a fused layer trains x with the compiled kernels: fp32 training on the CPU, and
    for the layers that pass `under_bf16`, bf16 autocast too (see `_widened`)."""
    if torch.is_autocast_enabled("cpu"):
        dtypes = (torch.float32, torch.bfloat16) if under_bf16 else ()
    else:
        dtypes = (torch.float32,)
    return (
        module.training
        and x.device.type == "cpu"
        and x.dtype in dtypes
        and x.dim() == 4
        and _kernels() is not None
    )


def _widened(x: torch.Tensor) -> torch.Tensor:
    """A bf16 map in fp32 for the kernels, and its gradient narrowed back: a pass each way, and
    the next conv or linear layer narrows the output again. Worth it before S1's BatchNorms and
    its pooling + dropout (a bf16 step of its CNN 68-70 -> 53-57 ms): torch's bf16 channels_last
    BatchNorm takes 14-15 ms forward and backward on S1's 35- and 50-channel maps, 4 ms on 48 or
    64 channels, which the widened kernel does not beat. Not before PoolReLU (fast_cnn 23 -> 24.5
    ms: torch's bf16 pooling of a conv's output is cheap, widening the full map is not)."""
    return x.float() if x.dtype == torch.bfloat16 else x


class _Pooled(torch.autograd.Function):
    """A compiled 2x2 max-pooling with its neighbours (`kernel`: pool_relu_forward or
    pool_dropout_forward): forward keeps a byte per output, its winner or no gradient, and
    backward sends the gradient, times the dropout's scale, to the winners."""

    @staticmethod
    def forward(ctx, kernel, x, keep, threshold, scale):
        out, code = getattr(_kernels(), kernel)(x, keep, threshold, scale)
        ctx.save_for_backward(code)
        ctx.scale, ctx.shape = scale, x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        (code,) = ctx.saved_tensors
        return None, _kernels().pool_relu_backward(grad, code, ctx.scale, ctx.shape), None, None, None


class PoolReLU(nn.Module):
    """An optional Dropout, a 2x2 max-pool and a ReLU, trained as one compiled pass each way.

    The same masks, outputs and gradients as the three layers (fmnist_core.kernels): the stock
    ones made about eight passes over the map, forward and backward, and this makes two, plus a
    byte per pooled output. Elsewhere (evaluation, a GPU, bf16, a contiguous-format input) the three
    layers run as they are.
    """

    def __init__(self, dropout: Dropout | None, pool: nn.MaxPool2d, relu: nn.ReLU):
        super().__init__()
        self.dropout, self.pool, self.relu = dropout, pool, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_runs_compiled(self, x) and x.is_contiguous(memory_format=torch.channels_last)):
            return self.relu(self.pool(x if self.dropout is None else self.dropout(x)))
        if self.dropout is None or self.dropout.threshold == 0:
            return _Pooled.apply("pool_relu_forward", x, None, 0, 1.0)
        keep = self.dropout.keep_bytes(*x.shape, x.device)
        return _Pooled.apply("pool_relu_forward", x, keep, self.dropout.threshold, self.dropout.scale)


class PoolDropout(nn.Module):
    """A 2x2 max-pool and the dropout after it (S1's CNN), trained as one compiled pass each way,
    with the same masks, outputs and gradients as the two layers (in fp32; under bf16 autocast
    on the map widened to fp32)."""

    def __init__(self, pool: nn.MaxPool2d, dropout: Dropout):
        super().__init__()
        self.pool, self.dropout = pool, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            _runs_compiled(self, x, under_bf16=True) and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return self.dropout(self.pool(x))
        x = _widened(x)
        n, c, h, w = x.shape
        keep = self.dropout.keep_bytes(n, c, h // 2, w // 2, x.device)  # for the pooled map
        return _Pooled.apply("pool_dropout_forward", x, keep, self.dropout.threshold, self.dropout.scale)


class _ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, keep, threshold, scale):
        out, code = _kernels().conv_pool_relu_forward(x, weight, bias, keep, threshold, scale)
        ctx.save_for_backward(x, code)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        x, code = ctx.saved_tensors
        grad_weight, grad_bias = _kernels().conv_pool_relu_backward(x, grad, code, ctx.scale)
        return None, grad_weight, grad_bias, None, None, None


class ConvPoolReLU(nn.Conv2d):
    """A first layer's one-channel 3x3 convolution and the PoolReLU after it, trained as one
    compiled pass each way: the convolution's full-size map (4.3 MB for 100 S0 images) is never
    written, and backward reads only the pooling winners' patches. The weights keep the
    convolution's names. The sums run in another order than oneDNN's (ENGINE_VERSION 4); elsewhere
    (evaluation, a GPU, bf16) the convolution and PoolReLU run as they are.
    """

    def __init__(self, conv: nn.Conv2d, after: PoolReLU):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size)
        self.weight, self.bias = conv.weight, conv.bias
        self.after = after

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d
            and conv.in_channels == 1
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (0, 0)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.bias is not None
            and conv.padding_mode == "zeros"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_runs_compiled(self, x) and self.weight.dtype == torch.float32 and not x.requires_grad):
            return self.after(super().forward(x))
        dropout = self.after.dropout
        if dropout is None or dropout.threshold == 0:
            return _ConvPoolReLU.apply(x, self.weight, self.bias, None, 0, 1.0)
        n, _, h, w = x.shape
        # Drawn for the full-size map, as the dropout layer would: the same random stream.
        keep = dropout.keep_bytes(n, self.out_channels, h - 2, w - 2, x.device)
        return _ConvPoolReLU.apply(x, self.weight, self.bias, keep, dropout.threshold, dropout.scale)


class _ReLUBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, eps):
        y, mean, variance = _kernels().relu_batchnorm_forward(z, weight, bias, eps)
        ctx.save_for_backward(z, weight)
        ctx.mean, ctx.variance, ctx.eps = mean, variance, eps
        return y, torch.from_numpy(mean), torch.from_numpy(variance)

    @staticmethod
    def backward(ctx, grad, _mean_grad, _variance_grad):
        z, weight = ctx.saved_tensors
        grad_z, grad_weight, grad_bias = _kernels().relu_batchnorm_backward(
            z, grad, weight, ctx.mean, ctx.variance, ctx.eps
        )
        return grad_z, grad_weight, grad_bias, None


class ReLUBatchNorm(nn.BatchNorm2d):
    """A ReLU and the BatchNorm2d after it (S1's conv -> ReLU -> BatchNorm), trained by compiled
    kernels: two passes for the batch statistics and one for the output forward, two backward.
    torch's channels_last BatchNorm backward alone took 12 ms a step on S1's 24x24 map. The
    BatchNorm's weights and running statistics keep their names; its sums run in float64, in
    another order than torch's (ENGINE_VERSION 4). Under bf16 autocast it runs on the map widened
    to fp32 where the channel count is not a multiple of 16 (ENGINE_VERSION 5); elsewhere the two
    layers run as they are.
    """

    def __init__(self, relu: nn.ReLU, norm: nn.BatchNorm2d):
        super().__init__(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        self.weight, self.bias = norm.weight, norm.bias
        self.running_mean, self.running_var = norm.running_mean, norm.running_var
        self.num_batches_tracked = norm.num_batches_tracked
        self.relu = relu

    @staticmethod
    def fits(relu: nn.Module, norm: nn.Module) -> bool:
        return (
            isinstance(relu, nn.ReLU)
            and type(norm) is nn.BatchNorm2d
            and norm.affine
            and norm.track_running_stats
            and norm.momentum is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            # torch's bf16 BatchNorm is quick where its channels fill whole 16-lane vectors
            _runs_compiled(self, x, under_bf16=self.num_features % 16 != 0)
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[0] > 1
        ):
            return super().forward(self.relu(x))
        y, mean, variance = _ReLUBatchNorm.apply(_widened(x), self.weight, self.bias, self.eps)
        with torch.no_grad():  # as BatchNorm2d does: the unbiased variance in the running one
            count = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((variance * count / (count - 1)).to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        return y


def _is_plain_2x2_max_pool(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.MaxPool2d)
        and module.kernel_size in (2, (2, 2))
        and module.stride in (2, (2, 2))
        and module.padding in (0, (0, 0))
        and module.dilation in (1, (1, 1))
        and not module.ceil_mode
        and not module.return_indices
    )


@functools.cache
def _subpixel_plan(kernel: int, stride: int, padding: int) -> tuple[torch.Tensor, int]:
    """How a transposed convolution splits into `stride` phases per axis, each a plain correlation.

    Output o = stride * a + r gathers input i = a + d - j with tap stride * j + c, where
    d, c = divmod(r + padding, stride). Returns, per phase r and per tap t of one shared correlation
    window of `size` inputs starting at offset `first`, the transposed kernel's tap (`kernel` where
    the phase has none: a zero), and `first`.
    """
    phases = []
    for r in range(stride):
        d, c = divmod(r + padding, stride)
        phases.append((d, c, len(range(c, kernel, stride))))
    first = min(d - taps + 1 for d, _, taps in phases)
    size = max(d for d, _, _ in phases) - first + 1
    index = torch.full((stride, size), kernel, dtype=torch.long)
    for r, (d, c, taps) in enumerate(phases):
        for t in range(size):
            j = d - first - t
            if 0 <= j < taps:
                index[r, t] = stride * j + c
    return index, first


def _transposed_conv_as_subpixel(x, weight, bias, stride: int, padding: int, out_size: int) -> torch.Tensor:
    """A transposed convolution as one convolution with stride*stride times the output channels,
    interleaved by pixel_shuffle: the same sums in another order."""
    c_in, c_out, kernel, _ = weight.shape
    index, first = _subpixel_plan(kernel, stride, padding)
    size = index.shape[1]
    phases = -(-out_size // stride)  # outputs per phase and axis
    zero_tap = F.pad(weight, (0, 1, 0, 1))  # tap `kernel` is a zero
    taps = zero_tap[:, :, index[:, None, :, None], index[None, :, None, :]]  # (in, out, r_y, r_x, t_y, t_x)
    taps = taps.permute(1, 2, 3, 0, 4, 5).reshape(c_out * stride * stride, c_in, size, size)
    after = max(0, phases - 1 + first + size - 1 - (x.shape[-1] - 1))
    if after == -first:  # the convolution pads by itself, without a padded copy of x
        y = F.conv2d(x, taps, padding=after)  # (B, out * stride^2, phases, phases)
    else:
        y = F.conv2d(F.pad(x, (-first, after, -first, after)), taps)
    y = F.pixel_shuffle(y, stride)[..., :out_size, :out_size]
    return y + bias.view(1, -1, 1, 1)


class _TransposedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, out_size):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        if weight.shape[1] == 1:
            return _transposed_conv_as_subpixel(x, weight, bias, stride, padding, out_size)
        # A transposed convolution is the input gradient of the convolution it mirrors; oneDNN
        # computes that one faster than its own transposed forward, and to the same bits.
        layout = torch.channels_last if not x.is_contiguous() else torch.contiguous_format
        like = x.new_empty((len(x), weight.shape[1], out_size, out_size)).contiguous(memory_format=layout)
        y = torch.ops.aten.convolution_backward(
            x,
            like,
            weight,
            None,
            (stride,) * 2,
            (padding,) * 2,
            (1, 1),
            False,
            (0, 0),
            1,
            (True, False, False),
        )[0]
        return y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        # Exactly what nn.ConvTranspose2d's backward computes.
        grads = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            [weight.shape[1]],
            (ctx.stride,) * 2,
            (ctx.padding,) * 2,
            (1, 1),
            True,
            (0, 0),
            1,
            (need[0], need[1], need[2]),
        )
        return (*grads, None, None, None)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with a faster forward on the CPU: the same weights, the same gradients.

    oneDNN's own transposed forward was the slowest part of S0's decoder (16 -> 1 channels, k6:
    2.4 ms for 100 images, 4 times its backward). With one output channel the layer runs as a
    sub-pixel convolution (1.2 ms; the same sums in another order), otherwise as the input
    gradient of the mirrored convolution (32 -> 16, k5: 1.1 -> 0.6 ms, the same bits).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = len(set(self.kernel_size)) == len(set(self.stride)) == len(set(self.padding)) == 1
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or torch.is_autocast_enabled("cpu")
            or not square
            or x.shape[-1] != x.shape[-2]
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.output_padding != (0, 0)
            or self.bias is None
        ):
            return super().forward(x)
        (kernel,), (stride,), (padding,) = set(self.kernel_size), set(self.stride), set(self.padding)
        out_size = (x.shape[-1] - 1) * stride - 2 * padding + kernel
        return _TransposedConv.apply(x, self.weight, self.bias, stride, padding, out_size)


class _FlattenKeepingLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = (
            x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        )
        return x.reshape(len(x), -1)  # (B, C*H*W), in PyTorch's C, H, W order

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


class Flatten(nn.Flatten):
    """nn.Flatten whose gradient goes back in the input's memory layout.

    The stock one hands a channels_last network a contiguous gradient, and the layers below
    then convert it or run mixed-layout kernels: S1's CNN spent 11.6 of its 124 ms a step
    copying one 24x24 map back inside the max-pool's backward. The values are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FlattenKeepingLayout.apply(x)


def register_model(name: str, *, kind: str, settings: type, recipe: dict, description: str, initialise=None):
    """Decorator: add a builder `settings -> nn.Module` to the registry under `name`.

    `initialise(model, settings)`, if given, runs before training a fresh model only.
    """

    def wrap(build: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, kind, settings, build, recipe, description, initialise)
        return build

    return wrap


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, optionally only one kind."""
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"model: {name!r} is not one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_settings(name: str, values: dict[str, Any] | None = None):
    """The model's settings dataclass from a dict of values or strings (defaults filled in)."""
    spec = get_spec(name)
    return spec.settings_type(**coerce(spec.settings_type, dict(values or {})))


def create_model(name: str, **settings: Any) -> nn.Module:
    """Build a registered model with the given settings; raises ValueError on bad names."""
    return get_spec(name).build(make_settings(name, settings))


def settings_dict(settings) -> dict[str, Any]:
    return asdict(settings)


# ---------------------------------------------------------------- conv autoencoder (S0, S2, S4)


@dataclass(frozen=True)
class ConvAutoencoderSettings:
    n: int = 64  # latent size
    dropout: float = 0.2  # probability, after every activation
    output_dropout: bool = True  # S0's Dropout after the output Sigmoid
    batchnorm: bool = False  # BatchNorm before each pooling (S2)
    pooling: tuple[str, ...] = ("max", "max")  # per stage: max or avg (S2)
    channels: tuple[int, ...] = (16, 32)  # per conv stage (S2: 64, 96)
    linear: bool = True  # the middle Linear(800 -> n) (S4 removes it)
    latent_activation: str = "relu"  # S0's ReLU on the code, or none
    # A linear path beside the conv one, started at the training set's principal components:
    # training begins at PCA's reconstruction and the conv path learns what PCA misses.
    # Settings added after the first release carry `since` and stay out of run ids at their default.
    pca_path: bool = field(default=False, metadata={"since": 3})

    def __post_init__(self):
        check_int("n", self.n, 1, 4096)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if len(self.pooling) != 2:
            raise ValueError(f"pooling: expected two stages, got {self.pooling!r}")
        for kind in self.pooling:
            check_choice("pooling", kind, ("max", "avg"))
        if len(self.channels) != 2:
            raise ValueError(f"channels: expected two stages, got {self.channels!r}")
        for count in self.channels:
            check_int("channels", count, 1, 512)
        check_choice("latent_activation", self.latent_activation, ("relu", "none"))
        if self.pca_path and not self.linear:
            raise ValueError("pca_path: needs the middle linear layer (linear=true)")
        for name in ("output_dropout", "batchnorm", "linear", "pca_path"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false")

    @property
    def latent_size(self) -> int:
        return self.n if self.linear else self.channels[1] * 5 * 5


def pool_before_activation(modules: list[nn.Module]) -> list[nn.Module]:
    """Move each max-pooling before the ReLU / tanh (and dropout that drops nothing) just before it.

    Those layers act on each element and never decrease, so max-pooling first gives the same
    outputs and gradients bit for bit, with the activation on a quarter of the pixels (12 of
    fast_cnn's 93 ms per step went to the full-size ReLU). A dropout that drops stays before
    the pooling, but a ReLU before it moves after both: ReLU commutes with scaling by the mask's
    0 or 1 / (1 - p). Then layers that compiled kernels train together become one: a 2x2 max-pool
    and the ReLU after it, with a dropout just before (PoolReLU), and with a first one-channel conv
    before that (ConvPoolReLU); a max-pool and a dropout after it (PoolDropout); a ReLU and a
    BatchNorm after it (ReLUBatchNorm). Identity layers hold the others' places. Only
    parameterless modules move or vanish, so saved weights keep their names.
    """
    modules = list(modules)
    for i in range(len(modules) - 2):
        relu, dropout, pool = modules[i : i + 3]
        dropping = isinstance(dropout, Dropout) and dropout.threshold > 0
        if isinstance(relu, nn.ReLU) and dropping and isinstance(pool, nn.MaxPool2d):
            modules[i], modules[i + 1] = dropout, relu
    for i, module in enumerate(modules):
        if not isinstance(module, nn.MaxPool2d):
            continue
        start = i
        while start > 0 and (
            isinstance(modules[start - 1], (nn.ReLU, nn.Tanh))
            or (isinstance(modules[start - 1], Dropout) and modules[start - 1].threshold == 0)
        ):
            start -= 1
        modules.insert(start, modules.pop(i))
    for i, module in enumerate(modules):
        if not (
            _is_plain_2x2_max_pool(module) and i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
        ):
            continue
        dropout = modules[i - 1] if i > 0 and isinstance(modules[i - 1], Dropout) else None
        start = i if dropout is None else i - 1
        fused = PoolReLU(dropout, module, modules[i + 1])
        modules[start : i + 2] = [fused] + [nn.Identity() for _ in range(start, i + 1)]
    for i in range(len(modules) - 1):
        dropout = modules[i + 1]
        if _is_plain_2x2_max_pool(modules[i]) and isinstance(dropout, Dropout) and dropout.threshold > 0:
            modules[i : i + 2] = [PoolDropout(modules[i], dropout), nn.Identity()]
    for i in range(len(modules) - 1):
        if ConvPoolReLU.fits(modules[i]) and isinstance(modules[i + 1], PoolReLU):
            modules[i : i + 2] = [ConvPoolReLU(modules[i], modules[i + 1]), nn.Identity()]
        elif ReLUBatchNorm.fits(modules[i], modules[i + 1]):
            modules[i : i + 2] = [nn.Identity(), ReLUBatchNorm(modules[i], modules[i + 1])]
    return modules


def textbook_order(modules: list[nn.Module]) -> list[nn.Module]:
    """pool_before_activation undone, with the same numbers: each fused layer split back into the
    layers it trains (sharing their weights, in the places its Identity layers kept), each max-pool
    back after the activation (and the dropout that drops nothing) it was moved before, and a
    dropout moved before the activation back after it. The reference for tests and benches."""
    modules = list(modules)
    for i, module in enumerate(list(modules)):
        parts = []
        if isinstance(module, ConvPoolReLU):
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size)
            conv.weight, conv.bias = module.weight, module.bias
            parts, module = [conv], module.after
        if isinstance(module, PoolReLU):
            parts += [part for part in (module.dropout, module.pool, module.relu) if part is not None]
        elif isinstance(module, PoolDropout):
            parts += [module.pool, module.dropout]
        elif isinstance(module, ReLUBatchNorm):  # its ReLU's place is the Identity before it
            norm = nn.BatchNorm2d(module.num_features, module.eps, module.momentum)
            norm.weight, norm.bias = module.weight, module.bias
            norm.running_mean, norm.running_var = module.running_mean, module.running_var
            norm.num_batches_tracked = module.num_batches_tracked
            modules[i - 1], parts = module.relu, [norm]
        if parts:
            modules[i : i + len(parts)] = parts
    for i, layer in enumerate(modules):
        if not isinstance(layer, nn.MaxPool2d):
            continue
        end = i + 1
        while end < len(modules) and (
            isinstance(modules[end], (nn.ReLU, nn.Tanh))
            or (isinstance(modules[end], Dropout) and modules[end].threshold == 0)
        ):
            end += 1
        start = i - 1 if end > i + 1 and i > 0 and isinstance(modules[i - 1], Dropout) else i
        modules[start:end] = modules[i + 1 : end] + modules[start:i] + [layer]
    return modules


def _pool(kind: str) -> nn.Module:
    return nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)


class PCAPathEncoder(nn.Module):
    """The conv encoder plus a linear projection of the pixels (started at PCA's)."""

    def __init__(self, conv: nn.Module, n: int):
        super().__init__()
        self.conv = conv
        self.linear = nn.Linear(28 * 28, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.linear(x.flatten(1))


class PCAPathDecoder(nn.Module):
    """The conv decoder's output added to a linear decoding of the code, clamped to [0, 1]."""

    def __init__(self, conv: nn.Module, n: int):
        super().__init__()
        self.conv = conv
        self.linear = nn.Linear(n, 28 * 28)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.conv(z) + self.linear(z).view(-1, *IMAGE_SHAPE)).clamp(0.0, 1.0)


class ConvAutoencoder(nn.Module):
    """S0's network: two conv stages and a linear code, mirrored by two transposed convs."""

    def __init__(self, s: ConvAutoencoderSettings):
        super().__init__()
        c1, c2 = s.channels

        def stage(c_in: int, c_out: int, pool: str) -> list[nn.Module]:
            layers = [nn.Conv2d(c_in, c_out, 3)]
            if s.batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            return pool_before_activation(layers + [nn.ReLU(), Dropout(s.dropout), _pool(pool)])

        encoder = stage(1, c1, s.pooling[0]) + stage(c1, c2, s.pooling[1]) + [Flatten()]
        decoder: list[nn.Module] = []
        if s.linear:
            code_activation = ACTIVATIONS[s.latent_activation]()
            encoder += [nn.Linear(c2 * 25, s.n), code_activation, Dropout(s.dropout)]
            decoder += [nn.Linear(s.n, c2 * 25), nn.ReLU(), Dropout(s.dropout)]
        decoder += [
            nn.Unflatten(1, (c2, 5, 5)),
            ConvTranspose2d(c2, c1, 5, stride=2),  # 5 -> 13
            nn.ReLU(),
            Dropout(s.dropout),
            ConvTranspose2d(c1, 1, 6, stride=2, padding=1),  # 13 -> 28
        ]
        if s.pca_path:
            self.encoder = PCAPathEncoder(nn.Sequential(*encoder), s.n)
            self.decoder = PCAPathDecoder(nn.Sequential(*decoder), s.n)
        else:
            decoder.append(nn.Sigmoid())
            if s.output_dropout:
                decoder.append(Dropout(s.dropout))
            self.encoder = nn.Sequential(*encoder)
            self.decoder = nn.Sequential(*decoder)
        self.latent_size = s.latent_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, 1, 28, 28) -> (B, n)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, n) -> (B, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@functools.cache
def _training_set_pca() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image (784,) and all principal directions (784, 784) of the training set, largest
    first; computed once per process, as every PCA-path model starts from them."""
    from .data import load_data

    images = load_data().train_images.flatten(1).double()
    mean = images.mean(0)
    # Right singular vectors of the centred data = principal directions, largest first.
    _, _, v = torch.linalg.svd(images - mean, full_matrices=False)
    return mean.float(), v.float()


@torch.no_grad()
def start_at_pca(model: ConvAutoencoder, s: ConvAutoencoderSettings) -> None:
    """Set the linear paths to the training set's top-n principal components, the conv paths' last
    layers to zero: the untrained model reconstructs exactly as PCA with k=n does."""
    if not s.pca_path:
        return
    mean, directions = _training_set_pca()
    components = directions[: s.n]  # (n, 784)
    encoder, decoder = model.encoder, model.decoder
    encoder.linear.weight.copy_(components)
    encoder.linear.bias.copy_(-(components @ mean))
    decoder.linear.weight.copy_(components.T)
    decoder.linear.bias.copy_(mean)
    for last in (encoder.conv[-3], decoder.conv[-1]):  # the code's Linear; the last transposed conv
        last.weight.zero_()
        last.bias.zero_()


@register_model(
    "conv_autoencoder",
    kind="autoencoder",
    settings=ConvAutoencoderSettings,
    recipe=dict(loss="mse", epochs=10, batch_size=100, lr=1e-3, optimizer="adam"),
    description="S0/S2/S4 conv autoencoder: 2 conv stages, linear code of size n, 2 transposed convs",
    initialise=start_at_pca,
)
def build_conv_autoencoder(s: ConvAutoencoderSettings) -> nn.Module:
    return ConvAutoencoder(s)


# ---------------------------------------------------------------- classifier on an encoder (S0, S2, S4)


@dataclass(frozen=True)
class EncoderClassifierSettings:
    encoder_run: str = ""  # run id of a cached conv_autoencoder; "" starts from random weights
    freeze_encoder: bool = False  # True: only the head is trained
    head: str = "s0"  # s0: Linear+ReLU+Dropout (S0) · fc: Linear (S2) · wide: hidden layer (S2)
    head_hidden: int = 256  # units of the wide head's hidden layer
    dropout: float = 0.2  # the head's dropout

    def __post_init__(self):
        if not isinstance(self.encoder_run, str):
            raise ValueError("encoder_run: expected a run id")
        if not isinstance(self.freeze_encoder, bool):
            raise ValueError("freeze_encoder: expected true or false")
        check_choice("head", self.head, ("s0", "fc", "wide"))
        check_int("head_hidden", self.head_hidden, 1, 8192)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)


class EncoderClassifier(nn.Module):
    """An autoencoder's encoder followed by a small head; the encoder may be frozen."""

    def __init__(self, encoder: nn.Module, latent_size: int, s: EncoderClassifierSettings):
        super().__init__()
        self.encoder = encoder
        self.freeze_encoder = s.freeze_encoder
        if s.head == "s0":
            head = [nn.Linear(latent_size, NUM_CLASSES), nn.ReLU(), Dropout(s.dropout)]
        elif s.head == "fc":
            head = [nn.Linear(latent_size, NUM_CLASSES)]
        else:
            head = [
                nn.Linear(latent_size, s.head_hidden),
                nn.ReLU(),
                Dropout(s.dropout),
                nn.Linear(s.head_hidden, NUM_CLASSES),
            ]
        self.head = nn.Sequential(*head)
        self.set_frozen(s.freeze_encoder)

    def set_frozen(self, frozen: bool) -> None:
        self.freeze_encoder = frozen
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            # A frozen encoder is a fixed feature extractor: no dropout noise, no BN updates.
            self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))  # (B, 10) logits


def encoder_settings(encoder_run: str) -> ConvAutoencoderSettings:
    """The autoencoder settings behind a cached run id (S0's defaults for an empty id)."""
    if not encoder_run:
        return ConvAutoencoderSettings()
    from .cache import RunCache  # the cache imports this module

    config = RunCache.current().load_config(encoder_run)
    if config.model != "conv_autoencoder":
        raise ValueError(f"encoder_run: run {encoder_run} is a {config.model}, not a conv_autoencoder")
    return make_settings("conv_autoencoder", config.settings)


def load_pretrained_encoder(model: EncoderClassifier, s: EncoderClassifierSettings) -> None:
    """Start from the cached autoencoder's encoder weights (when a run is named)."""
    if not s.encoder_run:
        return
    from .cache import RunCache

    state = RunCache.current().load_state(s.encoder_run)
    prefix = "encoder."
    model.encoder.load_state_dict(
        {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    )


@register_model(
    "encoder_classifier",
    kind="classifier",
    settings=EncoderClassifierSettings,
    recipe=dict(loss="cross_entropy", epochs=10, batch_size=100, lr=1e-3, optimizer="adam"),
    description="S0/S2/S4 classifier: a trained autoencoder's encoder (frozen or fine-tuned) + head",
    initialise=load_pretrained_encoder,
)
def build_encoder_classifier(s: EncoderClassifierSettings) -> nn.Module:
    ae_settings = encoder_settings(s.encoder_run)
    return EncoderClassifier(ConvAutoencoder(ae_settings).encoder, ae_settings.latent_size, s)


class FeaturesAndHead(nn.Module):
    """A classifier made of a feature extractor (`features`) and a final layer (`head`)."""

    features: nn.Module
    head: nn.Module

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, feature size): the latent space page maps these

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))  # (B, 10) logits


# ---------------------------------------------------------------- feed-forward network (S3)


@dataclass(frozen=True)
class MLPSettings:
    n1: int = 128
    n2: int = 64
    dropout: float = 0.2

    def __post_init__(self):
        check_int("n1", self.n1, 1, 8192)
        check_int("n2", self.n2, 1, 8192)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)


class MLP(FeaturesAndHead):
    def __init__(self, s: MLPSettings):
        super().__init__()
        self.features = nn.Sequential(
            Flatten(),
            nn.Linear(784, s.n1),
            nn.ReLU(),
            Dropout(s.dropout),
            nn.Linear(s.n1, s.n2),
            nn.ReLU(),
            Dropout(s.dropout),
        )
        self.head = nn.Linear(s.n2, NUM_CLASSES)


@register_model(
    "mlp",
    kind="classifier",
    settings=MLPSettings,
    recipe=dict(loss="mse_onehot", epochs=30, batch_size=100, lr=1e-3, optimizer="adam"),
    description="S3 feed-forward network 784 -> n1 -> n2 -> 10 with dropout, MSE on one-hot",
)
def build_mlp(s: MLPSettings) -> nn.Module:
    return MLP(s)


# ---------------------------------------------------------------- CNN from a list of layers (S1)

S1_BEST_LAYERS = (
    "conv:35:3:valid:relu",
    "bn",
    "conv:50:3:valid:relu",
    "bn",
    "maxpool:2",
    "dropout:0.7",
    "dense:256:relu",
)
LAYER_HELP = (
    "conv:FILTERS:KERNEL:same|valid:relu|tanh, maxpool:SIZE, avgpool:SIZE, bn, "
    "dropout:P, dense:UNITS:relu|tanh"
)


def _parse_layer(text: str) -> tuple[str, list[str]]:
    kind, *args = text.strip().split(":")
    arity = {"conv": 4, "maxpool": 1, "avgpool": 1, "bn": 0, "dropout": 1, "dense": 2}
    if kind not in arity or len(args) != arity[kind]:
        raise ValueError(f"layers: {text!r} is not a layer; write {LAYER_HELP}")
    return kind, args


@dataclass(frozen=True)
class CNNSettings:
    layers: tuple[str, ...] = S1_BEST_LAYERS  # see LAYER_HELP; a Linear(-> 10) head follows

    def __post_init__(self):
        if not self.layers:
            raise ValueError("layers: at least one layer is needed")
        build_layer_stack(self.layers)  # raises ValueError naming the bad layer


def build_layer_stack(layers: tuple[str, ...]) -> tuple[nn.Sequential, int]:
    """Turn S1-style layer strings into modules; returns them and the feature size."""
    modules: list[nn.Module] = []
    channels, size, flat = 1, 28, None  # flat: feature count once flattened
    for text in layers:
        kind, args = _parse_layer(text)
        try:
            if kind == "conv":
                if flat is not None:
                    raise ValueError("a conv layer cannot follow a dense layer")
                filters, kernel = int(args[0]), int(args[1])
                check_int("layers conv filters", filters, 1, 1024)
                check_choice("layers conv kernel", kernel, (1, 3, 5, 7))
                check_choice("layers conv padding", args[2], ("same", "valid"))
                check_choice("layers conv activation", args[3], ("relu", "tanh"))
                padding = kernel // 2 if args[2] == "same" else 0
                size = size + 2 * padding - kernel + 1
                if size < 1:
                    raise ValueError("the image shrinks to nothing")
                modules += [nn.Conv2d(channels, filters, kernel, padding=padding), ACTIVATIONS[args[3]]()]
                channels = filters
            elif kind in ("maxpool", "avgpool"):
                if flat is not None:
                    raise ValueError("pooling cannot follow a dense layer")
                pool = int(args[0])
                check_int("layers pool size", pool, 2, 7)
                if size // pool < 1:
                    raise ValueError("the image shrinks to nothing")
                size //= pool
                modules.append(nn.MaxPool2d(pool) if kind == "maxpool" else nn.AvgPool2d(pool))
            elif kind == "bn":
                modules.append(nn.BatchNorm2d(channels) if flat is None else nn.BatchNorm1d(flat))
            elif kind == "dropout":
                p = float(args[0])
                check_range("layers dropout", p, 0.0, 1.0, high_open=True)
                modules.append(Dropout(p))
            else:  # dense
                units = int(args[0])
                check_int("layers dense units", units, 1, 16384)
                check_choice("layers dense activation", args[1], ("relu", "tanh"))
                if flat is None:
                    flat = channels * size * size
                    modules.append(Flatten())
                modules += [nn.Linear(flat, units), ACTIVATIONS[args[1]]()]
                flat = units
        except ValueError as error:
            message = str(error)
            if not message.startswith("layers"):
                message = f"layers: {text!r}: {message}"
            raise ValueError(message) from None
    if flat is None:
        modules.append(Flatten())
        flat = channels * size * size
    return nn.Sequential(*pool_before_activation(modules)), flat


class CNN(FeaturesAndHead):
    def __init__(self, s: CNNSettings):
        super().__init__()
        self.features, width = build_layer_stack(s.layers)
        self.head = nn.Linear(width, NUM_CLASSES)


@register_model(
    "cnn",
    kind="classifier",
    settings=CNNSettings,
    # bf16 where the hardware does it natively: S1's row 9 over seeds 0-2 reached the same test
    # accuracy as fp32 (bench/RESULTS.md) in two thirds of the time.
    recipe=dict(
        loss="cross_entropy", epochs=12, batch_size=128, lr=5e-4, optimizer="adam", precision=fast_precision()
    ),
    description="S1 CNN built from a list of layers (default: S1's best row, 0.9252 published)",
)
def build_cnn(s: CNNSettings) -> nn.Module:
    return CNN(s)


# ---------------------------------------------------------------- residual network (S1)


@dataclass(frozen=True)
class ResNetSettings:
    channels: tuple[int, ...] = (16, 32, 64)  # per stage; stages after the first halve the size
    blocks: int = 1  # identity blocks per stage, after the stage's projection block
    dropout: float = 0.2  # before the final Linear

    def __post_init__(self):
        if not 1 <= len(self.channels) <= 3:
            raise ValueError(f"channels: one to three stages, got {self.channels!r}")
        for count in self.channels:
            check_int("channels", count, 4, 512)
        check_int("blocks", self.blocks, 0, 8)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN; the shortcut is the identity, or a strided 1x1 projection."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),  # zero padding
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()  # identity block
        else:  # convolutional (projection) block
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(FeaturesAndHead):
    def __init__(self, s: ResNetSettings):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, s.channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(s.channels[0]),
            nn.ReLU(),
        ]
        c_in = s.channels[0]
        for stage, c_out in enumerate(s.channels):
            layers.append(ResidualBlock(c_in, c_out, stride=1 if stage == 0 else 2))
            layers += [ResidualBlock(c_out, c_out, 1) for _ in range(s.blocks)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(Dropout(s.dropout), nn.Linear(c_in, NUM_CLASSES))


# BatchNorm lets a large batch take a high peak rate; OneCycle anneals it to zero.
ONE_CYCLE_TRAINING = dict(
    lr=3e-3, optimizer="adamw", weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1, augment="flip"
)


@register_model(
    "resnet",
    kind="classifier",
    settings=ResNetSettings,
    recipe=dict(
        loss="cross_entropy",
        epochs=12,  # 0.9316 test accuracy in 13 min on 2 cores (S1's ResNet: 0.85)
        batch_size=256,
        **ONE_CYCLE_TRAINING,
    ),
    description="S1 residual network: identity and projection blocks, BatchNorm, zero padding",
)
def build_resnet(s: ResNetSettings) -> nn.Module:
    return ResNet(s)


def describe(model: nn.Module) -> dict[str, Any]:
    """Parameter counts for display (a frozen encoder's weights are not trained)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}
