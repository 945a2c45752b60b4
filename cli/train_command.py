"""``hvae-compress train``: flags map one to one onto `models.TrainOptions`.

Every default comes from `TrainOptions` itself (``%(default)s`` in the help),
so the dataclass is their single source.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..models.options import FITTING_CROPS, TrainOptions, defaults
from .arguments import (
    float_list,
    int_list,
    model_name,
    non_negative_int,
    positive_float,
    positive_int,
    quality_list,
    share,
    unit_fraction,
)
from .paths import UsageError, check_output_folders


def add_train_parser(sub, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "train",
        parents=[common],
        help="train a model on folders of images",
        description="Train (or resume, or fine-tune) a model on folders of natural "
        "images: random crops after a random downscale, lambda and per-layer betas "
        "sampled per image. Runs on a CPU or a GPU; for several GPUs or machines "
        "launch it with 'torchrun --nproc_per_node N -m hvae_compress train ...'. "
        "Writes OUT/checkpoint.pt (resumable) and OUT/train_log.jsonl.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(**defaults())
    add = parser.add_argument
    add("data", nargs="+", metavar="DIR", help="folders of training images")
    add("--out", required=True, metavar="DIR", help="folder for checkpoints and logs")
    add("--model", metavar="PRESET", help="architecture preset of a new model")
    add("--steps", type=positive_int, help="train until this total step count")
    add("--batch-size", type=positive_int, help="images per step and process")
    add(
        "--crop",
        type=positive_int,
        metavar="PX",
        help="square crop size, a multiple of the model's top stride",
    )
    add(
        "--min-scale",
        type=unit_fraction,
        metavar="S",
        help="downscale each crop's source region by a random factor in [S, 1] "
        "(washes out JPEG artefacts; 1: crops at the photos' own resolution)",
    )
    add("--lr", type=positive_float, help="Adam learning rate")
    add("--warmup-steps", type=int, help="linear learning-rate warm-up")
    add(
        "--decay-steps",
        type=int,
        help="decay the learning rate linearly to 10%% over the last N steps",
    )
    add("--grad-clip", type=positive_float, help="gradient norm clip")
    add(
        "--ema-decay",
        type=float,
        help="decay of the weights' moving average, which is what codes",
    )
    add(
        "--lambda",
        dest="lmbda",
        type=positive_float,
        metavar="L",
        help="train at this fixed lambda (none: log-uniform over the model's range)",
    )
    add(
        "--extend-lambda",
        dest="extend_lmbda",
        type=positive_float,
        metavar="L",
        help="raise the top of the model's lambda range to L, on the same grid of "
        "codes, so that it learns higher qualities (none: keep its range)",
    )
    add(
        "--latent-layers",
        type=int_list,
        metavar="N_top,...,N_bottom",
        help="latent layers per level, top first (with --init: add layers after "
        "a level's own, each new one sending zeros at first; a level's first "
        "layers take their channels from --latent-channels; none: keep the "
        "model's or the preset's)",
    )
    add(
        "--latent-channels",
        type=int_list,
        metavar="C_top,...,C_bottom",
        help="latent channels per level, top first (with --init: widen the "
        "model's layers to these, the new channels starting unused; none: keep "
        "the model's or the preset's)",
    )
    add(
        "--decoder-blocks",
        type=int_list,
        metavar="N_top,...,N_bottom",
        help="residual blocks after each level's latent layers, top first (with "
        "--init: add blocks to the model's, each new one starting as the "
        "identity, or remove those whose loss changes its image least, for "
        "faster decoding; none: keep the model's or the preset's)",
    )
    add(
        "--encoder-blocks",
        type=int_list,
        metavar="N_top,...,N_bottom",
        help="the encoder's residual blocks per level, top first, before each "
        "level's features are taken (with --init: add blocks as --decoder-blocks "
        "does; they cost encoding time only)",
    )
    add(
        "--widths",
        type=int_list,
        metavar="C_top,...,C_bottom",
        help="feature channels per level, top first (with --init: narrow the "
        "model to these, each at most its own, for faster coding: each feature "
        "map keeps the channels that predict its others best, and the layers "
        f"reading them are refitted, on {FITTING_CROPS} training crops; it needs "
        "training after; none: keep the model's or the preset's)",
    )
    add(
        "--scale-activation-units",
        type=int,
        metavar="N",
        help="top of the exact scale network's activation grid, in units: 127 "
        "(7 bits) lets coding run its convolutions in int8, exact on every CPU "
        "and several times faster where it has VNNI or AMX; with --init or "
        "--resume the model switches to it and fine-tunes (none: keep the "
        "model's or the preset's, 255)",
    )
    add(
        "--layer-weights",
        type=float_list,
        metavar="W_top,...,W_bottom",
        help="train with these fixed per-layer betas (none: mostly 1, a share random)",
    )
    add(
        "--random-beta-share",
        type=share,
        metavar="S",
        help="share of images whose betas are drawn at random per layer",
    )
    add(
        "--top-lambda-share",
        type=share,
        metavar="S",
        help="share of images whose lambda is drawn from the upper half of the "
        "range (the high qualities) instead of the whole range",
    )
    add(
        "--rounded-latents",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="the decoder sees the latents rounded as coding gives them "
        "(straight-through gradients; the default) or, with --no-rounded-latents, "
        "noisy; the rates always price the noisy ones",
    )
    add(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="bf16 autocast for the networks (rates always in fp32) or plain fp32; "
        "auto picks bf16 where the hardware computes it natively",
    )
    add(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        # The parser's default (True) applies; help then shows no misleading default.
        default=argparse.SUPPRESS,
        help="keep feature maps in the plain layout (channels-last is faster on CPUs)",
    )
    add("--device", choices=["cpu", "cuda", "auto"], help="training device")
    add("--workers", type=int, help="data-loader worker processes")
    add(
        "--average-every",
        type=non_negative_int,
        metavar="N",
        help="with several processes (torchrun): train each on its own share of "
        "the images and average their weights every N steps (local SGD: no "
        "exchange per step; on a CPU, one single-threaded process per core "
        "computes more crops per second than one process on all cores, but "
        "in the model card's A/B it learned no more per CPU-hour); 0: "
        "all-reduce the gradients every step",
    )
    add("--seed", type=int, help="random seed")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a run: weights, EMA, optimizer and step from CKPT",
    )
    start.add_argument(
        "--init",
        metavar="CKPT",
        help="fine-tune: start from CKPT's weights with a fresh optimizer",
    )
    add(
        "--train-only",
        metavar="MODULE",
        help="train only the parameters under this module name, e.g. "
        "scale_network, keeping the rest fixed (none: train everything)",
    )
    add("--checkpoint-every", type=positive_int, help="steps between checkpoints")
    add(
        "--holdout",
        type=int,
        metavar="N",
        help="hold out N of the training images (those whose file names hash "
        "lowest: the same choice on every machine) and validate on them",
    )
    add(
        "--val-dir",
        metavar="DIR",
        help="folder of validation images (monitoring only)",
    )
    add("--val-every", type=positive_int, help="steps between validations")
    add(
        "--val-qualities",
        type=quality_list,
        metavar="Q,...",
        help="qualities to validate at",
    )
    add("--log-every", type=positive_int, help="steps between log lines")
    add(
        "--export",
        metavar="PATH",
        default=None,
        help="at the end, also write a coding model (fp16 EMA weights + entropy "
        "tables, qualities calibrated on the training images) to PATH, ready "
        "for --model",
    )
    add(
        "--export-name",
        type=model_name,
        metavar="NAME",
        default=None,
        help="the exported model's name, which its files record and decoders "
        "find it by (default: the trained model's, e.g. base); give a model "
        "reshaped from another (--widths) its own",
    )
    parser.set_defaults(run=run_train)


def run_train(args) -> int:
    from ..models.train import train

    if args.export_name and not args.export:
        raise UsageError("--export-name names what --export writes: give --export too")
    # The run makes its --out folder; any other folder for the export must exist.
    if args.export and Path(args.export).resolve().parent != Path(args.out).resolve():
        check_output_folders([args.export])
    names = [f.name for f in dataclasses.fields(TrainOptions)]
    summary = train(TrainOptions(**{name: getattr(args, name) for name in names}))
    if args.export and summary.get("rank", 0) == 0:
        from ..codec import export_model
        from ..files import list_images

        export_model(
            f"{args.out}/checkpoint.pt",
            args.export,
            calibration_images=list_images(args.data),
            name=args.export_name,
        )
    if not args.quiet and summary.get("rank", 0) == 0:
        print(json.dumps(summary, indent=2))
    return 0
