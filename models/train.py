"""Training loop: random rate settings, EMA, checkpoints, resume, DDP.

Runs on a CPU (the ``tiny`` preset in tests) and on CUDA alike; launched with
``torchrun --nproc_per_node N`` it trains with DistributedDataParallel (NCCL on
GPUs, gloo on CPUs). Rank 0 alone writes checkpoints, logs and progress.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import (
    checkpoint_dict,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .data import RandomCrops, list_images, load_rgb, to_tensor
from .hvae import HierarchicalVAE, build_model
from .loss import RateDistortionLoss, psnr


@dataclass
class TrainOptions:
    """Everything a training run needs; the CLI maps its flags one to one."""

    data: list[str]
    out: str
    model: str = "base"
    steps: int = 100_000
    batch_size: int = 8
    crop: int = 256
    lr: float = 2e-4
    warmup_steps: int = 500
    decay_steps: int = 0
    grad_clip: float = 5.0
    ema_decay: float = 0.999
    lmbda: float | None = None
    layer_weights: list[float] | None = None
    random_beta_share: float = 0.3
    precision: str = "bf16"
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    resume: str | None = None
    init: str | None = None
    checkpoint_every: int = 1000
    val_dir: str | None = None
    val_every: int = 2000
    val_qualities: list[float] = field(default_factory=lambda: [10.0, 50.0, 90.0])
    log_every: int = 50
    quiet: bool = False


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


def sample_rate_settings(
    batch: int, model: HierarchicalVAE, opts: TrainOptions, device
):
    """Per-image lambda (log-uniform) and betas (mostly 1, a share random per layer)."""
    config, num_layers = model.config, model.num_layers
    if opts.lmbda is not None:
        lmbda = torch.full((batch,), opts.lmbda)
    else:
        log_lo, log_hi = math.log(config.lmbda_min), math.log(config.lmbda_max)
        lmbda = torch.empty(batch).uniform_(log_lo, log_hi).exp()
    if opts.layer_weights is not None:
        betas = torch.tensor(opts.layer_weights).expand(batch, num_layers).clone()
    else:
        log_lo, log_hi = math.log(config.beta_min), math.log(config.beta_max)
        random_betas = torch.empty(batch, num_layers).uniform_(log_lo, log_hi).exp()
        # A random share of images, and within them a random half of the layers.
        chosen = torch.rand(batch, 1) < opts.random_beta_share
        chosen = chosen & (torch.rand(batch, num_layers) < 0.5)
        betas = torch.where(chosen, random_betas, torch.ones(batch, num_layers))
    return lmbda.to(device), betas.to(device)


def learning_rate(step: int, opts: TrainOptions) -> float:
    """Linear warm-up, constant, then linear decay to 10 % over the last decay_steps."""
    warmup = min(1.0, (step + 1) / max(1, opts.warmup_steps))
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
        lmbda = torch.tensor([model.config.lmbda_for_quality(quality)], device=device)
        betas = torch.ones(1, model.num_layers, device=device)
        bpps, psnrs = [], []
        for x in images:
            x = x.to(device)[None]
            height, width = x.shape[-2:]
            padded = F.pad(
                x, (0, -width % stride, 0, -height % stride), mode="replicate"
            )
            out = model(padded, lmbda, betas)
            bits = sum(-torch.log2(p).sum() for p in out["likelihoods"].values())
            x_hat = (
                out["x_hat"][..., :height, :width].clamp(0, 1).mul(255).round().div(255)
            )
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
    """The model, its EMA, the step to start from and the checkpoint (if any)."""
    if opts.resume:
        checkpoint = read_checkpoint(opts.resume)
        model = model_from_checkpoint(checkpoint)
        ema = model_from_checkpoint(checkpoint, "ema_state_dict")
        return model, ema, checkpoint["step"], checkpoint
    if opts.init:
        # Fine-tuning: weights (the EMA, where present) without the optimizer state.
        checkpoint = read_checkpoint(opts.init)
        weights = "ema_state_dict" if "ema_state_dict" in checkpoint else "state_dict"
        model = model_from_checkpoint(checkpoint, weights)
        return model, copy.deepcopy(model), checkpoint["step"], None
    model = build_model(opts.model)
    return model, copy.deepcopy(model), 0, None


def _batches(loader, sampler):
    """Endless batches, reshuffling every epoch."""
    for epoch in itertools.count():
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader


def _make_loader(opts: TrainOptions, env: Distributed):
    data = RandomCrops(opts.data, opts.crop)
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
        self.model, self.ema, self.start_step, checkpoint = _load_start(opts)
        stride = self.model.config.top_stride
        if opts.crop % stride:
            raise ValueError(
                f"crop must be a multiple of the model's top stride {stride}"
            )
        # Every rank and every resumed segment draws different noise and crops.
        torch.manual_seed(opts.seed + 1_000_003 * self.env.rank + self.start_step)
        self.model.to(self.env.device).train()
        self.ema.to(self.env.device).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr)
        self.info = {
            "skipped_steps": 0,
            "train_seconds": 0.0,
            "device": str(self.env.device),
        }
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.info.update(checkpoint.get("train_info", {}))
        self.wrapped = self.model
        if self.env.world_size > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(self.model)
        self.criterion = RateDistortionLoss()
        self.batches = _make_loader(opts, self.env)
        self.val_images = []
        if opts.val_dir and self.env.is_main:
            self.val_images = [
                to_tensor(load_rgb(p)) for p in list_images([opts.val_dir])
            ]
        self.log = TrainLog(self.out, self.env.is_main)

    def step(self, step: int) -> tuple[dict, torch.Tensor] | None:
        """One optimization step; None if its gradients were not finite (skipped)."""
        x = next(self.batches).to(self.env.device, non_blocking=True)
        lmbda, betas = sample_rate_settings(
            x.shape[0], self.model, self.opts, self.env.device
        )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.opts)
        bf16 = self.opts.precision == "bf16"
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=bf16):
            output = self.wrapped(x, lmbda, betas)
        result = self.criterion(
            output, x, lmbda, betas
        )  # float32: rates outside autocast
        self.optimizer.zero_grad(set_to_none=True)
        result["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.opts.grad_clip
        )
        if not torch.isfinite(grad_norm):
            # The same decision on every rank: the gradients are all-reduced.
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
            "lr": learning_rate(step - 1, self.opts),
        }
        self.log.write(**line)
        return line

    def save(self, step: int) -> None:
        if self.env.is_main:
            state = checkpoint_dict(
                self.model,
                step,
                ema_state_dict=self.ema.state_dict(),
                optimizer=self.optimizer.state_dict(),
                train_info=self.info,
            )
            save_checkpoint(self.out / "checkpoint.pt", state)

    def validate(self, step: int) -> list[dict]:
        results = validate(self.ema, self.val_images, self.opts.val_qualities)
        self.log.write(event="validation", step=step, results=results)
        return results

    def run(self) -> dict:
        opts, env = self.opts, self.env
        self.log.write(
            event="start",
            step=self.start_step,
            options=asdict(opts),
            world_size=env.world_size,
        )
        progress = tqdm(
            total=opts.steps,
            initial=self.start_step,
            desc="train",
            disable=opts.quiet or not env.is_main,
            dynamic_ncols=True,
        )
        last, started = {}, time.perf_counter()
        for step in range(self.start_step + 1, opts.steps + 1):  # 1-based: steps done
            outcome = self.step(step - 1)
            progress.update(1)
            if outcome and (step % opts.log_every == 0 or step == opts.steps):
                last = self.record(step, *outcome)
                layers = "/".join(f"{v:.3f}" for v in last["per_layer_bpp"])
                progress.set_postfix_str(
                    f"loss {last['loss']:.3f} bpp {last['bpp']:.3f} [{layers}] "
                    f"PSNR {last['psnr']:.2f}"
                )
            if step % opts.checkpoint_every == 0:
                self.info["train_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                self.save(step)
            if self.val_images and step % opts.val_every == 0:
                self.validate(step)
        progress.close()
        self.info["train_seconds"] += time.perf_counter() - started
        self.save(opts.steps)
        summary = {"step": opts.steps, "rank": env.rank, "last": last, **self.info}
        if self.val_images:
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
