"""Would a checkerboard context pay? The bits it could save at the shipped latents.

    python -m benchmarks.context_study [--images N] [--crop PX]
    # writes benchmarks/context_study.{json,md}

A two-pass (checkerboard) context codes half of each latent layer's positions
first and predicts the prior of the other half from them. Before building one
into the format (a second pass per layer in every decoder), this measures what
it could buy: training photos (never Kodak) are encoded by the shipped model at
three qualities, and per layer a small network, fitted on two thirds of the
photos, predicts at the second-pass positions a mean and a scale correction
from the first-pass symbols around them and the prior's own scales. Its saving
on the held-out third is what a context fitted to these latents buys; training
the model with one could move the latents toward it, which this does not see.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
TRAIN = HERE.parent.parent / "shared" / "datasets" / "train"
TRAIN_DIRS = [TRAIN / f"0{i}" for i in range(5)]
QUALITIES = (25, 55, 85)
FIT_STEPS = 400


def encoded_layers(coder, pixels, quality: int) -> list:
    """(layer, symbols, prior scales) of every layer of one encode."""
    from hvae_compress import models

    kept = []

    def keep(layer, symbols, indexes, prior_scales):
        kept.append((layer, symbols.float(), prior_scales().float()))

    rate = torch.tensor([coder.rate_codes(quality)])
    with models.exact_mode(coder.device, float_bf16=False):
        coder.model.compress(pixels.clone(), rate, keep)
    # Clones outside inference mode, so that gradients can flow through them.
    return [(layer, symbols.clone(), scales.clone()) for layer, symbols, scales in kept]


def layer_maps(paths, crop: int, qualities) -> dict:
    """Per layer, (photo index, quality, symbols, prior scales) of every
    centre crop, as the shipped model encodes them."""
    from PIL import Image

    from hvae_compress import codec

    coder = codec.Codec(None, "cpu", precision="fp32")
    maps = {}
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
        w, h = image.size
        if min(w, h) < crop:
            continue
        left, top = (w - crop) // 2, (h - crop) // 2
        pixels = np.asarray(image.crop((left, top, left + crop, top + crop)))
        pixels = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]
        for quality in qualities:
            for layer, symbols, scales in encoded_layers(coder, pixels, quality):
                item = (index, quality, symbols, scales)
                maps.setdefault(layer, []).append(item)
    return maps


def held_out(photo_index: int) -> bool:
    """Every third photo measures the context; the others fit it."""
    return photo_index % 3 == 0


def first_pass(height: int, width: int) -> torch.Tensor:
    """1 where the checkerboard's first pass codes, (1, 1, h, w)."""
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None]
    return ((rows + cols) % 2 == 0).float()[None, None]


class CheckerboardContext(nn.Module):
    """First-pass symbols around a position, and its prior scales -> the
    position's (scale, mean); starts as the prior (scale unchanged, mean 0)."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(3 * channels, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 2 * channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, symbols, scales, first):
        seen = symbols * first
        x = torch.cat([seen, seen.abs(), scales.log()], 1)
        log_gain, mean = self.out(F.relu(self.conv(x))).chunk(2, 1)
        return scales * log_gain.exp(), mean


def layer_bits(context, symbols, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's bits under its prior, and with the context's second pass."""
    from hvae_compress.models import latent_likelihood

    first = first_pass(*symbols.shape[-2:])
    plain = -torch.log2(latent_likelihood(symbols, torch.zeros_like(scales), scales))
    context_scales, context_means = context(symbols, scales, first)
    second = -torch.log2(latent_likelihood(symbols, context_means, context_scales))
    with_context = torch.where(first.bool(), plain, second)
    return plain.sum(), with_context.sum()


def fit(items, channels: int, seed: int) -> CheckerboardContext:
    """Adam on the bits of the fitting photos' second-pass positions."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    context = CheckerboardContext(channels)
    optimizer = torch.optim.Adam(context.parameters(), lr=1e-3)
    for _ in range(FIT_STEPS):
        batch = rng.sample(items, min(24, len(items)))
        bits = sum(
            layer_bits(context, symbols, scales)[1] for *_, symbols, scales in batch
        )
        optimizer.zero_grad()
        bits.backward()
        optimizer.step()
    return context


def measure(images: int, crop: int, seed: int = 0) -> dict:
    from hvae_compress.files import list_images

    from .run import machine

    paths = list_images([str(d) for d in TRAIN_DIRS])
    random.Random(seed).shuffle(paths)
    maps = layer_maps(paths[:images], crop, QUALITIES)
    layers, totals = {}, {q: [0.0, 0.0] for q in QUALITIES}
    for layer, items in sorted(maps.items()):
        measuring = [item for item in items if held_out(item[0])]
        fitting = [item for item in items if not held_out(item[0])]
        context = fit(fitting, items[0][2].shape[1], seed)
        layers[str(layer)] = {}
        with torch.no_grad():
            for quality in QUALITIES:
                plain = with_context = 0.0
                for _, q, symbols, scales in measuring:
                    if q == quality:
                        bits = layer_bits(context, symbols, scales)
                        plain += bits[0].item()
                        with_context += bits[1].item()
                totals[quality][0] += plain
                totals[quality][1] += with_context
                layers[str(layer)][str(quality)] = {
                    "bits": plain,
                    "saved_percent": 100 * (plain - with_context) / plain,
                }
    return {
        "photos": len({item[0] for item in maps[0]}),
        "held_out": len({item[0] for item in maps[0] if held_out(item[0])}),
        "crop": crop,
        "machine": machine(),
        "layers": layers,
        "all_layers_saved_percent": {
            str(q): 100 * (plain - ctx) / plain for q, (plain, ctx) in totals.items()
        },
    }


def markdown(results: dict) -> str:
    header = " | ".join(f"q{q}" for q in QUALITIES)
    lines = [
        "# Checkerboard context: bits it saves at the shipped model's latents",
        "",
        "Written by `python -m benchmarks.context_study` on "
        f"{results['machine']['date']}: centre crops of {results['crop']} px from "
        f"{results['photos']} training photos, a context fitted per layer on two "
        "thirds, measured on the other "
        f"{results['held_out']}. Share of each layer's bits (under the prior's "
        "continuous scales) that the context saves; negative: it costs.",
        "",
        f"| layer (top first) | {header} |",
        "| --- |" + " ---: |" * len(QUALITIES),
    ]
    for layer, by_quality in results["layers"].items():
        cells = " | ".join(
            f"{by_quality[str(q)]['saved_percent']:+.2f} %" for q in QUALITIES
        )
        lines.append(f"| {layer} | {cells} |")
    totals = results["all_layers_saved_percent"]
    cells = " | ".join(f"{totals[str(q)]:+.2f} %" for q in QUALITIES)
    lines.append(f"| all layers | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from .run import write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        default=640,
        help="training photos drawn (those smaller than the crop are skipped)",
    )
    parser.add_argument("--crop", type=int, default=384, help="centre crop (px)")
    parser.add_argument(
        "--out", default=str(HERE / "context_study.json"), help="results JSON"
    )
    args = parser.parse_args()
    write_results(measure(args.images, args.crop), args.out, markdown)


if __name__ == "__main__":
    main()
