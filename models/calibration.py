"""Quality calibration: quality steps that change the file size evenly.

A model's file size grows with its lambda code, but not at an even pace: it
flattens where the model saturates, so that log-linear qualities crowd
together at the top. Calibration measures the mean log bits per pixel of a set
of images at probe codes and gives each quality 0, 1, ..., 100 the code whose
log size lies that far between those of the lowest and the highest code:
every quality step then multiplies the size by about the same factor, as
cwebp's and avifenc's steps do. The lowest qualities reach below the lowest
lambda by raising every layer's beta alike (`config.split_quality_code`).
Calibrate on training photos, never on the benchmark.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..files import read_rgb
from .config import BETA_CODES_PER_OCTAVE, HVAEConfig, split_quality_code
from .data import to_tensor
from .hvae import HierarchicalVAE
from .loss import per_layer_bits

PROBES = 33  # lambda codes measured, evenly spaced over the model's range
CROPS = 16  # images measured at each probe
CROP = 256  # their central crops' side, in pixels
# Quality 0 is lambda code 0 with every beta doubled: on training photos that
# makes the file ~30 % smaller, on the extension of the quality curve.
LOWEST_CODE = -BETA_CODES_PER_OCTAVE
BELOW_PROBES = 4  # codes probed from LOWEST_CODE up to (not including) 0


def even_quality_codes(probe_codes, log_sizes) -> tuple[int, ...]:
    """101 codes, one per quality, at even steps of log size between the ends.

    ``log_sizes`` is the mean log bpp at each of the rising ``probe_codes``;
    the sizes are made non-decreasing first (a noisy dip would make the
    mapping fold back), and codes in between are interpolated.
    """
    codes = np.asarray(probe_codes, dtype=np.float64)
    sizes = np.maximum.accumulate(np.asarray(log_sizes, dtype=np.float64))
    # np.interp needs strictly rising sample points: break ties in code order.
    sizes = sizes + np.arange(len(sizes)) * 1e-12
    targets = np.linspace(sizes[0], sizes[-1], 101)
    found = np.round(np.interp(targets, sizes, codes)).astype(np.int64)
    found[0], found[-1] = codes[0], codes[-1]
    return tuple(int(c) for c in np.maximum.accumulate(found))


@torch.inference_mode()
def mean_log_bpp(
    model: HierarchicalVAE, crops: torch.Tensor, codes: list[int]
) -> list[float]:
    """Mean over ``crops`` (N, 3, H, W floats in [0, 1], H and W multiples of
    the top stride) of the log of the bits per pixel that the model's
    likelihoods estimate, at each quality code (`split_quality_code`)."""
    model.eval()
    pixels = crops.shape[-2] * crops.shape[-1]
    results = []
    for code in codes:
        rate = torch.zeros(len(crops), 1 + model.num_layers, dtype=torch.int64)
        rate[:, 0], rate[:, 1:] = split_quality_code(code)
        out = model(crops, rate)
        bits = per_layer_bits(out["likelihoods"]).sum(1)
        results.append(torch.log(bits / pixels).mean().item())
    return results


def calibration_crops(paths: list, stride: int, count: int = CROPS) -> torch.Tensor:
    """Central crops of ``count`` images spread evenly over ``paths``, as one
    (N, 3, S, S) batch: S is CROP, or less for small images, a multiple of
    ``stride``."""
    chosen = [paths[i * len(paths) // count] for i in range(min(count, len(paths)))]
    images = [read_rgb(path) for path in chosen]
    side = min(CROP, *(min(image.size) for image in images)) // stride * stride
    if side == 0:
        raise ValueError(f"calibration images must be at least {stride} pixels")
    crops = []
    for image in images:
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crops.append(to_tensor(image.crop((left, top, left + side, top + side))))
    return torch.stack(crops)


def calibrated(model: HierarchicalVAE, crops: torch.Tensor) -> HVAEConfig:
    """The model's config with quality codes calibrated on ``crops``."""
    top = model.config.lmbda_top_code
    below = list(range(LOWEST_CODE, 0, -LOWEST_CODE // BELOW_PROBES))
    codes = below + [round(i * top / (PROBES - 1)) for i in range(PROBES)]
    quality_codes = even_quality_codes(codes, mean_log_bpp(model, crops, codes))
    return dataclasses.replace(model.config, quality_codes=quality_codes)
