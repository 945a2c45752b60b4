"""models/: forward pass, per-layer rates, loss, configs, checkpoints, training."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch

from hvae_compress import codec, models
from hvae_compress.cli import main as cli_main
from hvae_compress.files import list_images
from hvae_compress.models import exact, narrow
from hvae_compress.models.data import RandomCrops, split_holdout
from hvae_compress.models.grow import (
    add_latent_layers,
    deepen_decoder,
    deepen_encoder,
    widen_latents,
)
from hvae_compress.models.hvae import to_pixels_uint8
from hvae_compress.models.layers import ResBlock
from hvae_compress.models.train import (
    Trainer,
    TrainOptions,
    mean_over_processes,
    sample_rate_codes,
    train,
)

from .conftest import REPO, TRAIN_00, make_tiny_model, natural_image, needs_shared


def rate_codes(model, batch=2, quality=50):
    """Rate codes (B, 1 + L) for a quality and betas of 1."""
    codes = torch.zeros(batch, 1 + model.num_layers, dtype=torch.int64)
    codes[:, 0], codes[:, 1:] = model.config.quality_rate(quality)
    return codes


def compress_all(model, pixels, rate, **options) -> dict:
    """compress, with what it writes per layer collected into lists."""
    coded = {"symbols": [], "indexes": [], "scales": []}

    def write_symbols(layer, symbols, indexes, prior_scales):
        assert layer == len(coded["symbols"])
        for key, value in zip(coded, (symbols, indexes, prior_scales()), strict=True):
            coded[key].append(value)

    return {**coded, **model.compress(pixels, rate, write_symbols, **options)}


def test_forward_returns_reconstruction_and_one_likelihood_per_layer(tiny_model):
    x = torch.rand(2, 3, 32, 48)
    out = tiny_model(x, rate_codes(tiny_model))
    assert out["x_hat"].shape == x.shape
    assert list(out["likelihoods"]) == ["layer0", "layer1", "layer2"]
    strides = tiny_model.config.layer_strides()
    for (name, p), stride, channels in zip(
        out["likelihoods"].items(),
        strides,
        tiny_model.config.layer_channels(),
        strict=True,
    ):
        assert p.shape == (2, channels, 32 // stride, 48 // stride), name


def test_rates_are_positive_and_finite_in_training_and_eval_mode():
    model = make_tiny_model()
    x = torch.rand(2, 3, 32, 32)
    for training in (True, False):
        model.train(training)
        rate = rate_codes(model)
        result = models.RateDistortionLoss()(
            model(x, rate), x, *model.rate_values(rate)
        )
        assert torch.isfinite(result["loss"])
        assert (result["per_layer_bpp"] > 0).all()
        assert torch.isfinite(result["per_layer_bpp"]).all()


def test_per_layer_bits_sum_to_the_total(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    rate = rate_codes(tiny_model)
    out = tiny_model(x, rate)
    result = models.RateDistortionLoss()(out, x, *tiny_model.rate_values(rate))
    total_bits = sum(-torch.log2(p).sum() for p in out["likelihoods"].values())
    assert torch.allclose(result["per_layer_bpp"].sum(), result["bpp"])
    assert torch.allclose(result["bpp"], total_bits / (2 * 32 * 32))


def test_loss_weights_each_layer_by_its_beta(tiny_model):
    x = torch.rand(1, 3, 32, 32)
    lmbda = torch.tensor([0.01])
    out = tiny_model(x, rate_codes(tiny_model, batch=1))
    criterion = models.RateDistortionLoss()
    plain = criterion(out, x, lmbda, torch.ones(1, 3))
    weighted = criterion(out, x, lmbda, torch.tensor([[1.0, 1.0, 3.0]]))
    extra = 2 * plain["per_layer_bpp"][2]
    assert torch.allclose(weighted["loss"], plain["loss"] + extra)


def test_gradients_reach_every_parameter():
    """Every weight learns once the zero-initialised residual branches have opened.

    Residual blocks start as the identity (last convolution and modulation at
    zero); each update opens one more stage, so the third backward pass reaches
    everything, the rate embedding included.
    """
    model = make_tiny_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 32)
    rate = torch.tensor([[600, 3, -5, 16], [3500, -32, 0, 7]])
    for _ in range(3):
        optimizer.zero_grad()
        out = model(x, rate)
        models.RateDistortionLoss()(out, x, *model.rate_values(rate))["loss"].backward()
        optimizer.step()
    silent = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()
    ]
    assert silent == []


def test_rounded_latents_reach_the_decoder_and_the_noise_only_the_rates():
    model = make_tiny_model().train()
    x = torch.rand(2, 3, 32, 32)
    rate = rate_codes(model)
    for rounded in (False, True):
        model.rounded_latents = rounded
        torch.manual_seed(1)
        first = model(x, rate)
        torch.manual_seed(2)
        second = model(x, rate)
        assert torch.equal(first["x_hat"], second["x_hat"]) == rounded
        assert not torch.equal(
            first["likelihoods"]["layer0"], second["likelihoods"]["layer0"]
        )
    # Straight through the rounding, the distortion alone trains the posterior.
    first["x_hat"].square().mean().backward()
    posterior_head = model.latent_blocks[-1][-1].posterior_head.weight
    assert posterior_head.grad is not None and posterior_head.grad.any()


def test_compress_and_decompress_reproduce_the_rounded_forward_pass(tiny_model):
    pixels = (torch.rand(1, 3, 48, 32) * 255).to(torch.uint8)
    rate = rate_codes(tiny_model, batch=1)
    reference = to_pixels_uint8(tiny_model(pixels.float() / 255, rate)["x_hat"])
    coded = compress_all(tiny_model, pixels, rate, reconstruct=True)
    symbols, indexes = iter(coded["symbols"]), iter(coded["indexes"])

    def read_symbols(layer, layer_indexes):
        assert torch.equal(layer_indexes, next(indexes))
        return next(symbols)

    decoded = tiny_model.decompress((3, 2), rate, read_symbols)
    assert torch.equal(coded["pixels"], reference)
    assert torch.equal(decoded["pixels"], reference)


def test_compress_lets_go_of_the_pixels_and_features_before_the_coder_runs(
    tiny_model,
):
    """What bounds the encoder's memory on large images: the caller's pixels
    are dropped once encoded, and a layer reaches the coder only after its
    level's encoder features are freed (for the last layer of each level)."""
    pixels = []

    def new_pixels():
        image = (torch.rand(1, 3, 64, 96) * 255).to(torch.uint8)
        pixels.append(weakref.ref(image))
        return image

    features = []
    original = tiny_model.encode_features

    def encode_features(*args, **kwargs):
        maps = original(*args, **kwargs)
        features.extend(weakref.ref(m) for m in maps if m is not None)
        return maps

    def write_symbols(layer, *_):
        assert pixels[0]() is None
        if layer == tiny_model.num_layers - 1:
            assert all(f() is None for f in features)
        seen.append(layer)

    seen = []
    tiny_model.encode_features = encode_features
    try:
        tiny_model.compress(new_pixels(), rate_codes(tiny_model, 1), write_symbols)
    finally:
        del tiny_model.encode_features
    assert seen == list(range(tiny_model.num_layers))


def test_tiled_runs_compute_what_whole_runs_compute(tiny_model):
    """Exactly the same symbols and indexes; pixels within float rounding."""
    pixels = (torch.rand(1, 3, 96, 128) * 255).to(torch.uint8)
    rate = rate_codes(tiny_model, batch=1)
    whole = compress_all(tiny_model, pixels, rate, reconstruct=True)
    tiled = compress_all(tiny_model, pixels, rate, reconstruct=True, tile=16)
    for key in ("symbols", "indexes"):
        assert all(map(torch.equal, whole[key], tiled[key]))
    difference = (whole["pixels"].int() - tiled["pixels"].int()).abs()
    assert difference.max() <= 1


def test_a_residual_block_codes_one_image_as_it_trains_on_a_batch():
    """Coding folds the rate modulation into the first convolution's weights."""
    torch.manual_seed(0)
    block = ResBlock(8, 4)
    for parameter in block.parameters():  # the blocks start as the identity
        torch.nn.init.normal_(parameter, std=0.3)
    x, cond = torch.randn(2, 8, 6, 5), torch.randn(2, 4)
    original = x.clone()
    batched = block(x, cond)  # the general path
    with torch.no_grad():
        singles = [block(x[i : i + 1], cond[i : i + 1]) for i in range(2)]
    assert (batched - x).abs().mean() > 0.1  # the block does something
    torch.testing.assert_close(torch.cat(singles), batched.detach())
    assert torch.equal(x, original)  # in-place updates spare the input


def test_compressed_indexes_are_the_table_of_the_continuous_scale(tiny_model):
    """Index i means scale_min * exp(i * step): the nearest table in log scale."""
    pixels = (torch.rand(1, 3, 32, 32) * 255).to(torch.uint8)
    coded = compress_all(tiny_model, pixels, rate_codes(tiny_model, 1))
    config = tiny_model.config
    step = np.log(config.scale_max / config.scale_min) / (config.num_scales - 1)
    for indexes, scales in zip(coded["indexes"], coded["scales"], strict=True):
        nearest = torch.round(torch.log(scales / config.scale_min) / step)
        assert (indexes - nearest).abs().max() <= 0 + 1e-6


@pytest.mark.skipif(not exact._ONEDNN_INT8, reason="torch without oneDNN int8 ops")
def test_an_exact_convolution_on_a_7_bit_grid_runs_int8_with_the_same_sums(
    monkeypatch,
):
    """uint8 x int8 kernels give the float32 convolution's integers, inputs
    beyond the grid clamped alike (benchmarks/int8_scale_study.md: exact under
    every oneDNN ISA cap for 7-bit inputs)."""
    torch.manual_seed(0)
    conv = exact.ExactConv2d(32, 16, 3, exact.Grid(5, 0, exact.INT8_INPUT_UNITS))
    conv.eval()
    shape = (1, 32, 24, 40)
    x = (
        torch.randint(-20, 160, shape)
        .float()
        .contiguous(memory_format=torch.channels_last)
    )
    with torch.inference_mode():
        assert conv._runs_int8(x)
        in_int8 = conv(x)
        monkeypatch.setattr(exact, "_ONEDNN_INT8", False)
        in_float32 = conv(x)
    assert in_float32.abs().max() > 1000  # sums of many products, not trivial
    assert torch.equal(in_int8, in_float32)
    monkeypatch.setattr(exact, "_ONEDNN_INT8", True)
    with torch.inference_mode():
        assert torch.equal(copy.deepcopy(conv)(x), in_int8)  # packs its own


@pytest.mark.skipif(not exact._ONEDNN_INT8, reason="torch without oneDNN int8 ops")
def test_a_7_bit_scale_network_codes_alike_in_int8_and_float32(monkeypatch):
    config = dataclasses.replace(
        models.get_config("tiny"), scale_activation_units=exact.INT8_INPUT_UNITS
    )
    model = make_tiny_model(config=config)
    pixels = torch.from_numpy(natural_image(64, 96)).permute(2, 0, 1)[None]
    rate = rate_codes(model, batch=1)
    in_int8 = compress_all(model, pixels.contiguous(), rate)
    assert model.scale_network.blocks[0][0].conv1._int8_weights is not None
    monkeypatch.setattr(exact, "_ONEDNN_INT8", False)
    in_float32 = compress_all(model, pixels.contiguous(), rate)
    for key in ("symbols", "indexes"):
        assert all(map(torch.equal, in_int8[key], in_float32[key]))


def test_the_activation_grid_is_part_of_a_models_fingerprint(tiny_model):
    """The same weights on another grid code differently: their files must not
    pass for each other's (the default grid leaves earlier fingerprints alone)."""
    config = dataclasses.replace(tiny_model.config, scale_activation_units=127)
    seven_bit = models.HierarchicalVAE(config)
    seven_bit.load_state_dict(tiny_model.state_dict())
    default = codec.Codec(tiny_model, "cpu").fingerprint
    assert codec.Codec(seven_bit, "cpu").fingerprint != default


def test_table_indexes_compare_float32_logits_exactly_with_the_thresholds(tiny_model):
    scales = tiny_model.scale_network
    thresholds = scales.thresholds  # float64
    nearest = thresholds.float()
    infinity = torch.tensor(float("inf"))
    # Logits on, just above and just below every threshold, and random ones.
    logits = torch.cat(
        [
            nearest,
            torch.nextafter(nearest, infinity),
            torch.nextafter(nearest, -infinity),
            torch.randn(10_000) * 8,
        ]
    )
    expected = (logits.double()[:, None] > thresholds).sum(1).to(torch.int32)
    assert torch.equal(scales.indexes(logits), expected)


def test_widened_latents_code_the_old_channels_alike_and_the_new_as_free_zeros(
    tiny_model,
):
    wider = widen_latents(tiny_model, (4, 6, 8))
    assert wider.config.layer_channels() == [4, 6, 8]
    pixels = (torch.rand(1, 3, 64, 96) * 255).to(torch.uint8)
    rate = rate_codes(tiny_model, batch=1)
    before = compress_all(tiny_model, pixels, rate, reconstruct=True)
    after = compress_all(wider, pixels, rate, reconstruct=True)
    assert torch.equal(before["pixels"], after["pixels"])
    for layer, old in enumerate(tiny_model.config.layer_channels()):
        for key in ("symbols", "indexes"):
            assert torch.equal(after[key][layer][:, :old], before[key][layer])
        assert not after["symbols"][layer][:, old:].any()
        # The new channels' zeros cost under a hundredth of a bit each.
        new_scales = after["scales"][layer][:, old:]
        zero = models.latent_likelihood(torch.zeros(()), torch.zeros(()), new_scales)
        assert (-torch.log2(zero) < 0.01).all()


def test_widened_latents_get_a_gradient_from_the_image(tiny_model):
    # Trained on rounded latents, a new channel's posterior must still feel the
    # distortion, or it stays at zero for good.
    wider = widen_latents(tiny_model, (4, 6, 8)).train()
    wider.rounded_latents = True
    x = torch.rand(2, 3, 64, 64)
    distortion = (wider(x, rate_codes(wider))["x_hat"] - x).square().mean()
    distortion.backward()
    for level, blocks in enumerate(wider.latent_blocks[1:], start=1):
        new = blocks[0].posterior_head.weight.grad[
            tiny_model.config.latent_channels[level] :
        ]
        assert new.abs().sum() > 0


def test_latents_can_only_be_widened(tiny_model):
    with pytest.raises(ValueError, match="one entry per level"):
        widen_latents(tiny_model, (4, 4))
    with pytest.raises(ValueError, match="from 4 to 2"):
        widen_latents(tiny_model, (4, 2, 4))
    with pytest.raises(ValueError, match="level 2 has no latent layers"):
        widen_latents(tiny_without_the_finest_layer(), (4, 4, 4))


def tiny_without_the_finest_layer() -> models.HierarchicalVAE:
    """The tiny model with no latent layer at its finest level, like ``base``."""
    config = dataclasses.replace(
        models.get_config("tiny"),
        latent_layers=(1, 1, 0),
        latent_channels=(4, 4, 0),
        scale_widths=(16, 16, 0),
    )
    return make_tiny_model(config=config)


@pytest.mark.parametrize(
    "start, layers, positions",
    [("tiny", (2, 1, 1), [0, 2, 3]), ("no finest layer", (1, 1, 1), [0, 1])],
)
def test_added_latent_layers_code_the_same_image_and_the_old_layers_symbols(
    start, layers, positions
):
    model = make_tiny_model() if start == "tiny" else tiny_without_the_finest_layer()
    grown = add_latent_layers(model, layers, (4, 4, 6))
    assert grown.config.latent_layers == layers
    pixels = (torch.rand(1, 3, 64, 96) * 255).to(torch.uint8)
    # Distinct betas per layer: each must reach its layer's weights in the grown model.
    rate = torch.tensor([[2000, *range(-3, -3 + model.num_layers)]])
    grown_rate = torch.zeros(1, 1 + grown.num_layers, dtype=torch.int64)
    grown_rate[:, 0] = rate[:, 0]
    grown_rate[:, [1 + p for p in positions]] = rate[:, 1:]
    before = compress_all(model, pixels, rate, reconstruct=True)
    after = compress_all(grown, pixels, grown_rate, reconstruct=True)
    assert torch.equal(before["pixels"], after["pixels"])
    for old, new in enumerate(positions):
        for key in ("symbols", "indexes"):
            assert torch.equal(after[key][new], before[key][old])
    added = [i for i in range(grown.num_layers) if i not in positions]
    for layer in added:
        assert not after["symbols"][layer].any()
        zero = models.latent_likelihood(
            torch.zeros(()), torch.zeros(()), after["scales"][layer]
        )
        assert (-torch.log2(zero) < 0.01).all()


def test_an_added_latent_layer_gets_a_gradient_from_the_image():
    grown = add_latent_layers(tiny_without_the_finest_layer(), (1, 1, 1), (4, 4, 6))
    grown.train().rounded_latents = True
    x = torch.rand(2, 3, 64, 64)
    distortion = (grown(x, rate_codes(grown))["x_hat"] - x).square().mean()
    distortion.backward()
    assert grown.latent_blocks[2][0].posterior_head.weight.grad.abs().sum() > 0


def test_latent_layers_can_only_be_added_and_new_levels_need_channels(tiny_model):
    with pytest.raises(ValueError, match="one entry per level"):
        add_latent_layers(tiny_model, (1, 1))
    with pytest.raises(ValueError, match="from 1 to 0"):
        add_latent_layers(tiny_model, (1, 1, 0))
    with pytest.raises(ValueError, match="need a number of latent channels"):
        add_latent_layers(tiny_without_the_finest_layer(), (1, 1, 1))


DEEPEN = {"decoder_blocks": deepen_decoder, "encoder_blocks": deepen_encoder}


@pytest.mark.parametrize("field", DEEPEN)
def test_a_deepened_model_codes_the_same_image_and_symbols(tiny_model, field):
    own = getattr(tiny_model.config, field)
    blocks = (own[0] + 1, own[1], own[2] + 2)
    deeper = DEEPEN[field](tiny_model, blocks)
    assert getattr(deeper.config, field) == blocks
    pixels = (torch.rand(1, 3, 64, 96) * 255).to(torch.uint8)
    rate = rate_codes(tiny_model, batch=1)
    before = compress_all(tiny_model, pixels, rate, reconstruct=True)
    after = compress_all(deeper, pixels, rate, reconstruct=True)
    assert torch.equal(before["pixels"], after["pixels"])
    for key in ("symbols", "indexes"):
        for old, new in zip(before[key], after[key], strict=True):
            assert torch.equal(old, new)


@pytest.mark.parametrize("field", DEEPEN)
def test_new_blocks_learn_from_the_first_step(tiny_model, field):
    own = getattr(tiny_model.config, field)
    deeper = DEEPEN[field](tiny_model, (*own[:2], own[2] + 1)).train()
    x = torch.rand(2, 3, 64, 64)
    distortion = (deeper(x, rate_codes(deeper))["x_hat"] - x).square().mean()
    distortion.backward()
    new_block = getattr(deeper, field)[2][own[2]]
    assert new_block.conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("field", DEEPEN)
def test_blocks_can_only_be_added(tiny_model, field):
    own = getattr(tiny_model.config, field)
    with pytest.raises(ValueError, match="one entry per level"):
        DEEPEN[field](tiny_model, own[:2])
    with pytest.raises(ValueError, match="from 1 to 0"):
        DEEPEN[field](tiny_model, (*own[:2], 0))


def test_training_grows_an_initial_model(tmp_path, training_folder):
    tiny_training(tmp_path / "a", training_folder, steps=5)
    start = str(tmp_path / "a" / "checkpoint.pt")
    grown = dict(
        latent_layers=[1, 2, 1],
        latent_channels=[4, 4, 8],
        decoder_blocks=[0, 1, 2],
        encoder_blocks=[1, 1, 2],
    )
    tiny_training(tmp_path / "b", training_folder, 10, init=start, **grown)
    model, _ = models.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert model.config.latent_layers == (1, 2, 1)
    assert model.config.latent_channels == (4, 4, 8)
    assert model.config.decoder_blocks == (0, 1, 2)
    assert model.config.encoder_blocks == (1, 1, 2)
    for flag, value in grown.items():
        with pytest.raises(ValueError, match="reshape a model with --init"):
            tiny_training(
                tmp_path / "c", training_folder, 15, resume=start, **{flag: value}
            )


def with_dead_channel(model, level: int, channel: int):
    """``model`` with one channel of every feature map at ``level`` never
    written (so always zero): the model computes what it computed without it."""
    state = model.state_dict()
    with torch.no_grad():
        for stream in narrow._streams(model.config, level):
            for name, dim, offset in stream.writers:
                state[name].narrow(dim, offset + channel, 1).zero_()
    return model


def test_narrowing_drops_the_channels_that_carry_nothing_and_computes_the_same():
    # Narrowing keeps the channels that predict the others best and refits the
    # layers that read them: where a channel of every stream is always zero,
    # dropping just those must leave the image and the rates as they were.
    model = with_dead_channel(make_tiny_model(seed=3), level=2, channel=5).eval()
    images = torch.stack([torch.rand(3, 32, 48) for _ in range(4)])
    widths = (16, 16, 15)
    narrower = narrow.narrow_widths(model, widths, images).eval()
    assert narrower.config.widths == widths
    assert narrower.decoder_blocks[2][0].conv1.weight.shape == (15, 15, 3, 3)
    rate = rate_codes(model, batch=4)
    with torch.no_grad():
        before, after = model(images, rate), narrower(images, rate)
    torch.testing.assert_close(after["x_hat"], before["x_hat"], atol=1e-4, rtol=0)
    for layer, likelihood in before["likelihoods"].items():
        torch.testing.assert_close(after["likelihoods"][layer], likelihood)


def test_narrowing_keeps_between_one_channel_and_the_models_own(tiny_model):
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="one entry per level"):
        narrow.narrow_widths(tiny_model, (16, 16), images)
    with pytest.raises(ValueError, match="from 16 to 17 channels"):
        narrow.narrow_widths(tiny_model, (16, 16, 17), images)
    with pytest.raises(ValueError, match="from 16 to 0 channels"):
        narrow.narrow_widths(tiny_model, (16, 16, 0), images)
    with pytest.raises(ValueError, match="at least 2 images"):
        narrow.narrow_widths(tiny_model, (16, 16, 8), images[:1])


def test_shortening_removes_the_blocks_whose_loss_changes_the_image_least():
    # Blocks added by deepen_decoder are the identity, the model's own one is
    # not (its last convolution stirred up from its zero start): shortening
    # back must remove exactly the added ones, wherever they sit.
    model = make_tiny_model(seed=3).eval()
    with torch.no_grad():
        model.decoder_blocks[2][0].conv2.weight.normal_(std=0.1)
    deeper = deepen_decoder(model, (1, 0, 3))
    blocks = deeper.decoder_blocks[2]
    blocks[0], blocks[2] = blocks[2], blocks[0]  # the model's own block last
    images = torch.rand(4, 3, 32, 48)
    shorter = narrow.shorten_decoder(deeper, (0, 0, 1), images).eval()
    assert shorter.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(shorter.state_dict()[name], value), name
    one_fewer = narrow.shorten_decoder(deeper, (1, 0, 2), images)
    kept = one_fewer.decoder_blocks[2]
    assert torch.equal(kept[1].conv2.weight, model.decoder_blocks[2][0].conv2.weight)


def test_shortening_keeps_between_none_and_the_models_own_blocks(tiny_model):
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="one entry per level"):
        narrow.shorten_decoder(tiny_model, (0, 0), images)
    with pytest.raises(ValueError, match="from 1 to 2 decoder blocks"):
        narrow.shorten_decoder(tiny_model, (0, 0, 2), images)


def test_training_shortens_and_deepens_an_initial_models_decoder(
    tmp_path, training_folder
):
    tiny_training(tmp_path / "a", training_folder, steps=5)
    start = str(tmp_path / "a" / "checkpoint.pt")
    tiny_training(
        tmp_path / "b", training_folder, 10, init=start, decoder_blocks=[1, 0, 0]
    )
    model, _ = models.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert model.config.decoder_blocks == (1, 0, 0)


def test_training_narrows_an_initial_model(tmp_path, training_folder):
    tiny_training(tmp_path / "a", training_folder, steps=5)
    start = str(tmp_path / "a" / "checkpoint.pt")
    tiny_training(tmp_path / "b", training_folder, 10, init=start, widths=[16, 12, 8])
    model, _ = models.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert model.config.widths == (16, 12, 8)
    with pytest.raises(ValueError, match="reshape a model with --init and --widths"):
        tiny_training(tmp_path / "c", training_folder, 15, resume=start, widths=[8] * 3)


def test_training_switches_a_model_to_a_7_bit_scale_network(tmp_path, training_folder):
    tiny_training(tmp_path / "a", training_folder, steps=5)
    start = str(tmp_path / "a" / "checkpoint.pt")
    for how in ("init", "resume"):
        out = tmp_path / how
        tiny_training(
            out, training_folder, 10, scale_activation_units=127, **{how: start}
        )
        model, _ = models.load_checkpoint(out / "checkpoint.pt")
        assert model.config.scale_activation_units == 127
        assert model.scale_network.blocks[0][0].conv1.grid.high == 127


def test_decompress_without_symbols_uses_prior_means(tiny_model):
    rate = rate_codes(tiny_model, batch=1)
    out = tiny_model.decompress((2, 2), rate, lambda layer, indexes: None)
    assert out["pixels"].shape == (1, 3, 32, 32)


def test_model_rejects_sizes_that_are_not_multiples_of_the_top_stride(tiny_model):
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_model(torch.rand(1, 3, 30, 32), rate_codes(tiny_model, batch=1))


def test_model_rejects_rate_codes_of_the_wrong_shape(tiny_model):
    with pytest.raises(ValueError, match=r"rate codes need shape \(batch, 4\)"):
        tiny_model(torch.rand(1, 3, 32, 32), torch.zeros(1, 3, dtype=torch.int64))


def test_build_model_lists_valid_presets_for_an_unknown_name():
    with pytest.raises(ValueError, match="base, fast, tiny"):
        models.build_model("huge")


def test_base_preset_meets_the_architecture_brief():
    config = models.get_config("base")
    assert config.num_latent_layers >= 3
    assert len(set(config.layer_strides())) >= 3
    parameters = sum(p.numel() for p in models.build_model("base").parameters())
    assert parameters <= 20_000_000


def test_fast_preset_is_base_slimmed_and_nothing_else():
    # Slimmed only (narrower maps, fewer decoder blocks): it is trained by
    # slimming a trained base, and writes the same kind of file.
    base, fast = models.get_config("base"), models.get_config("fast")
    assert (
        dataclasses.replace(
            fast, name="base", widths=base.widths, decoder_blocks=base.decoder_blocks
        )
        == base
    )
    assert all(f <= b for f, b in zip(fast.widths, base.widths, strict=True))
    assert all(
        f <= b for f, b in zip(fast.decoder_blocks, base.decoder_blocks, strict=True)
    )
    assert fast.widths[-2:] == tuple(b // 2 for b in base.widths[-2:])


def test_config_survives_a_dict_round_trip():
    config = models.get_config("base")
    assert (
        models.HVAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    )
    with pytest.raises(ValueError, match="unknown config fields"):
        models.HVAEConfig.from_dict({**config.to_dict(), "depth": 3})


def test_quality_maps_monotonically_onto_the_lambda_range():
    config = models.get_config("base")
    rates = [config.quality_rate(q) for q in range(0, 101, 10)]
    assert all(raised == 0 for _, raised in rates)  # uncalibrated: lambda only
    lambdas = [config.lmbda_of(code) for code, _ in rates]
    assert lambdas == sorted(lambdas)
    assert lambdas[0] == pytest.approx(config.lmbda_min)
    assert lambdas[-1] == pytest.approx(config.lmbda_max)
    with pytest.raises(ValueError):
        config.quality_rate(101)


def test_lambda_and_beta_codes_round_trip_to_the_nearest_grid_point():
    config = models.get_config("base")
    assert config.lmbda_of(config.lmbda_code(0.01)) == pytest.approx(0.01, rel=1e-3)
    assert config.lmbda_code(config.lmbda_of(1234)) == 1234
    assert config.beta_code_range == (-32, 32)
    assert config.beta_code(2.0) == 16 and config.beta_code(1.0) == 0
    with pytest.raises(ValueError, match="trained range"):
        config.lmbda_code(1.0)
    with pytest.raises(ValueError, match="layer weights must lie in"):
        config.beta_code(8.0)


def test_an_extended_lambda_range_keeps_every_code_and_reaches_higher():
    config = models.get_config("base")
    extended = config.extended_to(1.1)
    assert extended.lmbda_top_code > models.LMBDA_CODES
    assert extended.lmbda_top == pytest.approx(1.1, rel=1e-3)
    assert extended.lmbda_code(extended.lmbda_top) == extended.lmbda_top_code
    # Codes keep their lambda: a model trained on the old range carries on.
    for code in (0, 1234, models.LMBDA_CODES):
        assert extended.lmbda_of(code) == config.lmbda_of(code)
    assert extended.quality_rate(100) == (extended.lmbda_top_code, 0)
    assert extended.lmbda_code(1.0) > models.LMBDA_CODES
    assert extended.extended_to(0.5) == extended  # a range never shrinks
    assert config.extended_to(config.lmbda_max) == config
    with pytest.raises(ValueError, match="at least 4096"):
        models.HVAEConfig.from_dict({**config.to_dict(), "lmbda_top_code": 4000})


def test_the_original_range_keeps_the_scale_networks_position_grid():
    # Released weights were trained on this grid; a different one would
    # change their scales and so their files.
    from hvae_compress.models.scales import positions_grid

    grid = models.build_model("tiny").scale_network.rate_in.grid
    assert (grid.frac, grid.low, grid.high) == (11, -2048, 2048)
    assert positions_grid(5632).high == 3584  # code 5632 at position 1.75


def test_codes_above_the_original_range_code_and_decode_exactly(tmp_path, image_file):
    torch.manual_seed(1)
    config = models.get_config("tiny").extended_to(1.1)
    model = models.HierarchicalVAE(config)
    with torch.no_grad():
        for parameter in model.scale_network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    model.refresh_grids()
    models.save_checkpoint(tmp_path / "raw.pt", models.checkpoint_dict(model, step=0))
    codec.export_model(tmp_path / "raw.pt", tmp_path / "extended.pt")
    extended = codec.Codec(tmp_path / "extended.pt", device="cpu")
    report = extended.encode_report(image_file, quality=100, reconstruct=True)
    header = codec.read_header(report.data)
    assert header.lmbda_code == config.lmbda_top_code > models.LMBDA_CODES
    assert header.lmbda == pytest.approx(1.1, rel=1e-3)
    decoded = np.asarray(extended.decode(report.data))
    assert np.array_equal(decoded, np.asarray(report.reconstruction))


def test_rate_values_turn_codes_into_lambda_and_betas(tiny_model):
    config = tiny_model.config
    lmbda, betas = tiny_model.rate_values(torch.tensor([[4096, -32, 0, 16]]))
    assert lmbda.item() == pytest.approx(config.lmbda_max, rel=1e-6)
    assert betas.tolist() == [[0.25, 1.0, 2.0]]


def test_checkpoint_round_trip_rebuilds_an_identical_model(tmp_path, tiny_model):
    path = tmp_path / "model.pt"
    models.save_checkpoint(path, models.checkpoint_dict(tiny_model, step=7))
    loaded, checkpoint = models.load_checkpoint(path)
    assert checkpoint["step"] == 7 and checkpoint["format"] == 2
    assert checkpoint["rate_range"]["lmbda"] == [0.0009, 0.16]
    assert loaded.config == tiny_model.config
    for (name, a), (_, b) in zip(
        tiny_model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 32, 32)
    rate = rate_codes(tiny_model, batch=1)
    assert torch.equal(loaded(x, rate)["x_hat"], tiny_model(x, rate)["x_hat"])


def test_checkpoint_loading_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not an hvae-compress checkpoint"):
        models.load_checkpoint(path)


def test_rate_codes_are_sampled_over_the_configured_ranges(tiny_model):
    options = TrainOptions(data=[], out="", random_beta_share=0.5)
    codes = sample_rate_codes(4096, tiny_model, options, "cpu")
    lmbda, betas = tiny_model.rate_values(codes)
    config = tiny_model.config
    assert codes[:, 0].min() >= 0 and codes[:, 0].max() <= 4096
    assert codes[:, 0].float().std() > 1000  # spread over the whole range
    assert lmbda.min() >= config.lmbda_min * 0.999999
    assert lmbda.max() <= config.lmbda_max * 1.000001
    assert ((betas >= config.beta_min) & (betas <= config.beta_max)).all()
    share_random = (betas != 1).any(dim=1).float().mean()
    assert 0.3 < share_random < 0.5  # half chosen, each with random layers


def test_a_share_of_lambdas_can_be_drawn_from_the_top_of_the_range(tiny_model):
    top = tiny_model.config.lmbda_top_code

    def lmbda_codes(share):
        options = TrainOptions(data=[], out="", top_lambda_share=share)
        return sample_rate_codes(4096, tiny_model, options, "cpu")[:, 0]

    def upper_half(codes):
        return (codes >= top // 2).float().mean()

    assert 0.45 < upper_half(lmbda_codes(0.0)) < 0.55
    # Half the images from the upper half, the other half over the whole range.
    tilted = lmbda_codes(0.5)
    assert 0.7 < upper_half(tilted) < 0.8
    assert tilted.min() < top // 8 and tilted.max() > top * 7 // 8
    only_top = lmbda_codes(1.0)
    assert only_top.min() >= top // 2 and only_top.max() <= top


def test_training_can_extend_the_lambda_range_of_a_model(tmp_path, training_folder):
    tiny_training(tmp_path / "a", training_folder, steps=5)
    tiny_training(
        tmp_path / "b",
        training_folder,
        steps=10,
        resume=str(tmp_path / "a" / "checkpoint.pt"),
        extend_lmbda=0.5,
    )
    model, checkpoint = models.load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert checkpoint["step"] == 10
    assert model.config.lmbda_top == pytest.approx(0.5, rel=1e-3)
    assert checkpoint["rate_range"]["lmbda"][1] == pytest.approx(0.5, rel=1e-3)


def tiny_training(out, data, steps, **overrides):
    options = dict(
        data=[str(data)],
        out=str(out),
        model="tiny",
        steps=steps,
        batch_size=4,
        crop=32,
        lr=1e-3,
        warmup_steps=5,
        checkpoint_every=5,
        log_every=5,
        quiet=True,
        precision="fp32",
        ema_decay=0.9,
    )
    return train(TrainOptions(**{**options, **overrides}))


def test_training_writes_checkpoints_and_resumes_from_them(tmp_path, training_folder):
    summary = tiny_training(tmp_path, training_folder, steps=10)
    assert summary["step"] == 10 and summary["skipped_steps"] == 0
    first = models.read_checkpoint(tmp_path / "checkpoint.pt")
    assert first["step"] == 10 and "ema_state_dict" in first and "optimizer" in first
    resume = str(tmp_path / "checkpoint.pt")
    summary = tiny_training(tmp_path, training_folder, steps=15, resume=resume)
    assert models.read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 15
    log = [
        json.loads(line)
        for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log if "loss" in r] == [5, 10, 15]


def test_held_out_images_depend_only_on_their_names(tmp_path):
    names = [f"img{i}.jpg" for i in range(40)]
    paths = [tmp_path / "a" / name for name in names]
    trained, held = split_holdout(paths, 5)
    assert len(held) == 5 and not set(held) & set(trained)
    assert sorted(trained + held) == sorted(paths)
    # Another folder layout and more images: the same names stay held out.
    moved = [tmp_path / "b" / name for name in names + ["extra.jpg"]]
    _, held_again = split_holdout(moved, 5)
    assert {p.name for p in held} - {p.name for p in held_again} <= {"extra.jpg"}
    with pytest.raises(ValueError, match="hold out 40 of 40"):
        split_holdout(paths, 40)


def is_pixel_window(crop: np.ndarray, image: np.ndarray) -> bool:
    """Whether ``crop`` is a window of ``image``'s pixels, mirrored or not."""
    size = crop.shape[0]
    for top in range(image.shape[0] - size + 1):
        for left in range(image.shape[1] - size + 1):
            window = image[top : top + size, left : left + size]
            if np.array_equal(crop, window) or np.array_equal(crop, window[:, ::-1]):
                return True
    return False


def test_crops_are_downscaled_only_down_to_the_minimum_scale(tmp_path):
    from PIL import Image

    pixels = natural_image(48, 40)
    Image.fromarray(pixels).save(tmp_path / "photo.png")

    def crops(min_scale):
        torch.manual_seed(0)
        data = RandomCrops([tmp_path / "photo.png"], 16, min_scale)
        tensors = [data[0] for _ in range(8)]
        return [(t * 255).round().byte().permute(1, 2, 0).numpy() for t in tensors]

    assert all(is_pixel_window(crop, pixels) for crop in crops(1.0))
    assert not any(is_pixel_window(crop, pixels) for crop in crops(0.5))


def test_training_validates_on_held_out_images_it_never_trains_on(
    tmp_path, training_folder
):
    summary = tiny_training(
        tmp_path, training_folder, steps=5, holdout=3, val_qualities=[50.0]
    )
    (result,) = summary["validation"]["holdout"]
    assert result["quality"] == 50.0 and result["bpp"] > 0 and result["psnr"] > 0
    events = [
        json.loads(line)
        for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
    ]
    assert events[-1]["validation"] == summary["validation"]
    options = TrainOptions([str(training_folder)], str(tmp_path), "tiny", holdout=3)
    trainer = Trainer(options)
    _, held = split_holdout(list_images([training_folder]), 3)
    assert len(trainer.trained) == 9 and not set(held) & set(trainer.trained)


@pytest.mark.slow
@pytest.mark.parametrize("average_every", [0, 1], ids=["ddp", "local-sgd"])
def test_distributed_training_with_two_gloo_processes(
    tmp_path, training_folder, average_every
):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "hvae_compress",
        "train",
        str(training_folder),
        "--out",
        str(tmp_path),
        "--model",
        "tiny",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--checkpoint-every",
        "2",
        "--average-every",
        str(average_every),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert models.read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    start = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    assert start["options"]["average_every"] == average_every


def _average_in_process(rank: int, store: str) -> None:
    """One of two gloo processes: tensors holding 10 * rank, one channels-last."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    try:
        image_like = torch.arange(24.0).reshape(1, 2, 3, 4) + 10 * rank
        tensors = [
            image_like.to(memory_format=torch.channels_last),
            torch.full((5,), 10.0 * rank),
        ]
        mean_over_processes(tensors)
        assert torch.equal(tensors[0], torch.arange(24.0).reshape(1, 2, 3, 4) + 5)
        assert tensors[0].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(tensors[1], torch.full((5,), 5.0))
    finally:
        dist.destroy_process_group()


def test_local_sgd_averages_weights_over_processes_in_any_layout(tmp_path):
    # An exception in either process fails the spawn.
    torch.multiprocessing.spawn(
        _average_in_process, args=(str(tmp_path / "store"),), nprocs=2
    )


def bottom_layer_share(checkpoint, betas, images) -> float:
    """Share of the file bytes in the bottom latent layer, at the trained betas."""
    from hvae_compress import codec

    coder = codec.Codec(checkpoint, "cpu")
    layer_bytes = np.zeros(3)
    for image in images:
        header = codec.read_header(coder.encode(image, lmbda=0.02, layer_weights=betas))
        layer_bytes += [r.num_bytes for r in header.layers]
    return layer_bytes[-1] / layer_bytes.sum()


@pytest.mark.slow
@needs_shared
def test_a_larger_bottom_layer_beta_moves_bits_out_of_that_layer(tmp_path):
    """The paper's effect, with the real training command, from one shared start."""
    common = [
        "--model",
        "tiny",
        "--crop",
        "64",
        "--batch-size",
        "8",
        "--lr",
        "2e-3",
        "--lambda",
        "0.02",
        "--ema-decay",
        "0.9",
        "--precision",
        "fp32",
        "--checkpoint-every",
        "100",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert (
        cli_main(
            [
                "train",
                str(TRAIN_00),
                "--out",
                str(tmp_path / "start"),
                "--steps",
                "300",
                *common,
            ]
        )
        == 0
    )
    start = str(tmp_path / "start" / "checkpoint.pt")
    shares = {}
    for name, betas in (("equal", "1,1,1"), ("bottom4", "1,1,4")):
        assert (
            cli_main(
                [
                    "train",
                    str(TRAIN_00),
                    "--out",
                    str(tmp_path / name),
                    "--init",
                    start,
                    "--steps",
                    "600",
                    "--layer-weights",
                    betas,
                    *common,
                ]
            )
            == 0
        )
        weights = [float(b) for b in betas.split(",")]
        images = [natural_image(128, 128, seed=s) for s in range(4)]
        shares[name] = bottom_layer_share(
            tmp_path / name / "checkpoint.pt", weights, images
        )
    print(f"bottom-layer share of the bits: {shares}")
    assert shares["bottom4"] < shares["equal"] - 0.03
