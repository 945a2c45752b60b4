"""Where a decode's time goes, and how close its convolutions run to the CPU's best.

    python -m benchmarks.decode_profile [--model PATH] [--threads N]
    # writes benchmarks/decode_profile.{json,md}

A training photo upscaled to 1536x1024 is encoded at quality 50 and decoded
in float32 (the default) and in bfloat16. Each decode is split into the float
network's convolutions (every ``F.conv2d`` and ``F.conv_transpose2d`` outside
the exact scale network), the exact scale network's convolution layers
(`ExactConv2d`, their rounding included) and the rest (entropy decoding,
activations, additions, tiling), with
the arithmetic rate of each kind of convolution in GFLOP/s. The yardstick is a
2048x2048 matrix product in the same precision on the same threads: a rate
close to it leaves no faster kernel to find, only fewer or cheaper operations.

Fewer operations: the same file is also decoded by slimmer float networks
(`SLIMMER`), with random weights beside the shipped scale network. Their
pixels are noise, but their time is what a trained decoder of that shape would
take: the symbols depend only on the scale network, so such a decoder, trained
to turn them into pixels, would read today's files.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from hvae_compress.codec import Codec
from hvae_compress.models import HVAEConfig, build_model
from hvae_compress.models.exact import ExactConv2d

from .run import fastest_seconds, machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
SIZE = (1536, 1024)
QUALITY = 50
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# name -> (finest levels at half width, decoder blocks fewer at the finest level)
SLIMMER = {
    "half width at the finest level": (1, 0),
    "half width at the two finest levels": (2, 0),
    "the same and one block fewer at the finest": (2, 1),
}


def matmul_gflops(dtype: torch.dtype, size: int = 2048) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    return 2 * size**3 / fastest_seconds(lambda: torch.mm(a, b), 10) / 1e9


def conv_flops(weight: torch.Tensor, output: torch.Tensor) -> int:
    """Multiply-adds times two: each output element sums in_channels/groups x k x k."""
    return 2 * weight[0].numel() * output.numel()


def transposed_conv_flops(weight: torch.Tensor, x: torch.Tensor) -> int:
    """Each input element is spread over out_channels/groups x k x k outputs."""
    return 2 * weight[0].numel() * x.numel()


class Tally:
    """Seconds and FLOPs of the convolutions, by kind, while installed."""

    def __init__(self):
        self.seconds = {"float": 0.0, "exact": 0.0}
        self.flops = {"float": 0, "exact": 0}
        self._exact_started = None

    def float_conv(self, convolution, transposed: bool = False):
        def timed(x, weight, *args, **kwargs):
            if self._exact_started is not None:  # inside an exact layer
                return convolution(x, weight, *args, **kwargs)
            start = time.perf_counter()
            y = convolution(x, weight, *args, **kwargs)
            self.seconds["float"] += time.perf_counter() - start
            if transposed:
                self.flops["float"] += transposed_conv_flops(weight, x)
            else:
                self.flops["float"] += conv_flops(weight, y)
            return y

        return timed

    def exact_started(self, layer, inputs):
        self._exact_started = time.perf_counter()

    def exact_done(self, layer, inputs, output):
        self.seconds["exact"] += time.perf_counter() - self._exact_started
        if layer.transposed:
            self.flops["exact"] += transposed_conv_flops(layer.weight, inputs[0])
        else:
            self.flops["exact"] += conv_flops(layer.weight, output)
        self._exact_started = None


def profile_decode(coder: Codec, data: bytes, runs: int) -> dict:
    seconds = fastest_seconds(lambda: coder.decode(data), runs)
    tally = Tally()
    hooks = []
    for layer in coder.model.modules():
        if isinstance(layer, ExactConv2d):
            hooks.append(layer.register_forward_pre_hook(tally.exact_started))
            hooks.append(layer.register_forward_hook(tally.exact_done))
    conv2d, conv_transpose2d = F.conv2d, F.conv_transpose2d
    F.conv2d = tally.float_conv(conv2d)
    F.conv_transpose2d = tally.float_conv(conv_transpose2d, transposed=True)
    try:
        start = time.perf_counter()
        coder.decode(data)
        split_seconds = time.perf_counter() - start
    finally:
        F.conv2d, F.conv_transpose2d = conv2d, conv_transpose2d
        for hook in hooks:
            hook.remove()
    convolutions = {
        kind: {
            "seconds": tally.seconds[kind],
            "gflop": tally.flops[kind] / 1e9,
            "gflops": tally.flops[kind] / 1e9 / tally.seconds[kind],
        }
        for kind in tally.seconds
    }
    convolutions["rest_seconds"] = split_seconds - sum(tally.seconds.values())
    return {"decode_seconds": seconds, "split_seconds": split_seconds, **convolutions}


def slimmed(config: HVAEConfig, levels: int, fewer_blocks: int) -> HVAEConfig:
    """``config`` with its finest ``levels`` at half width and ``fewer_blocks``
    decoder blocks fewer at the finest level."""
    widths, blocks = list(config.widths), list(config.decoder_blocks)
    for level in range(len(widths) - levels, len(widths)):
        widths[level] //= 2
    blocks[-1] -= fewer_blocks
    return dataclasses.replace(
        config, widths=tuple(widths), decoder_blocks=tuple(blocks)
    )


def slim_decode_seconds(coder: Codec, data: bytes, config: HVAEConfig, runs: int):
    """Fastest decode of ``data`` with ``config``'s float network (random
    weights) beside the coder's own scale network; the coder is left as it was."""
    shipped = coder.model
    slim = build_model(config).eval()
    slim.scale_network.load_state_dict(shipped.scale_network.state_dict())
    coder.model = slim.to(memory_format=torch.channels_last)
    try:
        return fastest_seconds(lambda: coder.decode(data), runs)
    finally:
        coder.model = shipped


def run(model: str | None, runs: int) -> dict:
    """The model's fingerprint and, per precision, its decode's split."""
    photo = Image.open(study_photos(1)[0]).convert("RGB")
    photo = photo.resize(SIZE, Image.Resampling.LANCZOS)
    results = {"decodes": {}}
    for precision, dtype in PRECISIONS.items():
        coder = Codec(model, "cpu", precision=precision)
        data = coder.encode(photo, quality=QUALITY)
        decode = profile_decode(coder, data, runs)
        decode["bytes"] = len(data)
        decode["matmul_gflops"] = matmul_gflops(dtype)
        decode["slimmer_seconds"] = {
            name: slim_decode_seconds(coder, data, slimmed(coder.config, *change), runs)
            for name, change in SLIMMER.items()
        }
        print(f"  {precision}: {decode}", flush=True)
        results["model"] = coder.fingerprint.hex()
        results["decodes"][precision] = decode
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    width, height = SIZE
    lines = [
        "# Where a decode's time goes",
        "",
        f"Written by `python -m benchmarks.decode_profile` on {m['date']}: {m['cpu']} "
        f"({m['kernels']}, native bf16: {m['native_bf16']}), {results['threads']} "
        f"threads, torch {m['torch']}; model {results['model']}. A training photo at "
        f"{width}x{height}, quality {QUALITY}; decode time the fastest of "
        f"{results['runs']}; its split (the rest: what the convolutions leave of "
        "that decode's time) from one more decode. Rates in GFLOP/s; "
        "matmul: a 2048x2048 product in the decode's precision, the yardstick.",
        "",
        "| decode | seconds | float convolutions s | their GFLOP/s | exact layers s "
        "| their GFLOP/s | rest s | matmul GFLOP/s | float convolutions / matmul |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for precision in PRECISIONS:
        row = results["decodes"][precision]
        fl, ex = row["float"], row["exact"]
        lines.append(
            f"| {precision} | {row['decode_seconds']:.3f} | {fl['seconds']:.3f} | "
            f"{fl['gflops']:.0f} | {ex['seconds']:.3f} | {ex['gflops']:.0f} | "
            f"{row['rest_seconds']:.3f} | {row['matmul_gflops']:.0f} | "
            f"{fl['gflops'] / row['matmul_gflops']:.0%} |"
        )
    fp32 = results["decodes"]["fp32"]
    lines += [
        "",
        f"Work per decode: {fp32['float']['gflop']:.1f} GFLOP in the float network's "
        f"convolutions, {fp32['exact']['gflop']:.1f} GFLOP in the exact scale "
        "network's (counted as multiply-adds x 2).",
        "",
        "Slimmer float networks decoding the same file (random weights, the "
        "shipped scale network; widths halved and blocks removed from the "
        "finest levels), fastest of the same runs, and their speed-up:",
        "",
        "| float network | fp32 s | speed-up | bf16 s | speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    decodes = results["decodes"]
    for name in SLIMMER:
        cells = []
        for precision in PRECISIONS:
            seconds = decodes[precision]["slimmer_seconds"][name]
            speedup = decodes[precision]["decode_seconds"] / seconds
            cells.append(f"{seconds:.3f} | {speedup:.2f}x")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="coding model (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--runs", type=int, default=3, help="timed decodes per case")
    parser.add_argument(
        "--out", default=str(HERE / "decode_profile.json"), help="results JSON"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "machine": machine(),
        "threads": args.threads,
        "runs": args.runs,
        **run(args.model, args.runs),
    }
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
