"""cli/: the hvae-compress command through main([...]) and as a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hvae_compress.cli import build_parser, main

from .conftest import REPO, natural_image


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hvae_compress", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(natural_image(48, 64, seed=i)).save(path)
        paths.append(path)
    return paths


def test_encode_decode_and_info_round_trip(tmp_path, images, tiny_checkpoint, capsys):
    model = str(tiny_checkpoint)
    assert main(["encode", str(images[0]), "-q", "60", "--model", model]) == 0
    encoded = images[0].with_suffix(".hvae")
    assert "bpp" in capsys.readouterr().out
    assert (
        main(
            ["decode", str(encoded), "-o", str(tmp_path / "out.png"), "--model", model]
        )
        == 0
    )
    assert Image.open(tmp_path / "out.png").size == (64, 48)
    capsys.readouterr()
    assert main(["info", str(encoded), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"width", "height", "model", "total_bytes", "bpp", "layers"} <= set(info)
    assert info["total_bytes"] == encoded.stat().st_size
    assert sum(layer["bytes"] for layer in info["layers"]) < info["total_bytes"]
    assert info["bpp"] == pytest.approx(8 * encoded.stat().st_size / (64 * 48))
    assert info["format_version"] == 3  # shapes from the preset the file names:
    assert [layer["shape"] for layer in info["layers"]] == [
        [4, 3, 4],
        [4, 6, 8],
        [4, 12, 16],
    ]
    assert main(["info", str(encoded)]) == 0
    assert "layers, top first" in capsys.readouterr().out


def test_info_reads_a_file_of_format_version_2(capsys):
    # The first portable release wrote format 2 (the ninth and later write 3).
    old = REPO / "tests" / "golden" / "base-43361b09fe745c02" / "base_q50.hvae"
    assert main(["info", str(old), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 2 and info["header_bytes"] == 176
    assert [layer["stride"] for layer in info["layers"]] == [64, 32, 16, 16, 8, 8]
    assert info["layers"][0]["shape"] == [16, 3, 4]  # recorded in the file


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_several_inputs_go_to_a_folder_with_a_progress_bar_on_a_terminal(
    tmp_path, images, tiny_checkpoint, monkeypatch, capsys
):
    out = tmp_path / "encoded"
    out.mkdir()
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["encode", *map(str, images), "-o", str(out)]
    assert main([*args, "--model", str(tiny_checkpoint)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "photo0.hvae",
        "photo1.hvae",
        "photo2.hvae",
    ]
    assert "\r" in terminal.getvalue() and "image" in terminal.getvalue()
    assert capsys.readouterr().out.count("bpp") == 3  # a summary line per file
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    files = [str(p) for p in sorted(out.iterdir())]
    args = ["decode", *files, "-o", str(decoded), "--layers", "2", "--quiet"]
    assert main([*args, "--model", str(tiny_checkpoint)]) == 0
    assert len(list(decoded.iterdir())) == 3


def test_no_progress_bar_codes_go_to_a_log_file(
    tmp_path, images, tiny_checkpoint, capsys
):
    out = tmp_path / "encoded"
    out.mkdir()
    args = ["encode", *map(str, images), "-o", str(out), "--model"]
    assert main([*args, str(tiny_checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert captured.out.count("bpp") == 3


def test_several_inputs_need_an_existing_folder(tmp_path, images, capsys):
    target = tmp_path / "two.hvae"
    assert main(["encode", *map(str, images[:2]), "-o", str(target)]) == 2
    assert "must name an existing folder" in capsys.readouterr().err
    assert not target.exists()


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("hvae-compress 0.")


def test_binary_output_is_refused_on_a_terminal(images, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["encode", str(images[0]), "-o", "-"]) == 2
    assert "refusing to write binary data to a terminal" in capsys.readouterr().err


def test_an_unwritable_output_is_named_not_its_temporary_file(
    tmp_path, images, tiny_checkpoint, capsys
):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    target = not_a_folder / "k.hvae"
    args = ["encode", str(images[0]), "-o", str(target)]
    assert main([*args, "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {target}: Not a directory" in err and ".part" not in err


def test_info_on_a_truncated_file_fails_naming_the_complete_layers(
    tmp_path, images, tiny_checkpoint, capsys
):
    main(["encode", str(images[0]), "--model", str(tiny_checkpoint), "--quiet"])
    data = images[0].with_suffix(".hvae").read_bytes()
    cut = tmp_path / "cut.hvae"
    cut.write_bytes(data[:-3])
    assert main(["info", str(cut)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hvae-compress: error: {cut}: file is truncated")
    assert "top 2 of 3 layers are complete" in err and err.count("\n") == 1


def test_decode_names_a_single_layer_in_the_singular(
    images, tiny_checkpoint, tmp_path, capsys
):
    model = ["--model", str(tiny_checkpoint)]
    main(["encode", str(images[0]), *model, "--quiet"])
    args = ["decode", str(images[0].with_suffix(".hvae")), "--layers", "1"]
    assert main([*args, "-o", str(tmp_path / "a.png"), *model]) == 0
    assert "top layer," in capsys.readouterr().out


def test_tile_size_zero_processes_images_whole(images, tiny_checkpoint, tmp_path):
    model = ["--model", str(tiny_checkpoint), "--quiet"]
    outputs = []
    for tile in ("0", "16"):
        target = tmp_path / f"tile{tile}.hvae"
        args = ["encode", str(images[0]), "-o", str(target), "--tile-size", tile]
        assert main([*args, *model, "--precision", "fp32"]) == 0
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]


def test_threads_sets_the_networks_threads_not_the_file(
    images, tiny_checkpoint, tmp_path
):
    import torch

    model = ["--model", str(tiny_checkpoint), "--quiet"]
    before = torch.get_num_threads()
    files, pixels = [], []
    try:
        for threads in ("1", "2"):
            encoded, decoded = tmp_path / f"{threads}.hvae", tmp_path / f"{threads}.png"
            args = ["encode", str(images[0]), "-o", str(encoded), "--threads", threads]
            assert main([*args, *model]) == 0
            assert torch.get_num_threads() == int(threads)
            args = ["decode", str(encoded), "-o", str(decoded), "--threads", threads]
            assert main([*args, *model]) == 0
            files.append(encoded.read_bytes())
            pixels.append(np.asarray(Image.open(decoded)))
    finally:
        torch.set_num_threads(before)
    assert files[0] == files[1]
    np.testing.assert_array_equal(pixels[0], pixels[1])
    with pytest.raises(SystemExit):  # argparse's usage error
        main([*args[:-1], "0", *model])


def test_precision_chooses_the_codecs_arithmetic(images, tiny_checkpoint, tmp_path):
    from hvae_compress import codec

    for precision in ("fp32", "bf16"):
        target = tmp_path / f"{precision}.hvae"
        args = ["encode", str(images[0]), "-o", str(target), "--quiet"]
        assert (
            main([*args, "--model", str(tiny_checkpoint), "--precision", precision])
            == 0
        )
        coder = codec.Codec(tiny_checkpoint, "cpu", precision=precision)
        assert target.read_bytes() == coder.encode(images[0])


def test_lossy_outputs_take_the_output_quality(images, tiny_checkpoint, tmp_path):
    model = ["--model", str(tiny_checkpoint), "--quiet"]
    main(["encode", str(images[0]), *model])
    source = str(images[0].with_suffix(".hvae"))
    sizes = {}
    for quality in ("0", "20", "95"):
        target = tmp_path / f"q{quality}.jpg"
        args = ["decode", source, "-o", str(target), "--output-quality", quality]
        assert main([*args, *model]) == 0
        sizes[quality] = target.stat().st_size
    assert sizes["0"] < sizes["20"] < sizes["95"]


def test_png_outputs_take_the_compression_level(images, tiny_checkpoint, tmp_path):
    model = ["--model", str(tiny_checkpoint), "--quiet"]
    main(["encode", str(images[0]), *model])
    source = str(images[0].with_suffix(".hvae"))
    outputs = {}
    for level in ("0", "9"):
        target = tmp_path / f"level{level}.png"
        args = ["decode", source, "-o", str(target), "--png-compress", level]
        assert main([*args, *model]) == 0
        outputs[level] = target
    assert outputs["9"].stat().st_size < outputs["0"].stat().st_size
    pixels = [np.asarray(Image.open(path)) for path in outputs.values()]
    assert np.array_equal(*pixels)


def test_exif_is_kept_with_its_orientation_reset(tmp_path, tiny_checkpoint):
    image = Image.fromarray(natural_image(30, 50))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    exif[0x010F] = "Camera Maker"
    source = tmp_path / "photo.jpg"
    image.save(source, exif=exif)
    model = ["--model", str(tiny_checkpoint), "--quiet"]
    assert main(["encode", str(source), *model]) == 0
    for name in ("photo.png", "photo2.jpg"):
        target = tmp_path / name
        args = ["decode", str(source.with_suffix(".hvae")), "-o", str(target)]
        assert main([*args, *model]) == 0
        with Image.open(target) as decoded:
            assert decoded.size == (30, 50)  # upright
            kept = decoded.getexif()
            assert kept[0x010F] == "Camera Maker" and kept[0x0112] == 1


def test_decode_writes_the_format_the_output_name_implies(
    tmp_path, images, tiny_checkpoint
):
    model = str(tiny_checkpoint)
    main(["encode", str(images[0]), "--model", model, "--quiet"])
    for name, image_format in (("x.webp", "WEBP"), ("x.tif", "TIFF"), ("x.bmp", "BMP")):
        main(
            [
                "decode",
                str(images[0].with_suffix(".hvae")),
                "-o",
                str(tmp_path / name),
                "--model",
                model,
                "--quiet",
            ]
        )
        assert Image.open(tmp_path / name).format == image_format


def test_existing_outputs_are_kept_without_force(
    tmp_path, images, tiny_checkpoint, capsys
):
    target = tmp_path / "existing.hvae"
    target.write_bytes(b"precious")
    args = [
        "encode",
        str(images[0]),
        "-o",
        str(target),
        "--model",
        str(tiny_checkpoint),
    ]
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"
    assert main([*args, "--force", "--quiet"]) == 0
    assert target.read_bytes()[:4] == b"HVAE"


def test_an_input_is_never_overwritten(tmp_path, images, tiny_checkpoint, capsys):
    before = images[0].read_bytes()
    code = main(
        [
            "encode",
            str(images[0]),
            "-o",
            str(images[0]),
            "--force",
            "--model",
            str(tiny_checkpoint),
        ]
    )
    assert code == 2 and "overwrite the input" in capsys.readouterr().err
    assert images[0].read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "missing.png"], "missing.png: no such file"),
        (["encode", "notes.txt"], "notes.txt: not an image"),
        (["encode", "empty.png"], "empty.png: not an image"),
        (["decode", "corrupt.hvae"], "corrupt.hvae: not an .hvae file"),
        (["decode", "missing.hvae"], "missing.hvae: No such file"),
        (["info", "corrupt.hvae"], "corrupt.hvae: not an .hvae file"),
        (["info", "missing.hvae"], "missing.hvae: No such file"),
        (["encode", "."], ".: . is a directory"),
        (["decode", "."], ".: . is a directory"),
        (["info", "."], ".: . is a directory"),
    ],
)
def test_failures_print_one_line_naming_the_file_and_exit_1(
    tmp_path, monkeypatch, capsys, args, message, tiny_checkpoint
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.hvae").write_bytes(b"garbage, not a container")
    code = main([*args, "--model", str(tiny_checkpoint)] if args[0] != "info" else args)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"hvae-compress: error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    name = args[1]
    assert err.count(f"{name}: {name}:") == 0 or name == "."
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_a_size_target_writes_the_file_that_fits_and_names_its_quality(
    tmp_path, capsys
):
    source = tmp_path / "photo.png"
    Image.fromarray(natural_image(96, 128)).save(source)
    out = tmp_path / "photo.hvae"
    assert main(["encode", str(source), "-o", str(out), "--size", "2500"]) == 0
    assert out.stat().st_size <= 2500
    assert ", quality " in capsys.readouterr().out
    assert main(["encode", str(source), "-o", str(out), "-f", "--size", "10"]) == 1
    assert capsys.readouterr().err.startswith(
        f"hvae-compress: error: {source}: no quality fits in 10 bytes"
    )


def test_bad_arguments_exit_with_usage_errors(capsys):
    for args in (
        ["encode", "x.png", "-q", "150"],
        ["encode", "x.png", "--layer-weights", "1,a"],
        ["encode", "x.png", "-q", "50", "--size", "1000"],
        ["encode", "x.png", "--psnr", "0"],
        ["decode", "x.hvae", "--layers", "0"],
        ["eval", "kodak", "--qualities", "50,150"],
        ["eval", "kodak", "--qualities", "50,high"],
        ["train", "shard", "--out", "run", "--val-qualities", "-1"],
        ["train", "shard", "--out", "run", "--min-scale", "0"],
        ["train", "shard", "--out", "run", "--random-beta-share", "1.5"],
        ["train", "shard", "--out", "run", "--top-lambda-share", "-0.1"],
        ["frobnicate"],
        [],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_quality_sweeps_accept_the_range_encode_accepts():
    parser = build_parser()
    sweep = parser.parse_args(["eval", "kodak", "--qualities", "0,50,100"])
    assert sweep.qualities == [0.0, 50.0, 100.0]
    train = parser.parse_args(
        ["train", "shard", "--out", "run", "--val-qualities", "0"]
    )
    assert train.val_qualities == [0.0]


def test_every_option_of_every_subcommand_is_explained():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert set(subcommands) >= {"encode", "decode", "info", "eval", "train"}
    for name, sub in subcommands.items():
        for action in sub._actions:
            assert action.help, (
                f"{name}: {action.option_strings or action.dest} has no help"
            )


def test_no_flag_claims_to_be_on_by_default():
    """'--no-channels-last ... (default: True)' reads as if the flag were on."""
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in subcommands.items():
        assert "default: True" not in sub.format_help(), name


def test_a_corrupt_file_gives_one_clear_line_as_a_subprocess(
    tmp_path, images, tiny_checkpoint
):
    main(["encode", str(images[0]), "--model", str(tiny_checkpoint), "--quiet"])
    data = bytearray(images[0].with_suffix(".hvae").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "damaged.hvae").write_bytes(bytes(data))
    result = run_cli(
        "decode", str(tmp_path / "damaged.hvae"), "--model", str(tiny_checkpoint)
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip().endswith("checksum mismatch in the layer 2")
    assert not (tmp_path / "damaged.png").exists()
    debug = run_cli(
        "decode",
        str(tmp_path / "damaged.hvae"),
        "--model",
        str(tiny_checkpoint),
        "--debug",
    )
    assert b"Traceback" in debug.stderr


def test_stdin_to_stdout_pipeline_as_a_subprocess(images, tiny_checkpoint):
    model = str(tiny_checkpoint)
    encoded = run_cli("encode", "-", "--model", model, stdin=images[0].read_bytes())
    assert encoded.returncode == 0, encoded.stderr
    assert encoded.stdout[:4] == b"HVAE" and b"bpp" in encoded.stderr
    decoded = run_cli(
        "decode", "-", "-o", "-", "--model", model, "--quiet", stdin=encoded.stdout
    )
    assert decoded.returncode == 0, decoded.stderr
    image = Image.open(__import__("io").BytesIO(decoded.stdout))
    assert image.format == "PNG" and image.size == (64, 48)


def test_help_works_through_the_console_script_and_python_m():
    result = run_cli("--help")
    assert result.returncode == 0 and b"encode" in result.stdout
    for sub in ("encode", "decode", "info", "eval", "train", "demo"):
        assert run_cli(sub, "--help").returncode == 0


def test_a_file_from_an_unshipped_model_asks_for_model(
    tmp_path, images, tiny_checkpoint, capsys
):
    main(["encode", str(images[0]), "--model", str(tiny_checkpoint), "--quiet"])
    assert (
        main(
            [
                "decode",
                str(images[0].with_suffix(".hvae")),
                "-o",
                str(tmp_path / "o.png"),
            ]
        )
        == 1
    )
    assert "pass its checkpoint with --model" in capsys.readouterr().err


def test_decoded_pixels_match_the_library(tmp_path, images, tiny_checkpoint):
    from hvae_compress import codec

    main(["encode", str(images[1]), "--model", str(tiny_checkpoint), "--quiet"])
    main(
        [
            "decode",
            str(images[1].with_suffix(".hvae")),
            "-o",
            str(tmp_path / "cli.png"),
            "--model",
            str(tiny_checkpoint),
            "--quiet",
        ]
    )
    library = codec.decode(
        images[1].with_suffix(".hvae").read_bytes(), model=tiny_checkpoint
    )
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(library)
    )


def test_conversions_are_noted_in_the_summary_line(tmp_path, tiny_checkpoint, capsys):
    path = tmp_path / "palette.png"
    Image.fromarray(natural_image(40, 40)).convert("P").save(path)
    assert main(["encode", str(path), "--model", str(tiny_checkpoint)]) == 0
    assert "[palette image converted to RGB]" in capsys.readouterr().out


def test_train_refuses_an_export_to_a_missing_folder_before_training(tmp_path, capsys):
    export = tmp_path / "not-made" / "model.pt"
    arguments = ["train", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*arguments, "--export", str(export)]) == 2
    assert f"cannot write {export}: no folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run began


def test_train_refuses_a_bad_export_name_before_training(tmp_path, capsys):
    arguments = ["train", str(tmp_path), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        main([*arguments, "--export", str(tmp_path / "m.pt"), "--export-name", "A/b"])
    assert "a model name is 1-32 of a-z" in capsys.readouterr().err
    assert main([*arguments, "--export-name", "fast"]) == 2
    assert "give --export too" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
