"""A top-down hierarchical VAE with quantized latents and per-layer rates.

Xiao & Bamler, "Trading Information between Latents in Hierarchical Variational
Autoencoders", ICLR 2023: when the posterior of every latent layer sees the image
(through bottom-up features) and all layers above it, the rate splits into one
term per layer, and each term can carry its own penalty beta_l.

Data flow (strides for the ``base`` preset)::

    x ─ stem /4 ─ res ─ /2 ─ res ─ /2 ─ res ─ /2 ─ res ─ /2 ─ res      bottom-up encoder
                  d(4)       d(8)       d(16)      d(32)      d(64)    features
                              │          │          │          │
    x_hat ─ x4 ─ res ─ x2 ─ [z z] ─ x2 ─ [z z] ─ x2 ─ [z] ─ x2 ─ [z] ─ constant
                                                                       top-down decoder

Each latent layer ``[z]`` is a `LatentBlock`: from the top-down state it computes
the prior N(mu_p, sigma_p^2) * U(-1/2, 1/2) (``prior``), from the state and the
encoder feature of its level the posterior mean mu_q (``posterior_mean``), and it
merges the chosen latent back into the state (``merge``). Training draws
z = mu_q + u, u ~ U(-1/2, 1/2); coding sends symbols s = round(mu_q - mu_p) and
uses z = s + mu_p. All three modes walk the same `_top_down` loop, so the
training and the coding paths cannot drift apart.

The model's vocabulary (used by the loss, the codec and the tests):

- ``forward(x, lmbda, betas)`` -> ``{"x_hat": (B, 3, H, W), "likelihoods":
  {"layer0": (B, C_0, h_0, w_0), ...}}``, layer0 being the top layer;
- ``compress(x, lmbda, betas)`` -> ``{"symbols": [int32 (B, C_l, h_l, w_l)],
  "scales": [float (B, C_l, h_l, w_l)], "x_hat": ... or None}``, top layer first;
- ``decompress(grid, lmbda, betas, read_symbols)`` -> ``{"x_hat": ...}``.

Images are floats in [0, 1] whose height and width are multiples of
``config.top_stride``; ``lmbda`` has shape (B,) and ``betas`` shape (B, L).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import HVAEConfig, get_config
from .layers import RateEmbedding, ResBlock, conv1x1, conv3x3, patch_down, patch_up

# (layer index, prior scales of that layer) -> symbols, or None for "not sent".
SymbolReader = Callable[[int, torch.Tensor], "torch.Tensor | None"]

LIKELIHOOD_MIN = 1e-9


def latent_likelihood(
    z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """P(z) under N(mean, scale^2) convolved with U(-1/2, 1/2), in float32.

    Evaluated on the side of the mean where the normal tail is small, so that
    the difference of the two CDFs keeps its precision far from the mean.
    """
    distance = (z.float() - mean.float()).abs()
    scale = scale.float()
    upper = torch.special.ndtr((0.5 - distance) / scale)
    lower = torch.special.ndtr((-0.5 - distance) / scale)
    return (upper - lower).clamp_min(LIKELIHOOD_MIN)


class LatentBlock(nn.Module):
    """One latent layer of the top-down pass: prior, posterior mean and merge."""

    def __init__(self, width: int, channels: int, cond_dim: int, scale_min: float):
        super().__init__()
        self.log_scale_min = math.log(scale_min)
        self.prior_block = ResBlock(width, cond_dim)
        self.prior_head = conv3x3(width, 2 * channels)
        self.posterior_merge = conv1x1(2 * width, width)
        self.posterior_block = ResBlock(width, cond_dim)
        self.posterior_head = conv3x3(width, channels)
        self.z_embedding = conv1x1(channels, width)
        # Start with prior scales near 1 rather than near the lower bound.
        nn.init.zeros_(self.prior_head.weight)
        nn.init.constant_(self.prior_head.bias[channels:], 2.0)
        nn.init.zeros_(self.prior_head.bias[:channels])

    def prior(self, state, cond):
        """state (B, W, h, w) -> (new state, prior mean, prior scale >= scale_min)."""
        state = self.prior_block(state, cond)
        mean, raw_scale = self.prior_head(state).float().chunk(2, dim=1)
        # log sigma = log sigma_min + softplus(raw): a smooth lower bound whose
        # gradient never vanishes abruptly, unlike a clamp.
        scale = torch.exp(self.log_scale_min + F.softplus(raw_scale))
        return state, mean, scale

    def posterior_mean(self, state, feature, cond):
        """Posterior mean mu_q from the top-down state and the encoder feature."""
        h = self.posterior_merge(torch.cat([state, feature], dim=1))
        h = self.posterior_block(h, cond)
        return self.posterior_head(h).float()

    def merge(self, state, z):
        return state + self.z_embedding(z.to(state.dtype))


class HierarchicalVAE(nn.Module):
    """Hierarchical VAE with generalized top-down inference and quantized latents."""

    def __init__(self, config: HVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = RateEmbedding(
            c.num_latent_layers, c.cond_dim, (c.lmbda_min, c.lmbda_max)
        )

        def res_blocks(level, count):
            return nn.ModuleList(
                ResBlock(c.widths[level], c.cond_dim) for _ in range(count)
            )

        levels = range(c.num_levels)
        # Bottom-up encoder; every list is indexed by level, top (0) first.
        self.stem = patch_down(3, c.widths[-1], 4)
        self.encoder_blocks = nn.ModuleList(
            res_blocks(i, c.encoder_blocks[i]) for i in levels
        )
        self.downsample = nn.ModuleList(
            patch_down(c.widths[i + 1], c.widths[i], 2) for i in levels[:-1]
        )
        # Top-down decoder.
        self.initial_state = nn.Parameter(torch.zeros(1, c.widths[0], 1, 1))
        self.latent_blocks = nn.ModuleList(
            nn.ModuleList(
                LatentBlock(c.widths[i], c.latent_channels[i], c.cond_dim, c.scale_min)
                for _ in range(c.latent_layers[i])
            )
            for i in levels
        )
        self.decoder_blocks = nn.ModuleList(
            res_blocks(i, c.decoder_blocks[i]) for i in levels
        )
        self.upsample = nn.ModuleList(
            patch_up(c.widths[i], c.widths[i + 1], 2) for i in levels[:-1]
        )
        self.output = patch_up(c.widths[-1], 3, 4)

    @property
    def num_layers(self) -> int:
        return self.config.num_latent_layers

    def condition(self, lmbda: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """Rate settings -> the embedding (B, cond_dim) that every block sees."""
        if betas.shape[-1] != self.num_layers:
            raise ValueError(
                f"betas need {self.num_layers} entries per image, not {betas.shape[-1]}"
            )
        return self.embedding(lmbda.float(), betas.float())

    def encode_features(
        self, x: torch.Tensor, cond: torch.Tensor
    ) -> list[torch.Tensor]:
        """Bottom-up features, one per level, top first (None where no latents)."""
        h = self.stem(x - 0.5)
        features = [None] * self.config.num_levels
        for level in reversed(range(self.config.num_levels)):
            for block in self.encoder_blocks[level]:
                h = block(h, cond)
            if self.config.latent_layers[level]:
                features[level] = h
            if level > 0:
                h = self.downsample[level - 1](h)
        return features

    def _top_down(self, cond, grid, choose_latent, features=None, reconstruct=True):
        """Walk every latent layer top-down; return x_hat (None if not reconstructing).

        choose_latent(layer, mean, scale, posterior) -> z picks each layer's latent
        (noisy or rounded from the posterior mean, or read from a stream). The
        posterior mean is computed only when encoder ``features`` are given.
        """
        state = self.initial_state.expand(cond.shape[0], -1, *grid).to(cond.dtype)
        layer = 0
        for level in range(self.config.num_levels):
            for block in self.latent_blocks[level]:
                state, mean, scale = block.prior(state, cond)
                posterior = None
                if features is not None:
                    posterior = block.posterior_mean(state, features[level], cond)
                state = block.merge(state, choose_latent(layer, mean, scale, posterior))
                layer += 1
            if layer == self.num_layers and not reconstruct:
                return None
            for block in self.decoder_blocks[level]:
                state = block(state, cond)
            if level + 1 < self.config.num_levels:
                state = self.upsample[level](state)
        return self.output(state).float() + 0.5

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        stride = self.config.top_stride
        if height % stride or width % stride:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {stride}"
            )
        return height // stride, width // stride

    def forward(
        self, x: torch.Tensor, lmbda: torch.Tensor, betas: torch.Tensor
    ) -> dict:
        """Training (uniform noise) or evaluation (rounding) pass with likelihoods."""
        cond = self.condition(lmbda, betas)
        likelihoods = {}

        def choose_latent(layer, mean, scale, posterior):
            if self.training:
                z = posterior + torch.empty_like(posterior).uniform_(-0.5, 0.5)
            else:
                z = torch.round(posterior - mean) + mean
            likelihoods[f"layer{layer}"] = latent_likelihood(z, mean, scale)
            return z

        features = self.encode_features(x, cond)
        x_hat = self._top_down(cond, self._grid(*x.shape[-2:]), choose_latent, features)
        return {"x_hat": x_hat, "likelihoods": likelihoods}

    @torch.inference_mode()
    def compress(self, x, lmbda, betas, reconstruct: bool = False) -> dict:
        """Symbols round(mu_q - mu_p) and prior scales of every layer, top first.

        With ``reconstruct`` the walk goes on to the encoder-side reconstruction
        ``x_hat``, which decoding the symbols reproduces exactly.
        """
        cond = self.condition(lmbda, betas)
        symbols, scales = [], []

        def choose_latent(layer, mean, scale, posterior):
            residual = torch.round(posterior - mean)
            symbols.append(residual.to(torch.int32))
            scales.append(scale)
            return residual + mean

        features = self.encode_features(x, cond)
        grid = self._grid(*x.shape[-2:])
        x_hat = self._top_down(cond, grid, choose_latent, features, reconstruct)
        return {"symbols": symbols, "scales": scales, "x_hat": x_hat}

    @torch.inference_mode()
    def decompress(self, grid, lmbda, betas, read_symbols: SymbolReader) -> dict:
        """Rebuild the image from symbols that `read_symbols` supplies layer by layer.

        Args:
            grid: (rows, cols) of the top level, i.e. padded size / top_stride.
            read_symbols: called with (layer, prior scales) for every layer, top
                first; returns the int symbols (same shape as the scales), or None
                to use the prior mean instead (progressive decoding).
        """
        cond = self.condition(lmbda, betas)

        def choose_latent(layer, mean, scale, posterior):
            symbols = read_symbols(layer, scale)
            return mean if symbols is None else symbols.to(mean.dtype) + mean

        return {"x_hat": self._top_down(cond, tuple(grid), choose_latent)}


def build_model(name_or_config: str | HVAEConfig) -> HierarchicalVAE:
    """Build an untrained model from a preset name or a config."""
    return HierarchicalVAE(get_config(name_or_config))
