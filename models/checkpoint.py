"""Checkpoints that rebuild their model: format version, config, weights, step.

A checkpoint is a plain dict saved with `torch.save` and loaded with
``weights_only=True`` (a weights file must not be able to run code)::

    {"format": 1, "config": {...}, "state_dict": {...}, "step": int,
     "rate_range": {"lmbda": [lo, hi], "beta": [lo, hi]}, ...extra entries}

Extra entries (optimizer and EMA state during training, entropy tables in a
coding checkpoint) ride along untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .config import HVAEConfig
from .hvae import HierarchicalVAE

CHECKPOINT_FORMAT = 1


def checkpoint_dict(model: HierarchicalVAE, step: int, **extra) -> dict:
    config = model.config
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": model.state_dict(),
        "step": step,
        "rate_range": {
            "lmbda": [config.lmbda_min, config.lmbda_max],
            "beta": [config.beta_min, config.beta_max],
        },
        **extra,
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write atomically: a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint dict (tensors on the CPU)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise ValueError(f"{path}: not an hvae-compress checkpoint")
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: unsupported checkpoint format {checkpoint.get('format')!r}"
        )
    return checkpoint


def model_from_checkpoint(
    checkpoint: dict, weights: str = "state_dict"
) -> HierarchicalVAE:
    """Rebuild the model from the checkpoint's config and load its float32 weights."""
    model = HierarchicalVAE(HVAEConfig.from_dict(checkpoint["config"]))
    state = {k: v.float() for k, v in checkpoint[weights].items()}
    model.load_state_dict(state)
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> tuple[HierarchicalVAE, dict]:
    """Rebuild a model in eval mode from a checkpoint file; also return the dict."""
    checkpoint = read_checkpoint(path)
    return model_from_checkpoint(checkpoint), checkpoint
