"""The binary-latent variational autoencoder (full precision, frozen after pretraining).

Encoder (BinPlay's shape, Deja et al. 2020): three stride-2 3×3 convolutions with batch norm and
leaky ReLU, 1→32→64→128 channels, 28→14→7→4, then a linear layer to `latent_bits` logits.
Latent: in training a ±1 sample of Bernoulli(sigmoid(logits)) with a straight-through gradient;
at inference the threshold logit >= 0 → +1 (bit 1). Decoder: linear, then two transposed
convolutions to pixel logits. Loss per image: Bernoulli reconstruction (binary cross
entropy against pixel intensities in [0, 1]) + kl_weight · KL(q(z|x) ‖ Bernoulli(0.5)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hybnn_kernels.layout import CODE_BITS
from torch import nn

from hybnn_cli.models.quantizers import bernoulli_ste, threshold_bits


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    def __init__(self, latent_bits: int = CODE_BITS):
        super().__init__()
        self.latent_bits = latent_bits
        self.features = nn.Sequential(_down(1, 32), _down(32, 64), _down(64, 128))
        self.fc = nn.Linear(128 * 4 * 4, latent_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent logits (B, latent_bits) for images x (B, 1, 28, 28) in [0, 1]."""
        return self.fc(self.features(x).flatten(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic ±1 code (eval mode expected)."""
        return threshold_bits(self(x))


class Decoder(nn.Module):
    """A light decoder: linear to 64×7×7, then two 4×4 stride-2 transposed convolutions
    (7→14→28). Lighter than the encoder's mirror image (about 42 against 45 ms per batch of 128
    here), which keeps a full-MNIST epoch near 20 s on two cores; only the encoder is kept."""

    def __init__(self, latent_bits: int = CODE_BITS):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_bits, 64 * 7 * 7), nn.LeakyReLU(0.2))
        self.up = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, bias=False),
                                nn.BatchNorm2d(32), nn.LeakyReLU(0.2))
        self.out = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits (B, 1, 28, 28) for ±1 codes z (B, latent_bits)."""
        return self.out(self.up(self.fc(z).view(-1, 64, 7, 7)))


class BinaryVAE(nn.Module):
    def __init__(self, latent_bits: int = CODE_BITS):
        super().__init__()
        self.encoder = Encoder(latent_bits)
        self.decoder = Decoder(latent_bits)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        logits = self.encoder(x)
        z = bernoulli_ste(logits, generator) if self.training else threshold_bits(logits)
        return self.decoder(z), logits


def bernoulli_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(sigmoid(logits)) ‖ Bernoulli(0.5)) summed over bits, per sample."""
    log_q1 = F.logsigmoid(logits)
    log_q0 = F.logsigmoid(-logits)
    q1 = log_q1.exp()
    return (q1 * log_q1 + (1 - q1) * log_q0 + math.log(2.0)).sum(dim=1)


def vae_loss(x: torch.Tensor, recon_logits: torch.Tensor, logits: torch.Tensor,
             kl_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, kl), each the mean over the batch of per-image sums (nats)."""
    rec = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").flatten(1).sum(1)
    kl = bernoulli_kl(logits)
    return (rec + kl_weight * kl).mean(), rec.mean(), kl.mean()
