"""Golden files of the shipped model: old files must keep decoding the same.

Files written on the machine that made the shipped weights, committed with the
SHA-256 of every layer's table indexes and symbols and with their decoded
pixels. A change to the model, a library upgrade or another machine must decode
them to exactly those symbols and to pixels within +-1 (the float
reconstruction after the last latent layer may round differently elsewhere).
When the shipped weights change on purpose, old files are refused (the model
fingerprint differs) and `python -m tests.make_golden` writes new ones.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hvae_compress import codec, models

from .conftest import REPO
from .decode_worker import decode_hashed, recording_codec

GOLDEN = REPO / "tests" / "golden"
PINS = GOLDEN / "base.json"


def test_golden_files_decode_to_their_pinned_symbols_and_pixels():
    pins = json.loads(PINS.read_text())
    coder, digests = recording_codec(models.DEFAULT_MODEL)
    assert pins["model_hash"] == coder.fingerprint.hex(), (
        "the shipped weights changed: run `python -m tests.make_golden`"
    )
    for name, pin in pins["files"].items():
        decoded, hashes = decode_hashed(coder, digests, (GOLDEN / name).read_bytes())
        assert hashes["symbols"] == pin["symbols"], name
        decoded = np.asarray(decoded, np.int16)
        expected = np.asarray(Image.open(GOLDEN / pin["pixels"]), np.int16)
        assert np.abs(decoded - expected).max() <= 1, name


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_golden_files_were_made_from_the_sample_image(quality):
    header = codec.read_header((GOLDEN / f"base_q{quality}.hvae").read_bytes())
    assert (header.width, header.height) == (256, 192)
    assert header.model_name == models.DEFAULT_MODEL
