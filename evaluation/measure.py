"""Rate-distortion measurement: our model and classical codecs, measured the same way.

Every number is measured, never estimated: each image is encoded to real bytes
and decoded back; bpp = file bits / pixels; PSNR and MS-SSIM on the decoded
8-bit RGB image. Records are plain dicts (one per image and setting) so they go
straight to CSV and JSON; `evaluation.curves` turns them into curves.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

from ..codec.container import read_header
from ..files import read_rgb
from .metrics import ms_ssim, psnr

DEFAULT_QUALITIES = (5, 20, 40, 60, 80, 95)


def _quality_fields(original: np.ndarray, decoded, with_ms_ssim: bool) -> dict:
    return {
        "psnr": psnr(original, decoded),
        "ms_ssim": ms_ssim(original, decoded) if with_ms_ssim else float("nan"),
    }


# --- our model ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateSetting:
    """One point of a sweep: a quality or a lambda, and optional layer weights."""

    quality: float | None = None
    lmbda: float | None = None
    layer_weights: tuple[float, ...] | None = None

    @property
    def label(self) -> str:
        rate = f"q={self.quality:g}" if self.lmbda is None else f"lambda={self.lmbda:g}"
        if self.layer_weights is None:
            return rate
        return rate + " w=" + ",".join(f"{w:g}" for w in self.layer_weights)


def measure_model(
    codec,
    path: Path,
    setting: RateSetting,
    progressive: bool = False,
    with_ms_ssim: bool = True,
) -> list[dict]:
    """Encode and decode one image at one setting with a `Codec`.

    Returns one record for the full decode and, with ``progressive``, one per
    number of top layers K (bpp then counts the file cut after those layers).
    """
    original = np.asarray(read_rgb(path))
    pixels = original.shape[0] * original.shape[1]
    start = time.perf_counter()
    report = codec.encode_report(
        path,
        quality=setting.quality,
        lmbda=setting.lmbda,
        layer_weights=setting.layer_weights,
    )
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decode(report.data)
    decode_seconds = time.perf_counter() - start
    header = read_header(report.data)
    base = {
        "codec": codec.name,
        "image": path.name,
        "setting": setting.label,
        "quality": setting.quality,
        "lmbda": header.lmbda,
        "layer_weights": list(header.betas),
        "width": original.shape[1],
        "height": original.shape[0],
    }
    record = {
        **base,
        "layers_decoded": len(header.layers),
        "bytes": len(report.data),
        "bpp": 8 * len(report.data) / pixels,
        **_quality_fields(original, decoded, with_ms_ssim),
        "encoding_time": encode_seconds,
        "decoding_time": decode_seconds,
        "estimated_bpp": sum(report.estimated_bits) / pixels,
        "layer_bpp": [8 * r.num_bytes / pixels for r in header.layers],
        "layer_estimated_bpp": [b / pixels for b in report.estimated_bits],
    }
    records = [record]
    if progressive:
        records += _progressive(
            codec, report.data, header, original, base, with_ms_ssim
        )
    return records


def _progressive(codec, data, header, original, base, with_ms_ssim) -> list[dict]:
    pixels = original.shape[0] * original.shape[1]
    records = []
    kept = header.header_bytes + header.metadata_bytes
    for k, layer in enumerate(header.layers[:-1], start=1):
        kept += layer.num_bytes
        start = time.perf_counter()
        decoded = codec.decode(data[:kept], layers=k)
        records.append(
            {
                **base,
                "progressive": True,
                "layers_decoded": k,
                "bytes": kept,
                "bpp": 8 * kept / pixels,
                **_quality_fields(original, decoded, with_ms_ssim),
                "decoding_time": time.perf_counter() - start,
            }
        )
    return records


def evaluate_model(
    codec,
    paths: list[Path],
    settings: list[RateSetting],
    progressive=False,
    with_ms_ssim=True,
    progress: Callable[[], None] | None = None,
) -> list[dict]:
    """`measure_model` over every image and setting (one warm-up run first)."""
    codec.decode(codec.encode(paths[0], quality=50))  # warm-up: keeps timings honest
    records = []
    for setting in settings:
        for path in paths:
            records += measure_model(codec, path, setting, progressive, with_ms_ssim)
            if progress:
                progress()
    return records


# --- classical codecs through Pillow -----------------------------------------------


@dataclass(frozen=True)
class ClassicalCodec:
    """A Pillow format and its quality sweep; ``options``: level -> save() kwargs;
    ``library``: Pillow's name of the library that codes it (`PIL.features`)."""

    name: str
    format: str
    levels: tuple
    options: Callable[[object], dict]
    description: str
    library: str

    def versions(self) -> dict[str, str]:
        """Pillow's version and its library's: the curve depends on both."""
        return {"pillow": PIL.__version__, self.library: features.version(self.library)}


CLASSICAL_CODECS = {
    "jpeg": ClassicalCodec(
        "jpeg",
        "JPEG",
        (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
        lambda q: {"quality": q, "subsampling": 2},
        "JPEG 4:2:0 (Pillow, libjpeg)",
        "jpg",
    ),
    "jpeg444": ClassicalCodec(
        "jpeg444",
        "JPEG",
        (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
        lambda q: {"quality": q, "subsampling": 0},
        "JPEG 4:4:4 (Pillow, libjpeg)",
        "jpg",
    ),
    "webp": ClassicalCodec(
        "webp",
        "WEBP",
        (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100),
        lambda q: {"quality": q, "method": 6},
        "WebP lossy, method 6 (Pillow, libwebp)",
        "webp",
    ),
    "avif": ClassicalCodec(
        "avif",
        "AVIF",
        (5, 15, 25, 35, 45, 55, 65, 75, 85, 95),
        lambda q: {"quality": q, "subsampling": "4:4:4", "speed": 4},
        "AVIF 4:4:4, speed 4 (Pillow, libavif)",
        "avif",
    ),
    "avif420": ClassicalCodec(
        "avif420",
        "AVIF",
        (5, 15, 25, 35, 45, 55, 65, 75, 85, 95),
        lambda q: {"quality": q, "subsampling": "4:2:0", "speed": 4},
        "AVIF 4:2:0, speed 4 (Pillow, libavif)",
        "avif",
    ),
    "jpeg2000": ClassicalCodec(
        "jpeg2000",
        "JPEG2000",
        (240, 160, 120, 96, 72, 48, 32, 24, 16, 12, 9),
        lambda ratio: {
            "quality_mode": "rates",
            "quality_layers": [ratio],
            "irreversible": True,
        },
        "JPEG 2000, 9/7 wavelet, rate = 24/ratio bpp (Pillow, OpenJPEG)",
        "jpg_2000",
    ),
}


def measure_classical(
    codec: ClassicalCodec, path: Path, level, with_ms_ssim=True
) -> dict:
    """Encode one image with Pillow at one quality level, decode, measure."""
    original = np.asarray(read_rgb(path))
    source = Image.fromarray(original)
    buffer = io.BytesIO()
    start = time.perf_counter()
    source.save(buffer, format=codec.format, **codec.options(level))
    encode_seconds = time.perf_counter() - start
    data = buffer.getvalue()
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as image:
        decoded = np.asarray(image.convert("RGB"))
    decode_seconds = time.perf_counter() - start
    return {
        "codec": codec.name,
        "image": path.name,
        "setting": f"level={level}",
        "quality": level,
        "width": original.shape[1],
        "height": original.shape[0],
        "bytes": len(data),
        "bpp": 8 * len(data) / original[..., 0].size,
        **_quality_fields(original, decoded, with_ms_ssim),
        "encoding_time": encode_seconds,
        "decoding_time": decode_seconds,
    }


def evaluate_classical(
    name: str,
    paths: list[Path],
    workers: int = 1,
    with_ms_ssim=True,
    progress: Callable[[], None] | None = None,
) -> list[dict]:
    """Sweep a classical codec over its levels and the images, in worker threads."""
    if name not in CLASSICAL_CODECS:
        raise ValueError(
            f"unknown baseline {name!r}; choose from {', '.join(CLASSICAL_CODECS)}"
        )
    codec = CLASSICAL_CODECS[name]
    jobs = [(level, path) for level in codec.levels for path in paths]

    def run(job):
        record = measure_classical(codec, job[1], job[0], with_ms_ssim)
        if progress:
            progress()
        return record

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(run, jobs))
