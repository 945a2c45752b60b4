"""Image quality metrics on 8-bit RGB, computed the way the field reports them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..models.loss import psnr as psnr_of_mse


def as_rgb_array(image) -> np.ndarray:
    """A PIL image or uint8 array -> (H, W, 3) uint8 (gray is replicated)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    return image


def psnr(reference, decoded) -> float:
    """PSNR in dB over the RGB planes of two 8-bit images of the same size."""
    a, b = as_rgb_array(reference), as_rgb_array(decoded)
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return psnr_of_mse(float(mse), peak=255)


def ms_ssim(reference, decoded) -> float:
    """MS-SSIM on RGB (pytorch_msssim, data range 255), as CompressAI reports it.

    Images smaller than 161 pixels on a side have too few scales; NaN then.
    """
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = as_rgb_array(reference), as_rgb_array(decoded)
    if min(a.shape[:2]) < 161:
        return float("nan")
    to_tensor = lambda x: torch.from_numpy(x.copy()).permute(2, 0, 1)[None].double()  # noqa: E731
    return float(_ms_ssim(to_tensor(a), to_tensor(b), data_range=255))


def edge_error_ratio(reference, decoded, period: int = 64, window: int = 7) -> float:
    """How much worse than its neighbours the worst candidate tile edge is.

    For every column boundary x (between x-1 and x) the gradient error is the
    mean of |(decoded[x] - decoded[x-1]) - (reference[x] - reference[x-1])|
    over rows and channels; likewise for row boundaries. At every boundary that
    is a multiple of ``period`` it is divided by its mean over the ``window``
    boundaries on either side. Returns the largest such ratio: about 1 where
    tiles cannot be seen, well above 1 at a visible seam.
    """
    a = as_rgb_array(reference).astype(np.float64)
    b = as_rgb_array(decoded).astype(np.float64)
    ratios = []
    for axis in (0, 1):
        error = np.abs(np.diff(b, axis=axis) - np.diff(a, axis=axis))
        # Boundary x sits between x-1 and x: its error is error[x-1] on this axis.
        per_boundary = error.mean(axis=(1 - axis, 2))
        for edge in range(period, a.shape[axis] - window, period):
            at = edge - 1
            around = np.r_[
                per_boundary[at - window : at], per_boundary[at + 1 : at + 1 + window]
            ]
            ratios.append(per_boundary[at] / max(around.mean(), 1e-12))
    return float(max(ratios, default=0.0))
