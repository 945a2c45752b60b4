"""Render the bundled sample image (sample.png): a procedural landscape.

The datasets the project uses may not be copied into the repository, so the
quickstart image is drawn from fractal noise instead. Run from the repository
root: ``python codec/data/make_sample.py``; the output is deterministic.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

WIDTH, HEIGHT = 768, 512


def fractal_noise(rng, height, width, octaves=7, persistence=0.55):
    """Sum of bilinearly upsampled random grids: 1/f-like natural texture in [0, 1]."""
    total = np.zeros((height, width))
    amplitude, cells = 1.0, 3
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1))
        layer = Image.fromarray(grid.astype(np.float32), mode="F")
        total += amplitude * np.asarray(
            layer.resize((width, height), Image.Resampling.BICUBIC)
        )
        amplitude *= persistence
        cells *= 2
    return (total - total.min()) / (total.max() - total.min())


def render(seed=2026):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / HEIGHT
    sky = np.stack([0.45 + 0.35 * y, 0.65 + 0.25 * y, 0.95 - 0.05 * y], axis=-1)
    clouds = np.clip(fractal_noise(rng, HEIGHT, WIDTH) * 1.6 - 0.7, 0, 1)[..., None]
    image = sky * (1 - clouds * 0.8) + clouds * 0.8 * np.array([1.0, 0.98, 0.95])
    sun = np.exp(-(((x - 1.1) ** 2 + (y - 0.22) ** 2) / 0.004))[..., None]
    image = image + sun * np.array([1.0, 0.9, 0.6])
    ridge = fractal_noise(rng, 1, WIDTH, octaves=9)[0]
    for depth, color in [(0.42, (0.42, 0.48, 0.62)), (0.55, (0.25, 0.36, 0.30))]:
        heights = (
            depth
            + 0.18 * (ridge - 0.5)
            + 0.08 * (fractal_noise(rng, 1, WIDTH)[0] - 0.5)
        )
        rock = fractal_noise(rng, HEIGHT, WIDTH)[..., None]
        mask = (y > heights[None, :])[..., None]
        shade = np.array(color) * (0.7 + 0.6 * rock)
        image = np.where(mask, shade, image)
    meadow = y > 0.72
    grass = fractal_noise(rng, HEIGHT, WIDTH, octaves=8)[..., None]
    field = np.array([0.30, 0.50, 0.18]) * (0.6 + 0.8 * grass) + 0.1 * (
        y[..., None] - 0.72
    )
    image = np.where(meadow[..., None], field, image)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels, "RGB").filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    render().save(Path(__file__).with_name("sample.png"), optimize=True)
