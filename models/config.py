"""Model configuration: one frozen dataclass and its named presets.

Every per-level tuple lists the levels of the hierarchy from the top (coarsest,
stride ``top_stride``) down to the bottom (stride 4, where the image is
patchified); each level below the top halves the stride of the one above.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

# Rate settings travel as integer codes, so that a decoder derives exactly the
# numbers the encoder used: lambda code k stands for
# lmbda_min * (lmbda_max / lmbda_min) ** (k / LMBDA_CODES), a log-even grid that
# reaches lmbda_max at k = LMBDA_CODES and may go on above it (`lmbda_top_code`);
# beta code j stands for beta = 2**(j / BETA_CODES_PER_OCTAVE).
LMBDA_CODES = 4096
BETA_CODES_PER_OCTAVE = 16
# A model's name is stored in every file it writes and names its shipped
# weights file (`models.weights`), so it is short and safe in a file name.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def split_quality_code(code: int) -> tuple[int, int]:
    """A quality code as (lambda code, beta code added to every layer's).

    Codes from 0 up are lambda codes. Codes below 0 reach under lmbda_min with
    no training: lambda code 0 with every beta raised by -code, which prices
    every bit alike higher, as a lower lambda would (measured on the quality
    curve's extension: README, "encode").
    """
    return max(code, 0), max(-code, 0)


# The scale network's activations: 8 bits, as in every release before the 7-bit option.
DEFAULT_ACTIVATION_UNITS = 255


def check_model_name(name: str) -> str:
    """``name`` if it can name a model (see MODEL_NAME), else a ValueError."""
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"a model name is 1-32 of a-z, 0-9, '_' and '-', starting with a "
            f"letter or digit; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class HVAEConfig:
    """Architecture and rate range of a hierarchical VAE.

    Attributes:
        name: the model's name (a preset's, or its own: `MODEL_NAME`), recorded
            in checkpoints and in every file the model writes.
        widths: channels of the feature maps at each level, top first.
        encoder_blocks: residual blocks of the bottom-up encoder at each level.
        latent_layers: latent layers (top-down blocks) at each level.
        latent_channels: channels of each latent layer at that level.
        decoder_blocks: plain residual blocks after the latent layers of a level.
        cond_dim: width of the rate-setting embedding that modulates every block.
        lmbda_min, lmbda_max: lambda (loss = lmbda * 255^2 * MSE + sum_l
            beta_l * bpp_l) at codes 0 and LMBDA_CODES, which fix the grid.
        lmbda_top_code: the highest lambda code the model is trained on:
            LMBDA_CODES, or more for a model whose range was extended upward
            on the same grid (every code keeps its lambda).
        quality_codes: the quality code (`split_quality_code`) of each
            quality 0, 1, ..., 100, calibrated so that every quality step
            changes the file size by about the same factor
            (`models.calibration`); empty: qualities map log-linearly onto the
            lambda codes.
        beta_min, beta_max: range of the per-layer rate multipliers beta_l
            (powers of two: their codes are whole octaves apart).
        scale_min, scale_max, num_scales: the prior scales sigma_p (latent
            units) and the number of coding tables, log-spaced between them.
        scale_widths: channels of the exact scale network at each level
            (levels below the last latent layer are unused).
        scale_cond_dim: width of the scale network's rate embedding.
        scale_activation_units: top of the scale network's activation grid,
            in units: 255 (8 bits, the releases so far) or at most 127 (7
            bits, which int8 kernels sum exactly on every CPU).
    """

    name: str
    widths: tuple[int, ...]
    encoder_blocks: tuple[int, ...]
    latent_layers: tuple[int, ...]
    latent_channels: tuple[int, ...]
    decoder_blocks: tuple[int, ...]
    cond_dim: int = 64
    lmbda_min: float = 0.0009
    lmbda_max: float = 0.16
    lmbda_top_code: int = LMBDA_CODES
    quality_codes: tuple[int, ...] = ()
    beta_min: float = 0.25
    beta_max: float = 4.0
    scale_min: float = 0.11
    scale_max: float = 64.0
    num_scales: int = 128
    scale_widths: tuple[int, ...] = ()
    scale_cond_dim: int = 32
    scale_activation_units: int = DEFAULT_ACTIVATION_UNITS

    def __post_init__(self):
        per_level = (
            "encoder_blocks",
            "latent_layers",
            "latent_channels",
            "decoder_blocks",
            "scale_widths",
        )
        check_model_name(self.name)
        for field in per_level:
            if len(getattr(self, field)) != len(self.widths):
                raise ValueError(
                    f"config {self.name!r}: {field} needs one entry per level"
                )
        if self.num_latent_layers < 1:
            raise ValueError(f"config {self.name!r}: needs at least one latent layer")
        if not 0 < self.lmbda_min < self.lmbda_max:
            raise ValueError(f"config {self.name!r}: needs 0 < lmbda_min < lmbda_max")
        if self.lmbda_top_code < LMBDA_CODES:
            raise ValueError(
                f"config {self.name!r}: lmbda_top_code must be at least {LMBDA_CODES}"
            )
        codes = self.quality_codes
        if codes and (
            len(codes) != 101
            or list(codes) != sorted(codes)
            or not -self.beta_code_range[1] <= codes[0]
            or codes[-1] > self.lmbda_top_code
        ):
            raise ValueError(
                f"config {self.name!r}: quality_codes needs 101 rising quality codes"
            )
        if not 0 < self.scale_activation_units <= 255:
            raise ValueError(
                f"config {self.name!r}: scale_activation_units must be in [1, 255]"
            )
        if not 0 < self.scale_min < self.scale_max or self.num_scales < 2:
            raise ValueError(f"config {self.name!r}: needs 0 < scale_min < scale_max")

    @property
    def num_levels(self) -> int:
        return len(self.widths)

    @property
    def top_stride(self) -> int:
        """Stride of the coarsest level; images are padded to a multiple of it."""
        return 4 * 2 ** (self.num_levels - 1)

    def stride(self, level: int) -> int:
        return self.top_stride // 2**level

    @property
    def num_latent_layers(self) -> int:
        return sum(self.latent_layers)

    @property
    def finest_latent_level(self) -> int:
        """The last level with latent layers; finer levels only synthesize."""
        return max(i for i, n in enumerate(self.latent_layers) if n)

    def layer_strides(self) -> list[int]:
        """Stride of every latent layer, top layer first."""
        return [
            self.stride(i) for i, n in enumerate(self.latent_layers) for _ in range(n)
        ]

    def layer_channels(self) -> list[int]:
        """Channels of every latent layer, top layer first."""
        return [
            c
            for c, n in zip(self.latent_channels, self.latent_layers, strict=True)
            for _ in range(n)
        ]

    def latent_shapes(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """(channels, rows, cols) of every latent layer of an image, top first:
        its size padded to the top stride, over the layer's stride."""
        stride = self.top_stride
        rows, cols = -(-height // stride) * stride, -(-width // stride) * stride
        return [
            (channels, rows // s, cols // s)
            for channels, s in zip(
                self.layer_channels(), self.layer_strides(), strict=True
            )
        ]

    def quality_rate(self, quality: float) -> tuple[int, int]:
        """The lambda code of a quality in [0, 100] and the beta code added to
        every layer's (`split_quality_code`): from the calibrated
        ``quality_codes`` (linear between whole qualities), else log-linear
        over the lambda codes."""
        if not 0 <= quality <= 100:
            raise ValueError(f"quality must be in [0, 100], got {quality}")
        if not self.quality_codes:
            return round(quality / 100 * self.lmbda_top_code), 0
        below = min(math.floor(quality), 99)
        low, high = self.quality_codes[below : below + 2]
        return split_quality_code(round(low + (quality - below) * (high - low)))

    @property
    def lmbda_top(self) -> float:
        """The largest lambda the model is trained on (that of the top code)."""
        return self.lmbda_of(self.lmbda_top_code)

    def lmbda_code(self, lmbda: float) -> int:
        """The code of the grid lambda nearest to ``lmbda`` (within the range)."""
        if not self.lmbda_min <= lmbda <= self.lmbda_top * (1 + 1e-9):
            raise ValueError(
                f"lambda must lie in the trained range [{self.lmbda_min:g}, "
                f"{self.lmbda_top:g}], got {lmbda:g}"
            )
        code = math.log(lmbda / self.lmbda_min) / self._lmbda_span * LMBDA_CODES
        return min(round(code), self.lmbda_top_code)

    def lmbda_of(self, code: int) -> float:
        return self.lmbda_min * math.exp(code / LMBDA_CODES * self._lmbda_span)

    @property
    def _lmbda_span(self) -> float:
        return math.log(self.lmbda_max / self.lmbda_min)

    def extended_to(self, lmbda: float) -> HVAEConfig:
        """This config with its lambda range raised to ``lmbda`` on the same grid
        (unchanged if the range already reaches it); every code keeps its lambda,
        so a trained model carries on from where it is."""
        code = math.log(lmbda / self.lmbda_min) / self._lmbda_span * LMBDA_CODES
        top = max(self.lmbda_top_code, round(code))
        if top == self.lmbda_top_code:
            return self
        # A calibration of the old range does not hold for the new one.
        return dataclasses.replace(self, lmbda_top_code=top, quality_codes=())

    def beta_code(self, beta: float) -> int:
        """The code of the grid beta nearest to ``beta`` (within the range)."""
        if not self.beta_min <= beta <= self.beta_max:
            raise ValueError(
                f"layer weights must lie in [{self.beta_min:g}, {self.beta_max:g}], "
                f"got {beta:g}"
            )
        return round(math.log2(beta) * BETA_CODES_PER_OCTAVE)

    @property
    def beta_code_range(self) -> tuple[int, int]:
        return self.beta_code(self.beta_min), self.beta_code(self.beta_max)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> HVAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**tuples)


PRESETS: dict[str, HVAEConfig] = {
    # Tests: a few thousand parameters; trains and codes on a CPU in seconds.
    "tiny": HVAEConfig(
        name="tiny",
        widths=(16, 16, 16),
        encoder_blocks=(1, 1, 1),
        latent_layers=(1, 1, 1),
        latent_channels=(4, 4, 4),
        decoder_blocks=(0, 0, 1),
        cond_dim=16,
        scale_widths=(16, 16, 16),
        scale_cond_dim=8,
    ),
    # The default model: 6 latent layers at strides 64, 32, 16, 16, 8, 8; plain 3x3
    # convolutions throughout, because they run several times faster per
    # multiply-add on CPUs than depthwise (ConvNeXt-style) blocks.
    "base": HVAEConfig(
        name="base",
        widths=(192, 192, 192, 128, 64),
        encoder_blocks=(1, 1, 2, 2, 1),
        latent_layers=(1, 1, 2, 2, 0),
        latent_channels=(16, 16, 24, 16, 0),
        decoder_blocks=(0, 0, 0, 1, 3),
        scale_widths=(96, 96, 96, 64, 0),
    ),
}
# The faster model: base at half width at the two finest levels, where most of
# the multiply-adds are (benchmarks/decode_profile.md), two thirds at stride 16,
# and with a decoder block fewer at strides 8 and 4 (benchmarks/fast_shapes_study.md).
# Trained by narrowing a trained base (`train --init base.pt --widths ...`),
# then a trained fast (`--widths 192,192,128,64,32 --decoder-blocks 0,0,0,0,2`).
PRESETS["fast"] = dataclasses.replace(
    PRESETS["base"],
    name="fast",
    widths=(192, 192, 128, 64, 32),
    decoder_blocks=(0, 0, 0, 0, 2),
)


def get_config(name_or_config: str | HVAEConfig) -> HVAEConfig:
    """A preset by name (listing the valid names if unknown), or the config itself."""
    if isinstance(name_or_config, HVAEConfig):
        return name_or_config
    try:
        return PRESETS[name_or_config]
    except KeyError:
        valid = ", ".join(sorted(PRESETS))
        raise ValueError(
            f"unknown model preset {name_or_config!r}; valid: {valid}"
        ) from None
