"""Growing a trained model: more latent channels, which start out unused, more
latent layers, which start out sending zeros, or more decoder or encoder
blocks, which start as the identity.

The rate range of a model ends where its latents run out of room: a decoder
that sees only so many latent elements per pixel reconstructs no better than a
certain PSNR, however high lambda goes. `widen_latents` adds channels to the
latent layers of chosen levels without changing what the model computes:

- the new channels' prior means start at zero, their posterior means near
  zero (a new model's initialization, scaled down), so their symbols, and the
  latents z = mean + symbol that the decoder sees, are 0;
- so the float network's merge (``z_embedding``) keeps a new model's random
  weights for them: on zeros they change nothing, yet they pass the image's
  gradient back to the new posteriors (zero weights would leave the new
  channels at a saddle that training with rounded latents never leaves: zero
  gradient to the posterior, zero latents for the weights). The scale
  network's merge (``symbol_embedding``) starts at zero for them, so the
  state, and every later layer, is what it was;
- the scale network predicts the smallest scales for them, so those zero
  symbols cost next to nothing.

Training may then put the new channels to work where they pay for their bits.
Measured from the eleventh release (model card, "Learning curve"): 16 more
channels in each stride-8 layer, 6,000 steps on equal CPU with the plain
model, spent 1.4-2.8 % more bits for 0.02-0.06 dB more on training photos.

`add_latent_layers` adds latent layers after a level's own, also at a level
that had none (the finest level of the ``base`` preset, stride 4, where fine
texture lives). A new layer starts as the identity on the decoder's state: its
prior block is a fresh residual block, its prior mean is 0 and its posterior
mean near 0, so it sends zeros, at the smallest scale, and its merge adds
nothing to the state; its rate setting (a new beta, one more input of both
rate embeddings) starts with zero weights, so every other layer sees the rate
it saw. The old layers keep their symbols and the image stays the same.

`deepen_decoder` adds residual blocks after a level's latent layers (the new
ones last). A new block's last convolution and modulation start at zero, so
it is the identity: the image and the symbols are what they were (the scale
network does not see the decoder), and training gives it a gradient from the
first step. `deepen_encoder` does the same in the encoder, before each level's
features are taken: the features, and so the symbols and the image, are what
they were; it costs encoding time only (decoders never run the encoder).
"""

from __future__ import annotations

import dataclasses
import math

from .config import HVAEConfig
from .hvae import HierarchicalVAE
from .scales import inverse_softplus

# The scale a new channel starts at, relative to the smallest table scale: just
# above it, where the logit still passes a useful gradient.
_UNUSED_SCALE = 1.1
# New posterior means start at this fraction of a new model's: far from
# rounding to a nonzero symbol, yet with a gradient from the first step.
_POSTERIOR_START = 0.01
# The scale network's merge of a layer's symbols (weights, bias, grid).
_SYMBOL_INPUTS = ".symbol_embedding."
# The weights whose inputs are the rate positions: lambda's, then one per layer.
_RATE_INPUTS = ("embedding.mlp.0.weight", "scale_network.rate_in.weight")


def widen_latents(
    model: HierarchicalVAE, latent_channels: tuple[int, ...]
) -> HierarchicalVAE:
    """A copy of ``model`` with ``latent_channels`` per level (top first, each
    at least the model's own), computing the same image and the same symbols
    for the old channels; the new ones start unused."""
    config = model.config
    latent_channels = _added_per_level(config, "latent_channels", latent_channels)
    for level, channels in enumerate(latent_channels):
        if channels and not config.latent_layers[level]:
            raise ValueError(
                f"level {level} has no latent layers to give {channels} channels"
            )
    wider = HierarchicalVAE(
        dataclasses.replace(config, latent_channels=latent_channels)
    )
    state = wider.state_dict()
    for name, old in model.state_dict().items():
        grown = state[name]
        if grown.shape == old.shape:
            state[name] = old.clone()
            continue
        _start_unused(name, grown)
        grown[tuple(slice(0, n) for n in old.shape)] = old
    return _loaded(wider, state, model.training)


def with_latent_layers(
    config: HVAEConfig, latent_layers: tuple[int, ...], latent_channels=None
) -> HVAEConfig:
    """``config`` with ``latent_layers`` per level (top first, each at least the
    config's own). A level's first layers take their channels from
    ``latent_channels`` (one entry per level), and the scale network half the
    level's width there."""
    latent_layers = _added_per_level(config, "latent_layers", latent_layers)
    wanted = config.latent_channels
    if latent_channels:
        wanted = _one_per_level(config, latent_channels, "latent channels")
    channels, scale_widths = list(config.latent_channels), list(config.scale_widths)
    for level, (old, new) in enumerate(
        zip(config.latent_layers, latent_layers, strict=True)
    ):
        if new and not old:
            if not wanted[level]:
                raise ValueError(
                    f"level {level}: its first latent layers need a number of "
                    "latent channels"
                )
            channels[level] = wanted[level]
            scale_widths[level] = scale_widths[level] or config.widths[level] // 2
    return dataclasses.replace(
        config,
        latent_layers=latent_layers,
        latent_channels=tuple(channels),
        scale_widths=tuple(scale_widths),
    )


def add_latent_layers(
    model: HierarchicalVAE, latent_layers: tuple[int, ...], latent_channels=None
) -> HierarchicalVAE:
    """A copy of ``model`` with ``latent_layers`` per level (`with_latent_layers`),
    coding the same image and, for the old layers, the same symbols; the new
    layers come after a level's old ones and send zeros that cost next to
    nothing."""
    config = with_latent_layers(model.config, latent_layers, latent_channels)
    grown = HierarchicalVAE(config)
    old_state = model.state_dict()
    moved = [1 + i for i in _old_layer_positions(model.config, config)]
    state = grown.state_dict()
    for name, value in state.items():
        old = old_state.get(name)
        if old is None:  # a new module's
            _start_unused(name, value)
        elif old.shape == value.shape:
            state[name] = old.clone()
        elif name in _RATE_INPUTS:
            value.zero_()
            value[:, 0] = old[:, 0]
            value[:, moved] = old[:, 1:]
        else:
            raise ValueError(f"{name}: cannot grow from {tuple(old.shape)}")
    return _loaded(grown, state, model.training)


def _old_layer_positions(old: HVAEConfig, new: HVAEConfig) -> list[int]:
    """Where each of the old config's layers (top first) sits among the new's."""
    positions, start = [], 0
    for before, after in zip(old.latent_layers, new.latent_layers, strict=True):
        positions += range(start, start + before)
        start += after
    return positions


def deepen_decoder(
    model: HierarchicalVAE, decoder_blocks: tuple[int, ...]
) -> HierarchicalVAE:
    """A copy of ``model`` with ``decoder_blocks`` residual blocks per level (top
    first, each at least the model's own), computing the same image and the same
    symbols: the new blocks come after the old ones and start as the identity."""
    return _deepened(model, "decoder_blocks", decoder_blocks)


def deepen_encoder(
    model: HierarchicalVAE, encoder_blocks: tuple[int, ...]
) -> HierarchicalVAE:
    """`deepen_decoder` for the encoder's residual blocks per level."""
    return _deepened(model, "encoder_blocks", encoder_blocks)


def _deepened(model: HierarchicalVAE, field: str, blocks) -> HierarchicalVAE:
    blocks = _added_per_level(model.config, field, blocks)
    deeper = HierarchicalVAE(dataclasses.replace(model.config, **{field: blocks}))
    state = deeper.state_dict()
    state.update({name: old.clone() for name, old in model.state_dict().items()})
    return _loaded(deeper, state, model.training)


def _start_unused(name: str, value) -> None:
    """Set a new weight (or the new part of a grown one, which the old values
    then overwrite) so that what it adds starts unused: zero posterior means
    (nearly: they still get a gradient), the smallest scales, and nothing merged
    into the scale network's state or, for a new layer, the decoder's."""
    if ".posterior_head." in name:
        value.mul_(_POSTERIOR_START)
    elif name.endswith("z_embedding.bias") or _SYMBOL_INPUTS in name:
        value.zero_()
    elif name.startswith("scale_network.") and name.endswith("head.bias"):
        value.fill_(inverse_softplus(math.log(_UNUSED_SCALE)))


def _loaded(model: HierarchicalVAE, state: dict, training: bool) -> HierarchicalVAE:
    model.load_state_dict(state)
    model.refresh_grids()
    return model.train(training)


def _added_per_level(config, field: str, values) -> tuple[int, ...]:
    """``values`` for the config's per-level ``field``, none below its own."""
    what = field.replace("_", " ")
    values = _one_per_level(config, values, what)
    own = getattr(config, field)
    for level, (old, new) in enumerate(zip(own, values, strict=True)):
        if new < old:
            raise ValueError(
                f"level {level}: cannot go from {old} to {new} {what} "
                "(a model only grows)"
            )
    return values


def _one_per_level(config, values, what: str) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != config.num_levels:
        raise ValueError(
            f"{what} need one entry per level ({config.num_levels}), got {len(values)}"
        )
    return values
