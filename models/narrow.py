"""Narrowing a trained model: fewer channels at chosen levels, for a faster model
that starts from the trained one instead of from scratch.

Most of a coding's arithmetic sits at the finest levels (strides 8 and 4):
`benchmarks/decode_profile.md` times models at half width there. Unlike
growing (`models.grow`), narrowing changes what the model computes, so it
needs training afterwards; it starts that training close to the model it
narrows, using a few images:

- At a level, the encoder's features, the decoder's state and each latent
  layer's posterior path are separate feature maps ("streams"), and inside
  every residual block its hidden channels are another. Of each stream, the
  channels kept are those from which the others are best predicted, on the
  images (a pivoted Cholesky factorization of the channels' covariance: each
  pick the channel least explained by those picked before). Picked by the
  norms of their weights instead, half the finest level's channels lost
  14 dB on four training photos (refitted alike), against 1.5 dB with these.
- Every layer that reads a narrowed stream is fitted anew by least squares:
  from the kept channels alone, to give the outputs it gave on the images.
  The layers that only write a stream keep their kept channels' weights.

The rate embeddings, the latent layers and the exact scale network keep their
shapes (the scale network does not see the float network's features), so the
narrowed model's symbols are read with the same tables.

`shorten_decoder` removes residual blocks after a level's latent layers, the
inverse of `models.grow.deepen_decoder`: a block computes x + f(x), so without
it the level passes x on. One at a time, the block goes whose removal changes
the model's image on the images least.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .grow import _loaded, _one_per_level
from .hvae import HierarchicalVAE

# A segment of a weight: (state-dict name, dimension, offset of the stream's
# channels along that dimension). A reader's offset is also where the stream's
# channels sit in the reader's input.
Segment = tuple[str, int, int]
# Rows of data (positions x images) each least-squares fit and pick uses at most.
_ROWS = 65536


@dataclass
class Stream:
    """The channels of one feature map and every weight segment that touches them."""

    width: int
    writers: list[Segment] = field(default_factory=list)  # weights and biases
    readers: list[Segment] = field(default_factory=list)  # layers that read it


def narrow_widths(
    model: HierarchicalVAE, widths: tuple[int, ...], images: torch.Tensor
) -> HierarchicalVAE:
    """A copy of ``model`` with ``widths`` channels per level (top first, each
    at most the model's own), its channels picked and its readers fitted on
    ``images`` (floats in [0, 1], (B, 3, H, W), B >= 2, H and W multiples of
    the top stride) at rates spread over the model's lambda range."""
    config = model.config
    widths = _one_per_level(config, widths, "widths")
    for level, (old, new) in enumerate(zip(config.widths, widths, strict=True)):
        if not 0 < new <= old:
            raise ValueError(
                f"level {level}: cannot go from {old} to {new} channels "
                "(narrowing keeps between 1 and the model's own)"
            )
    if images.shape[0] < 2:
        raise ValueError("narrowing fits on at least 2 images")
    narrowed = [
        (stream, widths[level])
        for level in range(config.num_levels)
        if widths[level] < config.widths[level]
        for stream in _streams(config, level)
    ]
    readers = sorted(
        {_module(name) for stream, _ in narrowed for name, _, _ in stream.readers}
    )
    seen = _inputs_and_outputs(model, readers, images)
    segments: dict[tuple[str, int], list[tuple[int, torch.Tensor]]] = {}
    for stream, count in narrowed:
        keep = _best_predictors(_snapshots(stream, seen), count)
        for name, dim, offset in stream.writers + stream.readers:
            segments.setdefault((name, dim), []).append((offset, keep))
    indexes = {}
    for key, parts in segments.items():
        parts.sort(key=lambda part: part[0])
        indexes[key] = torch.cat([offset + keep for offset, keep in parts])
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    for (name, dim), index in indexes.items():
        state[name] = state[name].index_select(dim, index)
    for name in readers:
        weight, bias = _refit(model.get_submodule(name), *seen[name], name, indexes)
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
    narrower = HierarchicalVAE(dataclasses.replace(config, widths=widths))
    return _loaded(narrower, state, model.training)


def shorten_decoder(
    model: HierarchicalVAE, decoder_blocks: tuple[int, ...], images: torch.Tensor
) -> HierarchicalVAE:
    """``model`` with ``decoder_blocks`` residual blocks per level (top first,
    each at most the model's own), those removed chosen on ``images`` (as for
    `narrow_widths`): one at a time, the one whose removal leaves the image
    the model computed closest."""
    config = model.config
    wanted = _one_per_level(config, decoder_blocks, "decoder blocks")
    for level, (old, new) in enumerate(zip(config.decoder_blocks, wanted, strict=True)):
        if not 0 <= new <= old:
            raise ValueError(
                f"level {level}: cannot go from {old} to {new} decoder blocks "
                "(shortening keeps between 0 and the model's own)"
            )
    rate = _spread_rates(model, images.shape[0])
    target = _image(model, images, rate)
    training = model.training
    while model.config.decoder_blocks != wanted:
        have = model.config.decoder_blocks
        candidates = [
            _without_block(model, level, index)
            for level in range(config.num_levels)
            if have[level] > wanted[level]
            for index in range(have[level])
        ]
        model = min(
            candidates,
            key=lambda shorter: F.mse_loss(_image(shorter, images, rate), target),
        )
    return model.train(training)


def _without_block(model: HierarchicalVAE, level: int, index: int) -> HierarchicalVAE:
    """A copy of ``model`` without its ``index``-th decoder block at ``level``."""
    prefix = f"decoder_blocks.{level}."
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith(prefix):
            position, rest = name.removeprefix(prefix).split(".", 1)
            if int(position) == index:
                continue
            name = f"{prefix}{int(position) - (int(position) > index)}.{rest}"
        state[name] = value
    blocks = list(model.config.decoder_blocks)
    blocks[level] -= 1
    config = dataclasses.replace(model.config, decoder_blocks=tuple(blocks))
    return _loaded(HierarchicalVAE(config), state, model.training)


def _spread_rates(model: HierarchicalVAE, count: int) -> torch.Tensor:
    """Rate codes for ``count`` images, their lambdas spread over the model's range."""
    codes = torch.linspace(0, model.config.lmbda_top_code, count)
    rate = torch.zeros(count, 1 + model.num_layers, dtype=torch.int64)
    rate[:, 0] = codes.round().long()
    return rate


def _image(model: HierarchicalVAE, images: torch.Tensor, rate) -> torch.Tensor:
    """The model's reconstruction of ``images`` in evaluation mode (no noise)."""
    training = model.training
    try:
        with torch.no_grad():
            return model.eval()(images.float(), rate)["x_hat"]
    finally:
        model.train(training)


def _module(weight_name: str) -> str:
    return weight_name.removesuffix(".weight")


def _inputs_and_outputs(model, readers: list[str], images) -> dict:
    """{module name: (its input, its output)} over one pass on ``images``."""
    seen, hooks = {}, []
    for name in readers:

        def record(module, inputs, output, name=name):
            seen[name] = (inputs[0].detach().double(), output.detach().double())

        hooks.append(model.get_submodule(name).register_forward_hook(record))
    rate = _spread_rates(model, images.shape[0])
    training = model.training
    try:
        # Several images: the residual blocks' plain forward, which calls
        # their convolutions as modules (one image's would fold them).
        with torch.no_grad():
            model.eval()(images.float(), rate)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return seen


def _snapshots(stream: Stream, seen: dict) -> torch.Tensor:
    """The stream's channels as every reader saw them, one row per position."""
    rows = []
    for name, _, offset in stream.readers:
        x = seen[_module(name)][0].narrow(1, offset, stream.width)
        rows.append(x.transpose(0, 1).reshape(stream.width, -1).T)
    return _sampled(torch.cat(rows))


def _best_predictors(rows: torch.Tensor, count: int) -> torch.Tensor:
    """Indexes (ascending) of ``count`` columns that predict the others best:
    greedy, each the column least explained by those before it (pivoted
    Cholesky factorization of their covariance)."""
    centred = rows - rows.mean(0)
    covariance = centred.T @ centred
    residual = covariance.diagonal().clone()
    factor = torch.zeros(covariance.shape[0], count, dtype=covariance.dtype)
    picked = []
    for j in range(count):
        pivot = int(residual.argmax())
        picked.append(pivot)
        column = covariance[:, pivot] - factor[:, :j] @ factor[pivot, :j]
        factor[:, j] = column / residual[pivot].clamp_min(1e-30).sqrt()
        residual -= factor[:, j] ** 2
        residual[picked] = -torch.inf
    return torch.tensor(sorted(picked))


def _refit(module, x, y, name: str, indexes: dict):
    """``module``'s weight and bias from its kept inputs to its kept outputs."""
    # Conv2d weights are (out, in, k, k), ConvTranspose2d ones (in, out, k, k).
    transposed = isinstance(module, nn.ConvTranspose2d)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    x = x.index_select(1, indexes[f"{name}.weight", in_dim])
    out_index = indexes.get((f"{name}.weight", out_dim))
    if out_index is not None:
        y = y.index_select(1, out_index)
    return (_fit_patch_up if transposed else _fit_conv)(module, x, y)


def _fit_conv(module, x, y):
    """A convolution's weight and bias mapping x to y (B, C, h, w) best."""
    patches = F.unfold(
        x, module.kernel_size, padding=module.padding, stride=module.stride
    )
    inputs = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    targets = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    coefficients, intercept = _least_squares(inputs, targets)
    weight = coefficients.T.reshape(y.shape[1], x.shape[1], *module.kernel_size)
    return weight.float(), intercept.float()


def _fit_patch_up(module, x, y):
    """`layers.patch_up`'s weight and bias: each input vector to one k x k patch."""
    k = module.stride[0]
    batch, channels, height, width = y.shape
    inputs = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    patches = y.reshape(batch, channels, height // k, k, width // k, k)
    targets = patches.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels * k * k)
    coefficients, intercept = _least_squares(inputs, targets)
    weight = coefficients.reshape(x.shape[1], channels, k, k)
    # One bias per channel: the mean of its k x k positions' intercepts.
    return weight.float(), intercept.reshape(channels, k * k).mean(1).float()


def _least_squares(inputs, targets):
    """(coefficients, intercept) of targets ~ inputs @ coefficients + intercept
    on a fixed sample of the rows, slightly ridge-regularized."""
    both = _sampled(torch.cat([inputs, targets], 1))
    inputs, targets = both[:, : inputs.shape[1]], both[:, inputs.shape[1] :]
    design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
    gram = design.T @ design
    ridge = 1e-6 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge, design.T @ targets)
    return solution[:-1], solution[-1]


def _sampled(rows: torch.Tensor) -> torch.Tensor:
    """At most `_ROWS` of the rows, the same ones on every call of that size."""
    if len(rows) <= _ROWS:
        return rows
    generator = torch.Generator().manual_seed(0)
    return rows[torch.randperm(len(rows), generator=generator)[:_ROWS]]


def _streams(config, level: int) -> list[Stream]:
    """Every stream at ``level`` of a model of ``config``."""
    width, last = config.widths[level], config.num_levels - 1
    encoder, decoder = Stream(width), Stream(width)
    streams = [encoder, decoder]
    # The encoder's features: from the pixels or the level below, through the
    # level's blocks, to the level above and each latent layer's posterior.
    source = "stem" if level == last else f"downsample.{level}"
    _written(encoder, source, dim=0)
    if level > 0:
        encoder.readers.append((f"downsample.{level - 1}.weight", 1, 0))
    for block in range(config.encoder_blocks[level]):
        streams.append(_residual(encoder, f"encoder_blocks.{level}.{block}"))
    # The decoder's state: from the level above (or the learned start), through
    # the latent layers and blocks, to the level below or the pixels.
    if level == 0:
        decoder.writers.append(("initial_state", 1, 0))
    else:
        decoder.writers.append((f"upsample.{level - 1}.weight", 1, 0))
        decoder.writers.append((f"upsample.{level - 1}.bias", 0, 0))
    if level < last:
        decoder.readers.append((f"upsample.{level}.weight", 0, 0))
    else:
        decoder.readers.append(("output.weight", 0, 0))
    for layer in range(config.latent_layers[level]):
        prefix = f"latent_blocks.{level}.{layer}"
        streams.append(_residual(decoder, f"{prefix}.prior_block"))
        decoder.readers.append((f"{prefix}.prior_head.weight", 1, 0))
        _written(decoder, f"{prefix}.z_embedding", dim=0)
        posterior = Stream(width)
        _written(posterior, f"{prefix}.posterior_merge", dim=0)
        decoder.readers.append((f"{prefix}.posterior_merge.weight", 1, 0))
        encoder.readers.append((f"{prefix}.posterior_merge.weight", 1, width))
        streams.append(_residual(posterior, f"{prefix}.posterior_block"))
        posterior.readers.append((f"{prefix}.posterior_head.weight", 1, 0))
        streams.append(posterior)
    for block in range(config.decoder_blocks[level]):
        streams.append(_residual(decoder, f"decoder_blocks.{level}.{block}"))
    return streams


def _written(stream: Stream, module: str, dim: int) -> None:
    stream.writers.append((f"{module}.weight", dim, 0))
    stream.writers.append((f"{module}.bias", 0, 0))


def _residual(stream: Stream, block: str) -> Stream:
    """Add a residual block on ``stream``; return the stream of its hidden channels."""
    stream.readers.append((f"{block}.conv1.weight", 1, 0))
    _written(stream, f"{block}.conv2", dim=0)
    hidden = Stream(stream.width)
    _written(hidden, f"{block}.conv1", dim=0)
    hidden.readers.append((f"{block}.conv2.weight", 1, 0))
    # The modulation's scales, then its shifts, one per hidden channel.
    for offset in (0, stream.width):
        hidden.writers.append((f"{block}.modulation.weight", 0, offset))
        hidden.writers.append((f"{block}.modulation.bias", 0, offset))
    return hidden
