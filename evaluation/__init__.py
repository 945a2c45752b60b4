"""Evaluation: rate-distortion curves measured on real files, baselines, BD-rates.

Kept apart from the codec, which does not need it: its plots, MS-SSIM and
BD-rates come with the ``eval`` extra (``pip install "hvae-compress[eval]"``).
"""

from .curves import bd_rate, load_anchors, summarize
from .measure import CLASSICAL_CODECS, DEFAULT_QUALITIES, RateSetting
from .metrics import ms_ssim, psnr
from .report import format_report, write_outputs
from .run import Evaluation, evaluate, job_count

__all__ = [
    "CLASSICAL_CODECS",
    "DEFAULT_QUALITIES",
    "Evaluation",
    "RateSetting",
    "bd_rate",
    "evaluate",
    "format_report",
    "job_count",
    "load_anchors",
    "ms_ssim",
    "psnr",
    "summarize",
    "write_outputs",
]
