"""S0's conv autoencoder and the knobs S2 and S4 turn, as the reports drew it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fmnist_core.base.settings import check_choice, check_dropout, check_int, knob, shown
from fmnist_core.models.registry import IMAGE_SHAPE, register_model

CODE_ACTIVATIONS = {"relu": nn.ReLU, "none": nn.Identity}


@dataclass(frozen=True)
class ConvAutoencoderSettings:
    n: int = knob(64, "Latent size n", low=2, high=512)
    dropout: float = knob(0.2, "Dropout p", low=0.0, high=0.7, step=0.05)  # after every activation
    output_dropout: bool = knob(True, "Dropout after the output Sigmoid (S0)", group="Architecture")
    batchnorm: bool = knob(False, "BatchNorm before pooling (S2)", group="Architecture")
    pooling: tuple[str, ...] = knob(("max", "max"), "Pooling", options=("max", "avg"), group="Architecture")
    channels: tuple[int, ...] = knob(
        (16, 32), "Channels", options=(8, 16, 32, 64, 96, 128), group="Architecture"
    )  # per conv stage (S2: 64, 96)
    linear: bool = knob(True, "Middle linear layer (S4 removes it)", group="Architecture")
    latent_activation: str = knob(
        "relu", "Activation on the code", options=("relu", "none"), group="Architecture"
    )
    # A linear path beside the conv one, started at the training set's principal components:
    # training begins at PCA's reconstruction and the conv path learns what PCA misses.
    # Settings added after the first release carry `since` and stay out of run ids at their default.
    pca_path: bool = knob(
        False,
        "Linear path started at PCA",
        group="Architecture",
        when=("linear", True),
        help="A linear encoder/decoder beside the conv one, set to the top-n principal components: "
        "training starts at PCA's reconstruction and the conv path learns what PCA misses.",
        since=3,
    )

    def __post_init__(self):
        check_int("n", self.n, 1, 4096)
        check_dropout("dropout", self.dropout)
        if len(self.pooling) != 2:
            raise ValueError(f"pooling: expected two stages, got {shown(self.pooling)}")
        for kind in self.pooling:
            check_choice("pooling", kind, ("max", "avg"))
        if len(self.channels) != 2:
            raise ValueError(f"channels: expected two stages, got {shown(self.channels)}")
        for count in self.channels:
            check_int("channels", count, 1, 512)
        check_choice("latent_activation", self.latent_activation, tuple(CODE_ACTIVATIONS))
        for name in ("output_dropout", "batchnorm", "linear", "pca_path"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false")
        if self.pca_path and not self.linear:
            raise ValueError("pca_path: needs the middle linear layer (linear=true)")

    @property
    def latent_size(self) -> int:
        return self.n if self.linear else self.channels[1] * 5 * 5


class PCAPathEncoder(nn.Module):
    """The conv encoder plus a linear projection of the pixels (started at PCA's)."""

    def __init__(self, conv: nn.Module, n: int):
        super().__init__()
        self.conv = conv
        self.linear = nn.Linear(28 * 28, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.linear(x.flatten(1))  # (B, n)


class PCAPathDecoder(nn.Module):
    """The conv decoder's output added to a linear decoding of the code, clamped to [0, 1]."""

    def __init__(self, conv: nn.Module, n: int):
        super().__init__()
        self.conv = conv
        self.linear = nn.Linear(n, 28 * 28)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.conv(z) + self.linear(z).view(-1, *IMAGE_SHAPE)).clamp(0.0, 1.0)  # (B, 1, 28, 28)


class EncoderDecoder(nn.Module):
    """What every autoencoder is to the lab (a model that reconstructs): an `encoder` to a code of
    `latent_size` and a `decoder` back; encoder classifiers take the encoder alone."""

    encoder: nn.Module
    decoder: nn.Module
    latent_size: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, 1, 28, 28) -> (B, n)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, n) -> (B, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ConvAutoencoder(EncoderDecoder):
    """S0's network: two conv stages and a linear code, mirrored by two transposed convs."""

    def __init__(self, s: ConvAutoencoderSettings):
        super().__init__()
        c1, c2 = s.channels

        def stage(c_in: int, c_out: int, pool: str) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(c_out)] if s.batchnorm else []
            pooling = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
            return [nn.Conv2d(c_in, c_out, 3), *norm, nn.ReLU(), nn.Dropout(s.dropout), pooling]

        # (B, 1, 28, 28) -> (B, c1, 13, 13) -> (B, c2, 5, 5) -> (B, c2 * 25)
        encoder = [*stage(1, c1, s.pooling[0]), *stage(c1, c2, s.pooling[1]), nn.Flatten()]
        decoder: list[nn.Module] = []
        if s.linear:
            code_activation = CODE_ACTIVATIONS[s.latent_activation]()
            encoder += [nn.Linear(c2 * 25, s.n), code_activation, nn.Dropout(s.dropout)]  # (B, n)
            decoder += [nn.Linear(s.n, c2 * 25), nn.ReLU(), nn.Dropout(s.dropout)]
        decoder += [
            nn.Unflatten(1, (c2, 5, 5)),
            nn.ConvTranspose2d(c2, c1, 5, stride=2),  # 5 -> 13
            nn.ReLU(),
            nn.Dropout(s.dropout),
            nn.ConvTranspose2d(c1, 1, 6, stride=2, padding=1),  # 13 -> 28
        ]
        if s.pca_path:
            self.encoder = PCAPathEncoder(nn.Sequential(*encoder), s.n)
            self.decoder = PCAPathDecoder(nn.Sequential(*decoder), s.n)
        else:
            decoder.append(nn.Sigmoid())
            if s.output_dropout:
                decoder.append(nn.Dropout(s.dropout))
            self.encoder = nn.Sequential(*encoder)
            self.decoder = nn.Sequential(*decoder)
        self.latent_size = s.latent_size


@torch.no_grad()
def start_at_pca(model: ConvAutoencoder, mean: torch.Tensor, directions: torch.Tensor) -> None:
    """Set the linear paths to the top-n principal `directions` (largest first, (k, 784)) about
    `mean` (784,), and the conv paths' last layers to zero: the untrained model reconstructs
    exactly as PCA with k=n does."""
    encoder, decoder = model.encoder, model.decoder
    if not isinstance(encoder, PCAPathEncoder):
        raise ValueError("pca_path: this autoencoder has no linear path to start at PCA")
    components = directions[: encoder.linear.out_features].to(encoder.linear.weight)  # (n, 784)
    mean = mean.to(components)
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
    published={"loss": 0.052},  # S0's test loss at these defaults (n=64, p=0.2)
)
def build_conv_autoencoder(s: ConvAutoencoderSettings) -> nn.Module:
    return ConvAutoencoder(s)
