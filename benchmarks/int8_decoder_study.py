"""Could the float decoder run in int8 without retraining? Its PSNR cost, measured.

    python -m benchmarks.int8_decoder_study [--images N] [--qualities 25,55,85,100]
    # writes benchmarks/int8_decoder_study.{json,md}

Decoding spends much of its time in the float network's convolutions (the
decoder's residual blocks at strides 4 and 8), and an int8 convolution with
exact int32 sums runs several times faster than a float32 one on CPUs with
VNNI or AMX. Only the pixels depend on that network: the
symbols are read with the exact scale network, which this leaves alone. So the
question is what 8-bit weights and activations cost in PSNR if the trained
model is quantised as it is (post-training quantisation), the cheapest way
there. This decodes training photos (never Kodak) in float32 with every
convolution of the float decoder simulated in int8 (rounded to the int8 grid,
computed in float), three ways:

- weights only: each output channel's weights on its own grid of 255 levels;
- and activations per tensor: each convolution's input on one grid of 256
  levels spanning its range in this image (a zero point, as uint8 kernels
  take), the most a static calibration could do per tensor;
- and activations per channel: one such grid per input channel (which an int8
  kernel can take by folding the channel scales into the weights).

Each against the float32 decode of the same file, mean PSNR over the photos,
beside decoding it in bfloat16 (``--precision bf16``) for scale.
"""

from __future__ import annotations

import argparse
import contextlib
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules import conv as torch_conv

from .run import machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
BF16 = "bfloat16 decode"
WAYS = {
    "weights int8": None,
    "+ activations per tensor": (0, 1, 2, 3),
    "+ activations per channel": (0, 2, 3),
}


def int8_weights(weight: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Each output channel's weights rounded to 255 levels symmetric about 0."""
    dims = [d for d in range(weight.ndim) if d != out_dim]
    step = weight.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / 127
    return torch.round(weight / step) * step


def uint8_activations(x: torch.Tensor, dims) -> torch.Tensor:
    """x rounded to 256 levels spanning its range (and 0) over ``dims``."""
    x32 = x.float()
    low = x32.amin(dim=dims, keepdim=True).clamp_max(0)
    high = x32.amax(dim=dims, keepdim=True).clamp_min(0)
    step = ((high - low) / 255).clamp_min(1e-12)
    zero = torch.round(-low / step)
    levels = (torch.round(x32 / step) + zero).clamp(0, 255)
    return ((levels - zero) * step).to(x.dtype)


@contextlib.contextmanager
def float_decoder_in_int8(activation_dims):
    """Simulate int8 in every convolution of the float network; the exact
    network's call torch.nn.functional itself and stay as they are."""
    from hvae_compress.models import layers

    def inputs(x):
        return x if activation_dims is None else uint8_activations(x, activation_dims)

    def conv2d(x, weight, *args, **kwargs):
        return F.conv2d(inputs(x), int8_weights(weight, 0), *args, **kwargs)

    def conv_transpose2d(x, weight, *args, **kwargs):
        return F.conv_transpose2d(inputs(x), int8_weights(weight, 1), *args, **kwargs)

    class Functional(types.ModuleType):  # torch.nn.functional, two functions swapped
        def __getattr__(self, name):
            return getattr(F, name)

    functional = Functional("int8_functional")
    functional.conv2d, functional.conv_transpose2d = conv2d, conv_transpose2d
    with mock.patch.object(layers, "F", functional):
        with mock.patch.object(torch_conv, "F", functional):
            yield


def study(count: int, qualities: list[float]) -> dict:
    from PIL import Image

    from hvae_compress import codec
    from hvae_compress.evaluation.metrics import psnr

    coder = codec.Codec(None, "cpu", precision="fp32")
    bf16_decoder = codec.Codec(None, "cpu", precision="bf16")
    paths = study_photos(count)
    columns = ("float32", BF16, *WAYS)
    table = {q: {way: [] for way in columns} for q in qualities}
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for quality in qualities:
            data = coder.encode(rgb, quality=quality)
            row = table[quality]
            row["float32"].append(psnr(rgb, np.asarray(coder.decode(data))))
            row[BF16].append(psnr(rgb, np.asarray(bf16_decoder.decode(data))))
            for way, dims in WAYS.items():
                with float_decoder_in_int8(dims):
                    row[way].append(psnr(rgb, np.asarray(coder.decode(data))))
    return {
        "machine": machine(),
        "model": coder.fingerprint.hex()[:16],
        "photos": [p.name for p in paths],
        "mean_psnr": {
            str(q): {k: round(float(np.mean(v)), 3) for k, v in row.items()}
            for q, row in table.items()
        },
    }


def markdown(results: dict) -> str:
    lines = [
        "# The float decoder in int8 without retraining",
        "",
        f"`python -m benchmarks.int8_decoder_study`, {results['machine']['date']}: "
        f"the shipped model ({results['model']}) on {len(results['photos'])} photos "
        "of train/04, mean PSNR (dB) of the float32 decode, and the change when "
        "the float decoder's convolutions are simulated in int8.",
        "",
        "| quality | float32 | " + " | ".join((BF16, *WAYS)) + " |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in WAYS) + " |",
    ]
    for quality, row in results["mean_psnr"].items():
        base = row["float32"]
        cells = " | ".join(f"{row[way] - base:+.3f}" for way in (BF16, *WAYS))
        lines.append(f"| {float(quality):g} | {base:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="photos (default 24)")
    parser.add_argument(
        "--qualities",
        default="25,55,85,100",
        help="comma-separated (default 25,55,85,100)",
    )
    args = parser.parse_args(argv)
    qualities = [float(q) for q in args.qualities.split(",")]
    results = study(args.images, qualities)
    write_results(results, HERE / "int8_decoder_study.json", markdown)


if __name__ == "__main__":
    main()
