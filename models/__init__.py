"""The hierarchical VAE: presets, networks, the per-layer rate loss, checkpoints."""

from .checkpoint import (
    checkpoint_dict,
    load_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .config import PRESETS, HVAEConfig, get_config
from .hvae import HierarchicalVAE, build_model, latent_likelihood
from .loss import RateDistortionLoss
from .weights import DEFAULT_MODEL, shipped_models, weights_path

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "HVAEConfig",
    "HierarchicalVAE",
    "RateDistortionLoss",
    "build_model",
    "checkpoint_dict",
    "get_config",
    "latent_likelihood",
    "load_checkpoint",
    "model_from_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "shipped_models",
    "weights_path",
]
