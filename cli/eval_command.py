"""``hvae-compress eval``: measured RD curves, BD-rates, per-layer and progressive."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .arguments import add_model_options, float_list, positive_int, quality_list

BASELINES = ("jpeg", "jpeg444", "webp", "avif", "jpeg2000")


def add_eval_parser(sub, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "eval",
        parents=[common],
        help="measure rate-distortion curves against baselines",
        description="Encode every image to a real .hvae file and decode it back at "
        "each setting; report bpp (file bits / pixels), PSNR and MS-SSIM on RGB, "
        "timings, the bits of every latent layer, BD-rates against classical codecs "
        "measured in the same run and against published curves.",
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="DIR_OR_FILE", help="images, or folders of images")
    rates = parser.add_mutually_exclusive_group()
    rates.add_argument(
        "--qualities",
        type=quality_list,
        default=None,
        metavar="Q1,Q2,...",
        help="qualities to sweep (default: 5,20,40,60,80,95)",
    )
    rates.add_argument(
        "--lambdas",
        type=float_list,
        default=None,
        metavar="L1,L2,...",
        help="lambdas to sweep instead of qualities",
    )
    add(
        "--layer-weights",
        type=float_list,
        nargs="+",
        default=None,
        metavar="W_top,...",
        help="one or more per-layer weight settings (top layer first); several "
        "settings map the rate space: bits in coarse vs fine layers",
    )
    add(
        "--baselines",
        default="",
        metavar="NAMES",
        help=f"classical codecs to measure, comma-separated from {','.join(BASELINES)} "
        "(default: none)",
    )
    add(
        "--anchors",
        metavar="DIR",
        default=None,
        help="folder of published results JSONs to plot and compare (BD-rate) against",
    )
    add(
        "--out",
        metavar="JSON",
        default=None,
        help="results in CompressAI's format; baselines go to <stem>-<codec>.json and "
        "the BD-rate table to <stem>-bd-rate.json beside it",
    )
    add("--csv", metavar="CSV", default=None, help="one row per image and setting")
    add(
        "--plot",
        metavar="PNG",
        default=None,
        help="PSNR vs bpp plot; also <stem>-layers.png and, where measured, "
        "<stem>-rate-space.png and <stem>-progressive.png",
    )
    add(
        "--progressive",
        action="store_true",
        help="also decode only the top K layers, for every K",
    )
    add("--no-ms-ssim", action="store_true", help="skip MS-SSIM (faster)")
    add(
        "--workers",
        type=positive_int,
        default=1,
        help="threads for the classical codecs (default: 1)",
    )
    add_model_options(parser)
    parser.set_defaults(run=run_eval)


def _settings(args):
    from codec.evaluate import DEFAULT_QUALITIES, RateSetting

    weights = [tuple(w) for w in args.layer_weights] if args.layer_weights else [None]
    if args.lambdas:
        return [
            RateSetting(lmbda=v, layer_weights=w) for w in weights for v in args.lambdas
        ]
    qualities = args.qualities or DEFAULT_QUALITIES
    return [RateSetting(quality=q, layer_weights=w) for w in weights for q in qualities]


def run_eval(args) -> int:
    from tqdm import tqdm

    import codec
    from codec import evaluate
    from models.data import list_images

    baselines = [b for b in args.baselines.split(",") if b]
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(
            f"unknown baselines {sorted(unknown)}; choose from {BASELINES}"
        )
    paths = list_images(args.inputs)
    settings = _settings(args)
    anchors = evaluate.load_anchors(args.anchors) if args.anchors else {}
    options = {"max_pixels": args.max_pixels} if args.max_pixels else {}
    model_codec = codec.Codec(args.model, args.device, **options)
    ms = not args.no_ms_ssim
    jobs = len(paths) * (
        len(settings) + sum(len(evaluate.CLASSICAL_CODECS[b].levels) for b in baselines)
    )
    with tqdm(total=jobs, unit="image", disable=args.quiet, desc="eval") as bar:
        records = evaluate.evaluate_model(
            model_codec, paths, settings, args.progressive, ms, bar.update
        )
        summaries = {
            model_codec.name: evaluate.summarize(
                records, model_codec.name, _describe(model_codec)
            )
        }
        for name in baselines:
            found = evaluate.evaluate_classical(
                name, paths, args.workers, ms, bar.update
            )
            records += found
            summaries[name] = evaluate.summarize(
                found, name, evaluate.CLASSICAL_CODECS[name].description
            )
    ours = summaries[model_codec.name]
    others = {
        name: evaluate.as_curve(s)
        for name, s in summaries.items()
        if name != model_codec.name
    }
    bd_rates = evaluate.bd_rate_table(ours, {**others, **anchors})
    _write_outputs(args, records, summaries, bd_rates, anchors, model_codec.name)
    if not args.quiet:
        _print_report(records, summaries, bd_rates, model_codec.name)
    return 0


def _describe(model_codec) -> str:
    identity = f"'{model_codec.name}' ({model_codec.fingerprint.hex()})"
    return f"hvae-compress model {identity}, measured on real files"


def _write_outputs(args, records, summaries, bd_rates, anchors, ours: str) -> None:
    from codec import evaluate, plots

    if args.out:
        out = Path(args.out)
        _write_json(out, summaries[ours])
        for name, summary in summaries.items():
            if name != ours:
                _write_json(out.with_name(f"{out.stem}-{name}.json"), summary)
        _write_json(
            out.with_name(f"{out.stem}-bd-rate.json"),
            {"test": ours, "bd_rate_percent": bd_rates},
        )
    if args.csv:
        _write_csv(Path(args.csv), records)
    if args.plot:
        plot = Path(args.plot)
        curves = {name: evaluate.as_curve(s) for name, s in summaries.items()}
        plots.plot_rd(curves, anchors, plot)
        full = _model_records(records, ours)
        by_setting = _group(full, "setting")
        plots.plot_layers(
            list(by_setting),
            [_mean_list(rs, "layer_bpp") for rs in by_setting.values()],
            plot.with_name(f"{plot.stem}-layers.png"),
        )
        if args.layer_weights and len(args.layer_weights) > 1:
            coarse, fine, quality = _rate_space(full)
            plots.plot_rate_space(
                coarse, fine, quality, plot.with_name(f"{plot.stem}-rate-space.png")
            )
        if args.progressive:
            plots.plot_progressive(
                _progressive_curves(records, ours),
                plot.with_name(f"{plot.stem}-progressive.png"),
            )


def _write_json(path: Path, content: dict) -> None:
    from codec.image_io import write_atomic

    text = json.dumps(content, indent=2, default=_json_default)
    write_atomic(path, text.encode(), overwrite=True)


def _json_default(value):
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _write_csv(path: Path, records: list[dict]) -> None:
    import csv
    import io

    from codec.image_io import write_atomic

    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
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
    import numpy as np

    return list(np.mean([r[key] for r in records], axis=0))


def _mean(records, key) -> float:
    return sum(r[key] for r in records) / len(records)


def _rate_space(records):
    """Per setting: bpp of the top half of the layers, of the bottom half, PSNR."""
    coarse, fine, quality = [], [], []
    for group in _group(records, "setting").values():
        layers = _mean_list(group, "layer_bpp")
        split = (len(layers) + 1) // 2
        coarse.append(sum(layers[:split]))
        fine.append(sum(layers[split:]))
        quality.append(_mean(group, "psnr"))
    return coarse, fine, quality


def _progressive_curves(records, ours) -> dict[str, dict]:
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


def _print_report(records, summaries, bd_rates, ours: str) -> None:
    for name, summary in summaries.items():
        results = summary["results"]
        print(f"\n{name}: {summary['description']}")
        print(
            f"  {'setting':<24} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} "
            f"{'dec s':>7}"
        )
        for i, setting in enumerate(summary["settings"]):
            print(
                f"  {setting:<24} {results['bpp'][i]:7.4f} "
                f"{results['psnr-rgb'][i]:7.3f} "
                f"{results['ms-ssim-rgb'][i]:8.5f} {results['encoding_time'][i]:7.3f} "
                f"{results['decoding_time'][i]:7.3f}"
            )
    full = _model_records(records, ours)
    print(
        f"\n{ours}: bits per pixel of each latent layer (top first), estimated vs file"
    )
    for setting, group in _group(full, "setting").items():
        layers = " ".join(f"{v:.4f}" for v in _mean_list(group, "layer_bpp"))
        print(
            f"  {setting:<24} [{layers}]  file {_mean(group, 'bpp'):.4f}  "
            f"model estimate {_mean(group, 'estimated_bpp'):.4f}"
        )
    progressive = _progressive_curves(records, ours)
    if any(len(c["layers"]) > 1 for c in progressive.values()):
        print(f"\n{ours}: progressive decoding, bpp / PSNR with the top K layers")
        for setting, curve in progressive.items():
            points = "  ".join(
                f"K={k}: {b:.3f}/{p:.2f}"
                for k, b, p in zip(
                    curve["layers"], curve["bpp"], curve["psnr"], strict=True
                )
            )
            print(f"  {setting:<24} {points}")
    if bd_rates:
        print(f"\nBD-rate of {ours} (negative = fewer bits at equal PSNR)")
        for name, value in bd_rates.items():
            print(f"  vs {name:<34} {value:+8.2f} %")
