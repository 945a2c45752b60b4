"""models/calibration.py: qualities at even steps of file size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hvae_compress import codec, models
from hvae_compress.files import list_images
from hvae_compress.models.calibration import LOWEST_CODE, even_quality_codes


def saturating_log_bpp(code):
    """A model whose size flattens at the top, as trained models' sizes do."""
    return np.log(0.1) + 3.0 * (1 - np.exp(-np.asarray(code, dtype=float) / 1500))


def test_calibrated_qualities_step_the_size_evenly_where_log_linear_ones_do_not():
    probes = np.linspace(0, 4096, 33).round().astype(int)
    codes = even_quality_codes(probes, saturating_log_bpp(probes))
    assert len(codes) == 101 and (codes[0], codes[-1]) == (0, 4096)
    assert list(codes) == sorted(codes)
    steps = np.diff(saturating_log_bpp(codes))
    assert steps.max() < 1.5 * steps.min()
    log_linear = np.diff(saturating_log_bpp(np.linspace(0, 4096, 101)))
    assert log_linear.max() > 10 * log_linear.min()


def test_a_dip_in_the_measured_sizes_never_folds_the_mapping_back():
    probes = list(range(0, 4097, 512))
    sizes = [-2.0, -1.5, -1.0, -1.2, -0.5, 0.0, 0.2, 0.1, 0.3]
    codes = even_quality_codes(probes, sizes)
    assert list(codes) == sorted(codes)
    assert (codes[0], codes[-1]) == (0, 4096)


def test_quality_codes_drive_the_quality_mapping_and_survive_a_round_trip():
    config = models.get_config("base")
    codes = (-16, -8) + tuple(range(0, 3920, 40)) + (4096,)
    calibrated = models.HVAEConfig.from_dict(
        {**config.to_dict(), "quality_codes": codes}
    )
    assert calibrated.quality_rate(100) == (4096, 0)
    assert calibrated.quality_rate(12) == (400, 0)
    assert calibrated.quality_rate(12.5) == (420, 0)  # linear between qualities
    # Below lambda code 0, every layer's beta code is raised instead.
    assert calibrated.quality_rate(0) == (0, 16)
    assert calibrated.quality_rate(0.5) == (0, 12)
    assert calibrated.quality_rate(2) == (0, 0)
    restored = json.loads(json.dumps(calibrated.to_dict()))
    assert models.HVAEConfig.from_dict(restored) == calibrated
    # A wider range makes the calibration of the old one meaningless.
    assert calibrated.extended_to(1.1).quality_codes == ()
    too_low = (-33,) + codes[1:]  # beyond the largest beta
    for wrong in (codes[:-1], codes[::-1], codes[:100] + (9999,), too_low):
        with pytest.raises(ValueError, match="101 rising quality codes"):
            models.HVAEConfig.from_dict({**config.to_dict(), "quality_codes": wrong})


def test_the_lowest_qualities_raise_every_beta_and_layer_weights_stay_in_range(
    tiny_checkpoint,
):
    coder = codec.Codec(tiny_checkpoint, device="cpu")
    codes = (-16, -8) + tuple(range(0, 3920, 40)) + (4096,)
    coder.config = models.HVAEConfig.from_dict(
        {**coder.config.to_dict(), "quality_codes": codes}
    )
    layers = coder.config.num_latent_layers
    assert coder.rate_codes(quality=0) == (0,) + (16,) * layers
    assert coder.rate_codes(quality=50)[1:] == (0,) * layers
    # Layer weights multiply the raised betas, clipped to the trained range.
    weights = [0.25] + [4.0] * (layers - 1)
    assert coder.rate_codes(quality=0, layer_weights=weights) == (0, -16) + (32,) * (
        layers - 1
    )
    # A lambda asked for directly keeps the betas it is given.
    assert coder.rate_codes(lmbda=coder.config.lmbda_min)[1:] == (0,) * layers


def test_export_calibrates_the_qualities_without_changing_the_weights(
    tmp_path, tiny_model, tiny_checkpoint, training_folder
):
    models.save_checkpoint(
        tmp_path / "raw.pt", models.checkpoint_dict(tiny_model, step=0)
    )
    photos = list_images([training_folder])
    codec.export_model(tmp_path / "raw.pt", tmp_path / "calibrated.pt", photos)
    plain = codec.Codec(tiny_checkpoint, device="cpu")
    calibrated = codec.Codec(tmp_path / "calibrated.pt", device="cpu")
    codes = calibrated.config.quality_codes
    assert len(codes) == 101 and list(codes) == sorted(codes)
    assert calibrated.fingerprint == plain.fingerprint  # the same files decode
    assert calibrated.rate_codes(quality=37)[0] == max(codes[37], 0)
    assert codes[0] == LOWEST_CODE  # quality 0 reaches below lambda code 0
