"""Training data: random crops of natural images after a random downscale."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import read_rgb


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    pixels = torch.from_numpy(np.asarray(image).copy())
    return pixels.permute(2, 0, 1).float().div_(255)


def split_holdout(paths: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(training images, ``count`` held-out images) from a list of image files.

    The held-out images are those whose file names hash lowest: the same choice
    on every machine and from any folder layout, and adding images to the
    data moves an image into the held-out set only if it hashes lower.
    """
    if not 0 <= count < len(paths):
        raise ValueError(f"cannot hold out {count} of {len(paths)} training images")

    def rank(path: Path) -> bytes:
        return hashlib.sha256(path.name.encode()).digest()

    held = set(sorted(paths, key=rank)[:count])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


class RandomCrops(torch.utils.data.Dataset):
    """One random crop per image and visit, as float tensors (3, size, size) in [0, 1].

    Each crop is downscaled first by a random factor in [min_scale, 1]: most
    sources are JPEGs, and shrinking washes out their compression artefacts
    (with ``min_scale`` 1 the crops are the photos' own pixels).
    Images are decoded once and kept in memory (the training shards are small).
    """

    def __init__(self, paths: list[Path], size: int, min_scale: float):
        self.size = size
        self.min_scale = min_scale
        self.images = [read_rgb(p) for p in paths]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        # torch's generator: seeded by the training loop (and per data-loader worker).
        u_scale, u_left, u_top, u_flip = torch.rand(4).tolist()
        # The smallest scale that still leaves a full crop inside the image.
        fit = self.size / min(image.size)
        low, high = max(self.min_scale, fit), max(1.0, fit)
        scale = low + u_scale * (high - low)
        region = min(round(self.size / scale), *image.size)
        left = int(u_left * (image.width - region + 1))
        top = int(u_top * (image.height - region + 1))
        box = (left, top, left + region, top + region)
        crop = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)
        if u_flip < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(crop)
