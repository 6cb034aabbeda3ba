"""A variational autoencoder (Kingma & Welling, 2014) in the conv autoencoder's shape: the encoder
gives a mean and a log-variance per code unit, training decodes a code drawn from them, and a KL
term weighted by beta (Higgins et al., 2017) pulls the codes towards N(0, I), so that codes drawn
from N(0, I) decode to new garments."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fmnist_core.base.settings import check_int, check_range, knob, shown
from fmnist_core.models.autoencoder import EncoderDecoder
from fmnist_core.models.registry import register_model

PIXELS = 28 * 28
# The mean squared error read as a Gaussian decoder's log-likelihood with this variance per pixel
# (sigma ~0.22 of the 0..1 range): beta=1 is then that model's evidence lower bound. With 0.5 (the
# KL at beta/784 beside the MSE) codes collapsed to the prior at beta=4 on 3,000 images (test MSE
# 0.097, the mean image's); at 0.05 beta=1 and beta=4 both reconstruct (0.045, 0.047) with KL 31
# and 12 nats.
DECODER_VARIANCE = 0.05


@dataclass(frozen=True)
class VAESettings:
    n: int = knob(16, "Latent size n", options=(2, 4, 8, 16, 32, 64))
    beta: float = knob(
        1.0,
        "β (weight of the KL term)",
        options=(0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0),
        help="0: a plain autoencoder with noise in its code · 1: the VAE's evidence bound · above 1: "
        "a smoother latent space, blurrier reconstructions (β-VAE)",
    )
    channels: tuple[int, ...] = (32, 64)  # per conv stage

    def __post_init__(self):
        check_int("n", self.n, 1, 512)
        check_range("beta", self.beta, 0.0, 100.0)
        if len(self.channels) != 2:
            raise ValueError(f"channels: expected two stages, got {shown(self.channels)}")
        for count in self.channels:
            check_int("channels", count, 1, 512)


class GaussianCode(nn.Module):
    """The reparameterisation: the encoder's (B, 2n) output read as a mean and a log-variance. In
    training a code drawn from N(mean, variance) with `generator` (the engine hands it the run's
    own); in evaluation the mean. Keeps the batch's KL divergence to N(0, I), nats per image."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.generator: torch.Generator | None = None
        self.kl: torch.Tensor | None = None

    def forward(self, statistics: torch.Tensor) -> torch.Tensor:
        mean, log_variance = statistics[:, : self.n], statistics[:, self.n :].clamp(-10.0, 10.0)  # (B, n)
        self.kl = 0.5 * (mean.square() + log_variance.exp() - 1.0 - log_variance).sum(1).mean()
        if not self.training:
            return mean
        noise = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        return mean + noise * (0.5 * log_variance).exp()


class VAE(EncoderDecoder):
    """Two conv stages to a Gaussian code of size n, mirrored by two transposed convs."""

    loss_term_names = ("kl",)

    def __init__(self, s: VAESettings):
        super().__init__()
        c1, c2 = s.channels
        # (B, 1, 28, 28) -> (B, c1, 13, 13) -> (B, c2, 5, 5) -> (B, 2n) -> (B, n)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 25, 2 * s.n),
            GaussianCode(s.n),
        )
        self.decoder = nn.Sequential(
            nn.Linear(s.n, c2 * 25),
            nn.ReLU(),
            nn.Unflatten(1, (c2, 5, 5)),
            nn.ConvTranspose2d(c2, c1, 5, stride=2),  # 5 -> 13
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 6, stride=2, padding=1),  # 13 -> 28
            nn.Sigmoid(),
        )
        self.beta = s.beta
        self.latent_size = s.n

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """The last forward pass's KL divergence to N(0, I), nats per image."""
        return {"kl": self.encoder[-1].kl}

    def loss_weights(self) -> dict[str, float]:
        """The KL's weight beside the per-pixel MSE: beta times the Gaussian decoder's 2 sigma^2,
        spread over the pixels (the evidence bound divided by 784 / (2 sigma^2))."""
        return {"kl": self.beta * 2 * DECODER_VARIANCE / PIXELS}


@register_model(
    "vae",
    kind="autoencoder",
    settings=VAESettings,
    recipe=dict(loss="mse", epochs=10, batch_size=128, lr=2e-3, optimizer="adam"),
    description="Variational autoencoder: the conv autoencoder's shape with a Gaussian code of size n "
    "and a β-weighted KL term; decodes new garments from N(0, I)",
    samples=True,
)
def build_vae(s: VAESettings) -> nn.Module:
    return VAE(s)
