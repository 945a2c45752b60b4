"""Checkpoints that rebuild their model: format version, config, weights, step.

A checkpoint is a plain dict saved with `torch.save` and loaded with
``weights_only=True`` (a weights file must not be able to run code)::

    {"format": 2, "config": {...}, "state_dict": {...}, "step": int,
     "rate_range": {"lmbda": [lo, hi], "beta": [lo, hi]}, ...extra entries}

Extra entries (optimizer and EMA state during training, entropy tables in a
coding checkpoint) ride along untouched. Format 1 held models whose prior
scales came from the float network; `upgrade_checkpoint` carries their float
weights into a format-2 model (to start training it), with an untrained scale
network.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..files import write_atomic
from .config import HVAEConfig, get_config
from .hvae import HierarchicalVAE

CHECKPOINT_FORMAT = 2
FLOAT_SCALES_FORMAT = 1


def checkpoint_dict(model: HierarchicalVAE, step: int, **extra) -> dict:
    config = model.config
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": model.state_dict(),
        "step": step,
        "rate_range": {
            "lmbda": [config.lmbda_min, config.lmbda_top],
            "beta": [config.beta_min, config.beta_max],
        },
        **extra,
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write atomically: a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(path, buffer.getvalue(), overwrite=True)


def read_checkpoint(path: str | os.PathLike, upgrade: bool = False) -> dict:
    """Load and validate a checkpoint dict (tensors on the CPU).

    With ``upgrade``, a format-1 checkpoint is accepted and upgraded.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise ValueError(f"{path}: not an hvae-compress checkpoint")
    found = checkpoint.get("format")
    if upgrade and found == FLOAT_SCALES_FORMAT:
        return upgrade_checkpoint(checkpoint)
    if found != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: unsupported checkpoint format {found!r} "
            f"(this version reads format {CHECKPOINT_FORMAT})"
        )
    return checkpoint


def upgrade_checkpoint(old: dict) -> dict:
    """Format 1 -> 2: the float weights in a model with an untrained scale network.

    The scale network takes its widths from the preset of the same name; the
    prior heads keep their mean half (the scale half is what the scale network
    replaces). Optimizer state is dropped.
    """
    preset = get_config(old["config"]["name"])
    config = HVAEConfig.from_dict(
        {
            **old["config"],
            "scale_widths": preset.scale_widths,
            "scale_cond_dim": preset.scale_cond_dim,
        }
    )
    model = HierarchicalVAE(config)
    upgraded = {"format": CHECKPOINT_FORMAT, "config": config.to_dict()}
    for key in ("state_dict", "ema_state_dict"):
        if key in old:
            upgraded[key] = _carry_float_weights(model, old[key])
    return {**old, **upgraded}


def _carry_float_weights(model: HierarchicalVAE, old: dict) -> dict:
    state = model.state_dict()
    for name, tensor in state.items():
        previous = old.get(name)
        if previous is None:
            continue
        if name.endswith(("prior_head.weight", "prior_head.bias")):
            previous = previous[: len(tensor)]  # (mean, scale) channels -> mean
        state[name] = previous.to(tensor.dtype)
    return state


def model_from_checkpoint(
    checkpoint: dict, weights: str = "state_dict"
) -> HierarchicalVAE:
    """Rebuild the model from the checkpoint's config and load its weights.

    fp16 weights (shipped models) become float32; everything else loads as
    stored, so the exact scale network gets back exactly its stored numbers.
    """
    model = HierarchicalVAE(HVAEConfig.from_dict(checkpoint["config"]))
    state = {
        k: v.float() if v.dtype == torch.float16 else v
        for k, v in checkpoint[weights].items()
    }
    model.load_state_dict(state)
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> tuple[HierarchicalVAE, dict]:
    """Rebuild a model in eval mode from a checkpoint file; also return the dict."""
    checkpoint = read_checkpoint(path)
    return model_from_checkpoint(checkpoint), checkpoint
