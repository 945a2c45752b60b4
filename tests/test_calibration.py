"""models/calibration.py: qualities at even steps of file size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hvae_compress import codec, models
from hvae_compress.files import list_images
from hvae_compress.models.calibration import even_quality_codes


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
    codes = tuple(range(0, 4000, 40)) + (4096,)
    calibrated = models.HVAEConfig.from_dict(
        {**config.to_dict(), "quality_codes": codes}
    )
    assert calibrated.quality_code(0) == 0 and calibrated.quality_code(100) == 4096
    assert calibrated.quality_code(10) == 400
    assert calibrated.quality_code(10.5) == 420  # linear between whole qualities
    restored = json.loads(json.dumps(calibrated.to_dict()))
    assert models.HVAEConfig.from_dict(restored) == calibrated
    # A wider range makes the calibration of the old one meaningless.
    assert calibrated.extended_to(1.1).quality_codes == ()
    for wrong in (codes[:-1], codes[::-1], codes[:100] + (9999,)):
        with pytest.raises(ValueError, match="101 rising lambda codes"):
            models.HVAEConfig.from_dict({**config.to_dict(), "quality_codes": wrong})


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
    assert calibrated.rate_codes(quality=37)[0] == codes[37]
