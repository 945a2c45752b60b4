"""Exact arithmetic: layers whose outputs are the same numbers on every machine.

Why. The entropy coder's state is decided by each symbol's scale-table index.
If a decoder computes one index differently from the encoder, the stream
desynchronizes. Float convolutions differ in their last bits between CPU
kernels (AVX-512, AVX2, SSE, oneDNN on or off), thread counts and devices, and
with ~10^5 scales per image one of them always lands on a table boundary. So
everything that decides an index is computed here, in arithmetic where no
summation order can change a result (Ballé, Johnston & Minnen, "Integer Networks
for Data Compression with Latent-Variable Models", ICLR 2019).

How. Every number on this path lies on a power-of-two grid, held in float32:

- activations are integers times ``2**-frac`` with a fixed ``frac`` per input,
  clamped to a fixed integer range (8 or 9 bits): `Grid`;
- each output channel's weights are integers in [-127, 127] times ``2**-f_c``,
  its bias an integer times ``2**-(frac + f_c)`` (``f_c`` is chosen from the
  weights and stored as a buffer, `ExactConv2d.refresh_grid`);
- so a convolution's every product, and every partial sum, is an integer in
  units of ``2**-(frac + f_c)``, and ``f_c`` is chosen so that the sum of
  absolute products stays below ``2**24``. float32 holds every such integer
  exactly, so any summation order -- any kernel, SIMD width, thread count or
  device -- gives the same sum. Scaling by powers of two is exact; rounding is
  explicit (half to even), never left to the hardware.

The layers compute in the integers themselves (*units*): inputs, weights and
bias as integers, the output as integers of the finer unit, rounded once to
the next layer's grid. The numbers are the same as computing on the scaled
values, with fewer passes over the maps: rounding an input that is already on
its grid, and rescaling it, would change nothing.

Float64 would give more headroom but runs convolutions 2.4-14x slower on CPUs;
8-bit weights and activations keep the exact path as fast as the float one, and
training with the rounding in place (straight-through gradients) makes the
network at home on the grid. Outputs are rounded to integers once more after
each convolution, which absorbs the tiny errors of algorithms such as
Winograd's if a backend ever picks one. `exact_mode` switches off the reduced
precision modes (TF32, bf16) that some backends allow for float32.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_UNITS = 127  # weights are integers in [-127, 127] per output channel
ACCUMULATOR_UNITS = 2**24  # float32 holds every integer of magnitude below this
# The bound is checked on rounded float64 sums; keep a safety factor of 2.
_ACCUMULATOR_BUDGET = ACCUMULATOR_UNITS // 2
_MAX_WEIGHT_FRAC = 30  # finest weight grid (all-zero channels end here)
# Inputs of at most 7 bits: oneDNN's int8 kernels for CPUs without VNNI add
# products in byte pairs held in int16, which saturates for 255 * 127 * 2.
INT8_INPUT_UNITS = 127


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even; gradients pass straight through while training."""
    if x.requires_grad:
        return x + (torch.round(x) - x).detach()
    return torch.round(x)


def pow2(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent in float32, built from its bits: exact, unlike a library pow."""
    biased = exponent.to(torch.int32).clamp(-126, 127) + 127
    return (biased << 23).view(torch.float32)


@dataclass(frozen=True)
class Grid:
    """The grid of a layer's input: integers in [low, high] times 2**-frac.

    The scale network computes in these integers, its *units*: a value v on
    the grid is held as v * 2**frac (integers in float32, or int16).
    """

    frac: int
    low: int
    high: int

    @property
    def max_units(self) -> int:
        return max(abs(self.low), abs(self.high))

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """Values -> units on this grid: rounded (half to even) and clamped."""
        return self.clamp(round_ste(x * math.ldexp(1.0, self.frac)))

    def clamp(self, units: torch.Tensor) -> torch.Tensor:
        """Units clamped to [low, high], in place where no gradient needs them."""
        if units.requires_grad:
            return units.clamp(self.low, self.high)
        return units.clamp_(self.low, self.high)


class ExactConv2d(nn.Module):
    """A convolution (or a transposed one) on a grid, exact in float32.

    It computes in units: its input in units of its grid, its weights and bias
    as integers, so every output is an integer (in units of ``2**-(frac +
    f_c)`` for output channel c), summed exactly. `on_grid` rounds the output
    to the grid of the next layer, `values` scales it to the numbers it stands
    for; both are exact scalings by powers of two around one rounding.

    Args:
        grid: the grid its input is clamped to (the input is in its units).
        transposed: a transposed convolution with kernel = stride (patch_up).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        grid: Grid,
        transposed: bool = False,
    ):
        super().__init__()
        self.grid = grid
        self.transposed = transposed
        self.kernel_size = kernel_size
        shape = (
            (in_channels, out_channels) if transposed else (out_channels, in_channels)
        )
        self.weight = nn.Parameter(torch.empty(*shape, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        fan_in = in_channels * (1 if transposed else kernel_size**2)
        nn.init.uniform_(self.weight, -(fan_in**-0.5), fan_in**-0.5)
        self.register_buffer("weight_frac", torch.zeros(out_channels))
        self._int8_weights = None  # oneDNN's packed int8 weights, made on first use
        self.refresh_grid()

    def __getstate__(self) -> dict:
        # oneDNN's packed weights can be neither copied nor pickled: a copy
        # packs its own on first use.
        return {**self.__dict__, "_int8_weights": None}

    def _per_output(self, weight: torch.Tensor) -> torch.Tensor:
        """Weights as (out_channels, everything that sums into one output)."""
        return (
            weight.transpose(0, 1).flatten(1) if self.transposed else weight.flatten(1)
        )

    @torch.no_grad()
    def refresh_grid(self) -> None:
        """Choose each output channel's weight grid 2**-f_c from the weights.

        The finest grid on which the largest weight fits in 127 units and the
        sum of absolute products stays within the accumulator budget.
        """
        weight = self._per_output(self.weight.detach().double()).abs()
        bias = self.bias.detach().double().abs()
        _, exponent = torch.frexp(weight.amax(1))  # peak = m * 2**exponent, m < 1
        # 2**(7 - exponent) puts the peak in [64, 128): one step finer than fits.
        frac = (7 - exponent).clamp(max=_MAX_WEIGHT_FRAC).double()
        for _ in range(80):
            units = torch.round(weight * torch.exp2(frac)[:, None])
            bias_units = torch.round(bias * torch.exp2(frac + self.grid.frac))
            total = units.sum(1) * self.grid.max_units + bias_units
            too_big = (units.amax(1) > WEIGHT_UNITS) | (total >= _ACCUMULATOR_BUDGET)
            if not too_big.any():
                break
            frac = frac - too_big.double()
        self.weight_frac.copy_(frac)
        self._int8_weights = None

    def unit_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and bias as integers in their units (straight-through in
        training): weights in [-127, 127], the bias in the output's units."""
        if self.training:
            self.refresh_grid()
        frac = self.weight_frac
        shape = (1, -1, 1, 1) if self.transposed else (-1, 1, 1, 1)
        weight = round_ste(self.weight * pow2(frac).view(shape))
        bias = round_ste(self.bias * pow2(frac + self.grid.frac))
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input units (clamped here to the grid's range) -> output units."""
        x = x.clamp(self.grid.low, self.grid.high)
        if self._runs_int8(x):
            return self._int8_forward(x)
        weight, bias = self.unit_parameters()
        if self.transposed:
            y = F.conv_transpose2d(x, weight, bias, stride=self.kernel_size)
        else:
            y = F.conv2d(x, weight, bias, padding=self.kernel_size // 2)
        if not self.training:
            # Exact sums are integers already; this only absorbs the errors of a
            # non-exact algorithm, should a backend choose one.
            y = y.round_()
        return y

    def _runs_int8(self, x: torch.Tensor) -> bool:
        """Coding on a CPU with an input grid of 7 bits: int8 kernels compute the
        same integer sums, several times faster where the CPU has VNNI or AMX
        (`benchmarks/int8_scale_study.md`)."""
        return (
            _ONEDNN_INT8
            and not self.training
            and not self.transposed
            and not x.requires_grad
            and x.device.type == "cpu"
            and 0 <= self.grid.low <= self.grid.high <= INT8_INPUT_UNITS
        )

    def _int8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` of clamped inputs as uint8, int8 weights and int32 sums
        (float32 out, every scale 1): the same integers as the float32 one."""
        padding = [self.kernel_size // 2] * 2
        if self._int8_weights is None:
            weight, bias = self.unit_parameters()
            ones = torch.ones(weight.shape[0])
            packed = torch.ops.onednn.qconv_prepack(
                weight.to(torch.int8).contiguous(memory_format=torch.channels_last),
                ones, 1.0, 0, [1, 1], padding, [1, 1], 1, None,
            )  # fmt: skip
            zeros = torch.zeros(weight.shape[0], dtype=torch.long)
            self._int8_weights = (packed, ones, zeros, bias.detach())
        packed, ones, zeros, bias = self._int8_weights
        x = x.to(torch.uint8, memory_format=torch.channels_last)
        return torch.ops.onednn.qconv2d_pointwise(
            x, 1.0, 0, packed, ones, zeros, bias, [1, 1], padding, [1, 1], 1,
            1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip

    def _to_output_units(self, frac: int) -> torch.Tensor:
        """Per output channel, 2**(frac - the output's frac), shaped to broadcast."""
        return pow2(frac - self.grid.frac - self.weight_frac).view(1, -1, 1, 1)

    def on_grid(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """The output rounded to ``grid`` (half to even) and clamped, in its units."""
        y, scale = self(x), self._to_output_units(grid.frac)
        if y.requires_grad:
            return grid.clamp(round_ste(y * scale))
        return grid.clamp(y.mul_(scale).round_())  # coding: no temporaries

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The output as the numbers it stands for (exact)."""
        y, scale = self(x), self._to_output_units(0)
        return y * scale if y.requires_grad else y.mul_(scale)


_ONEDNN_INT8 = hasattr(torch.ops.onednn, "qconv2d_pointwise")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively. Elsewhere (CPUs without
    AVX-512-BF16 or AMX) oneDNN emulates it, far slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def exact_mode(device: torch.device, float_bf16: bool = False):
    """Run float32 convolutions at full precision (no TF32, no bf16 inside).

    With ``float_bf16`` the float network computes in bfloat16 (autocast); the
    exact scale network never does: its steps switch autocast off themselves.
    """
    settings = [(torch.backends.mkldnn.conv, "fp32_precision", "none")]
    if device.type == "cuda":
        settings += [
            (torch.backends.cudnn.conv, "fp32_precision", "ieee"),
            (torch.backends.cuda.matmul, "fp32_precision", "ieee"),
        ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in settings]
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=float_bf16):
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
