"""Portability: a file decodes to the same symbols under every CPU kernel choice.

The encoder runs here; each kernel variant decodes the files in a fresh process
(`tests.decode_worker`). Table indexes and symbols must be bit-identical, pixels
within +-1 (the reconstruction after the last latent layer is float). A check
that the variants really compute floats differently keeps the test honest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hvae_compress import codec, models
from hvae_compress.models import exact

from .conftest import KODAK, REPO, make_tiny_model, natural_image

VARIANTS = {
    "oneDNN AVX2": {"DNNL_MAX_CPU_ISA": "AVX2"},
    "oneDNN SSE4.1": {"DNNL_MAX_CPU_ISA": "SSE41"},
    "oneDNN off": {"HVAE_TEST_NO_MKLDNN": "1"},
    "ATen default": {"ATEN_CPU_CAPABILITY": "default"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "all of them": {
        "DNNL_MAX_CPU_ISA": "SSE41",
        "HVAE_TEST_NO_MKLDNN": "1",
        "ATEN_CPU_CAPABILITY": "default",
        "OMP_NUM_THREADS": "1",
    },
}
QUALITIES = (20, 60, 95)


def decode_elsewhere(model, files, out_dir, variant: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_settings = ("DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in kernel_settings}
    env.update({"PYTHONPATH": str(REPO), **variant})
    command = [sys.executable, "-m", "tests.decode_worker", str(model), str(out_dir)]
    result = subprocess.run(
        command + [str(f) for f in files],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def check_variants_agree(model, files, tmp_path) -> None:
    reference = decode_elsewhere(model, files, tmp_path / "reference", {})
    floats_differ = 0
    for name, variant in VARIANTS.items():
        report = decode_elsewhere(model, files, tmp_path / name, variant)
        for file in map(str, files):
            expected, found = reference[file], report[file]
            assert found["symbols"] == expected["symbols"], (name, file)
            a = np.asarray(Image.open(expected["png"]), np.int16)
            b = np.asarray(Image.open(found["png"]), np.int16)
            assert np.abs(a - b).max() <= 1, (name, file)
            floats_differ += found["float"] != expected["float"]
    # The variants must change the float kernels, or this test would prove nothing.
    assert floats_differ > 0


def encode_all(coder: codec.Codec, images: dict, folder) -> list:
    folder.mkdir(exist_ok=True)
    files = []
    for name, image in images.items():
        for quality in QUALITIES:
            path = folder / f"{name}-q{quality}.hvae"
            path.write_bytes(coder.encode(image, quality=quality))
            files.append(path)
    return files


@pytest.mark.slow
def test_tiny_model_files_decode_identically_under_every_kernel_variant(
    tmp_path, tiny_checkpoint
):
    coder = codec.Codec(tiny_checkpoint, "cpu")
    images = {f"image{s}": natural_image(96, 160, seed=s) for s in range(2)}
    files = encode_all(coder, images, tmp_path / "files")
    check_variants_agree(tiny_checkpoint, files, tmp_path)


@pytest.mark.slow
def test_a_7_bit_scale_network_decodes_identically_under_every_kernel_variant(
    tmp_path,
):
    """Its exact convolutions run int8 where oneDNN has the kernels: the same
    sums on every ISA, VNNI or not (`models.exact.INT8_INPUT_UNITS`)."""
    config = dataclasses.replace(
        models.get_config("tiny"), scale_activation_units=exact.INT8_INPUT_UNITS
    )
    raw, model = tmp_path / "raw.pt", tmp_path / "tiny7.pt"
    models.save_checkpoint(
        raw, models.checkpoint_dict(make_tiny_model(config=config), step=0)
    )
    codec.export_model(raw, model)
    coder = codec.Codec(model, "cpu")
    images = {f"image{s}": natural_image(96, 160, seed=s) for s in range(2)}
    files = encode_all(coder, images, tmp_path / "files")
    check_variants_agree(model, files, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", models.shipped_models())
def test_shipped_model_files_decode_identically_under_every_kernel_variant(
    tmp_path, model
):
    """Six Kodak images (synthetic ones without ../shared) at three qualities."""
    coder = codec.Codec(model, "cpu")
    if KODAK.is_dir():
        paths = sorted(KODAK.glob("*.png"))[::4][:6]
        images = {p.stem: p for p in paths}
    else:
        images = {f"image{s}": natural_image(256, 384, seed=s) for s in range(6)}
    files = encode_all(coder, images, tmp_path / "files")
    check_variants_agree(model, files, tmp_path)
