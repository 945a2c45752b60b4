"""The scale network: each symbol's coding-table index, computed exactly.

Residual coding makes a drifting prior *mean* harmless: a decoder whose mean
differs in the last bit still reads the same symbol, and the image moves by a
hair. The prior *scale* picks the coding table and must not drift at all. So the
scales come from this network, which sees only what a decoder knows exactly --
the rate codes of the header and the integer symbols of the layers above -- and
computes in the exact arithmetic of `models.exact`. It walks top-down in
lockstep with the float network (`HierarchicalVAE._top_down`)::

    rate codes ── embed ───────────┬──────────────┬────────────────┬── ...
                                   │              │                │
    constant ── [prior → logits_0; merge s_0] ── x2 ── [prior → logits_1; ...

Every `ScaleBlock` takes the state through a residual block shifted by the rate
embedding, reads the scale logits of its layer off the state, then merges the
layer's symbols into it. A logit y stands for the scale
``sigma = scale_min * exp(softplus(y))`` (in training) and, in coding, for table
``#{i : y > t_i}``, where the stored thresholds t_i are the table boundaries
(geometric midpoints of the table scales) mapped through the same function.

Symbols enter clamped to [-127, 127] (larger ones are rare and already cost
many bits; the clamp only limits what the network learns from them).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import HVAEConfig
from .exact import ExactConv2d, Grid

STATE = Grid(5, -(2**15 - 1), 2**15 - 1)  # the residual stream, 16 bits
ACTIVATION = Grid(5, 0, 255)  # ReLU outputs into a convolution, 8 bits (by default)
SIGNED = Grid(5, -255, 255)  # the state into a resampling convolution
SYMBOLS = Grid(0, -127, 127)  # the symbols of a layer, clamped


def on_int16(step):
    """``step``, which takes the state first and returns the new state (alone
    or first of a tuple), as a step on states held as int16.

    The state is in STATE units, integers of 16 bits: coding holds it so,
    exactly the same numbers in half the memory of float32, which matters at
    the finest latent level.
    """

    @functools.wraps(step)
    def step_on_int16(state, *args, **kwargs):
        out = step(state.float(), *args, **kwargs)
        if isinstance(out, tuple):
            return (out[0].to(torch.int16), *out[1:])
        return out.to(torch.int16)

    return step_on_int16


def positions_grid(lmbda_top_code: int) -> Grid:
    """The grid of the rate positions (see `rate_positions`): steps of 2**-11
    from -1 up to the top lambda code's position (1 for the original range,
    so a model of that range keeps the grid it was trained with)."""
    return Grid(11, -2048, lmbda_top_code - 2048)


def _float32(method):
    """Run a scale-network step in float32 even inside a bf16 autocast region."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.autocast(args[0].device.type, enabled=False):
            args = [t.float() for t in args]
            return method(self, *args, **{k: t.float() for k, t in kwargs.items()})

    return wrapper


def inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class ScaleBlock(nn.Module):
    """One latent layer of the scale network: logits of its scales, then its merge."""

    halo = 3  # context of `prior`: conv1, conv2 and the head, all 3x3

    def __init__(
        self,
        width: int,
        channels: int,
        cond_dim: int,
        initial_logit: float,
        activation: Grid = ACTIVATION,
        merges: bool = True,
    ):
        super().__init__()
        self.conv1 = ExactConv2d(width, width, 3, activation)
        self.shift = ExactConv2d(cond_dim, width, 1, activation)
        self.conv2 = ExactConv2d(width, width, 3, activation)
        self.head = ExactConv2d(width, channels, 3, activation)
        # The last layer's symbols inform no later scale: nothing to merge.
        self.symbol_embedding = (
            ExactConv2d(channels, width, 1, SYMBOLS) if merges else None
        )
        # Start as the identity on the state, predicting scales near 1.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, initial_logit)
        for conv in (self.conv2, self.head):
            conv.refresh_grid()

    @_float32
    def prior(self, state, cond):
        """state (B, W, h, w) in STATE units, cond (B, D, 1, 1) in activation
        units -> (new state, logits (B, C, h, w)).

        The convolutions' activation grid clamps their inputs to [0, top]
        units: that is the ReLU (and the STATE grid has the same unit).
        """
        h = self.conv1.on_grid(state, STATE) + self.shift.on_grid(cond, STATE)
        state = STATE.clamp(state + self.conv2.on_grid(h, STATE))
        return state, self.head.values(state)

    @_float32
    def merge(self, state, symbols):
        """Add the layer's symbols (B, C, h, w), integers or rounded, to the state."""
        if self.symbol_embedding is None:
            return state
        return STATE.clamp(state + self.symbol_embedding.on_grid(symbols, STATE))


class ScaleNetwork(nn.Module):
    """Rate codes and the symbols of the layers above -> scales, exactly."""

    def __init__(self, config: HVAEConfig):
        super().__init__()
        c = config
        self.scale_min, self.scale_max = c.scale_min, c.scale_max
        step = math.log(c.scale_max / c.scale_min) / (c.num_scales - 1)
        widths, cond_dim = c.scale_widths, c.scale_cond_dim
        # The levels the network walks: down to the last one with latent layers.
        self.num_levels = c.finest_latent_level + 1
        self.rate_in = ExactConv2d(
            1 + c.num_latent_layers, cond_dim, 1, positions_grid(c.lmbda_top_code)
        )
        # 8 bits, or 7, which int8 kernels sum exactly on every CPU (`models.exact`).
        self.activation = Grid(ACTIVATION.frac, 0, c.scale_activation_units)
        self.rate_hidden = ExactConv2d(cond_dim, cond_dim, 1, self.activation)
        # Positive values: a ReLU at zero would pass no gradient to it.
        self.initial = nn.Parameter(torch.rand(1, widths[0], 1, 1))
        initial_logit = inverse_softplus(math.log(1 / c.scale_min))
        last = c.num_latent_layers - 1
        layer = iter(range(c.num_latent_layers))
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                ScaleBlock(
                    widths[i],
                    c.latent_channels[i],
                    cond_dim,
                    initial_logit,
                    self.activation,
                    merges=next(layer) < last,
                )
                for _ in range(c.latent_layers[i])
            )
            for i in range(c.num_levels)
        )
        self.upsample = nn.ModuleList(
            ExactConv2d(widths[i], widths[i + 1], 2, SIGNED, transposed=True)
            for i in range(self.num_levels - 1)
        )
        # Table i covers logits above t_{i-1} and up to t_i: the boundaries
        # between consecutive table scales, mapped through the logit -> sigma map.
        boundaries = [(i + 0.5) * step for i in range(c.num_scales - 1)]
        thresholds = torch.tensor([inverse_softplus(b) for b in boundaries])
        self.register_buffer("thresholds", thresholds.double())

    @_float32
    def embed(self, positions):
        """Rate positions (B, 1 + L) -> the rate embedding (B, D, 1, 1), in
        units of the activation grid (after the ReLU)."""
        units = self.rate_in.grid.units(positions[:, :, None, None])
        hidden = self.rate_in.on_grid(units, self.activation)
        return self.rate_hidden.on_grid(hidden, self.activation)

    def initial_state(self) -> torch.Tensor:
        """The state before the top layer, (1, W, 1, 1) in STATE units."""
        return STATE.units(self.initial.float())

    def resample(self, state: torch.Tensor, level: int) -> torch.Tensor:
        """From ``level`` to the next finer one (stride / 2)."""
        with torch.autocast(state.device.type, enabled=False):
            return self.upsample[level].on_grid(state.float(), STATE)

    def scales(self, logits: torch.Tensor) -> torch.Tensor:
        """Continuous prior scales in [scale_min, scale_max] (training, estimates)."""
        log_scale = math.log(self.scale_min) + F.softplus(logits.float())
        return log_scale.exp().clamp(max=self.scale_max)

    def indexes(self, logits: torch.Tensor) -> torch.Tensor:
        """Table index of every scale: exact comparisons with stored thresholds.

        Logits are float32, and for a float32 y, ``y > t`` holds exactly when
        ``y > t32``, t32 the largest float32 not above t: the comparison needs
        no float64 copy of the (large) logit map.
        """
        return torch.bucketize(
            logits.float().contiguous(), _float32_below(self.thresholds), out_int32=True
        )


def _float32_below(values: torch.Tensor) -> torch.Tensor:
    """The largest float32 not above each (float64) value."""
    nearest = values.float()
    above = nearest.double() > values
    below = torch.nextafter(nearest, nearest.new_tensor(-math.inf))
    return torch.where(above, below, nearest)
