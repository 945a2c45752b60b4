"""What an evaluation produces: result files, plots and the printed tables."""

from __future__ import annotations

import csv as csv_format
import io
import json
import math
from pathlib import Path

import numpy as np

from ..files import write_atomic
from . import plots
from .curves import as_curve
from .run import Evaluation


def write_outputs(
    result: Evaluation,
    out: str | None = None,
    csv: str | None = None,
    plot: str | None = None,
) -> None:
    """The result JSONs (CompressAI format), the per-image CSV and the plots."""
    records, summaries, ours = result.records, result.summaries, result.model
    if out:
        out = Path(out)
        _write_json(out, summaries[ours])
        for name, summary in summaries.items():
            if name != ours:
                _write_json(out.with_name(f"{out.stem}-{name}.json"), summary)
        settings = summaries[ours]["settings"]
        gaps = {
            name: {
                setting: None if math.isnan(gap) else gap
                for setting, gap in zip(settings, values, strict=True)
            }
            for name, values in result.rate_gaps.items()
        }
        _write_json(
            out.with_name(f"{out.stem}-bd-rate.json"),
            {
                "test": ours,
                "bd_rate_percent": result.bd_rates,
                "rate_gap_percent": gaps,
            },
        )
    if csv:
        _write_csv(Path(csv), records)
    if plot:
        plot = Path(plot)
        curves = {name: as_curve(s) for name, s in summaries.items()}
        plots.plot_rd(curves, result.anchors, plot)
        full = _model_records(records, ours)
        by_setting = _group(full, "setting")
        plots.plot_layers(
            list(by_setting),
            [_mean_list(rs, "layer_bpp") for rs in by_setting.values()],
            plot.with_name(f"{plot.stem}-layers.png"),
        )
        if len({tuple(r["layer_weights"]) for r in full}) > 1:
            coarse, fine, quality = rate_space(full)
            plots.plot_rate_space(
                coarse, fine, quality, plot.with_name(f"{plot.stem}-rate-space.png")
            )
        if any(r.get("progressive") for r in records):
            plots.plot_progressive(
                progressive_curves(records, ours),
                plot.with_name(f"{plot.stem}-progressive.png"),
            )


def _write_json(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2, default=_json_default)
    write_atomic(path, text.encode(), overwrite=True)


def _json_default(value):
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _write_csv(path: Path, records: list[dict]) -> None:
    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv_format.DictWriter(buffer, columns)
    writer.writeheader()
    for record in records:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list) else v for k, v in record.items()}
        )
    write_atomic(path, buffer.getvalue().encode(), overwrite=True)


def _model_records(records, ours):
    return [r for r in records if r["codec"] == ours and not r.get("progressive")]


def _group(records, key) -> dict[str, list[dict]]:
    groups = {}
    for record in records:
        groups.setdefault(record[key], []).append(record)
    return groups


def _mean_list(records, key) -> list[float]:
    return list(np.mean([r[key] for r in records], axis=0))


def _mean(records, key) -> float:
    return sum(r[key] for r in records) / len(records)


def rate_space(records):
    """Per setting: bpp of the top half of the layers, of the bottom half, PSNR."""
    coarse, fine, quality = [], [], []
    for group in _group(records, "setting").values():
        layers = _mean_list(group, "layer_bpp")
        split = (len(layers) + 1) // 2
        coarse.append(sum(layers[:split]))
        fine.append(sum(layers[split:]))
        quality.append(_mean(group, "psnr"))
    return coarse, fine, quality


def progressive_curves(records, ours) -> dict[str, dict]:
    curves = {}
    model = [r for r in records if r["codec"] == ours]
    for setting, group in _group(model, "setting").items():
        by_k = _group(group, "layers_decoded")
        ks = sorted(by_k)
        curves[setting] = {
            "bpp": [_mean(by_k[k], "bpp") for k in ks],
            "psnr": [_mean(by_k[k], "psnr") for k in ks],
            "layers": ks,
        }
    return curves


def format_report(result: Evaluation) -> str:
    """The tables `hvae-compress eval` prints."""
    records, summaries, ours = result.records, result.summaries, result.model
    lines = []
    add = lines.append
    for name, summary in summaries.items():
        results = summary["results"]
        add(f"\n{name}: {summary['description']}")
        if name in result.reused:
            add(f"  (measured by an earlier run: {result.reused[name]})")
        add(
            f"  {'setting':<24} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} "
            f"{'dec s':>7}"
        )
        for i, setting in enumerate(summary["settings"]):
            add(
                f"  {setting:<24} {results['bpp'][i]:7.4f} "
                f"{results['psnr-rgb'][i]:7.3f} "
                f"{results['ms-ssim-rgb'][i]:8.5f} {results['encoding_time'][i]:7.3f} "
                f"{results['decoding_time'][i]:7.3f}"
            )
    full = _model_records(records, ours)
    add(f"\n{ours}: bits per pixel of each latent layer (top first), estimated vs file")
    for setting, group in _group(full, "setting").items():
        layers = " ".join(f"{v:.4f}" for v in _mean_list(group, "layer_bpp"))
        add(
            f"  {setting:<24} [{layers}]  file {_mean(group, 'bpp'):.4f}  "
            f"model estimate {_mean(group, 'estimated_bpp'):.4f}"
        )
    progressive = progressive_curves(records, ours)
    if any(len(c["layers"]) > 1 for c in progressive.values()):
        add(f"\n{ours}: progressive decoding, bpp / PSNR with the top K layers")
        for setting, curve in progressive.items():
            points = "  ".join(
                f"K={k}: {b:.3f}/{p:.2f}"
                for k, b, p in zip(
                    curve["layers"], curve["bpp"], curve["psnr"], strict=True
                )
            )
            add(f"  {setting:<24} {points}")
    if result.rate_gaps:
        add(
            f"\n{ours}: bpp against each baseline's at the same PSNR, in % "
            "(negative = fewer bits; - where its curve does not reach)"
        )
        names = list(result.rate_gaps)
        add(f"  {'setting':<24} " + " ".join(f"{n:>9}" for n in names))
        for i, setting in enumerate(summaries[ours]["settings"]):
            gaps = (result.rate_gaps[n][i] for n in names)
            cells = ("-" if math.isnan(g) else f"{g:+.1f}" for g in gaps)
            add(f"  {setting:<24} " + " ".join(f"{c:>9}" for c in cells))
    if result.bd_rates:
        add(f"\nBD-rate of {ours} (negative = fewer bits at equal PSNR)")
        for name, value in result.bd_rates.items():
            add(f"  vs {name:<34} {value:+8.2f} %")
    return "\n".join(lines)
