"""Training loop: random rate settings, EMA, checkpoints, resume, DDP.

Runs on a CPU (the ``tiny`` preset in tests) and on CUDA alike; launched with
``torchrun --nproc_per_node N`` it trains with DistributedDataParallel (NCCL on
GPUs, gloo on CPUs), or with ``average_every`` as local SGD: each process steps
on its own and all average their weights every so many steps. Rank 0 alone
writes checkpoints, logs and progress.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..files import list_images, read_rgb
from .checkpoint import (
    checkpoint_dict,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .config import HVAEConfig, get_config
from .data import RandomCrops, split_holdout, to_tensor
from .exact import native_bf16
from .grow import (
    add_latent_layers,
    deepen_decoder,
    deepen_encoder,
    widen_latents,
    with_latent_layers,
)
from .hvae import HierarchicalVAE, build_model, pad_to_stride, to_pixels_uint8
from .loss import RateDistortionLoss, psnr
from .narrow import narrow_widths, shorten_decoder
from .options import FITTING_CROP_MAX, FITTING_CROPS, TrainOptions


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Join the process group that torchrun describes in the environment, if any."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    where = (
        torch.device(device, local_rank) if device == "cuda" else torch.device("cpu")
    )
    return Distributed(rank, world_size, where)


@torch.no_grad()
def mean_over_processes(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the process group."""
    # One flat buffer: a single all-reduce, whatever the tensors' memory layout.
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    means = flat.split([t.numel() for t in tensors])
    for tensor, mean in zip(tensors, means, strict=True):
        tensor.copy_(mean.view(tensor.shape))


def sample_rate_codes(
    batch: int, model: HierarchicalVAE, opts: TrainOptions, device
) -> torch.Tensor:
    """Per-image rate codes (B, 1 + L): lambda log-uniform over the range (a
    share of images over its upper half only), betas mostly 1 with a share
    drawn log-uniformly per layer."""
    config, num_layers = model.config, model.num_layers
    if opts.lmbda is not None:
        lmbda = torch.full((batch, 1), config.lmbda_code(opts.lmbda))
    else:
        top = config.lmbda_top_code
        lmbda = torch.randint(0, top + 1, (batch, 1))
        if opts.top_lambda_share:  # drawn only when asked: runs replay as before
            upper = torch.randint(top // 2, top + 1, (batch, 1))
            chosen = torch.rand(batch, 1) < opts.top_lambda_share
            lmbda = torch.where(chosen, upper, lmbda)
    if opts.layer_weights is not None:
        fixed = [config.beta_code(b) for b in opts.layer_weights]
        betas = torch.tensor(fixed).expand(batch, num_layers)
    else:
        low, high = config.beta_code_range
        random_betas = torch.randint(low, high + 1, (batch, num_layers))
        # A random share of images, and within them a random half of the layers.
        chosen = torch.rand(batch, 1) < opts.random_beta_share
        chosen = chosen & (torch.rand(batch, num_layers) < 0.5)
        betas = torch.where(chosen, random_betas, 0)
    return torch.cat([lmbda, betas], dim=1).to(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> bf16 where the hardware computes it natively, else fp32.

    Without native bf16 (CPUs lacking AVX-512-BF16 or AMX), oneDNN emulates it,
    and a training step runs 25x slower than in fp32 (benchmarks/train_speed.py).
    """
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def learning_rate(step: int, opts: TrainOptions, warmup_from: int = 0) -> float:
    """Linear warm-up, constant, then linear decay to 10 % over the last decay_steps.

    The warm-up starts at ``warmup_from``: a run initialized from trained weights
    starts a fresh optimizer, whose first steps need it as much as a new model's.
    """
    warmup = min(1.0, (step - warmup_from + 1) / max(1, opts.warmup_steps))
    decay_start = opts.steps - opts.decay_steps
    decay = 1.0
    if opts.decay_steps and step >= decay_start:
        decay = 1.0 - 0.9 * (step - decay_start) / opts.decay_steps
    return opts.lr * warmup * decay


@torch.inference_mode()
def validate(
    model: HierarchicalVAE, images: list[torch.Tensor], qualities: list[float]
) -> list[dict]:
    """Estimated bpp (from the likelihoods) and PSNR per quality, mean over images."""
    model.eval()
    device = next(model.parameters()).device
    stride = model.config.top_stride
    results = []
    for quality in qualities:
        rate = torch.zeros(1, 1 + model.num_layers, dtype=torch.int64, device=device)
        rate[0, 0], rate[0, 1:] = model.config.quality_rate(quality)
        bpps, psnrs = [], []
        for x in images:
            x = x.to(device)[None]
            height, width = x.shape[-2:]
            padded = pad_to_stride(x, stride)
            out = model(padded, rate)
            bits = sum(-torch.log2(p).sum() for p in out["likelihoods"].values())
            pixels = to_pixels_uint8(out["x_hat"][..., :height, :width])
            x_hat = pixels.float().div(255)
            bpps.append(bits.item() / (height * width))
            psnrs.append(psnr(F.mse_loss(x_hat, x).item()))
        results.append(
            {
                "quality": quality,
                "bpp": sum(bpps) / len(bpps),
                "psnr": sum(psnrs) / len(psnrs),
            }
        )
    return results


def _load_start(opts: TrainOptions):
    """The model, its EMA, the step to start from, the checkpoint to resume (if
    any) and the training record so far (steps and time add up across runs)."""
    if opts.resume:
        checkpoint = _configured(read_checkpoint(opts.resume), opts)
        model = model_from_checkpoint(checkpoint)
        _check_resumed_shape(model.config, opts)
        ema = model_from_checkpoint(checkpoint, "ema_state_dict")
        info = checkpoint.get("train_info", {})
        return model, ema, checkpoint["step"], checkpoint, info
    if opts.init:
        # Fine-tuning: weights (the EMA, where present) without the optimizer state.
        checkpoint = read_checkpoint(opts.init, upgrade=True)
        checkpoint = _configured(checkpoint, opts)
        weights = "ema_state_dict" if "ema_state_dict" in checkpoint else "state_dict"
        model = model_from_checkpoint(checkpoint, weights)
        if opts.widths:
            model = narrow_widths(model, opts.widths, _fitting_crops(opts))
        if opts.latent_layers:
            model = add_latent_layers(model, opts.latent_layers, opts.latent_channels)
        if opts.latent_channels:
            model = widen_latents(model, opts.latent_channels)
        if opts.decoder_blocks:
            model = _reblocked(model, opts)
        if opts.encoder_blocks:
            model = deepen_encoder(model, opts.encoder_blocks)
        info = checkpoint.get("train_info", {})
        return model, copy.deepcopy(model), checkpoint["step"], None, info
    config = _with_config_options(get_config(opts.model), opts)
    if opts.latent_layers:
        config = with_latent_layers(config, opts.latent_layers, opts.latent_channels)
    if opts.latent_channels:
        config = replace(config, latent_channels=tuple(opts.latent_channels))
    if opts.decoder_blocks:
        config = replace(config, decoder_blocks=tuple(opts.decoder_blocks))
    if opts.encoder_blocks:
        config = replace(config, encoder_blocks=tuple(opts.encoder_blocks))
    if opts.widths:
        config = replace(config, widths=tuple(opts.widths))
    model = build_model(config)
    return model, copy.deepcopy(model), 0, None, {}


def _reblocked(model, opts: TrainOptions):
    """The model with ``opts.decoder_blocks`` per level: blocks removed where
    it has more (for speed), then added where it has fewer."""
    own, wanted = model.config.decoder_blocks, tuple(opts.decoder_blocks)
    fewer = tuple(map(min, own, wanted))
    if len(wanted) == len(own) and fewer != own:  # else deepen_decoder says why
        model = shorten_decoder(model, fewer, _fitting_crops(opts))
    return deepen_decoder(model, opts.decoder_blocks)


def _check_resumed_shape(config, opts: TrainOptions) -> None:
    """A resumed run's optimizer state fits only the shapes it was saved with."""
    shapes = (
        "latent_layers",
        "latent_channels",
        "decoder_blocks",
        "encoder_blocks",
        "widths",
    )
    for name in shapes:
        wanted = getattr(opts, name)
        if wanted and getattr(config, name) != tuple(wanted):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"a resumed run keeps its {name.replace('_', ' ')}; "
                f"reshape a model with --init and {flag}"
            )


def _fitting_crops(opts: TrainOptions) -> torch.Tensor:
    """FITTING_CROPS crops of the training images, the same for the same seed,
    of at most FITTING_CROP_MAX px."""
    torch.manual_seed(opts.seed)
    paths = list_images(opts.data)
    chosen = [paths[i] for i in torch.randperm(len(paths))[:FITTING_CROPS]]
    crops = RandomCrops(chosen, min(opts.crop, FITTING_CROP_MAX), opts.min_scale)
    return torch.stack([crops[i] for i in range(len(chosen))])


def _with_config_options(config: HVAEConfig, opts: TrainOptions) -> HVAEConfig:
    """The config with the options that change it but no weight's shape: the
    lambda range raised to ``extend_lmbda``, the scale network's activation
    grid set to ``scale_activation_units``."""
    if opts.extend_lmbda is not None:
        config = config.extended_to(opts.extend_lmbda)
    if opts.scale_activation_units:
        config = replace(config, scale_activation_units=opts.scale_activation_units)
    return config


def _configured(checkpoint: dict, opts: TrainOptions) -> dict:
    """The checkpoint with its config under `_with_config_options`."""
    config = HVAEConfig.from_dict(checkpoint["config"])
    checkpoint["config"] = _with_config_options(config, opts).to_dict()
    return checkpoint


def _machine_seconds() -> float:
    """This process's CPU time over its threads: the seconds the training kept
    the machine busy. Unlike wall time it stops while the run is paused
    (SIGSTOP) or waits for other work beside it."""
    return time.process_time() / torch.get_num_threads()


def _batches(loader, sampler):
    """Endless batches, reshuffling every epoch."""
    for epoch in itertools.count():
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader


def _make_loader(paths: list[Path], opts: TrainOptions, env: Distributed):
    data = RandomCrops(paths, opts.crop, opts.min_scale)
    if env.world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            data, env.world_size, env.rank, seed=opts.seed
        )
    else:
        sampler = torch.utils.data.RandomSampler(data)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=opts.batch_size,
        sampler=sampler,
        num_workers=opts.workers,
        drop_last=len(data) >= opts.batch_size * env.world_size,
        persistent_workers=opts.workers > 0,
        pin_memory=env.device.type == "cuda",
    )
    return _batches(loader, sampler)


def _validation_sets(held_out: list[Path], val_dir: str | None) -> dict:
    """Named lists of validation images: the held-out training images
    ("holdout") and the images of ``val_dir`` (named after the folder)."""
    sets = {}
    if held_out:
        sets["holdout"] = [to_tensor(read_rgb(p)) for p in held_out]
    if val_dir:
        images = [to_tensor(read_rgb(p)) for p in list_images([val_dir])]
        sets[Path(val_dir).resolve().name] = images
    return sets


class TrainLog:
    """Appends one JSON object per line to out/train_log.jsonl (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool):
        self.path = out / "train_log.jsonl"
        self.enabled = enabled

    def write(self, **record) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Trainer:
    """One training run: model, EMA, optimizer, data, log; `run` drives the steps."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.env = setup_distributed(opts.device)
        self.out = Path(opts.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.ema, self.start_step, checkpoint, info = _load_start(opts)
        # A resumed run keeps its optimizer state and needs no second warm-up.
        self.warmup_from = 0 if checkpoint is not None else self.start_step
        stride = self.model.config.top_stride
        if opts.crop % stride:
            raise ValueError(
                f"crop must be a multiple of the model's top stride {stride}"
            )
        # Every rank and every resumed segment draws different noise and crops.
        torch.manual_seed(opts.seed + 1_000_003 * self.env.rank + self.start_step)
        # channels_last: oneDNN's convolutions run faster on CPUs in this layout.
        layout = torch.channels_last if opts.channels_last else torch.contiguous_format
        self.layout = layout
        self.model.to(self.env.device, memory_format=layout).train()
        self.model.rounded_latents = opts.rounded_latents
        self.ema.to(self.env.device, memory_format=layout).eval().requires_grad_(False)
        self.precision = resolve_precision(opts.precision, self.env.device)
        self.optimizer = torch.optim.Adam(self._trained_parameters(), lr=opts.lr)
        self.info = {"skipped_steps": 0, "train_seconds": 0.0, **info}
        self.info["device"] = str(self.env.device)
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.wrapped = self.model
        if self.env.world_size > 1 and not self.local_steps():
            self.wrapped = torch.nn.parallel.DistributedDataParallel(self.model)
        self.criterion = RateDistortionLoss()
        self.trained, held_out = split_holdout(list_images(opts.data), opts.holdout)
        self.batches = _make_loader(self.trained, opts, self.env)
        self.val_sets = {}
        if self.env.is_main:
            self.val_sets = _validation_sets(held_out, opts.val_dir)
        self.log = TrainLog(self.out, self.env.is_main)

    def _trained_parameters(self) -> list[torch.nn.Parameter]:
        """All parameters, or with ``train_only`` those under that module name."""
        if self.opts.train_only is None:
            return list(self.model.parameters())
        prefix = self.opts.train_only + "."
        chosen = []
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name.startswith(prefix))
            if parameter.requires_grad:
                chosen.append(parameter)
        if not chosen:
            raise ValueError(f"no parameters under {self.opts.train_only!r}")
        return chosen

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.opts, self.warmup_from)

    def step(self, step: int) -> tuple[dict, torch.Tensor] | None:
        """One optimization step; None if its gradients were not finite (skipped)."""
        x = next(self.batches).to(
            self.env.device, non_blocking=True, memory_format=self.layout
        )
        rate = sample_rate_codes(x.shape[0], self.model, self.opts, self.env.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        bf16 = self.precision == "bf16"
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=bf16):
            output = self.wrapped(x, rate)
        # float32: rates outside autocast
        result = self.criterion(output, x, *self.model.rate_values(rate))
        self.optimizer.zero_grad(set_to_none=True)
        result["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.opts.grad_clip
        )
        if not torch.isfinite(grad_norm):
            # With DDP the same decision on every rank (the gradients are
            # all-reduced); with local steps each rank's own.
            self.info["skipped_steps"] += 1
            return None
        self.optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(
                self.ema.parameters(), self.model.parameters(), strict=True
            ):
                p_ema.lerp_(p, 1 - self.opts.ema_decay)
        return result, grad_norm

    def record(self, step: int, result: dict, grad_norm: torch.Tensor) -> dict:
        """Log one line of training statistics; returns it."""
        line = {
            "step": step,
            "loss": result["loss"].item(),
            "bpp": result["bpp"].item(),
            "per_layer_bpp": [round(v, 5) for v in result["per_layer_bpp"].tolist()],
            "psnr": psnr(result["mse"].item()),
            "grad_norm": grad_norm.item(),
            "lr": self.learning_rate(step - 1),
        }
        self.log.write(**line)
        return line

    def local_steps(self) -> bool:
        """Whether the processes step on their own (local SGD) between averages."""
        return self.env.world_size > 1 and self.opts.average_every > 0

    def average_weights(self) -> None:
        """Every process takes the mean of all processes' weights and EMAs."""
        mean_over_processes([*self.model.parameters(), *self.ema.parameters()])

    def save(self, step: int) -> None:
        if self.local_steps():
            self.average_weights()  # a collective: every rank saves at the same steps
        if self.env.is_main:
            self.ema.refresh_grids()
            state = checkpoint_dict(
                self.model,
                step,
                ema_state_dict=self.ema.state_dict(),
                optimizer=self.optimizer.state_dict(),
                train_info=self.info,
            )
            save_checkpoint(self.out / "checkpoint.pt", state)

    def validate(self, step: int) -> dict[str, list[dict]]:
        """Validate the EMA on every validation set; log and return the results."""
        self.ema.refresh_grids()
        qualities = self.opts.val_qualities
        results = {
            name: validate(self.ema, images, qualities)
            for name, images in self.val_sets.items()
        }
        self.log.write(event="validation", step=step, sets=results)
        return results

    def run(self) -> dict:
        opts, env = self.opts, self.env
        self.log.write(
            event="start",
            step=self.start_step,
            options=asdict(opts),
            world_size=env.world_size,
        )
        speaks = env.is_main and not opts.quiet
        # A progress bar on a terminal; in a log file, a plain line per record.
        on_terminal = sys.stderr.isatty()
        progress = tqdm(
            total=opts.steps,
            initial=self.start_step,
            desc="train",
            disable=not (speaks and on_terminal),
            dynamic_ncols=True,
        )
        last, started = {}, _machine_seconds()
        for step in range(self.start_step + 1, opts.steps + 1):  # 1-based: steps done
            outcome = self.step(step - 1)
            progress.update(1)
            if outcome and (step % opts.log_every == 0 or step == opts.steps):
                last = self.record(step, *outcome)
                layers = "/".join(f"{v:.3f}" for v in last["per_layer_bpp"])
                line = (
                    f"loss {last['loss']:.3f} bpp {last['bpp']:.3f} [{layers}] "
                    f"PSNR {last['psnr']:.2f}"
                )
                progress.set_postfix_str(line)
                if speaks and not on_terminal:
                    print(f"step {step}: {line}", file=sys.stderr, flush=True)
            saving = step % opts.checkpoint_every == 0
            if self.local_steps() and step % opts.average_every == 0 and not saving:
                self.average_weights()  # (saving averages them too)
            if saving:
                self.info["train_seconds"] += _machine_seconds() - started
                started = _machine_seconds()
                self.save(step)
            if self.val_sets and step % opts.val_every == 0:
                self.validate(step)
        progress.close()
        self.info["train_seconds"] += _machine_seconds() - started
        self.save(opts.steps)
        summary = {"step": opts.steps, "rank": env.rank, "last": last, **self.info}
        if self.val_sets:
            summary["validation"] = self.validate(opts.steps)
        self.log.write(event="end", **summary)
        if env.world_size > 1:
            dist.barrier()
            dist.destroy_process_group()
        return summary


def train(opts: TrainOptions) -> dict:
    """Train (or resume, or fine-tune) a model; returns a summary of the run.

    Checkpoints go to ``out/checkpoint.pt`` (the latest, with optimizer and EMA
    state) and one JSON line per event to ``out/train_log.jsonl``.
    """
    return Trainer(opts).run()
