"""Curves from measurements: summaries, published anchors and BD-rates."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np


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

    The `bjontegaard` package's cubic fit (VCEG-M33: log rate as a cubic
    polynomial of PSNR, integrated over the overlapping PSNR range); negative
    means ``test`` needs fewer bits for the same quality. NaN when a curve has
    fewer than four points or the PSNR ranges do not overlap.
    """
    import bjontegaard

    curves = []
    for rate, quality in ((rate_test, psnr_test), (rate_anchor, psnr_anchor)):
        rate, quality = np.asarray(rate, float), np.asarray(quality, float)
        keep = np.isfinite(rate) & np.isfinite(quality) & (rate > 0)
        curves.append((rate[keep], quality[keep]))
    (test_rate, test_psnr), (anchor_rate, anchor_psnr) = curves
    low = max(test_psnr.min(initial=math.inf), anchor_psnr.min(initial=math.inf))
    high = min(test_psnr.max(initial=-math.inf), anchor_psnr.max(initial=-math.inf))
    if min(len(test_psnr), len(anchor_psnr)) < 4 or not low < high:
        return float("nan")
    with warnings.catch_warnings():  # it warns when the overlap is small
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(
            anchor_rate,
            anchor_psnr,
            test_rate,
            test_psnr,
            method="cubic",
            require_matching_points=False,
            min_overlap=0,
        )
    return float(value)


def bd_rate_table(test: dict, others: dict[str, dict]) -> dict[str, float]:
    """BD-rate of a summarized curve against each of ``others`` ({name: bpp/psnr})."""
    ours = test["results"]
    return {
        name: bd_rate(ours["bpp"], ours["psnr-rgb"], curve["bpp"], curve["psnr"])
        for name, curve in others.items()
    }


def rate_gaps(test: dict, anchor: dict) -> list[float]:
    """Each point of ``test`` against ``anchor`` at its own PSNR, in percent:
    its bpp over the anchor's (interpolated linearly in log bpp between the
    anchor's points), less one; negative means fewer bits. NaN where the
    anchor's curve does not reach that PSNR. Both curves {"bpp", "psnr"}.

    Where BD-rate averages over a range, this tells which qualities lead and
    which trail."""
    order = np.argsort(anchor["psnr"])
    anchor_psnr = np.asarray(anchor["psnr"], float)[order]
    anchor_log_bpp = np.log(np.asarray(anchor["bpp"], float)[order])
    gaps = []
    for bpp, psnr in zip(test["bpp"], test["psnr"], strict=True):
        if not anchor_psnr[0] <= psnr <= anchor_psnr[-1]:
            gaps.append(math.nan)
            continue
        anchor_bpp = math.exp(np.interp(psnr, anchor_psnr, anchor_log_bpp))
        gaps.append(100 * (bpp / anchor_bpp - 1))
    return gaps


def as_curve(summary: dict) -> dict:
    """A summarized result -> {"bpp", "psnr"} like an anchor."""
    return {"bpp": summary["results"]["bpp"], "psnr": summary["results"]["psnr-rgb"]}
