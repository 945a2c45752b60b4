"""Rate-distortion measurement: our model and classical codecs, measured the same way.

Every number is measured, never estimated: each image is encoded to real bytes
and decoded back; bpp = file bits / pixels; PSNR and MS-SSIM on the decoded
8-bit RGB image, averaged per image. Records are plain dicts (one per image and
setting) so they go straight to CSV and JSON; `summarize` turns them into
CompressAI's results format, `bd_rate` compares two curves.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .container import read_header
from .metrics import ms_ssim, psnr

DEFAULT_QUALITIES = (5, 20, 40, 60, 80, 95)


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


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
    original = _load_rgb(path)
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
    kept = header.header_bytes + header.icc_length + header.alpha_length
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
    """A Pillow format and its quality sweep; ``options``: level -> save() kwargs."""

    name: str
    format: str
    levels: tuple
    options: Callable[[object], dict]
    description: str


CLASSICAL_CODECS = {
    "jpeg": ClassicalCodec(
        "jpeg",
        "JPEG",
        (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
        lambda q: {"quality": q, "subsampling": 2},
        "JPEG 4:2:0 (Pillow, libjpeg)",
    ),
    "jpeg444": ClassicalCodec(
        "jpeg444",
        "JPEG",
        (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
        lambda q: {"quality": q, "subsampling": 0},
        "JPEG 4:4:4 (Pillow, libjpeg)",
    ),
    "webp": ClassicalCodec(
        "webp",
        "WEBP",
        (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100),
        lambda q: {"quality": q, "method": 6},
        "WebP lossy, method 6 (Pillow, libwebp)",
    ),
    "avif": ClassicalCodec(
        "avif",
        "AVIF",
        (5, 15, 25, 35, 45, 55, 65, 75, 85, 95),
        lambda q: {"quality": q, "subsampling": "4:4:4", "speed": 4},
        "AVIF 4:4:4, speed 4 (Pillow, libavif)",
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
    ),
}


def measure_classical(
    codec: ClassicalCodec, path: Path, level, with_ms_ssim=True
) -> dict:
    """Encode one image with Pillow at one quality level, decode, measure."""
    original = _load_rgb(path)
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


# --- summaries, anchors, BD-rate ---------------------------------------------------


def summarize(records: list[dict], name: str, description: str) -> dict:
    """Per-setting means in CompressAI's results format, sorted by rate.

    Only full decodes are summarized (progressive records are left out).
    """
    full = [r for r in records if not r.get("progressive")]
    settings = sorted({r["setting"] for r in full}, key=lambda s: _mean(full, s, "bpp"))
    keys = {
        "bpp": "bpp",
        "psnr-rgb": "psnr",
        "ms-ssim-rgb": "ms_ssim",
        "encoding_time": "encoding_time",
        "decoding_time": "decoding_time",
    }
    results = {
        out: [_mean(full, s, key) for s in settings] for out, key in keys.items()
    }
    if all("estimated_bpp" in r for r in full):
        results["estimated_bpp"] = [_mean(full, s, "estimated_bpp") for s in settings]
    return {
        "name": name,
        "description": description,
        "settings": settings,
        "results": results,
    }


def _mean(records: list[dict], setting: str, key: str) -> float:
    values = [r[key] for r in records if r["setting"] == setting]
    return float(np.mean(values))


def load_anchors(folder: str | Path) -> dict[str, dict]:
    """Published RD curves (CompressAI results format) from every JSON in a folder.

    Returns {name: {"bpp": [...], "psnr": [...]}}; 'psnr-rgb' or 'psnr' is read.
    """
    anchors = {}
    for path in sorted(Path(folder).glob("*.json")):
        content = json.loads(path.read_text())
        results = content.get("results", {})
        curve_psnr = results.get("psnr-rgb") or results.get("psnr")
        if "bpp" in results and curve_psnr:
            anchors[content.get("name", path.stem)] = {
                "bpp": results["bpp"],
                "psnr": curve_psnr,
            }
    if not anchors:
        raise ValueError(f"no anchor curves (results with bpp and PSNR) in {folder}")
    return anchors


def bd_rate(rate_test, psnr_test, rate_anchor, psnr_anchor) -> float:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent.

    Fits log(rate) as a cubic polynomial of PSNR for each curve and compares the
    integrals over the overlapping PSNR range; negative means ``test`` needs
    fewer bits for the same quality. NaN when the ranges do not overlap or a
    curve has fewer than four points.
    """
    curves = []
    for rate, quality in ((rate_test, psnr_test), (rate_anchor, psnr_anchor)):
        rate, quality = np.asarray(rate, float), np.asarray(quality, float)
        keep = np.isfinite(rate) & np.isfinite(quality) & (rate > 0)
        curves.append((np.log(rate[keep]), quality[keep]))
    if min(len(q) for _, q in curves) < 4:
        return float("nan")
    low = max(q.min() for _, q in curves)
    high = min(q.max() for _, q in curves)
    if not low < high:
        return float("nan")
    integrals = []
    for log_rate, quality in curves:
        fit = np.polyint(np.polyfit(quality, log_rate, 3))
        integrals.append((np.polyval(fit, high) - np.polyval(fit, low)) / (high - low))
    return float((math.exp(integrals[0] - integrals[1]) - 1) * 100)


def bd_rate_table(test: dict, others: dict[str, dict]) -> dict[str, float]:
    """BD-rate of a summarized curve against each of ``others`` ({name: bpp/psnr})."""
    ours = test["results"]
    return {
        name: bd_rate(ours["bpp"], ours["psnr-rgb"], curve["bpp"], curve["psnr"])
        for name, curve in others.items()
    }


def as_curve(summary: dict) -> dict:
    """A summarized result -> {"bpp", "psnr"} like an anchor."""
    return {"bpp": summary["results"]["bpp"], "psnr": summary["results"]["psnr-rgb"]}
