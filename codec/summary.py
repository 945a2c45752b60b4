"""A plain-dict description of a ``.hvae`` file, for `hvae-compress info` and tools."""

from __future__ import annotations

import math

from .container import read_header


def header_summary(data: bytes) -> dict:
    """Size, model, rate settings and per-layer bytes of an ``.hvae`` file.

    Returns a JSON-ready dict with ``width``, ``height``, ``mode``, ``model``,
    ``model_hash``, ``lmbda``, ``betas``, ``total_bytes``, ``bpp`` and ``layers``
    (top layer first, each with ``bytes``, ``bpp``, ``share``, ``shape`` and
    ``stride``). Only the header is read; payloads are not checked.
    """
    header = read_header(data)
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
        "betas": list(header.betas),
        "tile_size": header.tile_size,
        "tiles": header.num_tiles,
        "total_bytes": header.total_bytes,
        "file_bytes": len(data),
        "bpp": 8 * header.total_bytes / pixels,
        "header_bytes": header.header_bytes,
        "alpha_bytes": header.alpha_length,
        "icc_bytes": header.icc_length,
        "layers": [
            {
                "bytes": n,
                "bpp": 8 * n / pixels,
                "share": n / layer_total,
                "shape": [r.channels, r.rows, r.cols],
                "stride": _stride(header.height, r.rows),
            }
            for n, r in zip(layer_bytes, header.layers, strict=True)
        ],
    }


def _stride(height: int, rows: int) -> int | None:
    """The layer's stride: the power of two nearest to height / rows."""
    return 2 ** round(math.log2(height / rows)) if rows else None
