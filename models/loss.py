"""The rate-distortion loss with one rate penalty per latent layer."""

from __future__ import annotations

import math

import torch
from torch import nn


def per_layer_bits(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """Information content of each image's latents, per layer: (B, L) in bits."""
    return torch.stack(
        [-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values()], dim=1
    )


class RateDistortionLoss(nn.Module):
    """loss = lmbda * 255^2 * MSE + sum_l beta_l * bpp_l, averaged over the batch.

    MSE is measured on [0, 1] pixels, so lmbda * 255^2 * MSE is lmbda times the
    MSE on 8-bit pixel values; bpp_l is layer l's bits per image pixel.
    """

    def forward(
        self, output: dict, x: torch.Tensor, lmbda: torch.Tensor, betas: torch.Tensor
    ) -> dict:
        """Returns {"loss", "bpp", "per_layer_bpp" (L,), "mse"}, batch averages.

        Args:
            output: the model's forward output (``x_hat``, ``likelihoods``).
            x: the input images (B, 3, H, W) in [0, 1].
            lmbda: (B,) distortion weights; betas: (B, L) per-layer rate weights.
        """
        num_pixels = x.shape[-2] * x.shape[-1]
        bpp = per_layer_bits(output["likelihoods"]) / num_pixels  # (B, L), bits/pixel
        mse = (output["x_hat"].float() - x.float()).square().flatten(1).mean(1)  # (B,)
        loss = lmbda * 255**2 * mse + (betas * bpp).sum(1)  # (B,)
        return {
            "loss": loss.mean(),
            "bpp": bpp.sum(1).mean(),
            "per_layer_bpp": bpp.mean(0),
            "mse": mse.mean(),
        }


def psnr(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error measured on pixels in [0, peak]."""
    return 10 * math.log10(peak**2 / mse) if mse > 0 else float("inf")
