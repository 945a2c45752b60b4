"""Building blocks: rate-conditioned residual blocks and resampling layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


def patch_down(in_channels: int, out_channels: int, rate: int) -> nn.Conv2d:
    """Non-overlapping rate x rate patches to one feature vector each."""
    return nn.Conv2d(in_channels, out_channels, rate, stride=rate)


def patch_up(in_channels: int, out_channels: int, rate: int) -> nn.ConvTranspose2d:
    """One feature vector to a rate x rate patch (the inverse of `patch_down`)."""
    return nn.ConvTranspose2d(in_channels, out_channels, rate, stride=rate)


class RateEmbedding(nn.Module):
    """Embeds the rate settings: the positions of log lambda and of each log beta.

    The embedding feeds the feature-wise modulation of every residual block, so
    one set of weights serves every lambda and every split of bits over layers.
    """

    def __init__(self, num_layers: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(1 + num_layers, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU()
        )

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, 1 + L) (`hvae.rate_positions`) -> (B, dim)."""
        return self.mlp(positions)


class ResBlock(nn.Module):
    """x + conv(act(modulate(conv(act(x))))), modulated by the rate embedding.

    The last convolution starts at zero, so every block starts as the identity
    and a deep stack trains stably from the first step.
    """

    halo = 2  # positions of context around each output: two 3x3 convolutions

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.conv1 = conv3x3(width, width)
        self.conv2 = conv3x3(width, width)
        self.modulation = nn.Linear(cond_dim, 2 * width)
        self.act = nn.LeakyReLU(0.1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(cond)[:, :, None, None].chunk(2, dim=1)
        if x.shape[0] == 1 and not torch.is_grad_enabled():
            return self._coding_forward(x, scale.flatten(), shift.flatten())
        h = self.conv1(self.act(x))
        h = h * (1 + scale) + shift
        return x + self.conv2(self.act(h))

    def _coding_forward(self, x, scale, shift):
        """One image, no gradients: the modulation folded into conv1's weights
        and bias, and the temporaries updated in place, which saves three
        passes over the block's largest maps (coding spends most of its time
        in these blocks)."""
        gain = 1 + scale
        weight = self.conv1.weight * gain[:, None, None, None]
        bias = self.conv1.bias * gain + shift
        h = F.conv2d(self.act(x), weight, bias, padding=self.conv1.padding)
        h = self.conv2(F.leaky_relu_(h, self.act.negative_slope))
        return h.add_(x) if h.dtype == x.dtype else x + h
