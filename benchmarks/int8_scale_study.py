"""Could the exact scale network convolve in int8? Exactness and speed per CPU kernel.

    python -m benchmarks.int8_scale_study [--images N]
    # writes benchmarks/int8_scale_study.{json,md}

The exact scale network (`models.scales`) sums integers in float32
convolutions, about a fifth to a third of coding time. An int8 convolution
(uint8 activations times int8 weights, summed in int32) computes the same
integers, exactly, as long as the kernel never saturates; oneDNN's kernels for
CPUs without VNNI multiply byte pairs with ``vpmaddubsw``, whose int16 pair
sums saturate above 32767, and 255 x 127 x 2 is above it. So, for the shape of
the shipped network's widest exact convolution (64 channels, 3x3, the
stride-8 map of a 1536x1024 image), in a fresh process per oneDNN ISA cap
(``DNNL_MAX_CPU_ISA``):

- whether ``torch.ops.onednn.qconv2d_pointwise`` (float32 output, unit scales)
  equals the float32 convolution, with activations up to 255 (today's
  ACTIVATION grid) and up to 127 (a 7-bit grid);
- the time of the float32, int8 and bfloat16 convolutions (best of 20).

And what a 7-bit grid would clip: the share of the shipped model's
ACTIVATION-grid inputs above 127 units, by quality, on training photos.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .run import fastest_seconds, machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
ISA_CAPS = ("native", "AVX512_CORE", "AVX2", "SSE41")
CHANNELS, ROWS, COLS = 64, 128, 192
QUALITIES = (10, 50, 90)


def fastest_ms(function, runs: int = 20) -> float:
    return 1e3 * fastest_seconds(function, runs)


def kernel_case(activation_max: int) -> dict:
    """One int8 convolution against float32 and bfloat16, in this process."""
    generator = torch.Generator().manual_seed(0)
    shape = (1, CHANNELS, ROWS, COLS)
    x = torch.randint(0, activation_max + 1, shape, generator=generator).float()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randint(-127, 128, (CHANNELS, CHANNELS, 3, 3), generator=generator)
    weight = weight.float()
    bias = torch.randint(-1000, 1001, (CHANNELS,), generator=generator).float()
    exact = F.conv2d(x, weight, bias, padding=1)
    units = torch.ones(CHANNELS)
    packed = torch.ops.onednn.qconv_prepack(
        weight.to(torch.int8).contiguous(memory_format=torch.channels_last),
        units,
        1.0,
        0,
        [1, 1],
        [1, 1],
        [1, 1],
        1,
        list(shape),
    )
    x_uint8 = x.to(torch.uint8)

    def int8():
        return torch.ops.onednn.qconv2d_pointwise(
            x_uint8,
            1.0,
            0,
            packed,
            units,
            torch.zeros(CHANNELS, dtype=torch.long),
            bias,
            [1, 1],
            [1, 1],
            [1, 1],
            1,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )

    x_bf16, weight_bf16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
    return {
        "exact": torch.equal(int8(), exact),
        "max_abs_error": (int8() - exact).abs().max().item(),
        "float32_ms": fastest_ms(lambda: F.conv2d(x, weight, bias, padding=1)),
        "int8_ms": fastest_ms(int8),
        "bfloat16_ms": fastest_ms(lambda: F.conv2d(x_bf16, weight_bf16, padding=1)),
    }


def kernels(threads: int) -> dict:
    """Per ISA cap, a fresh process (oneDNN reads the cap once)."""
    results = {}
    for cap in ISA_CAPS:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if cap != "native":
            env["DNNL_MAX_CPU_ISA"] = cap
        command = [sys.executable, "-m", "benchmarks.int8_scale_study", "--kernels"]
        done = subprocess.run(
            command, cwd=HERE.parent, env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{cap}: {done.stderr[-2000:]}")
        results[cap] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {cap}: {results[cap]}", flush=True)
    return results


def clipped_shares(images: int) -> dict:
    """Per quality, the share of ACTIVATION-grid inputs above 127 and above 255
    units, over the exact convolutions of every layer, as the shipped model
    encodes training photos."""
    from PIL import Image

    from hvae_compress.codec import Codec
    from hvae_compress.models.exact import ExactConv2d
    from hvae_compress.models.scales import ACTIVATION

    counts = torch.zeros(3, dtype=torch.float64)
    forward = ExactConv2d.forward

    def counting_forward(conv, x):
        if conv.grid == ACTIVATION and x.numel() > CHANNELS:  # maps, not the rate
            counts.add_(torch.tensor([x.numel(), (x > 127).sum(), (x > 255).sum()]))
        return forward(conv, x)

    coder = Codec(None, "cpu", precision="fp32")
    photos = [Image.open(path).convert("RGB") for path in study_photos(images)]
    shares = {}
    ExactConv2d.forward = counting_forward
    try:
        for quality in QUALITIES:
            counts.zero_()
            for photo in photos:
                coder.encode(photo, quality=quality)
            total, above_127, above_255 = counts.tolist()
            shares[f"q{quality}"] = {
                "above_127_percent": 100 * above_127 / total,
                "above_255_percent": 100 * above_255 / total,
            }
    finally:
        ExactConv2d.forward = forward
    return shares


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# int8 convolutions for the exact scale network",
        "",
        "Written by `python -m benchmarks.int8_scale_study` on "
        f"{m['date']}: {m['cpu']}, {results['threads']} threads, torch {m['torch']}. "
        "One 3x3 convolution of "
        f"{CHANNELS} to {CHANNELS} channels on a {ROWS}x{COLS} map, integer weights in "
        "[-127, 127]; int8 = `torch.ops.onednn.qconv2d_pointwise` with float32 "
        "output; exact = equal to the float32 convolution; times: fastest of 20.",
        "",
        "| oneDNN ISA cap | activations | exact | float32 ms | int8 ms | bfloat16 ms "
        "| int8 vs float32 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for cap, cases in results["kernels"].items():
        for activations, row in cases.items():
            lines.append(
                f"| {cap} | {activations} | {'yes' if row['exact'] else 'no'} | "
                f"{row['float32_ms']:.2f} | {row['int8_ms']:.2f} | "
                f"{row['bfloat16_ms']:.2f} | "
                f"{row['float32_ms'] / row['int8_ms']:.1f}x |"
            )
    lines += [
        "",
        "What a 7-bit grid would clip: of the inputs of the shipped model's exact "
        f"3x3 convolutions (all on the ACTIVATION grid), encoding {results['images']} "
        "training photos (train/04):",
        "",
        "| quality | above 127 units | above 255 units (clipped today) |",
        "| --- | ---: | ---: |",
    ]
    for quality, share in results["clipped"].items():
        lines.append(
            f"| {quality} | {share['above_127_percent']:.3f} % | "
            f"{share['above_255_percent']:.4f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="training photos")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--kernels", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", default=str(HERE / "int8_scale_study.json"), help="results JSON"
    )
    args = parser.parse_args(argv)
    if args.kernels:  # one ISA cap's process (see `kernels`)
        cases = {f"0..{top}": kernel_case(top) for top in (255, 127)}
        print(json.dumps(cases))
        return
    torch.set_num_threads(args.threads)
    results = {
        "machine": machine(),
        "threads": args.threads,
        "images": args.images,
        "kernels": kernels(args.threads),
        "clipped": clipped_shares(args.images),
    }
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
