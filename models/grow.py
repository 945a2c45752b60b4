"""Growing a trained model: more latent channels, which start out unused, or
more decoder blocks, which start as the identity.

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

`deepen_decoder` adds residual blocks after a level's latent layers (the new
ones last). A new block's last convolution and modulation start at zero, so
it is the identity: the image and the symbols are what they were (the scale
network does not see the decoder), and training gives it a gradient from the
first step.
"""

from __future__ import annotations

import dataclasses
import math

from .hvae import HierarchicalVAE
from .scales import inverse_softplus

# The scale a new channel starts at, relative to the smallest table scale: just
# above it, where the logit still passes a useful gradient.
_UNUSED_SCALE = 1.1
# New posterior means start at this fraction of a new model's: far from
# rounding to a nonzero symbol, yet with a gradient from the first step.
_POSTERIOR_START = 0.01
# The scale network's weights whose inputs are a layer's symbols.
_SYMBOL_INPUTS = "symbol_embedding.weight"


def widen_latents(
    model: HierarchicalVAE, latent_channels: tuple[int, ...]
) -> HierarchicalVAE:
    """A copy of ``model`` with ``latent_channels`` per level (top first, each
    at least the model's own), computing the same image and the same symbols
    for the old channels; the new ones start unused."""
    config = model.config
    latent_channels = _one_per_level(config, latent_channels, "latent channels")
    for level, (old, new) in enumerate(
        zip(config.latent_channels, latent_channels, strict=True)
    ):
        if new < old or (new and not config.latent_layers[level]):
            raise ValueError(
                f"level {level}: cannot go from {old} to {new} latent channels "
                "(channels can only be added, and only where there are latent layers)"
            )
    wider = HierarchicalVAE(
        dataclasses.replace(config, latent_channels=latent_channels)
    )
    unused_logit = inverse_softplus(math.log(_UNUSED_SCALE))
    state = wider.state_dict()
    for name, old in model.state_dict().items():
        grown = state[name]
        if grown.shape == old.shape:
            state[name] = old.clone()
            continue
        if name.endswith(_SYMBOL_INPUTS):
            grown.zero_()
        elif ".posterior_head." in name:
            grown.mul_(_POSTERIOR_START)
        elif name.startswith("scale_network.") and name.endswith("head.bias"):
            grown.fill_(unused_logit)
        grown[tuple(slice(0, n) for n in old.shape)] = old
    wider.load_state_dict(state)
    wider.refresh_grids()
    return wider.train(model.training)


def deepen_decoder(
    model: HierarchicalVAE, decoder_blocks: tuple[int, ...]
) -> HierarchicalVAE:
    """A copy of ``model`` with ``decoder_blocks`` residual blocks per level (top
    first, each at least the model's own), computing the same image and the same
    symbols: the new blocks come after the old ones and start as the identity."""
    config = model.config
    decoder_blocks = _one_per_level(config, decoder_blocks, "decoder blocks")
    for level, (old, new) in enumerate(
        zip(config.decoder_blocks, decoder_blocks, strict=True)
    ):
        if new < old:
            raise ValueError(
                f"level {level}: cannot go from {old} to {new} decoder blocks "
                "(blocks can only be added)"
            )
    deeper = HierarchicalVAE(dataclasses.replace(config, decoder_blocks=decoder_blocks))
    state = deeper.state_dict()
    state.update({name: old.clone() for name, old in model.state_dict().items()})
    deeper.load_state_dict(state)
    deeper.refresh_grids()
    return deeper.train(model.training)


def _one_per_level(config, values, what: str) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != config.num_levels:
        raise ValueError(
            f"{what} need one entry per level ({config.num_levels}), got {len(values)}"
        )
    return values
