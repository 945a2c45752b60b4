"""One evaluation run: our model and the baselines on the same images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .curves import as_curve, bd_rate_table, load_anchors, summarize
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
    """

    model: str
    records: list[dict]
    summaries: dict[str, dict]
    anchors: dict[str, dict] = field(default_factory=dict)
    bd_rates: dict[str, float] = field(default_factory=dict)


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
) -> Evaluation:
    """Measure our model (a `Codec`) and the Pillow baselines; compare to anchors."""
    check_baselines(baselines)
    records = evaluate_model(
        codec, paths, settings, progressive, with_ms_ssim, progress
    )
    identity = f"'{codec.name}' ({codec.fingerprint.hex()})"
    description = f"hvae-compress model {identity}, measured on real files"
    summaries = {codec.name: summarize(records, codec.name, description)}
    for name in baselines:
        found = evaluate_classical(name, paths, workers, with_ms_ssim, progress)
        records += found
        summaries[name] = summarize(found, name, CLASSICAL_CODECS[name].description)
    published = load_anchors(anchors) if anchors else {}
    others = {n: as_curve(s) for n, s in summaries.items() if n != codec.name}
    bd_rates = bd_rate_table(summaries[codec.name], {**others, **published})
    return Evaluation(codec.name, records, summaries, published, bd_rates)
