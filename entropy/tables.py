"""Scale table and integer probability tables of zero-mean discretized Gaussians.

Table ``i`` models a residual symbol s in [-T_i, T_i] with
P(s) = Phi((s + 1/2) / sigma_i) - Phi((s - 1/2) / sigma_i), quantized to integers
that sum to 2**PRECISION; one extra bin (the last) stands for "escaped": a symbol
outside the support, sent separately and losslessly by the coder.

The tables are computed once from floats (`build_tables`) and then stored as
integers next to the model weights (`to_arrays` / `from_arrays`); a decoder uses
the stored integers and never recomputes them, so float differences between
machines and library versions cannot desynchronize encoder and decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRECISION = 16  # bits: every table's integer probabilities sum to 2**PRECISION
SCALE_MIN = 0.11  # matches the model's lower bound on the prior scale
SCALE_MAX = 64.0
NUM_SCALES = 128  # consecutive scales differ by 5 %, costing < 0.1 % in rate
TAIL_STDS = 5.0  # support half-width in standard deviations; beyond it, escapes
ESCAPE_LEVELS = 33  # an escaped magnitude has a bit length in [0, 32]


@dataclass(frozen=True)
class GaussianTables:
    """Integer PMFs, one row per scale.

    Attributes:
        scales: (N,) float64, the scale sigma_i of each table, increasing.
        pmfs: (N, max_bins) int64, row i holds 2 * T_i + 1 symbol bins, then the
            escape bin, then zero padding.
        half_widths: (N,) int64, the support half-width T_i of each table.
    """

    scales: np.ndarray
    pmfs: np.ndarray
    half_widths: np.ndarray

    def __post_init__(self):
        n, width = self.pmfs.shape
        lengths = 2 * self.half_widths + 2
        if (
            self.scales.shape != (n,)
            or self.half_widths.shape != (n,)
            or (lengths > width).any()
        ):
            raise ValueError("inconsistent entropy table shapes")
        used = np.arange(width) < lengths[:, None]
        if (self.pmfs[~used] != 0).any() or (self.pmfs[used] <= 0).any():
            raise ValueError("entropy tables have empty bins or stray padding")
        if (self.pmfs.sum(1) != 2**PRECISION).any():
            raise ValueError(f"entropy tables must sum to 2**{PRECISION}")

    @property
    def num_tables(self) -> int:
        return len(self.scales)

    def probabilities(self, index: int) -> np.ndarray:
        """Integer PMF of table ``index`` (symbol bins, then the escape bin)."""
        return self.pmfs[index, : 2 * self.half_widths[index] + 2]

    def information_bits(self, symbols: np.ndarray, indexes: np.ndarray) -> float:
        """Sum of -log2 P(symbol) under the integer tables: the ideal stream size.

        An escaped symbol costs its escape bin plus its exactly-coded value
        (level, sign and mantissa bits, as the coder sends them).
        """
        half = self.half_widths[indexes]
        values = np.asarray(symbols, np.int64)
        escaped = np.abs(values) > half
        bins = np.where(escaped, 2 * half + 1, values + half)
        counts = self.pmfs[indexes, bins]
        magnitude = np.abs(values[escaped]) - half[escaped] - 1
        levels = np.frexp(magnitude.astype(np.float64))[1]
        escape_bits = (
            escaped.sum() * (math.log2(ESCAPE_LEVELS) + 1)
            + np.maximum(levels - 1, 0).sum()
        )
        return float(PRECISION * counts.size - np.log2(counts).sum() + escape_bits)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "scales": self.scales,
            "pmfs": self.pmfs,
            "half_widths": self.half_widths,
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> GaussianTables:
        return cls(
            scales=np.asarray(arrays["scales"], np.float64),
            pmfs=np.asarray(arrays["pmfs"], np.int64),
            half_widths=np.asarray(arrays["half_widths"], np.int64),
        )


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def quantize_pmf(probabilities: np.ndarray) -> np.ndarray:
    """Floats (summing to 1) -> positive integers summing to 2**PRECISION."""
    total = 2**PRECISION
    counts = np.floor(probabilities * (total - len(probabilities))).astype(np.int64) + 1
    counts[np.argmax(counts)] += total - counts.sum()
    return counts


def gaussian_pmf(scale: float) -> tuple[np.ndarray, int]:
    """Integer PMF of a zero-mean Gaussian * U(-1/2, 1/2), plus the escape bin."""
    half_width = math.ceil(TAIL_STDS * scale)
    edges = np.arange(-half_width, half_width + 2) - 0.5
    cdf = np.array([_normal_cdf(e / scale) for e in edges])
    inside = np.diff(cdf)
    escape = max(0.0, 1.0 - inside.sum())
    return quantize_pmf(np.append(inside, escape)), half_width


def build_tables(
    scale_min: float = SCALE_MIN,
    scale_max: float = SCALE_MAX,
    num_scales: int = NUM_SCALES,
) -> GaussianTables:
    """Compute the integer tables for log-spaced scales (done once, then stored)."""
    # math.exp, not np.exp: numpy's vectorized exp differs in the last bit
    # between CPUs (AVX-512 or not), and the scales go into a model's fingerprint.
    exponents = np.linspace(math.log(scale_min), math.log(scale_max), num_scales)
    scales = np.array([math.exp(e) for e in exponents])
    rows = [gaussian_pmf(s) for s in scales]
    pmfs = np.zeros((num_scales, max(len(p) for p, _ in rows)), np.int64)
    for i, (pmf, _) in enumerate(rows):
        pmfs[i, : len(pmf)] = pmf
    half_widths = np.array([t for _, t in rows], np.int64)
    return GaussianTables(scales, pmfs, half_widths)
