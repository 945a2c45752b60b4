"""The measuring tools' own logic (their results are committed with commands)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.checkpoint_ab import compare, labels, markdown, rd_point
from benchmarks.decode_profile import (
    SLIMMER,
    SLIMMER_ENCODERS,
    network_encode_seconds,
    profile_decode,
    slim_decode_seconds,
    slim_model,
    slimmed,
)
from benchmarks.int8_decoder_study import float_decoder_in_int8, uint8_activations
from hvae_compress import codec, models
from hvae_compress.evaluation.metrics import psnr

from .conftest import make_tiny_model, natural_image


def test_checkpoint_ab_tells_two_runs_checkpoints_apart():
    # Two runs' checkpoints share a file name; a table keyed by it kept only one.
    paths = ["released/base.pt", "runs/A/checkpoint.pt", "runs/B/checkpoint.pt"]
    assert labels(paths) == ["released/base.pt", "A/checkpoint.pt", "B/checkpoint.pt"]
    assert labels(["a.pt", "b.pt"]) == ["a.pt", "b.pt"]
    with pytest.raises(ValueError, match="twice"):
        labels(["runs/a.pt", "runs/a.pt"])


def test_checkpoint_ab_measures_what_the_codec_codes():
    # The A/B decides releases from rd_point: its rate must be the information
    # content the encoder reports for the same symbols, its PSNR that of the
    # pixels a decoder gives back. The untrained model's pixels are far off
    # (about 7 dB), so a slip such as unrounded pixels moves the PSNR by only
    # 2e-4 dB: hence the tight tolerances (both sides agree to 1e-6 here).
    coder = codec.Codec(make_tiny_model(seed=3), device="cpu", precision="fp32")
    pixels = natural_image(48, 80, seed=5)
    code = 1500
    report = coder.encode_report(
        pixels, lmbda=coder.config.lmbda_of(code), reconstruct=True
    )
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255
    bpp, quality = rd_point(coder.model.float().eval(), [x], code)
    assert bpp * 48 * 80 == pytest.approx(sum(report.estimated_bits), rel=1e-5)
    decoded = np.asarray(coder.decode(report.data))
    assert quality == pytest.approx(psnr(pixels, decoded), abs=1e-4)


def test_checkpoint_ab_tells_which_end_of_the_range_an_arm_helps():
    curves = {
        "start.pt": {"bpp": [0.1, 0.4], "psnr": [26.0, 30.0]},
        "arm.pt": {"bpp": [0.1, 0.9], "psnr": [26.5, 32.0]},
    }
    compare(curves)
    assert curves["start.pt"]["rate_gap_vs_first"] == [0.0, 0.0]
    # The start's curve reaches 26.5 dB at 0.1 * 4 ** (0.5 / 4) bpp: the arm's
    # 0.1 takes 15.91 % less; 32 dB lies beyond the start's curve.
    assert curves["arm.pt"]["rate_gap_vs_first"] == [-15.91, None]
    results = {
        "machine": {"date": "today"},
        "photos": 2,
        "lambda_codes": [28, 4096],
        "checkpoints": curves,
    }
    assert "| arm.pt | -15.91 % | - |" in markdown(results)


def test_int8_decoder_study_quantises_only_the_float_network():
    # The study's numbers are meaningful only if the simulated int8 reaches the
    # float network's convolutions (the pixels change) and not the exact scale
    # network's (the symbols still read back: a changed scale would desync the
    # stream), and if everything is restored afterwards.
    coder = codec.Codec(make_tiny_model(seed=3), device="cpu", precision="fp32")
    pixels = natural_image(48, 80, seed=5)
    data = coder.encode(pixels, quality=60)
    before = np.asarray(coder.decode(data))
    with float_decoder_in_int8((0, 2, 3)):
        simulated = np.asarray(coder.decode(data))
    assert not np.array_equal(simulated, before)
    assert np.array_equal(np.asarray(coder.decode(data)), before)


def test_uint8_activations_keep_256_levels_and_zero():
    x = torch.linspace(-1.0, 3.0, 1000).reshape(1, 1, 10, 100)
    levels = uint8_activations(x, (0, 1, 2, 3))
    assert levels.unique().numel() == 256
    assert (levels - x).abs().max() <= 4 / 255 / 2 + 1e-6
    assert uint8_activations(torch.zeros(1, 1, 2, 2), (0, 2, 3)).eq(0).all()


def test_decode_profile_counts_every_convolution_once():
    # The profile's case for or against faster kernels rests on its FLOP count:
    # torch's own counter, over the same decode, must find the same total, and
    # the decode must be left as it was (no wrapper, no hook behind).
    coder = codec.Codec(make_tiny_model(seed=2), device="cpu", precision="fp32")
    data = coder.encode(natural_image(64, 96, seed=4), quality=50)
    conv2d, decoded = torch.nn.functional.conv2d, np.asarray(coder.decode(data))
    split = profile_decode(coder, data, runs=1)
    with FlopCounterMode(display=False) as counter:
        coder.decode(data)
    counted = sum(
        flops
        for op, flops in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )
    ours = split["float"]["gflop"] + split["exact"]["gflop"]
    assert split["exact"]["gflop"] > 0 and split["float"]["gflop"] > 0
    assert ours * 1e9 == pytest.approx(counted)
    assert torch.nn.functional.conv2d is conv2d
    assert all(not layer._forward_hooks for layer in coder.model.modules())
    np.testing.assert_array_equal(np.asarray(coder.decode(data)), decoded)


def test_slimmer_decoders_read_the_same_file_and_leave_the_coder_as_it_was():
    # A slimmer float network reads today's files (reading the symbols takes
    # the scale network alone): the decode must run through, and the coder must
    # decode as before afterwards.
    coder = codec.Codec(make_tiny_model(seed=2), device="cpu", precision="fp32")
    data = coder.encode(natural_image(64, 96, seed=4), quality=50)
    decoded, shipped = np.asarray(coder.decode(data)), coder.model
    for change in SLIMMER.values():
        config = slimmed(coder.config, *change)
        assert sum(config.widths) < sum(coder.config.widths)
        assert slim_decode_seconds(coder, data, config, runs=1) > 0
        assert coder.model is shipped
    np.testing.assert_array_equal(np.asarray(coder.decode(data)), decoded)


def test_slimmer_encoders_run_beside_the_shipped_scale_network():
    # Encoding needs a whole model of the slimmer shape: each must encode
    # through with the coder's own scale network, and the coder's files must
    # stay what they were.
    coder = codec.Codec(make_tiny_model(seed=2), device="cpu", precision="fp32")
    image = natural_image(64, 96, seed=4)
    data = coder.encode(image, quality=50)
    scales = coder.model.scale_network.state_dict()
    for change in SLIMMER_ENCODERS.values():
        model = slim_model(coder, slimmed(coder.config, *change))
        for name, value in model.scale_network.state_dict().items():
            assert torch.equal(value, scales[name])
        assert network_encode_seconds(coder, model, image, False, runs=1) > 0
    fewest = slimmed(coder.config, *list(SLIMMER_ENCODERS.values())[-1])
    assert sum(fewest.encoder_blocks) < sum(coder.config.encoder_blocks)
    assert coder.encode(image, quality=50) == data


def test_fast_shapes_study_slims_fast_and_nothing_else():
    # Every shape must be a valid model that only narrows or removes blocks of
    # the studied fast's float network, which its random-weight timing stands for.
    from benchmarks.fast_shapes_study import SHAPES, studied_weights

    studied = models.read_checkpoint(studied_weights())["config"]
    fast = models.HVAEConfig.from_dict(studied)
    shipped = models.get_config("fast")
    last = list(SHAPES.values())[-1]
    assert last == {"widths": shipped.widths, "decoder_blocks": shipped.decoder_blocks}
    for change in SHAPES.values():
        shape = dataclasses.replace(fast, **change)
        assert all(a <= b for a, b in zip(shape.widths, fast.widths, strict=True))
        assert all(
            a <= b
            for a, b in zip(shape.decoder_blocks, fast.decoder_blocks, strict=True)
        )
        assert (
            dataclasses.replace(
                shape, widths=fast.widths, decoder_blocks=fast.decoder_blocks
            )
            == fast
        )
