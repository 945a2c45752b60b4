"""The installed package: one import name, a light import, the Pillow plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

import hvae_compress

from .conftest import natural_image


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_users_own_modules_do_not_shadow_the_package(tmp_path):
    for name in ("models", "codec", "cli", "entropy", "evaluation", "files"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module')\n")
    Image.fromarray(natural_image(64, 96)).save(tmp_path / "photo.png")
    result = run_python(
        "import hvae_compress; "
        "data = hvae_compress.encode('photo.png', quality=30); "
        "print(hvae_compress.decode(data).size)",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(96, 64)"


def test_importing_the_package_or_reading_a_header_loads_no_torch_or_matplotlib(
    tmp_path,
):
    data = hvae_compress.encode(natural_image(32, 48), quality=10)
    (tmp_path / "x.hvae").write_bytes(data)
    result = run_python(
        "import sys, hvae_compress; "
        "hvae_compress.read_header(open('x.hvae', 'rb').read()); "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_info_answers_without_loading_the_networks(tmp_path):
    """(benchmarks/run.py times it.)"""
    data = hvae_compress.encode(natural_image(32, 48), quality=10)
    (tmp_path / "x.hvae").write_bytes(data)
    command = [sys.executable, "-m", "hvae_compress", "info", "x.hvae"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode == 0 and b"layers, top first" in result.stdout
    check = run_python(
        "import sys; from hvae_compress.cli import main; "
        "main(['info', 'x.hvae', '--quiet']); print('torch' in sys.modules)",
        tmp_path,
    )
    assert check.stdout.strip() == "False", check.stderr[-2000:]


def test_pillow_opens_and_saves_hvae_files(tmp_path):
    original = Image.fromarray(natural_image(64, 96))
    original.save(tmp_path / "a.hvae", quality=60)
    with Image.open(tmp_path / "a.hvae") as image:
        assert image.format == "HVAE" and image.size == (96, 64)
        assert image.mode == "RGB"
        pixels = np.asarray(image)
    expected = hvae_compress.decode((tmp_path / "a.hvae").read_bytes())
    assert np.array_equal(pixels, np.asarray(expected))
    header = hvae_compress.read_header((tmp_path / "a.hvae").read_bytes())
    lower = tmp_path / "b.hvae"
    original.save(lower, quality=10)
    smaller = hvae_compress.read_header(lower.read_bytes())
    assert smaller.total_bytes < header.total_bytes
    limited = tmp_path / "c.hvae"
    original.save(limited, max_bytes=smaller.total_bytes)
    assert limited.stat().st_size <= smaller.total_bytes
