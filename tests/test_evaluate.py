"""evaluation/ and `hvae-compress eval`: measured curves, BD-rate, outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import PIL
import pytest
from PIL import Image

from hvae_compress import codec, evaluation
from hvae_compress.cli import main
from hvae_compress.cli.eval_command import BASELINES
from hvae_compress.evaluation.measure import measure_classical
from hvae_compress.evaluation.plots import spaced_points

from .conftest import ANCHORS, natural_image, needs_shared

RESULT_KEYS = {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, tiny_checkpoint):
    """One eval of the tiny model and JPEG on three 192x160 images."""
    folder = tmp_path_factory.mktemp("eval")
    images = folder / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(natural_image(160, 192, seed=10 + i)).save(
            images / f"img{i}.png"
        )
    assert main(eval_arguments(images, tiny_checkpoint, folder, "results")) == 0
    return folder


def eval_arguments(images, checkpoint, folder, stem) -> list[str]:
    """The eval command of `eval_run`, writing to folder/stem*."""
    return [
        "eval",
        str(images),
        "--model",
        str(checkpoint),
        "--qualities",
        "10,40,70,95",
        "--baselines",
        "jpeg",
        *(["--anchors", str(ANCHORS)] if ANCHORS.is_dir() else []),
        "--out",
        str(folder / f"{stem}.json"),
        "--csv",
        str(folder / "images.csv"),
        "--plot",
        str(folder / "rd.png"),
        "--progressive",
        "--layer-weights",
        "1,1,1",
        "2,1,0.5",
        "--quiet",
    ]


@pytest.mark.parametrize("flag", ["--out", "--csv", "--plot"])
def test_eval_refuses_an_output_in_a_missing_folder_before_measuring(
    tmp_path, capsys, flag
):
    missing = tmp_path / "not-made" / "results.file"
    # No such images either: the output is checked first, before any work.
    code = main(["eval", str(tmp_path / "no-images"), flag, str(missing)])
    assert code == 2
    error = capsys.readouterr().err
    assert f"cannot write {missing}: no folder {missing.parent}" in error


def test_results_json_follows_compressai_format(eval_run):
    for name in ("results.json", "results-jpeg.json"):
        content = json.loads((eval_run / name).read_text())
        assert {"name", "description", "results"} <= set(content)
        assert RESULT_KEYS <= set(content["results"])
        lengths = {len(v) for v in content["results"].values()}
        assert len(lengths) == 1
    ours = json.loads((eval_run / "results.json").read_text())
    assert len(ours["results"]["bpp"]) == 4 * 2  # qualities x layer-weight settings
    assert "estimated_bpp" in ours["results"]


def test_bpp_is_file_bits_over_pixels(eval_run, tiny_checkpoint):
    rows = list(csv.DictReader((eval_run / "images.csv").open()))
    for row in rows:
        pixels = int(row["width"]) * int(row["height"])
        assert float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / pixels)
    row = next(
        r
        for r in rows
        if r["codec"] == "tiny"
        and r["setting"] == "q=40 w=1,1,1"
        and r["image"] == "img1.png"
        and not r.get("progressive")
    )
    data = codec.encode(
        eval_run / "images" / "img1.png", quality=40, model=tiny_checkpoint
    )
    assert int(row["bytes"]) == len(data)


def test_psnr_matches_an_independent_computation(eval_run, tiny_checkpoint):
    path = eval_run / "images" / "img2.png"
    original = np.asarray(Image.open(path).convert("RGB")).astype(float)
    data = codec.encode(path, quality=70, model=tiny_checkpoint)
    decoded = np.asarray(codec.decode(data, model=tiny_checkpoint)).astype(float)
    expected = 10 * math.log10(255**2 / np.mean((original - decoded) ** 2))
    rows = csv.DictReader((eval_run / "images.csv").open())
    row = next(
        r
        for r in rows
        if r["codec"] == "tiny"
        and r["setting"] == "q=70 w=1,1,1"
        and r["image"] == "img2.png"
        and not r.get("progressive")
    )
    assert float(row["psnr"]) == pytest.approx(expected, abs=1e-9)


def test_per_layer_and_progressive_records_are_complete(eval_run):
    rows = [
        r
        for r in csv.DictReader((eval_run / "images.csv").open())
        if r["codec"] == "tiny"
    ]
    full = [r for r in rows if not r.get("progressive")]
    for row in full:
        layer_bpp = json.loads(row["layer_bpp"])
        assert len(layer_bpp) == 3 and sum(layer_bpp) < float(row["bpp"])
    progressive = [r for r in rows if r.get("progressive")]
    assert sorted({int(r["layers_decoded"]) for r in progressive}) == [1, 2]
    for name in ("rd.png", "rd-layers.png", "rd-rate-space.png", "rd-progressive.png"):
        assert Image.open(eval_run / name).size[0] > 100


def test_baseline_curves_are_reused_from_an_earlier_run(
    eval_run, tiny_checkpoint, tmp_path
):
    measured = json.loads((eval_run / "results-jpeg.json").read_text())
    assert measured["images"] == ["img0.png", "img1.png", "img2.png"]
    assert measured["versions"]["pillow"] == PIL.__version__
    arguments = eval_arguments(eval_run / "images", tiny_checkpoint, tmp_path, "again")
    earlier = ["--baselines-from", str(eval_run / "results.json")]
    assert main(arguments + earlier) == 0
    assert json.loads((tmp_path / "again-jpeg.json").read_text()) == measured
    rows = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert rows and all(row["codec"] != "jpeg" for row in rows)  # not measured again
    for name in ("", "-bd-rate"):  # the same model, so the same curve and BD-rates
        again = (tmp_path / f"again{name}.json").read_text()
        first = (eval_run / f"results{name}.json").read_text()
        assert _without_timings(again) == _without_timings(first)


def _without_timings(text: str) -> str:
    """A result file's content less its timings, as text (NaN equals NaN)."""
    content = json.loads(text)
    for key in ("encoding_time", "decoding_time"):
        content.get("results", {}).pop(key, None)
    return json.dumps(content, sort_keys=True)


@pytest.mark.parametrize(
    "change",
    [{"versions": {"pillow": "1.0", "jpg": "6.2"}}, {"images": ["other.png"]}, None],
)
def test_a_baseline_measured_otherwise_is_refused_before_any_work(
    eval_run, tmp_path, change
):
    earlier = tmp_path / "earlier.json"
    if change is not None:  # None: the earlier run measured no JPEG at all
        curve = json.loads((eval_run / "results-jpeg.json").read_text())
        (tmp_path / "earlier-jpeg.json").write_text(json.dumps({**curve, **change}))
    paths = sorted((eval_run / "images").glob("*.png"))
    settings = [evaluation.RateSetting(quality=50)]
    with pytest.raises(ValueError, match="measure it again|no jpeg curve"):
        # No codec: the refusal must come before our model is measured.
        evaluation.evaluate(None, paths, settings, ["jpeg"], baselines_from=earlier)


@needs_shared
def test_bd_rate_table_covers_baselines_and_anchors(eval_run):
    table = json.loads((eval_run / "results-bd-rate.json").read_text())[
        "bd_rate_percent"
    ]
    assert {"jpeg", "VTM", "WebP", "BPG 8b 444 x265 ycbcr", "qres34m"} <= set(table)


def test_bd_rate_of_a_curve_against_itself_is_zero():
    rate = [0.1, 0.25, 0.5, 0.9, 1.5]
    psnr = [27.0, 30.0, 33.0, 36.0, 39.0]
    assert evaluation.bd_rate(rate, psnr, rate, psnr) == pytest.approx(0, abs=1e-9)


def test_bd_rate_of_ten_percent_more_bits_is_ten_percent():
    rate = np.array([0.1, 0.25, 0.5, 0.9, 1.5])
    psnr = [27.0, 30.5, 33.2, 36.1, 38.7]
    assert evaluation.bd_rate(rate * 1.1, psnr, rate, psnr) == pytest.approx(
        10, abs=1e-6
    )
    assert evaluation.bd_rate(rate, psnr, rate * 1.1, psnr) == pytest.approx(
        -100 / 11, abs=1e-6
    )


def test_rate_gaps_compare_each_point_at_its_own_psnr():
    anchor = {"bpp": [0.9, 0.1, 0.25, 0.5], "psnr": [36.0, 27.0, 30.0, 33.0]}
    # Between anchor points the rate is interpolated in log bpp: 0.5 * sqrt(1.8).
    test = {"bpp": [0.11, 0.25, 0.5 * 1.8**0.5, 2.0], "psnr": [27.0, 31.5, 34.5, 40.0]}
    gaps = evaluation.curves.rate_gaps(test, anchor)
    assert gaps[0] == pytest.approx(10)
    assert gaps[1] < 0  # the anchor needs more than 0.25 bpp above 30 dB
    assert gaps[2] == pytest.approx(0, abs=1e-9)
    assert math.isnan(gaps[3])  # beyond the anchor's highest PSNR


def test_the_eval_reports_each_settings_rate_against_the_baselines(eval_run):
    gaps = json.loads((eval_run / "results-bd-rate.json").read_text())[
        "rate_gap_percent"
    ]
    ours, jpeg = (
        json.loads((eval_run / f"results{suffix}.json").read_text())
        for suffix in ("", "-jpeg")
    )
    assert list(gaps) == ["jpeg"] and list(gaps["jpeg"]) == ours["settings"]
    expected = evaluation.curves.rate_gaps(
        evaluation.curves.as_curve(ours), evaluation.curves.as_curve(jpeg)
    )
    for found, gap in zip(gaps["jpeg"].values(), expected, strict=True):
        assert found == (None if math.isnan(gap) else pytest.approx(gap))


def test_crowded_learning_curve_labels_keep_the_newest_point():
    hours = [0.0, 50.0, 98.0, 100.0]
    bd_rate = [30.0, 10.0, 0.5, 0.0]
    # 98 and 100 hours at nearly the same BD-rate would overlap: 98 is dropped.
    assert spaced_points(hours, bd_rate) == [3, 1, 0]
    # Far apart on the BD-rate axis, neighbours in time both keep their labels.
    assert spaced_points(hours, [30.0, 10.0, 5.0, 0.0]) == [3, 2, 1, 0]


def test_bd_rate_without_overlap_is_nan():
    assert math.isnan(
        evaluation.bd_rate(
            [1, 2, 3, 4], [20, 21, 22, 23], [1, 2, 3, 4], [30, 31, 32, 33]
        )
    )


def test_classical_codecs_are_measured_through_pillow(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(natural_image(64, 64)).save(path)
    for name, baseline in evaluation.CLASSICAL_CODECS.items():
        record = measure_classical(
            baseline, path, baseline.levels[len(baseline.levels) // 2]
        )
        assert record["codec"] == name and record["bytes"] > 0
        assert 15 < record["psnr"] < 60


@needs_shared
def test_anchors_are_read_in_place():
    anchors = evaluation.load_anchors(ANCHORS)
    assert {"VTM", "qres34m", "JPEG2000"} <= set(anchors)
    assert all(len(c["bpp"]) == len(c["psnr"]) for c in anchors.values())


@needs_shared
def test_bd_rates_reproduce_the_published_reference_points():
    """design.md section 5: BPG +22 %, mean-scale hyperprior +21 % against VTM."""
    anchors = evaluation.load_anchors(ANCHORS)
    vtm = anchors["VTM"]
    for name, expected in (("BPG 8b 444 x265 ycbcr", 22), ("mbt2018-mean", 21)):
        curve = anchors[name]
        value = evaluation.bd_rate(curve["bpp"], curve["psnr"], vtm["bpp"], vtm["psnr"])
        assert value == pytest.approx(expected, abs=0.5), name


def test_the_command_line_offers_exactly_the_measured_baselines():
    assert set(BASELINES) == set(evaluation.CLASSICAL_CODECS)
