"""One evaluation run: our model and the baselines on the same images."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .curves import as_curve, bd_rate_table, load_anchors, rate_gaps, summarize
from .measure import CLASSICAL_CODECS, RateSetting, evaluate_classical, evaluate_model


@dataclass
class Evaluation:
    """Everything one run measured.

    Attributes:
        model: the name of our model's curve among the summaries.
        records: one dict per image, setting and codec (and per K layers,
            for progressive decodes).
        summaries: per codec, the curve in CompressAI's results format.
        anchors: published curves, {name: {"bpp", "psnr"}}.
        bd_rates: BD-rate of our model against each baseline and anchor (%).
        rate_gaps: per baseline, each of our settings' bpp against the
            baseline's at the same PSNR (%, `curves.rate_gaps`), in the order
            of our summary's settings.
        reused: the baselines whose curves an earlier run measured, and the
            files they came from.
    """

    model: str
    records: list[dict]
    summaries: dict[str, dict]
    anchors: dict[str, dict] = field(default_factory=dict)
    bd_rates: dict[str, float] = field(default_factory=dict)
    rate_gaps: dict[str, list[float]] = field(default_factory=dict)
    reused: dict[str, Path] = field(default_factory=dict)


def check_baselines(names) -> None:
    unknown = set(names) - set(CLASSICAL_CODECS)
    if unknown:
        raise ValueError(
            f"unknown baselines {sorted(unknown)}; choose from "
            f"{', '.join(CLASSICAL_CODECS)}"
        )


def job_count(paths: list[Path], settings: list, baselines: list[str]) -> int:
    """Encode-decode runs an evaluation makes (for a progress bar)."""
    check_baselines(baselines)
    levels = sum(len(CLASSICAL_CODECS[b].levels) for b in baselines)
    return len(paths) * (len(settings) + levels)


def evaluate(
    codec,
    paths: list[Path],
    settings: list[RateSetting],
    baselines: list[str] = (),
    anchors: str | Path | None = None,
    progressive: bool = False,
    with_ms_ssim: bool = True,
    workers: int = 1,
    progress: Callable[[], None] | None = None,
    baselines_from: str | Path | None = None,
) -> Evaluation:
    """Measure our model (a `Codec`) and the Pillow baselines; compare to anchors.

    With ``baselines_from`` (the ``--out`` JSON of an earlier evaluation of the
    same images) the baselines' curves are read from the files it wrote beside
    it instead of measured again (`reused_baseline`).
    """
    check_baselines(baselines)
    # Reused curves are read first: a missing or mismatched one fails at once.
    reused = {}
    if baselines_from:
        reused = {name: baseline_file(baselines_from, name) for name in baselines}
    earlier = {
        name: reused_baseline(path, name, paths) for name, path in reused.items()
    }
    records = evaluate_model(
        codec, paths, settings, progressive, with_ms_ssim, progress
    )
    identity = f"'{codec.name}' ({codec.fingerprint.hex()})"
    description = (
        f"hvae-compress model {identity}, {codec.arithmetic}, measured on real files"
    )
    summaries = {codec.name: summarize(records, codec.name, description)}
    for name in baselines:
        if name in earlier:
            summaries[name] = earlier[name]
            continue
        found = evaluate_classical(name, paths, workers, with_ms_ssim, progress)
        records += found
        summaries[name] = measured_baseline(found, name, paths)
    published = load_anchors(anchors) if anchors else {}
    others = {n: as_curve(s) for n, s in summaries.items() if n != codec.name}
    ours = summaries[codec.name]
    bd_rates = bd_rate_table(ours, {**others, **published})
    gaps = {name: rate_gaps(as_curve(ours), curve) for name, curve in others.items()}
    return Evaluation(codec.name, records, summaries, published, bd_rates, gaps, reused)


def measured_baseline(records: list[dict], name: str, paths: list[Path]) -> dict:
    """A classical codec's curve, with what it depends on besides its settings:
    the images and the library versions (checked when it is reused)."""
    codec = CLASSICAL_CODECS[name]
    summary = summarize(records, name, codec.description)
    summary["images"] = image_names(paths)
    summary["versions"] = codec.versions()
    return summary


def image_names(paths: list[Path]) -> list[str]:
    """What a baseline's curve records of its images, and compares on reuse."""
    return sorted(path.name for path in paths)


def baseline_file(earlier_out: str | Path, name: str) -> Path:
    """Where an evaluation with ``--out earlier_out`` wrote baseline ``name``."""
    earlier_out = Path(earlier_out)
    return earlier_out.with_name(f"{earlier_out.stem}-{name}.json")


def reused_baseline(path: Path, name: str, paths: list[Path]) -> dict:
    """A classical codec's curve that an earlier run measured.

    It does not depend on our model, so evaluating new weights need not measure
    it again (on Kodak, the baselines take most of an evaluation's time). It is
    refused when that run recorded other images or library versions than this
    one would use; curves written before those were recorded are taken as
    they are.
    """
    if not path.is_file():
        raise ValueError(f"{path}: no {name} curve to reuse")
    summary = json.loads(path.read_text())
    images = image_names(paths)
    if summary.get("images", images) != images:
        raise ValueError(
            f"{path}: {name} was measured on other images than these "
            f"{len(images)}; measure it again"
        )
    versions = CLASSICAL_CODECS[name].versions()
    if summary.get("versions", versions) != versions:
        raise ValueError(
            f"{path}: {name} was measured with {summary['versions']}, this machine "
            f"has {versions}; measure it again"
        )
    return summary
