"""A plain-dict description of a ``.hvae`` file, for `hvae-compress info` and tools."""

from __future__ import annotations

import math

from ..entropy.errors import CorruptStreamError
from ..models.config import PRESETS
from .container import read_header


def header_summary(data: bytes) -> dict:
    """Size, model, rate settings and per-layer bytes of an ``.hvae`` file.

    Returns a JSON-ready dict with ``width``, ``height``, ``mode``, ``model``,
    ``model_hash``, ``lmbda``, ``betas``, ``total_bytes``, ``bpp``,
    ``format_version`` and ``layers`` (top layer first, each with ``bytes``,
    ``bpp``, ``share``, ``shape`` and ``stride``, these two None when the file
    does not record them and its model is not a preset). Only the header is
    parsed; the file's length is checked against it (payload checksums are
    left to decoding).

    Raises:
        CorruptStreamError: a damaged header, or a file longer or shorter
            than its header says (naming the layers that are complete).
    """
    header = read_header(data)
    _check_length(header, len(data))
    shapes = _latent_shapes(header)
    pixels = header.width * header.height
    layer_bytes = [r.num_bytes for r in header.layers]
    layer_total = sum(layer_bytes) or 1
    return {
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "model": header.model_name,
        "model_hash": header.model_hash.hex(),
        "lmbda": header.lmbda,
        "lmbda_code": header.lmbda_code,
        "betas": list(header.betas),
        "total_bytes": header.total_bytes,
        "file_bytes": len(data),
        "format_version": header.version,
        "bpp": 8 * header.total_bytes / pixels,
        "header_bytes": header.header_bytes,
        "alpha_bytes": header.alpha_length,
        "icc_bytes": header.icc_length,
        "layers": [
            {
                "bytes": n,
                "bpp": 8 * n / pixels,
                "share": n / layer_total,
                "shape": None if shape is None else list(shape),
                "stride": None if shape is None else _stride(header.height, shape[1]),
            }
            for n, shape in zip(layer_bytes, shapes, strict=True)
        ],
    }


def _check_length(header, length: int) -> None:
    if length > header.total_bytes:
        raise CorruptStreamError(
            f"{length - header.total_bytes} bytes of trailing garbage"
        )
    if length < header.total_bytes:
        end, complete = header.header_bytes + header.metadata_bytes, 0
        for record in header.layers:
            end += record.num_bytes
            complete += end <= length
        raise CorruptStreamError(
            f"file is truncated: {length:,} of {header.total_bytes:,} bytes; the "
            f"top {complete} of {len(header.layers)} layers are complete"
        )


def _latent_shapes(header) -> list:
    """Each layer's (channels, rows, cols): recorded in version 2 files, else
    those of the model preset the file names (None for other models)."""
    if header.layers[0].shape is not None:
        return [r.shape for r in header.layers]
    config = PRESETS.get(header.model_name)
    if config is None or config.num_latent_layers != len(header.layers):
        return [None] * len(header.layers)
    return config.latent_shapes(header.width, header.height)


def _stride(height: int, rows: int) -> int | None:
    """The layer's stride: the power of two nearest to height / rows."""
    return 2 ** round(math.log2(height / rows)) if rows else None
