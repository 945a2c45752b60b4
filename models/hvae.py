"""A top-down hierarchical VAE with quantized latents and per-layer rates.

Xiao & Bamler, "Trading Information between Latents in Hierarchical Variational
Autoencoders", ICLR 2023: when the posterior of every latent layer sees the image
(through bottom-up features) and all layers above it, the rate splits into one
term per layer, and each term can carry its own penalty beta_l.

Data flow (strides for the ``base`` preset)::

    x ─ stem /4 ─ res ─ /2 ─ res ─ /2 ─ res ─ /2 ─ res ─ /2 ─ res      bottom-up encoder
                  d(4)       d(8)       d(16)      d(32)      d(64)    features
                              │          │          │          │
    x_hat ─ x4 ─ res ─ x2 ─ [z z] ─ x2 ─ [z z] ─ x2 ─ [z] ─ x2 ─ [z] ─ constant
                                                                       top-down decoder

Each latent layer ``[z]`` is a `LatentBlock` of the float network: from the
top-down state it computes the prior mean mu_p (``prior``), from the state and
the encoder feature of its level the posterior mean mu_q (``posterior_mean``),
and it merges the chosen latent back into the state (``merge``). The prior is
N(mu_p, sigma_p^2) * U(-1/2, 1/2), whose scale sigma_p comes from the exact
`ScaleNetwork` beside it, which sees only the rate codes and the symbols of the
layers above: a decoder on any machine computes the same coding tables
(`models.scales` says why). Training draws z = mu_q + u, u ~ U(-1/2, 1/2),
for the rates, and gives the decoder that z or (``rounded_latents``) the coded
one; coding sends symbols s = round(mu_q - mu_p) and uses z = s + mu_p. All three
modes walk the same `_top_down` loop, so the training and the coding paths
cannot drift apart.

The model's vocabulary (used by the loss, the codec and the tests):

- ``forward(x, rate)`` -> ``{"x_hat": (B, 3, H, W), "likelihoods":
  {"layer0": (B, C_0, h_0, w_0), ...}}``, layer0 being the top layer;
- ``compress(pixels, rate, write_symbols)`` hands each layer's int32 symbols
  (B, C_l, h_l, w_l), their table indexes and (on demand) prior scales to
  ``write_symbols``, top layer first; returns ``{"pixels": uint8 or None}``;
- ``decompress(grid, rate, read_symbols)`` -> ``{"pixels": uint8}``.

Images are floats in [0, 1] for ``forward`` and uint8 pixels for coding, their
height and width multiples of ``config.top_stride``. Coding runs every block on
whole maps or strip by strip (`models.tiling`), with the same result.
``rate`` holds integer rate codes, shape (B, 1 + L): the
lambda code, then one beta code per layer (`models.config`); `rate_values`
turns them into lambda (B,) and betas (B, L) for the loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction

import torch
from torch import nn

from .config import BETA_CODES_PER_OCTAVE, LMBDA_CODES, HVAEConfig, get_config
from .exact import ExactConv2d, round_ste
from .layers import RateEmbedding, ResBlock, conv1x1, conv3x3, patch_down, patch_up
from .scales import ScaleNetwork, on_int16
from .tiling import Tiler, release_free_memory, run_whole

# (layer index, table indexes of that layer) -> symbols, or None for "not sent".
SymbolReader = Callable[[int, torch.Tensor], "torch.Tensor | None"]
# (layer index, symbols, table indexes, () -> prior scales) -> None.
SymbolWriter = Callable[
    [int, torch.Tensor, torch.Tensor, Callable[[], torch.Tensor]], None
]

LIKELIHOOD_MIN = 1e-9


def latent_likelihood(
    z: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """P(z) under N(mean, scale^2) convolved with U(-1/2, 1/2), in float32.

    Evaluated on the side of the mean where the normal tail is small, so that
    the difference of the two CDFs keeps its precision far from the mean.
    """
    distance = (z.float() - mean.float()).abs()
    scale = scale.float()
    upper = torch.special.ndtr((0.5 - distance) / scale)
    lower = torch.special.ndtr((-0.5 - distance) / scale)
    return (upper - lower).clamp_min(LIKELIHOOD_MIN)


class LatentBlock(nn.Module):
    """One latent layer of the float top-down pass: prior mean, posterior, merge."""

    # Context around each output, in positions: a residual block and a 3x3 head
    # (a 1x1 merge first, for the posterior).
    prior_halo = posterior_halo = 3

    def __init__(self, width: int, channels: int, cond_dim: int):
        super().__init__()
        self.prior_block = ResBlock(width, cond_dim)
        self.prior_head = conv3x3(width, channels)
        self.posterior_merge = conv1x1(2 * width, width)
        self.posterior_block = ResBlock(width, cond_dim)
        self.posterior_head = conv3x3(width, channels)
        self.z_embedding = conv1x1(channels, width)
        nn.init.zeros_(self.prior_head.weight)
        nn.init.zeros_(self.prior_head.bias)

    def prior(self, state, cond):
        """state (B, W, h, w) -> (new state, prior mean (B, C, h, w))."""
        state = self.prior_block(state, cond)
        return state, self.prior_head(state).float()

    def posterior_mean(self, state, feature, cond):
        """Posterior mean mu_q from the top-down state and the encoder feature."""
        h = self.posterior_merge(torch.cat([state, feature.to(state.dtype)], dim=1))
        h = self.posterior_block(h, cond)
        return self.posterior_head(h).float()

    def merge(self, state, z):
        return state + self.z_embedding(z.to(state.dtype))


def rate_positions(rate: torch.Tensor) -> torch.Tensor:
    """Rate codes (B, 1 + L) -> positions in [-1, 1], exact binary fractions.

    The lambda code k maps to k / (LMBDA_CODES / 2) - 1 (the position of log
    lambda between lmbda_min and lmbda_max; above 1 for the codes of a range
    extended beyond lmbda_max), a beta code j to j / (2 * codes per octave)
    (log2 beta / 2): both divide integers by powers of two, so every machine
    computes the same float32 values.
    """
    rate = rate.float()
    lmbda = rate[:, :1] / (LMBDA_CODES // 2) - 1
    return torch.cat([lmbda, rate[:, 1:] / (2 * BETA_CODES_PER_OCTAVE)], dim=1)


class HierarchicalVAE(nn.Module):
    """Hierarchical VAE with generalized top-down inference and quantized latents."""

    def __init__(self, config: HVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.embedding = RateEmbedding(c.num_latent_layers, c.cond_dim)

        def res_blocks(level, count):
            return nn.ModuleList(
                ResBlock(c.widths[level], c.cond_dim) for _ in range(count)
            )

        levels = range(c.num_levels)
        # Bottom-up encoder; every list is indexed by level, top (0) first.
        self.stem = patch_down(3, c.widths[-1], 4)
        self.encoder_blocks = nn.ModuleList(
            res_blocks(i, c.encoder_blocks[i]) for i in levels
        )
        self.downsample = nn.ModuleList(
            patch_down(c.widths[i + 1], c.widths[i], 2) for i in levels[:-1]
        )
        # Top-down decoder.
        self.initial_state = nn.Parameter(torch.zeros(1, c.widths[0], 1, 1))
        self.latent_blocks = nn.ModuleList(
            nn.ModuleList(
                LatentBlock(c.widths[i], c.latent_channels[i], c.cond_dim)
                for _ in range(c.latent_layers[i])
            )
            for i in levels
        )
        self.decoder_blocks = nn.ModuleList(
            res_blocks(i, c.decoder_blocks[i]) for i in levels
        )
        self.upsample = nn.ModuleList(
            patch_up(c.widths[i], c.widths[i + 1], 2) for i in levels[:-1]
        )
        self.output = patch_up(c.widths[-1], 3, 4)
        self.scale_network = ScaleNetwork(c)
        # Training: the rates always see noisy latents; the decoder sees the same
        # (False) or, as coding does, the rounded ones with straight-through
        # gradients to the posterior (True).
        self.rounded_latents = False

    @property
    def num_layers(self) -> int:
        return self.config.num_latent_layers

    def refresh_grids(self) -> None:
        """Choose the exact layers' weight grids anew, after weights were changed
        other than by training steps (an EMA update, loading float weights)."""
        for module in self.scale_network.modules():
            if isinstance(module, ExactConv2d):
                module.refresh_grid()

    def rate_values(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rate codes (B, 1 + L) -> (lambda (B,), betas (B, L)) as float32."""
        self._check_rate(rate)
        config = self.config
        span = math.log(config.lmbda_max / config.lmbda_min)
        codes = rate.float()
        lmbda = config.lmbda_min * torch.exp(codes[:, 0] / LMBDA_CODES * span)
        return lmbda, torch.exp2(codes[:, 1:] / BETA_CODES_PER_OCTAVE)

    def _check_rate(self, rate: torch.Tensor) -> None:
        if rate.ndim != 2 or rate.shape[1] != 1 + self.num_layers:
            raise ValueError(
                f"rate codes need shape (batch, {1 + self.num_layers}), "
                f"not {tuple(rate.shape)}"
            )

    @property
    def finest_latent_level(self) -> int:
        return self.config.finest_latent_level

    def _fine_levels(self) -> range:
        """Levels below the last latent layer. The encoder's head and the
        decoder's tail run them fused with the pixels, strip by strip, so that
        no full-size map of these finest levels is ever held."""
        return range(self.finest_latent_level + 1, self.config.num_levels)

    def _head(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Pixels (uint8 or floats in [0, 1]) -> the encoder map at the finest
        latent level, before that level's blocks."""
        if x.dtype == torch.uint8:
            x = x.float() / 255
        h = self.stem(x.contiguous(memory_format=torch.channels_last) - 0.5)
        for level in reversed(self._fine_levels()):
            for block in self.encoder_blocks[level]:
                h = block(h, cond)
            h = self.downsample[level - 1](h)
        return h

    def _tail(self, state, cond, to_pixels: bool) -> torch.Tensor:
        """The top-down state after the last latent layer -> the image, as floats
        (training) or as uint8 pixels rounded from them (coding)."""
        for level in self._fine_levels():
            state = self.upsample[level - 1](state)
            for block in self.decoder_blocks[level]:
                state = block(state, cond)
        x_hat = self.output(state).float().add_(0.5)
        return to_pixels_uint8(x_hat) if to_pixels else x_hat

    def _fine_halo(self, blocks: list[int]) -> int:
        """Pixels of context the fine levels' residual blocks need."""
        fine = self._fine_levels()
        return sum(ResBlock.halo * blocks[i] * self.config.stride(i) for i in fine)

    def _conditions(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rate codes -> the float network's and the scale network's embeddings."""
        self._check_rate(rate)
        positions = rate_positions(rate)
        return self.embedding(positions), self.scale_network.embed(positions)

    def encode_features(
        self, x: torch.Tensor, rate: torch.Tensor, run=run_whole
    ) -> list[torch.Tensor]:
        """Bottom-up features, one per level, top first (None where no latents).

        Outside training they are held in bfloat16: they only steer the
        posterior means (the encoder's choice of symbols, which any decoder
        reads back alike), and the finest level's are the largest map an
        encoder holds.
        """
        self._check_rate(rate)
        cond = self.embedding(rate_positions(rate))
        finest = self.finest_latent_level
        stride = self.config.stride(finest)
        h = run(
            functools.partial(self._head, cond=cond),
            x,
            stride=1,
            halo=self._fine_halo(self.config.encoder_blocks),
            scale=Fraction(1, stride),
        )
        features = [None] * self.config.num_levels
        for level in reversed(range(finest + 1)):
            stride = self.config.stride(level)
            for block in self.encoder_blocks[level]:
                step = functools.partial(block, cond=cond)
                h = run(step, h, stride=stride, halo=ResBlock.halo, inplace=True)
            if self.config.latent_layers[level]:
                features[level] = h if self.training else h.to(torch.bfloat16)
            if level > 0:
                down = self.downsample[level - 1]
                h = run(down, h, stride=stride, halo=0, scale=Fraction(1, 2))
        return features

    def _top_down(
        self, rate, grid, choose_latent, features=None, output="x_hat", run=run_whole
    ):
        """Walk every latent layer top-down and return the image.

        The float network and the exact scale network walk in lockstep.
        choose_latent(layer, mean, logits, posterior) -> (z, symbols) picks each
        layer's latent z for the float network (noisy or rounded from the
        posterior mean, or read from a stream) and the symbols the scale network
        sees (None once no more layers are sent); it may build them in the
        memory of its arguments. The posterior mean is computed
        only when the image's encoder ``features`` are given; each level's are
        dropped from the list once used. ``run`` runs each block, on whole maps
        or tile by tile (`models.tiling`). ``output`` "x_hat" returns the image as
        floats (B, 3, H, W), "pixels" as uint8, None stops after the last layer.
        """
        cond, scale_cond = self._conditions(rate)
        scales = self.scale_network
        batch = rate.shape[0]
        state = _filled(self.initial_state.to(cond.dtype), batch, grid)
        # Coding holds the scale state (integer units) as int16: exact, half the
        # memory; training needs it in floats for the gradients.
        compact = not torch.is_grad_enabled()
        held = on_int16 if compact else _unchanged
        initial = scales.initial_state()
        if compact:
            initial = initial.to(torch.int16)
        scale_state = _filled(initial, batch, grid)
        layer = 0
        for level in range(self.finest_latent_level + 1):
            stride = self.config.stride(level)
            at_level = functools.partial(run, stride=stride)
            for block, scale_block in zip(
                self.latent_blocks[level], scales.blocks[level], strict=True
            ):
                prior = functools.partial(block.prior, cond=cond)
                state, mean = at_level(
                    prior, state, halo=block.prior_halo, inplace=True
                )
                posterior = None
                if features is not None:
                    posterior = at_level(
                        functools.partial(block.posterior_mean, cond=cond),
                        state,
                        features[level],
                        halo=block.posterior_halo,
                    )
                    if block is self.latent_blocks[level][-1]:
                        features[level] = None  # large: free it once done with
                # After the posterior: its logits never coexist with the features.
                scale_prior = held(
                    functools.partial(scale_block.prior, cond=scale_cond)
                )
                scale_state, logits = at_level(
                    scale_prior, scale_state, halo=scale_block.halo, inplace=True
                )
                z, symbols = choose_latent(layer, mean, logits, posterior)
                del mean, logits, posterior  # z and symbols may reuse their memory
                state = at_level(block.merge, state, z, halo=0, inplace=True)
                if symbols is not None:
                    merge = held(scale_block.merge)
                    scale_state = at_level(
                        merge, scale_state, symbols, halo=0, inplace=True
                    )
                del z, symbols  # before the next layer's
                layer += 1
            if layer == self.num_layers and output is None:
                return None
            if level < self.finest_latent_level:
                resample = held(functools.partial(scales.resample, level=level))
                scale_state = at_level(resample, scale_state, halo=0, scale=2)
            else:
                scale_state = None
            for block in self.decoder_blocks[level]:
                step = functools.partial(block, cond=cond)
                state = at_level(step, state, halo=ResBlock.halo, inplace=True)
            if level < self.finest_latent_level:
                up = self.upsample[level]
                state = at_level(up, state, halo=0, scale=2)
        tail = functools.partial(self._tail, cond=cond, to_pixels=output == "pixels")
        return at_level(
            tail,
            state,
            halo=-(-self._fine_halo(self.config.decoder_blocks) // stride),
            scale=stride,
        )

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        stride = self.config.top_stride
        if height % stride or width % stride:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {stride}"
            )
        return height // stride, width // stride

    def forward(self, x: torch.Tensor, rate: torch.Tensor) -> dict:
        """Training (uniform noise) or evaluation (rounding) pass with likelihoods."""
        likelihoods = {}

        def choose_latent(layer, mean, logits, posterior):
            symbols = round_ste(posterior - mean)
            z = coded = symbols + mean
            if self.training:
                z = posterior + torch.empty_like(posterior).uniform_(-0.5, 0.5)
            scale = self.scale_network.scales(logits)
            likelihoods[f"layer{layer}"] = latent_likelihood(z, mean, scale)
            return (coded if self.rounded_latents else z), symbols

        grid = self._grid(*x.shape[-2:])
        features = self.encode_features(x, rate)
        x_hat = self._top_down(rate, grid, choose_latent, features)
        return {"x_hat": x_hat, "likelihoods": likelihoods}

    def compress(
        self,
        pixels,
        rate,
        write_symbols: SymbolWriter,
        reconstruct: bool = False,
        tile: int | None = None,
    ) -> dict:
        """Hand every layer's symbols round(mu_q - mu_p) to `write_symbols`, top first.

        Args:
            pixels: uint8 images (B, 3, H, W), H and W multiples of the top stride.
                Pass a tensor of your own: it is dropped once encoded, to bound
                memory.
            rate: integer rate codes (B, 1 + L).
            write_symbols: called with (layer, symbols int32, table indexes int32,
                prior_scales), the maps (B, C_l, h_l, w_l), for every layer in
                order, once the next one's posterior is known (bounds memory):
                the indexes are exact (what a decoder computes);
                ``prior_scales()`` returns the continuous scales behind them
                (for estimates; computed only when asked for).
            reconstruct: also return the encoder-side reconstruction, which
                decoding reproduces up to float rounding.
            tile: run the networks in tiles of this many pixels (bounds memory;
                the result does not depend on it beyond float rounding).

        Returns:
            ``{"pixels": uint8 (B, 3, H, W) or None}``.
        """
        # Not decorated: the decorator's wrapper would hold the pixels to the end.
        with torch.inference_mode():
            run = _runner(tile)
            grid = self._grid(*pixels.shape[-2:])
            features = self.encode_features(pixels, rate, run)
            del pixels  # this frame's reference: the caller's temporary can go
            choose_latent, hand_over_last = self._symbol_handover(write_symbols)
            output = "pixels" if reconstruct else None
            pixels = self._top_down(rate, grid, choose_latent, features, output, run)
            hand_over_last()
        release_free_memory()
        return {"pixels": pixels}

    def _symbol_handover(self, write_symbols: SymbolWriter):
        """`compress`'s choose_latent, and the call that hands over the last layer.

        choose_latent rounds each layer's posterior to its symbols, and hands
        the layer to ``write_symbols`` only once the next layer's posterior is
        known: a level's encoder features are freed after its last posterior,
        so the entropy coder's temporaries never come on top of them.
        """
        pending = []

        def hand_over():
            if pending:
                write_symbols(*pending.pop())

        def choose_latent(layer, mean, logits, posterior):
            hand_over()
            symbols = posterior.sub_(mean).round_()  # the posterior is ours alone
            prior_scales = functools.partial(self.scale_network.scales, logits)
            indexes = self.scale_network.indexes(logits)
            # In the coder's order (channels first), so it needs no copy.
            flat = symbols.to(torch.int32, memory_format=torch.contiguous_format)
            pending.append((layer, flat, indexes, prior_scales))
            # z = symbols + mean in the mean's memory, and the int symbols for
            # the scale network: the float symbols can go.
            return mean.add_(symbols), flat

        return choose_latent, hand_over

    @torch.inference_mode()
    def decompress(
        self, grid, rate, read_symbols: SymbolReader, tile: int | None = None
    ) -> dict:
        """Rebuild the image from symbols that `read_symbols` supplies layer by layer.

        Args:
            grid: (rows, cols) of the top level, i.e. padded size / top_stride.
            rate: rate codes (1, 1 + L), as the encoder used them.
            read_symbols: called with (layer, table indexes) for every layer, top
                first; returns the int symbols (same shape as the indexes), or
                None to use the prior mean for this and every later layer
                (progressive decoding).
            tile: as for `compress`.

        Returns:
            ``{"pixels": uint8 (1, 3, H, W)}``.
        """
        sending = True

        def choose_latent(layer, mean, logits, posterior):
            nonlocal sending
            if sending:
                symbols = read_symbols(layer, self.scale_network.indexes(logits))
                sending = symbols is not None
            if not sending:
                return mean, None
            return mean.add_(symbols), symbols  # z in the mean's memory

        pixels = self._top_down(
            rate, tuple(grid), choose_latent, output="pixels", run=_runner(tile)
        )
        release_free_memory()
        return {"pixels": pixels}


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Repeat the last row and column of (..., H, W) maps of any dtype until H
    and W are multiples of ``stride`` (the model's input sizes)."""
    height, width = x.shape[-2:]
    padded = (height + -height % stride, width + -width % stride)
    # Block copies: several times faster than gathering with index maps.
    out = x.new_empty((*x.shape[:-2], *padded))
    out[..., :height, :width] = x
    out[..., height:, :width] = x[..., -1:, :]
    out[..., :, width:] = out[..., :, width - 1 : width]
    return out


def _filled(value: torch.Tensor, batch: int, grid) -> torch.Tensor:
    """A (B, C, rows, cols) map holding the (1, C, 1, 1) ``value`` everywhere:
    a tensor of its own (in-place updates may write it), channels-last."""
    shape = (batch, value.shape[1], *grid)
    return value.expand(shape).contiguous(memory_format=torch.channels_last)


def _unchanged(step):
    return step


def to_pixels_uint8(x_hat: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8 pixels (clamped and rounded)."""
    # In place after the one copy: on large strips each fresh float map cost
    # several times its arithmetic in page faults.
    return x_hat.clamp(0, 1).mul_(255).round_().to(torch.uint8)


def _runner(tile: int | None):
    return run_whole if tile is None else Tiler(tile)


def build_model(name_or_config: str | HVAEConfig) -> HierarchicalVAE:
    """Build an untrained model from a preset name or a config."""
    return HierarchicalVAE(get_config(name_or_config))
