"""What bounds the top of the rate range? Rounding, or what the latents can hold.

    python -m benchmarks.top_rate_study [--images N] [--qualities 85,100]
    # writes benchmarks/top_rate_study.{json,md}

The shipped model's best quality ends near 35 dB on Kodak. If rounding the
latents to integers were what held it there, decoding the posterior means
unrounded would recover much of the gap to the 40 dB the campaign aims at; if
it recovers little, the latent layers and the decoder themselves are the limit,
and only capacity (more or finer latents) moves the top. This decodes training
photos (never Kodak) three ways with the shipped model in float32: as the codec
does (every layer rounded), with the two finest layers unrounded, and with
every layer unrounded, and reports mean PSNR and the file's bpp.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .run import machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
WAYS = ("rounded (the codec)", "two finest layers unrounded", "all layers unrounded")


def decoded(coder, pixels: torch.Tensor, quality: float, starts) -> list:
    """The images decoded from one encoder pass's posterior means, one per
    entry of ``starts``: rounded above that layer, left as they are from it on."""
    model = coder.model
    rate = torch.tensor([coder.rate_codes(quality)])
    images = []
    with torch.inference_mode():
        features = [
            None if f is None else f.float()
            for f in model.encode_features(pixels, rate)
        ]
        grid = model._grid(*pixels.shape[-2:])
        for start in starts:

            def choose_latent(layer, mean, logits, posterior, start=start):
                symbols = torch.round(posterior - mean)
                z = posterior if layer >= start else symbols + mean
                return z, symbols

            # The top-down pass with the latents chosen here instead of by the
            # coder; it lets go of each level's features, so it gets a copy.
            images.append(
                model._top_down(rate, grid, choose_latent, list(features), "pixels")
            )
    return images


def study(count: int, qualities: list[float]) -> dict:
    from PIL import Image

    from hvae_compress import codec, models
    from hvae_compress.evaluation.metrics import psnr

    coder = codec.Codec(None, "cpu", precision="fp32")
    layers = coder.config.num_latent_layers
    starts = dict(zip(WAYS, (layers, layers - 2, 0), strict=True))
    paths = study_photos(count)
    table = {q: {way: [] for way in (*WAYS, "bpp")} for q in qualities}
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
        pixels = models.pad_to_stride(pixels, coder.config.top_stride)
        height, width = rgb.shape[:2]
        for quality in qualities:
            size = len(coder.encode(rgb, quality=quality))
            table[quality]["bpp"].append(8 * size / (height * width))
            images = decoded(coder, pixels, quality, starts.values())
            for way, image in zip(starts, images, strict=True):
                out = image[0, :, :height, :width].permute(1, 2, 0).numpy()
                table[quality][way].append(psnr(rgb, out))
    return {
        "machine": machine(),
        "model": coder.fingerprint.hex()[:16],
        "photos": [p.name for p in paths],
        "mean": {
            str(q): {k: round(float(np.mean(v)), 3) for k, v in row.items()}
            for q, row in table.items()
        },
    }


def markdown(results: dict) -> str:
    lines = [
        "# What bounds the top of the rate range",
        "",
        f"`python -m benchmarks.top_rate_study`, {results['machine']['date']}: the "
        f"shipped model ({results['model']}) in float32 on "
        f"{len(results['photos'])} photos of train/04, mean PSNR (dB) of three "
        "decodes of the same encoder pass.",
        "",
        "| quality | bpp | " + " | ".join(WAYS) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in WAYS) + " |",
    ]
    for quality, row in results["mean"].items():
        cells = " | ".join(f"{row[way]:.2f}" for way in WAYS)
        lines.append(f"| {float(quality):g} | {row['bpp']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="photos (default 24)")
    parser.add_argument(
        "--qualities", default="85,100", help="comma-separated (default 85,100)"
    )
    args = parser.parse_args(argv)
    qualities = [float(q) for q in args.qualities.split(",")]
    write_results(study(args.images, qualities), HERE / "top_rate_study.json", markdown)


if __name__ == "__main__":
    main()
