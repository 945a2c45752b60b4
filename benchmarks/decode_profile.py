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
take: reading the symbols takes only the scale network, so such a decoder,
trained to turn them into pixels, would read today's files. An encoder needs the same
top-down network as the decoder it writes for, so a faster encoder means a new
model: the networks' part of encoding the photo (`Codec.encode` without the
entropy coder and the container) is timed for the shipped model and for
models of each slimmer shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hvae_compress.codec import Codec
from hvae_compress.models import HVAEConfig, build_model
from hvae_compress.models.exact import ExactConv2d, exact_mode

from .run import fastest_seconds, machine, study_photos, write_results

HERE = Path(__file__).resolve().parent
SIZE = (1536, 1024)
QUALITY = 50
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# name -> (finest levels at half width, decoder blocks fewer at the finest
# level, encoder blocks fewer at the finest latent level)
SLIMMER = {
    "half width at the finest level": (1, 0, 0),
    "half width at the two finest levels": (2, 0, 0),
    "the same and one block fewer at the finest": (2, 1, 0),
}
# Encoders: the same shapes, and one that decodes as the last (decoders never
# run the encoder).
SLIMMER_ENCODERS = {
    **SLIMMER,
    "the same and one encoder block fewer at stride 8": (2, 1, 1),
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


def slimmed(
    config: HVAEConfig, levels: int, fewer_blocks: int, fewer_encoder_blocks: int = 0
) -> HVAEConfig:
    """``config`` with its finest ``levels`` at half width, ``fewer_blocks``
    decoder blocks fewer at the finest level and ``fewer_encoder_blocks``
    encoder blocks fewer at the finest latent level."""
    widths, blocks = list(config.widths), list(config.decoder_blocks)
    encoder_blocks = list(config.encoder_blocks)
    for level in range(len(widths) - levels, len(widths)):
        widths[level] //= 2
    blocks[-1] -= fewer_blocks
    encoder_blocks[config.finest_latent_level] -= fewer_encoder_blocks
    return dataclasses.replace(
        config,
        widths=tuple(widths),
        decoder_blocks=tuple(blocks),
        encoder_blocks=tuple(encoder_blocks),
    )


def slim_decode_seconds(coder: Codec, data: bytes, config: HVAEConfig, runs: int):
    """Fastest decode of ``data`` with ``config``'s float network (random
    weights) beside the coder's own scale network; the coder is left as it was."""
    shipped = coder.model
    coder.model = slim_model(coder, config)
    try:
        return fastest_seconds(lambda: coder.decode(data), runs)
    finally:
        coder.model = shipped


def network_encode_seconds(
    coder: Codec, model, photo: Image.Image, bf16: bool, runs: int
) -> float:
    """Fastest run of ``model``'s networks encoding ``photo`` at the coder's
    tile size: the symbols are rounded and handed to no entropy coder."""
    pixels = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None]
    rate = torch.tensor([coder.rate_codes(quality=QUALITY)])
    tile = coder.tile_size or None

    def encode():
        with exact_mode(coder.device, float_bf16=bf16):
            model.compress(pixels.clone(), rate, lambda *symbols: None, False, tile)

    return fastest_seconds(encode, runs)


def slim_model(coder: Codec, config: HVAEConfig):
    """A model of ``config`` with random weights beside the coder's scale network."""
    slim = build_model(config).eval()
    slim.scale_network.load_state_dict(coder.model.scale_network.state_dict())
    return slim.to(memory_format=torch.channels_last)


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
        bf16 = dtype == torch.bfloat16
        decode["encode_network_seconds"] = network_encode_seconds(
            coder, coder.model, photo, bf16, runs
        )
        decode["slimmer_encode_network_seconds"] = {
            name: network_encode_seconds(
                coder,
                slim_model(coder, slimmed(coder.config, *change)),
                photo,
                bf16,
                runs,
            )
            for name, change in SLIMMER_ENCODERS.items()
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
    ]
    lines += _speedup_table(results, "decode_seconds", "slimmer_seconds", SLIMMER)
    lines += [
        "",
        "The networks' part of encoding the photo (no entropy coder), by the "
        "shipped model and by models of the same shapes (random weights), "
        "fastest of as many runs:",
        "",
    ]
    lines += _speedup_table(
        results,
        "encode_network_seconds",
        "slimmer_encode_network_seconds",
        SLIMMER_ENCODERS,
    )
    return "\n".join(lines) + "\n"


def _speedup_table(
    results: dict, shipped_key: str, slimmer_key: str, shapes: dict
) -> list[str]:
    """Rows of seconds and speed-up over the shipped model, per precision."""
    decodes = results["decodes"]
    shipped = " | ".join(f"{decodes[p][shipped_key]:.3f} | 1" for p in PRECISIONS)
    lines = [
        "| float network | fp32 s | speed-up | bf16 s | speed-up |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| shipped | {shipped} |",
    ]
    for name in shapes:
        cells = []
        for precision in PRECISIONS:
            seconds = decodes[precision][slimmer_key][name]
            speedup = decodes[precision][shipped_key] / seconds
            cells.append(f"{seconds:.3f} | {speedup:.2f}x")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="coding model (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case")
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
