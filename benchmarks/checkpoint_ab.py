"""A/B of training checkpoints on training photos: BD-rate against the first.

    python -m benchmarks.checkpoint_ab START.pt ARM_A.pt ARM_B.pt [--images 24]
    # writes benchmarks/checkpoint_ab.{json,md} (--out elsewhere)

The campaign chooses between training changes by short runs from one
checkpoint on equal CPU budgets; Kodak is the benchmark and never decides.
This measures each checkpoint's EMA weights on photos of train/04, center
crops whose sides are multiples of the top stride, in float32 as the codec
decodes (every latent rounded): the rate is the information content of the
symbols under the model's prior (the bitstream's length up to the coding
tables' precision), the PSNR that of the 8-bit pixels. One curve per
checkpoint over the same λ codes (checkpoints carry no quality calibration),
each one's BD-rate against the first, and at each code its rate against the
first's curve at the same PSNR (which end of the range a change helps). The
photos were trained on, but among 1,511 photos seen as random crops that
favours no arm.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from .run import machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
# Spread over the λ range: qualities 1, 10, 40, 70 and 100 of the ninth release.
CODES = (28, 295, 1100, 2120, 4096)


def photos(count: int, stride: int) -> list[torch.Tensor]:
    """Every k-th photo of train/04 as floats (1, 3, H, W), center-cropped to
    multiples of ``stride``."""
    from PIL import Image

    chosen = []
    for path in study_photos(count):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        rows, cols = rgb.shape[:2]
        height, width = rows // stride * stride, cols // stride * stride
        top, left = (rows - height) // 2, (cols - width) // 2
        crop = rgb[top : top + height, left : left + width]
        chosen.append(torch.from_numpy(crop.copy()).permute(2, 0, 1)[None] / 255)
    return chosen


def rd_point(model, images: list[torch.Tensor], code: int) -> tuple[float, float]:
    """Mean bpp and PSNR (dB) of the images coded at one λ code, all β at 1."""
    from hvae_compress.models.loss import per_layer_bits, psnr

    rate = torch.tensor([[code] + [0] * model.num_layers])
    bpp, quality = [], []
    with torch.inference_mode():
        for x in images:
            out = model(x, rate)
            bits = per_layer_bits(out["likelihoods"]).sum().item()
            error = out["x_hat"].clamp(0, 1).mul(255).round() - x.mul(255).round()
            bpp.append(bits / (x.shape[-2] * x.shape[-1]))
            quality.append(psnr(error.square().mean().item(), peak=255))
    return float(np.mean(bpp)), float(np.mean(quality))


def labels(paths: list[str]) -> list[str]:
    """Short distinct names: file names, or with as many parent folders as it
    takes to tell them apart (two runs' ``checkpoint.pt``: ``A/checkpoint.pt``)."""
    parts = [Path(path).parts for path in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise ValueError("the same checkpoint is given twice")


def compare(curves: dict) -> None:
    """Add to each curve its BD-rate against the first curve and, at each of its
    points, its rate against the first curve at the same PSNR (None where that
    curve does not reach)."""
    from hvae_compress.evaluation.curves import bd_rate, rate_gaps

    first = next(iter(curves.values()))
    for curve in curves.values():
        curve["bd_rate_vs_first"] = round(
            bd_rate(curve["bpp"], curve["psnr"], first["bpp"], first["psnr"]), 3
        )
        gaps = rate_gaps(curve, first)
        # + 0.0: the first curve's own gaps read 0.00, not -0.00.
        curve["rate_gap_vs_first"] = [
            None if math.isnan(g) else round(g, 2) + 0.0 for g in gaps
        ]


def study(checkpoints: list[str], count: int, codes: list[int]) -> dict:
    from hvae_compress import codec

    images, curves = None, {}
    for path, label in zip(checkpoints, labels(checkpoints), strict=True):
        model = codec.Codec(path, "cpu", precision="fp32").model.float().eval()
        images = images or photos(count, model.config.top_stride)
        points = [rd_point(model, images, code) for code in codes]
        curves[label] = {
            "bpp": [round(b, 5) for b, _ in points],
            "psnr": [round(p, 4) for _, p in points],
        }
    compare(curves)
    return {
        "machine": machine(),
        "photos": count,
        "lambda_codes": list(codes),
        "checkpoints": curves,
    }


def markdown(results: dict) -> str:
    codes, curves = results["lambda_codes"], results["checkpoints"]
    points = {
        name: [
            f"{b:.4f} / {p:.2f}"
            for b, p in zip(curve["bpp"], curve["psnr"], strict=True)
        ]
        + [f"{curve['bd_rate_vs_first']:+.2f} %"]
        for name, curve in curves.items()
    }
    gaps = {
        name: ["-" if g is None else f"{g:+.2f} %" for g in curve["rate_gap_vs_first"]]
        for name, curve in curves.items()
    }
    columns = [f"λ code {c}" for c in codes]
    lines = [
        "# Checkpoint A/B on training photos",
        "",
        f"`python -m benchmarks.checkpoint_ab {' '.join(curves)}`"
        f", {results['machine']['date']}: "
        f"{results['photos']} photos of train/04, float32, every latent rounded; "
        "bpp from the prior's information content, PSNR of the 8-bit pixels; "
        "BD-rate against the first checkpoint (negative: fewer bits).",
        "",
        *_table([*columns, "BD-rate"], points),
        "",
        "Rate against the first checkpoint's curve at the same PSNR, per λ code "
        "(negative: fewer bits; - where that curve does not reach):",
        "",
        *_table(columns, gaps),
    ]
    return "\n".join(lines) + "\n"


def _table(columns: list[str], rows: dict[str, list[str]]) -> list[str]:
    """Markdown table lines: a checkpoint column, then right-aligned cells."""
    lines = [
        "| checkpoint | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    return lines + [
        f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="the first is the reference")
    parser.add_argument("--images", type=int, default=24, help="photos (default 24)")
    parser.add_argument(
        "--codes",
        default=",".join(map(str, CODES)),
        help="comma-separated λ codes (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=str(HERE / "checkpoint_ab.json"),
        help="results JSON; the Markdown goes beside it (default %(default)s)",
    )
    args = parser.parse_args(argv)
    codes = [int(c) for c in args.codes.split(",")]
    write_results(study(args.checkpoints, args.images, codes), args.out, markdown)


if __name__ == "__main__":
    main()
