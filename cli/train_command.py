"""``hvae-compress train``: flags map one to one onto `models.train.TrainOptions`."""

from __future__ import annotations

import argparse
import json

from .arguments import float_list, positive_float, positive_int, quality_list


def add_train_parser(sub, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "train",
        parents=[common],
        help="train a model on folders of images",
        description="Train (or resume, or fine-tune) a model on folders of natural "
        "images: random crops after a random downscale, lambda and per-layer betas "
        "sampled per image. Runs on a CPU or a GPU; for several GPUs or machines "
        "launch it with 'torchrun --nproc_per_node N -m cli train ...'. Writes "
        "OUT/checkpoint.pt "
        "(resumable) and OUT/train_log.jsonl.",
    )
    add = parser.add_argument
    add("data", nargs="+", metavar="DIR", help="folders of training images")
    add("--out", required=True, metavar="DIR", help="folder for checkpoints and logs")
    add(
        "--model",
        default="base",
        metavar="PRESET",
        help="architecture preset for a new model: tiny or base (default: base)",
    )
    add(
        "--steps",
        type=positive_int,
        default=100_000,
        help="train until this total step count (default: 100000)",
    )
    add(
        "--batch-size",
        type=positive_int,
        default=8,
        help="images per step and process (default: 8)",
    )
    add(
        "--crop",
        type=positive_int,
        default=256,
        metavar="PX",
        help="square crop size, a multiple of the model's top stride (default: 256)",
    )
    add(
        "--lr",
        type=positive_float,
        default=2e-4,
        help="Adam learning rate (default: 2e-4)",
    )
    add(
        "--warmup-steps",
        type=int,
        default=500,
        help="linear learning-rate warm-up (default: 500)",
    )
    add(
        "--decay-steps",
        type=int,
        default=0,
        help="decay the learning rate linearly to 10%% over the last N steps (default: "
        "0)",
    )
    add(
        "--grad-clip",
        type=positive_float,
        default=5.0,
        help="gradient norm clip (default: 5)",
    )
    add(
        "--ema-decay",
        type=float,
        default=0.999,
        help="decay of the weights' moving average, used for coding (default: 0.999)",
    )
    add(
        "--lambda",
        dest="lmbda",
        type=positive_float,
        default=None,
        metavar="L",
        help="train at this fixed lambda (default: log-uniform over the model's range)",
    )
    add(
        "--layer-weights",
        type=float_list,
        default=None,
        metavar="W_top,...,W_bottom",
        help="train with these fixed per-layer betas (default: mostly 1, a share "
        "random)",
    )
    add(
        "--random-beta-share",
        type=float,
        default=0.3,
        help="share of images whose betas are drawn at random per layer (default: 0.3)",
    )
    add(
        "--precision",
        choices=["bf16", "fp32"],
        default="bf16",
        help="bf16 autocast for the networks, rates always in fp32 (default: bf16)",
    )
    add(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="auto",
        help="training device (default: auto)",
    )
    add(
        "--workers",
        type=int,
        default=0,
        help="data-loader worker processes (default: 0)",
    )
    add("--seed", type=int, default=0, help="random seed (default: 0)")
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
        "--checkpoint-every",
        type=positive_int,
        default=1000,
        help="steps between checkpoints (default: 1000)",
    )
    add(
        "--val-dir",
        metavar="DIR",
        default=None,
        help="folder of validation images, e.g. Kodak (monitoring only; default: none)",
    )
    add(
        "--val-every",
        type=positive_int,
        default=2000,
        help="steps between validations (default: 2000)",
    )
    add(
        "--val-qualities",
        type=quality_list,
        default=[10.0, 50.0, 90.0],
        metavar="Q,...",
        help="qualities to validate at (default: 10,50,90)",
    )
    add(
        "--log-every",
        type=positive_int,
        default=50,
        help="steps between log lines (default: 50)",
    )
    add(
        "--export",
        metavar="PATH",
        default=None,
        help="at the end, also write a coding model (fp16 EMA weights + entropy "
        "tables) to PATH, ready for --model",
    )
    parser.set_defaults(run=run_train)


def run_train(args) -> int:
    from models.train import TrainOptions, train

    options = TrainOptions(
        data=args.data,
        out=args.out,
        model=args.model,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        decay_steps=args.decay_steps,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        lmbda=args.lmbda,
        layer_weights=args.layer_weights,
        random_beta_share=args.random_beta_share,
        precision=args.precision,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        resume=args.resume,
        init=args.init,
        checkpoint_every=args.checkpoint_every,
        val_dir=args.val_dir,
        val_every=args.val_every,
        val_qualities=args.val_qualities,
        log_every=args.log_every,
        quiet=args.quiet,
    )
    summary = train(options)
    if args.export and summary.get("rank", 0) == 0:
        from codec import export_model

        export_model(f"{args.out}/checkpoint.pt", args.export)
    if not args.quiet and summary.get("rank", 0) == 0:
        print(json.dumps(summary, indent=2))
    return 0
