"""The binary-latent variational autoencoder (full precision, frozen after pretraining).

Encoder (BinPlay's shape, Deja et al. 2020): three stride-2 3×3 convolutions with batch norm and
leaky ReLU, 1→32→64→128 channels, 28→14→7→4, then a linear layer to `latent_bits` logits. Other
shapes (`channels` 1 or 3, square `image_size` 8 to 64): one stride-2 stage per halving down to
4 pixels or fewer (8: one stage, 16: two, 28 and 32: three, 64: four), channels 32, 64, 128, 128;
the decoder mirrors it with one fewer transposed convolution than the encoder has stages (at
least one), from 64 channels at ceil(size / 2^k) pixels, cropped to the size. The default
(1 × 28 × 28) is exactly the model above, so older checkpoints load unchanged.
Latent: in training a ±1 sample of Bernoulli(sigmoid(logits)) with a straight-through gradient;
at inference the threshold logit >= 0 → +1 (bit 1). Decoder: linear, then two transposed
convolutions to pixel logits. Loss per image: Bernoulli reconstruction (binary cross
entropy against pixel intensities in [0, 1]) + kl_weight · KL(q(z|x) ‖ Bernoulli(0.5)).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from hybnn_kernels.layout import CODE_BITS
from torch import nn

from hybnn_cli.errors import HybnnError
from hybnn_cli.models.quantizers import bernoulli_ste, threshold_bits


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


IMAGE_SIZES = (8, 64)  # the smallest and largest square image the VAE is built for
CHANNELS = (1, 3)


def encoder_stages(image_size: int) -> int:
    """Stride-2 stages until the feature map is 4 pixels or fewer (28: 3)."""
    return max(1, math.ceil(math.log2(image_size / 4)))


def _halved(n: int, k: int) -> int:
    for _ in range(k):
        n = (n + 1) // 2  # a 3×3 stride-2 convolution with padding 1
    return n


def check_shape(channels: int, image_size: int) -> None:
    if channels not in CHANNELS:
        raise HybnnError(f"the VAE takes 1 or 3 channels, not {channels}")
    if not IMAGE_SIZES[0] <= image_size <= IMAGE_SIZES[1]:
        raise HybnnError(f"--image-size must be from {IMAGE_SIZES[0]} to {IMAGE_SIZES[1]} "
                         f"pixels, got {image_size}")


class Encoder(nn.Module):
    def __init__(self, latent_bits: int = CODE_BITS, channels: int = 1, image_size: int = 28):
        super().__init__()
        check_shape(channels, image_size)
        self.latent_bits, self.channels, self.image_size = latent_bits, channels, image_size
        widths = [channels] + [min(32 * 2 ** i, 128) for i in range(encoder_stages(image_size))]
        self.features = nn.Sequential(*(_down(a, b) for a, b in pairwise(widths)))
        side = _halved(image_size, len(widths) - 1)
        self.fc = nn.Linear(widths[-1] * side * side, latent_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent logits (B, latent_bits) for images x (B, channels, size, size) in [0, 1]."""
        return self.fc(self.features(x).flatten(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic ±1 code (eval mode expected)."""
        return threshold_bits(self(x))


class Decoder(nn.Module):
    """A light decoder: linear to 64×7×7, then two 4×4 stride-2 transposed convolutions
    (7→14→28). Lighter than the encoder's mirror image (about 42 against 45 ms per batch of 128
    here), which keeps a full-MNIST epoch near 20 s on two cores; only the encoder is kept."""

    def __init__(self, latent_bits: int = CODE_BITS, channels: int = 1, image_size: int = 28):
        super().__init__()
        ups = max(1, encoder_stages(image_size) - 1)  # transposed convolutions
        self.image_size, self.side = image_size, -(-image_size // 2 ** ups)
        self.fc = nn.Sequential(nn.Linear(latent_bits, 64 * self.side ** 2), nn.LeakyReLU(0.2))
        widths = [64] + [max(64 // 2 ** (i + 1), 16) for i in range(ups - 1)]
        layers = []
        for a, b in pairwise(widths):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        self.up = nn.Sequential(*layers)
        self.out = nn.ConvTranspose2d(widths[-1], channels, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits (B, channels, size, size) for ±1 codes z (B, latent_bits)."""
        x = self.out(self.up(self.fc(z).view(-1, 64, self.side, self.side)))
        return x[..., :self.image_size, :self.image_size]


class BinaryVAE(nn.Module):
    def __init__(self, latent_bits: int = CODE_BITS, channels: int = 1, image_size: int = 28):
        super().__init__()
        self.encoder = Encoder(latent_bits, channels, image_size)
        self.decoder = Decoder(latent_bits, channels, image_size)

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
