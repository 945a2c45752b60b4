"""The hierarchical VAE: presets, networks, the per-layer rate loss, checkpoints.

Configs, presets and training options load without torch; the rest is
imported on first use, so that reading a header or printing ``--help`` does not
pay for the networks.
"""

import importlib

from .config import LMBDA_CODES, PRESETS, HVAEConfig, get_config
from .options import TrainOptions
from .weights import (
    DEFAULT_MODEL,
    released_weights_path,
    shipped_models,
    weights_path,
)

_LAZY = {
    "calibrated": "calibration",
    "calibration_crops": "calibration",
    "HierarchicalVAE": "hvae",
    "build_model": "hvae",
    "latent_likelihood": "hvae",
    "pad_to_stride": "hvae",
    "RateDistortionLoss": "loss",
    "exact_mode": "exact",
    "native_bf16": "exact",
    "checkpoint_dict": "checkpoint",
    "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "train": "train",
}

__all__ = [
    "DEFAULT_MODEL",
    "LMBDA_CODES",
    "PRESETS",
    "HVAEConfig",
    "TrainOptions",
    "get_config",
    "released_weights_path",
    "shipped_models",
    "weights_path",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
