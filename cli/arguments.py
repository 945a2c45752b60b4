"""Argument types and option groups shared by the subcommands."""

from __future__ import annotations

import argparse


def quality(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"quality must be in [0, 100], got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def share(text: str) -> float:
    """A number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def float_list(text: str) -> list[float]:
    """'1,2.5,4' -> [1.0, 2.5, 4.0], all positive."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """'16,16,24,32,0' -> [16, 16, 24, 32, 0], none negative."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"values must not be negative, got {text!r}")
    return values


def quality_list(text: str) -> list[float]:
    """'0,50,100' -> [0.0, 50.0, 100.0], each a valid quality (as for encode -q)."""
    try:
        return [quality(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated qualities in [0, 100], got {text!r}"
        ) from None


def model_name(text: str) -> str:
    from ..models.config import check_model_name

    try:
        return check_model_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def common_options() -> argparse.ArgumentParser:
    """--quiet and --debug, for every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="print nothing but errors")
    common.add_argument(
        "--debug", action="store_true", help="show a full traceback on errors"
    )
    return common


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --precision and --max-pixels."""
    parser.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        default=None,
        help="shipped model name, 'base' or 'fast' (faster coding, larger "
        "files), or a checkpoint file (default: base; when decoding, the model "
        "named in the file)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="auto",
        help="where the network runs (default: auto, a GPU when there is one)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the float network's arithmetic: auto encodes in bfloat16 where the "
        "CPU computes it natively (1.4-1.6x faster; files decode alike either "
        "way) and decodes in float32; bf16 decodes in bfloat16 too (faster, pixels "
        "may differ by a few levels from a float32 decode); fp32 for both "
        "(default: auto)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="refuse images larger than N pixels (default: 67108864 = 8192x8192)",
    )
