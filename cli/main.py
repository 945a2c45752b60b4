"""The ``hvae-compress`` command: argument parsing and printing only.

Each subcommand is a small function that calls `codec` or `models`. Heavy
imports (torch and the model) happen inside them, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from pathlib import Path

from . import paths
from .arguments import (
    add_model_options,
    common_options,
    float_list,
    non_negative_int,
    positive_float,
    positive_int,
)
from .arguments import quality as quality_type
from .eval_command import add_eval_parser
from .train_command import add_train_parser

PROG = "hvae-compress"


def _output_options(parser: argparse.ArgumentParser, suffix: str) -> None:
    """-o/--output and -f/--force."""
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        default=None,
        help="output file, or folder when there are several inputs; '-' writes to "
        f"stdout (default: the input's name with {suffix})",
    )
    parser.add_argument(
        "-f", "--force", action="store_true", help="overwrite existing output files"
    )


def _tile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile-size",
        type=non_negative_int,
        default=None,
        metavar="PX",
        help="run the networks on tiles of PX x PX pixels to bound memory on large "
        "images; the result does not depend on it; 0 processes images whole "
        "(default: 512)",
    )


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads of the networks (default: torch's, one per core); 1 "
        "suits coding many files in processes side by side; decoded pixels do "
        "not depend on it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Learned lossy image codec: a hierarchical VAE whose latent layers "
        "are coded as separate bitstreams, each with its own rate penalty.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {importlib.metadata.version('hvae-compress')}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()

    encode = sub.add_parser(
        "encode",
        parents=[common],
        help="compress images to .hvae files",
        description="Compress images (PNG, JPEG, WebP, TIFF, BMP, ...) to .hvae files.",
    )
    encode.add_argument(
        "inputs", nargs="+", metavar="IN", help="input images; '-' reads stdin"
    )
    _output_options(encode, ".hvae")
    rate = encode.add_mutually_exclusive_group()
    rate.add_argument(
        "-q",
        "--quality",
        type=quality_type,
        default=None,
        metavar="Q",
        help="0-100, higher means larger files and better images (default: 75)",
    )
    rate.add_argument(
        "--lambda",
        dest="lmbda",
        type=positive_float,
        default=None,
        metavar="L",
        help="rate-distortion trade-off lambda instead of a quality (loss = "
        "lambda*255^2*MSE + bpp)",
    )
    rate.add_argument(
        "--size",
        type=positive_int,
        default=None,
        metavar="BYTES",
        help="instead of a quality, the highest whole quality whose file fits in "
        "BYTES bytes (as cwebp -size; each image is encoded about 5 times); an "
        "image that does not fit even at quality 0 fails",
    )
    rate.add_argument(
        "--psnr",
        type=positive_float,
        default=None,
        metavar="DB",
        help="instead of a quality, the lowest whole quality whose decoded image "
        "reaches DB dB PSNR (as cwebp -psnr; about 5 encodes, each also "
        "reconstructing the image); an image that does not reach it fails",
    )
    encode.add_argument(
        "--layer-weights",
        type=float_list,
        default=None,
        metavar="W_top,...,W_bottom",
        help="per-layer rate weights beta_l, one per latent layer, top first, each in "
        "[0.25, 4] (default: all 1); a larger weight moves bits out of that layer; "
        "they multiply the quality's own (the lowest qualities raise all alike)",
    )
    _tile_option(encode)
    _threads_option(encode)
    add_model_options(encode)
    encode.set_defaults(run=run_encode)

    decode = sub.add_parser(
        "decode",
        parents=[common],
        help="decompress .hvae files to images",
        description="Decompress .hvae files to PNG (or the format the output name "
        "implies).",
    )
    decode.add_argument(
        "inputs", nargs="+", metavar="IN", help=".hvae files; '-' reads stdin"
    )
    _output_options(decode, ".png")
    decode.add_argument(
        "--layers",
        type=positive_int,
        default=None,
        metavar="K",
        help="decode only the top K latent layers (progressive decoding; the file may "
        "be cut off after them)",
    )
    decode.add_argument(
        "--output-quality",
        type=quality_type,
        default=None,
        metavar="Q",
        help="quality of a lossy output format (JPEG, WebP, AVIF), 0-100 (default: 95)",
    )
    decode.add_argument(
        "--png-compress",
        type=int,
        choices=range(10),
        default=None,
        metavar="L",
        help="zlib level of PNG outputs, 0 (none, fastest) to 9 (smallest), the "
        "pixels the same at each (default: 4, which writes a 12-megapixel photo "
        "2-3x faster than zlib's default 6, for 2-3 %% more bytes)",
    )
    _tile_option(decode)
    _threads_option(decode)
    add_model_options(decode)
    decode.set_defaults(run=run_decode)

    info = sub.add_parser(
        "info",
        parents=[common],
        help="show the header of a .hvae file",
        description="Show the container header: image size, model, rate settings and "
        "the bytes of every latent layer.",
    )
    info.add_argument("input", metavar="IN", help=".hvae file; '-' reads stdin")
    info.add_argument(
        "--json", action="store_true", help="print a JSON object instead of text"
    )
    info.set_defaults(run=run_info)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="encode and decode the bundled sample image",
        description="Encode and decode the sample image shipped with the package, then "
        "print the file size, bits per pixel and PSNR.",
    )
    demo.add_argument(
        "-q",
        "--quality",
        type=quality_type,
        default=None,
        metavar="Q",
        help="0-100 (default: 75)",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="keep sample.hvae and sample.decoded.png in DIR (default: discard them)",
    )
    add_model_options(demo)
    demo.set_defaults(run=run_demo)

    add_eval_parser(sub, common)
    add_train_parser(sub, common)
    return parser


def _progress(items, quiet: bool, unit: str):
    """A progress bar on stderr for more than one item, only on a terminal."""
    from tqdm import tqdm

    hidden = quiet or len(items) < 2 or not sys.stderr.isatty()
    return tqdm(items, unit=unit, disable=hidden, file=sys.stderr, leave=False)


def _say(args, text: str, target: str = "") -> None:
    """A summary line; on stderr when stdout carries the data."""
    if not args.quiet:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr if target == paths.STDIO else sys.stdout)


def run_encode(args) -> int:
    jobs = paths.plan(args.inputs, args.output, ".hvae")
    _limit_threads(args.threads)
    coder = _make_codec(args)
    failures = 0
    for source, target in _progress(jobs, args.quiet, "image"):
        try:
            paths.check_source(source)
            paths.check_target(target, args.force)
            start = time.perf_counter()
            report = coder.encode_report(
                paths.read_input(source),
                quality=args.quality,
                lmbda=args.lmbda,
                layer_weights=args.layer_weights,
                max_bytes=args.size,
                min_psnr=args.psnr,
                bit_counts=False,
            )
            paths.write_output(target, report.data, args.force)
            seconds = time.perf_counter() - start
            searched = args.size is not None or args.psnr is not None
            line = _encode_line(source, target, report, seconds, searched)
            _say(args, line, target)
        except Exception as error:
            failures += _report_failure(args, source, error)
    return 1 if failures else 0


def _encode_line(source, target, report, seconds: float, searched: bool) -> str:
    remarks = "".join(f" [{note}]" for note in report.notes)
    found = f", quality {report.quality:g}" if searched else ""
    return (
        f"{paths.label(source)} -> {paths.label(target)}: "
        f"{report.width}x{report.height}, {len(report.data):,} bytes, "
        f"{report.bpp:.4f} bpp{found}, {seconds:.2f} s{remarks}"
    )


def run_decode(args) -> int:
    from ..codec.image_io import (
        DEFAULT_OUTPUT_QUALITY,
        DEFAULT_PNG_COMPRESSION,
        image_bytes,
    )

    jobs = paths.plan(args.inputs, args.output, ".png")
    _limit_threads(args.threads)
    # The defaults live with the writer, which the parser does not import.
    quality, level = args.output_quality, args.png_compress
    quality = DEFAULT_OUTPUT_QUALITY if quality is None else quality
    level = DEFAULT_PNG_COMPRESSION if level is None else level
    codecs = {}
    failures = 0
    for source, target in _progress(jobs, args.quiet, "file"):
        try:
            paths.check_source(source)
            paths.check_target(target, args.force)
            data = paths.read_bytes(source)
            coder = _codec_for_file(args, data, codecs)
            # Timed like encode's line: the model, loaded once, is not counted.
            start = time.perf_counter()
            image = coder.decode(data, layers=args.layers)
            name = None if target == paths.STDIO else target
            output = image_bytes(image, name, quality=quality, png_compression=level)
            paths.write_output(target, output, args.force)
            _say(
                args,
                f"{paths.label(source)} -> {paths.label(target)}: "
                f"{image.width}x{image.height} {image.mode}, "
                f"{_layers_phrase(args.layers)}, {time.perf_counter() - start:.2f} s",
                target,
            )
        except Exception as error:
            failures += _report_failure(args, source, error)
    return 1 if failures else 0


def _layers_phrase(layers: int | None) -> str:
    if layers is None:
        return "all layers"
    return "top layer" if layers == 1 else f"top {layers} layers"


def run_info(args) -> int:
    import json

    from ..codec.summary import header_summary

    try:
        summary = header_summary(paths.read_bytes(args.input))
    except Exception as error:
        return _report_failure(args, args.input, error)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print(_format_info(summary))
    return 0


def _format_info(summary: dict) -> str:
    betas = ",".join(f"{b:g}" for b in summary["betas"])
    lines = [
        f"image:   {summary['width']}x{summary['height']} {summary['mode']}",
        f"model:   {summary['model']} ({summary['model_hash']})",
        f"rate:    lambda {summary['lmbda']:.6g}, layer weights {betas}",
        f"size:    {summary['total_bytes']:,} bytes, {summary['bpp']:.4f} bpp "
        f"(header {summary['header_bytes']}, alpha {summary['alpha_bytes']}, "
        f"ICC {summary['icc_bytes']} bytes)",
        f"format:  .hvae version {summary['format_version']}",
        "layers, top first:",
    ]
    for i, layer in enumerate(summary["layers"]):
        shape = "x".join(map(str, layer["shape"] or ["?"]))
        stride = layer["stride"] or "?"
        lines.append(
            f"  {i}: stride {stride:>2}  {shape:>11}  {layer['bytes']:>10,} "
            f"bytes  {layer['bpp']:.4f} bpp  {100 * layer['share']:5.1f} %"
        )
    return "\n".join(lines)


def run_demo(args) -> int:
    import tempfile
    from importlib.resources import files

    from ..codec.image_io import image_bytes
    from ..evaluation.metrics import psnr
    from ..files import write_atomic

    sample = files("hvae_compress.codec") / "data" / "sample.png"
    codec_ = _make_codec(args)
    start = time.perf_counter()
    report = codec_.encode_report(sample.read_bytes(), quality=args.quality)
    encoded = time.perf_counter()
    decoded = codec_.decode(report.data)
    finished = time.perf_counter()
    bpp = 8 * len(report.data) / (decoded.width * decoded.height)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "sample.hvae", report.data, overwrite=True)
        write_atomic(
            out / "sample.decoded.png", image_bytes(decoded, None), overwrite=True
        )
    from PIL import Image

    with Image.open(sample) as original:
        quality = psnr(original, decoded)
    print(
        f"sample.png ({decoded.width}x{decoded.height}), model '{codec_.name}': "
        f"{len(report.data):,} bytes, {bpp:.4f} bpp, PSNR {quality:.2f} dB "
        f"(encode {encoded - start:.2f} s, decode {finished - encoded:.2f} s)"
    )
    if args.out:
        print(f"wrote {out / 'sample.hvae'} and {out / 'sample.decoded.png'}")
    return 0


def _limit_threads(threads: int | None) -> None:
    """--threads caps torch's process-wide pool; unset leaves torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _make_codec(args, model=None):
    from .. import codec

    options = {}
    if getattr(args, "max_pixels", None):
        options["max_pixels"] = args.max_pixels
    if getattr(args, "tile_size", None) is not None:
        options["tile_size"] = args.tile_size
    return codec.Codec(
        model or args.model, args.device, precision=args.precision, **options
    )


def _codec_for_file(args, data: bytes, cache: dict):
    """Decoding uses --model, else the shipped model that the file names."""
    from ..codec import shipped_model_for

    model = args.model or shipped_model_for(data)
    if model not in cache:
        cache[model] = _make_codec(args, model)
    return cache[model]


def _report_failure(args, source: str, error: Exception) -> int:
    """One line naming the input and what went wrong; the exit code 1."""
    if args.debug:
        raise error
    label, message = paths.label(source), _describe(error)
    if message.startswith(f"{label}: "):  # library errors may name the file too
        message = message[len(label) + 2 :]
    print(f"{PROG}: error: {label}: {message}", file=sys.stderr)
    return 1


def _describe(error: BaseException) -> str:
    """The first line of an error's message ("No such file or directory" for an
    OSError, whose str() repeats the file name)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error) or type(error).__name__
    return text.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (2 for usage errors, 1 for failures)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except paths.UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a message.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit-time flush
        return 141
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        print(f"{PROG}: error: {_describe(error)}", file=sys.stderr)
        return 1
