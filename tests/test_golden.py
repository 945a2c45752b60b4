"""Golden files of the shipped models: old files must keep decoding the same.

Files written on the machine that made the shipped weights, committed with the
SHA-256 of every layer's table indexes and symbols and with their decoded
pixels. A change to the model, a library upgrade or another machine must decode
them to exactly those symbols and to pixels within +-1 (the float
reconstruction after the last latent layer may round differently elsewhere).
Each shipped model NAME has its own set (``golden/NAME.json`` and its files).
When the shipped weights change on purpose, `python -m tests.make_golden`
writes new ones and moves the old set to ``golden/NAME-<fingerprint>/``:
files of earlier releases must keep decoding, through the weights that later
versions keep installed (`models.weights`).
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


def pins_file(folder, model: str):
    return folder / f"{model}.json"


def release_of(release_set) -> tuple[str, bytes]:
    """(model, fingerprint) of an earlier release's set: its folder is
    MODEL-FINGERPRINT (hex)."""
    model, fingerprint = release_set.name.rsplit("-", 1)
    return model, bytes.fromhex(fingerprint)


@pytest.mark.parametrize("model", models.shipped_models())
def test_golden_files_decode_to_their_pinned_symbols_and_pixels(model):
    pins = json.loads(pins_file(GOLDEN, model).read_text())
    coder, digests = recording_codec(model)
    assert pins["model_hash"] == coder.fingerprint.hex(), (
        f"the shipped weights of {model!r} changed: run `python -m tests.make_golden`"
    )
    assert_pinned(GOLDEN, pins, coder, digests)


def earlier_release_sets() -> list:
    folders = sorted(path for path in GOLDEN.iterdir() if path.is_dir())
    return [path for path in folders if pins_file(path, release_of(path)[0]).is_file()]


def test_a_golden_set_is_kept_for_the_release_before():
    assert earlier_release_sets(), "make_golden moves the old set aside"


@pytest.mark.parametrize("folder", earlier_release_sets(), ids=lambda p: p.name)
def test_files_of_earlier_releases_decode_with_the_newest_codec(folder):
    model, fingerprint = release_of(folder)
    pins = json.loads(pins_file(folder, model).read_text())
    assert pins["model_hash"] == fingerprint.hex(), "the folder names its weights"
    weights = models.released_weights_path(model, fingerprint)
    assert weights is not None, f"the weights of {folder.name} must stay installed"
    assert_pinned(folder, pins, *recording_codec(weights))
    default = codec.Codec(model)  # holds the newest weights, finds the earlier ones
    assert default.fingerprint != fingerprint
    for name, pin in pins["files"].items():
        decoded = default.decode((folder / name).read_bytes())
        assert_pixels_within_one(decoded, folder / pin["pixels"], name)


def test_a_model_name_read_from_a_file_is_never_a_path():
    name, fingerprint = release_of(earlier_release_sets()[0])
    assert models.released_weights_path(name, fingerprint) is not None
    assert models.released_weights_path(f"../released/{name}", fingerprint) is None


def test_released_weights_are_named_by_their_fingerprint():
    for path in sorted(models.weights.RELEASED_DIR.glob("*.pt")):
        coder = codec.Codec(path)
        assert path.stem == f"{coder.name}-{coder.fingerprint.hex()}"


def assert_pinned(folder, pins, coder, digests) -> None:
    """Every file of a golden set decodes to its pinned symbols and pixels."""
    for name, pin in pins["files"].items():
        decoded, hashes = decode_hashed(coder, digests, (folder / name).read_bytes())
        assert hashes["symbols"] == pin["symbols"], name
        assert_pixels_within_one(decoded, folder / pin["pixels"], name)


def assert_pixels_within_one(decoded, png, name) -> None:
    expected = np.asarray(Image.open(png), np.int16)
    assert np.abs(np.asarray(decoded, np.int16) - expected).max() <= 1, name


@pytest.mark.parametrize("model", models.shipped_models())
@pytest.mark.parametrize("quality", [10, 50, 90])
def test_golden_files_were_made_from_the_sample_image(model, quality):
    header = codec.read_header((GOLDEN / f"{model}_q{quality}.hvae").read_bytes())
    assert (header.width, header.height) == (256, 192)
    assert header.model_name == model
