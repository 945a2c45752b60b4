"""Hostile inputs, corrupt files, bombs, determinism and killed processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hvae_compress import codec
from hvae_compress.cli import main
from hvae_compress.codec.container import read_container, write_container

from . import fuzz
from .conftest import REPO, SHARED, natural_image, needs_shared

PNGSUITE = SHARED / "datasets" / "pngsuite" / "PngSuite.zip"
FUZZ_CASES = 3000


def test_fuzzed_files_decode_or_raise_corrupt_stream_error():
    report = fuzz.run(FUZZ_CASES, seed=2026)
    assert report.cases == FUZZ_CASES
    assert report.failures == []
    assert report.slowest < 5.0
    decoded = sum(n for k, n in report.outcomes.items() if k.endswith(":image"))
    assert 0 < decoded < FUZZ_CASES  # both outcomes are exercised


@pytest.mark.slow
@pytest.mark.skipif(
    sys.platform != "linux" or sys.version_info >= (3, 13),
    reason="atheris has wheels for Linux and CPython < 3.13 only",
)
def test_coverage_guided_fuzzing_finds_no_crash(tmp_path):
    command = [
        sys.executable,
        "-m",
        "tests.fuzz_atheris",
        "-atheris_runs=3000",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 3000" in result.stderr


def test_a_header_claiming_a_huge_image_is_rejected_before_any_large_allocation(
    tiny_codec,
):
    original = read_container(tiny_codec.encode(natural_image(16, 16)))
    huge = dataclasses.replace(original.header, width=60_000, height=60_000)
    data = write_container(huge, original.layer_streams)  # 3.6 gigapixels
    tracemalloc.start()
    with pytest.raises(codec.CorruptStreamError, match="exceeds the limit"):
        tiny_codec.decode(bytes(data))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


@pytest.fixture(scope="module")
def pngsuite(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pngsuite")
    with zipfile.ZipFile(PNGSUITE) as archive:
        archive.extractall(folder)
    return sorted(folder.rglob("*.png"))


def expected_mode(path: Path) -> str:
    """The mode an image should decode to, from how Pillow reads it."""
    with Image.open(path) as image:
        keyed = "transparency" in image.info
        if image.mode in ("P", "PA"):
            return "RGBA" if keyed or image.mode == "PA" else "RGB"
        if image.mode in ("RGBA", "LA"):
            return image.mode
        gray = image.mode not in ("RGB",)
        return ("LA" if gray else "RGBA") if keyed else ("L" if gray else "RGB")


@needs_shared
def test_every_valid_pngsuite_file_round_trips(pngsuite, tmp_path, tiny_checkpoint):
    valid = [p for p in pngsuite if not p.name.startswith("x")]
    assert len(valid) >= 150
    model = str(tiny_checkpoint)
    encoded, decoded = tmp_path / "encoded", tmp_path / "decoded"
    encoded.mkdir()
    decoded.mkdir()
    assert (
        main(
            [
                "encode",
                *map(str, valid),
                "-o",
                str(encoded),
                "--model",
                model,
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "decode",
                *map(str, sorted(encoded.iterdir())),
                "-o",
                str(decoded),
                "--model",
                model,
                "--quiet",
            ]
        )
        == 0
    )
    for path in valid:
        with (
            Image.open(path) as original,
            Image.open(decoded / f"{path.stem}.png") as result,
        ):
            assert result.size == original.size, path.name
            assert result.mode == expected_mode(path), path.name
            alpha = (
                np.asarray(result)[..., -1] if result.mode in ("RGBA", "LA") else None
            )
            if alpha is not None and original.mode in ("P", "RGBA", "LA"):
                reference = np.asarray(original.convert(result.mode))[..., -1]
                assert np.array_equal(alpha, reference), path.name
            elif alpha is not None:  # a colour key; Pillow's own conversion gets
                assert alpha.min() == 0 and alpha.max() == 255, path.name  # some wrong


@needs_shared
def test_every_corrupt_pngsuite_file_fails_cleanly(
    pngsuite, tmp_path, tiny_checkpoint, capsys
):
    corrupt = [p for p in pngsuite if p.name.startswith("x")]
    assert len(corrupt) == 14
    for path in corrupt:
        out = tmp_path / f"{path.stem}.hvae"
        code = main(
            ["encode", str(path), "-o", str(out), "--model", str(tiny_checkpoint)]
        )
        err = capsys.readouterr().err
        assert code == 1, path.name
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_truncated_empty_and_foreign_files_fail_cleanly(
    tmp_path, tiny_checkpoint, capsys
):
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(natural_image(64, 64)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:400])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "script.png").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "folder.png").mkdir()
    for name in ("cut.jpg", "empty.png", "script.png", "folder.png"):
        code = main(
            [
                "encode",
                str(tmp_path / name),
                "-o",
                str(tmp_path / "out.hvae"),
                "--model",
                str(tiny_checkpoint),
            ]
        )
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1 and "Traceback" not in err, name
        assert not (tmp_path / "out.hvae").exists()
    for data in (b"", b"HVAE", bytes(100)):
        (tmp_path / "bad.hvae").write_bytes(data)
        code = main(
            [
                "decode",
                str(tmp_path / "bad.hvae"),
                "-o",
                str(tmp_path / "bad.png"),
                "--model",
                str(tiny_checkpoint),
            ]
        )
        assert code == 1 and not (tmp_path / "bad.png").exists()
        assert capsys.readouterr().err.count("\n") == 1


def test_decompression_bombs_hit_the_pixel_limit_with_a_way_out(
    tmp_path, capsys, tiny_checkpoint
):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 megapixels in a few kB
    assert bomb.stat().st_size < 100_000
    code = main(["encode", str(bomb), "--model", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert (
        code == 1
        and "exceeds the limit of 67108864 pixels" in err
        and "--max-pixels" in err
    )
    small = tmp_path / "small.png"
    Image.fromarray(natural_image(100, 100)).save(small)
    code = main(
        ["encode", str(small), "--max-pixels", "5000", "--model", str(tiny_checkpoint)]
    )
    assert code == 1 and "limit of 5000" in capsys.readouterr().err
    code = main(
        [
            "encode",
            str(small),
            "--max-pixels",
            "20000",
            "--model",
            str(tiny_checkpoint),
            "--quiet",
        ]
    )
    assert code == 0


def test_decoding_is_identical_with_one_and_two_threads(tiny_codec, image_file):
    data = tiny_codec.encode(image_file, quality=80)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = np.asarray(tiny_codec.decode(data))
        torch.set_num_threads(2)
        two = np.asarray(tiny_codec.decode(data))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, two)


@pytest.mark.slow
def test_killing_encode_or_decode_mid_write_leaves_no_partial_output(
    tmp_path, tiny_checkpoint
):
    """SIGKILL at many moments: outputs absent or complete, inputs unchanged."""
    source = tmp_path / "big.png"
    Image.fromarray(natural_image(1536, 1536)).save(source)
    original = source.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    model = str(tiny_checkpoint)
    reference = tmp_path / "reference.hvae"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hvae_compress",
            "encode",
            str(source),
            "-o",
            str(reference),
            "--model",
            model,
            "--quiet",
        ],
        env=env,
        check=True,
        timeout=300,
    )
    outcomes = set()
    for delay in np.linspace(1.0, 6.0, 8):
        for args in (
            ["encode", str(source), "-o", str(tmp_path / "out.hvae")],
            ["decode", str(reference), "-o", str(tmp_path / "out.png")],
        ):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hvae_compress",
                    *args,
                    "--model",
                    model,
                    "--force",
                    "--quiet",
                ],
                env=env,
            )
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            outcomes.add(process.returncode)
            assert source.read_bytes() == original
        leftovers = [
            p.name
            for p in tmp_path.iterdir()
            if p.name not in {"big.png", "reference.hvae", "out.hvae", "out.png"}
        ]
        assert leftovers == []
        if (tmp_path / "out.hvae").exists():
            assert (tmp_path / "out.hvae").read_bytes() == reference.read_bytes()
        if (tmp_path / "out.png").exists():
            with Image.open(tmp_path / "out.png") as decoded:
                decoded.load()  # a partial PNG would fail here
                assert decoded.size == (1536, 1536)
    assert -signal.SIGKILL in outcomes
