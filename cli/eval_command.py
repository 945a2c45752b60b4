"""``hvae-compress eval``: measured RD curves, BD-rates, per-layer and progressive."""

from __future__ import annotations

import argparse

from .arguments import add_model_options, float_list, positive_int, quality_list
from .paths import check_output_folders

# The names of evaluation.CLASSICAL_CODECS, repeated here to keep --help light
# (a test checks they agree).
BASELINES = ("jpeg", "jpeg444", "webp", "avif", "avif420", "jpeg2000")


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
        "--baselines-from",
        metavar="JSON",
        default=None,
        help="take the --baselines curves from the <stem>-<codec>.json files that an "
        "earlier eval of the same images wrote beside its --out JSON, instead of "
        "measuring them again (they do not depend on the model; refused if that run "
        "recorded other images or library versions; their per-image rows are not "
        "in --csv)",
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
        "the BD-rate table (and each setting's bpp against the baselines' at the "
        "same PSNR) to <stem>-bd-rate.json beside it",
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
    from ..evaluation import DEFAULT_QUALITIES, RateSetting

    weights = [tuple(w) for w in args.layer_weights] if args.layer_weights else [None]
    if args.lambdas:
        return [
            RateSetting(lmbda=v, layer_weights=w) for w in weights for v in args.lambdas
        ]
    qualities = args.qualities or DEFAULT_QUALITIES
    return [RateSetting(quality=q, layer_weights=w) for w in weights for q in qualities]


def run_eval(args) -> int:
    from tqdm import tqdm

    from .. import codec, evaluation
    from ..files import list_images

    check_output_folders((args.out, args.csv, args.plot))
    baselines = [b for b in args.baselines.split(",") if b]
    paths = list_images(args.inputs)
    settings = _settings(args)
    options = {"max_pixels": args.max_pixels} if args.max_pixels else {}
    model = codec.Codec(args.model, args.device, precision=args.precision, **options)
    measured = [] if args.baselines_from else baselines
    jobs = evaluation.job_count(paths, settings, measured)
    with tqdm(total=jobs, unit="image", disable=args.quiet, desc="eval") as bar:
        result = evaluation.evaluate(
            model,
            paths,
            settings,
            baselines,
            args.anchors,
            args.progressive,
            not args.no_ms_ssim,
            args.workers,
            bar.update,
            args.baselines_from,
        )
    evaluation.write_outputs(result, args.out, args.csv, args.plot)
    if not args.quiet:
        print(evaluation.format_report(result))
    return 0
