"""Training options: one dataclass, the single source of their defaults.

Kept free of torch, so that the command line can build ``--help`` from it
without loading the networks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Training crops that narrowing (`--widths` with `--init`) picks channels and
# fits layers on: at the finest level of the base preset, 16 crops of 256 px
# fill the least-squares fits' rows; larger crops add nothing but memory (the
# layers' recorded maps grow with the crop's area), so --crop is capped there.
FITTING_CROPS = 16
FITTING_CROP_MAX = 256


@dataclass
class TrainOptions:
    """Everything a training run needs; the CLI maps its flags one to one."""

    data: list[str]
    out: str
    model: str = "base"
    steps: int = 100_000
    batch_size: int = 8
    crop: int = 256
    min_scale: float = 0.5
    lr: float = 2e-4
    warmup_steps: int = 500
    decay_steps: int = 0
    grad_clip: float = 5.0
    ema_decay: float = 0.999
    lmbda: float | None = None
    extend_lmbda: float | None = None
    latent_layers: list[int] | None = None
    latent_channels: list[int] | None = None
    decoder_blocks: list[int] | None = None
    encoder_blocks: list[int] | None = None
    widths: list[int] | None = None
    scale_activation_units: int | None = None
    layer_weights: list[float] | None = None
    random_beta_share: float = 0.3
    top_lambda_share: float = 0.0
    rounded_latents: bool = True
    precision: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    workers: int = 0
    average_every: int = 0
    seed: int = 0
    resume: str | None = None
    init: str | None = None
    train_only: str | None = None
    checkpoint_every: int = 1000
    holdout: int = 0
    val_dir: str | None = None
    val_every: int = 2000
    val_qualities: list[float] = field(default_factory=lambda: [10.0, 50.0, 90.0])
    log_every: int = 50
    quiet: bool = False


def defaults() -> dict:
    """Every option that has a default, with that default."""
    found = {}
    for f in dataclasses.fields(TrainOptions):
        if f.default is not dataclasses.MISSING:
            found[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            found[f.name] = f.default_factory()
    return found
