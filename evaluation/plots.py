"""Figures for `hvae-compress eval` (matplotlib, written to files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _pyplot().close(fig)


def plot_rd(
    curves: dict[str, dict], anchors: dict[str, dict], path, title="Kodak"
) -> None:
    """PSNR vs bpp: measured curves (solid, markers) beside published anchors (dashed).

    Both arguments map a name to {"bpp": [...], "psnr": [...]}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for name, curve in anchors.items():
        ax.plot(
            curve["bpp"],
            curve["psnr"],
            "--",
            linewidth=1,
            alpha=0.7,
            label=f"{name} (published)",
        )
    for name, curve in curves.items():
        ax.plot(
            curve["bpp"], curve["psnr"], "o-", linewidth=2, markersize=4, label=name
        )
    ax.set(
        xlabel="bits per pixel", ylabel="PSNR on RGB (dB)", title=title, xlim=(0, 2.2)
    )
    low = min(min(c["psnr"]) for c in curves.values())
    ax.set_ylim(max(20, low - 2), None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_layers(labels: list[str], layer_bpp: list[list[float]], path) -> None:
    """Stacked bars: bits per pixel of each latent layer at each setting."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    values = np.asarray(layer_bpp)  # (settings, layers)
    bottom = np.zeros(len(labels))
    for layer in range(values.shape[1]):
        ax.bar(labels, values[:, layer], bottom=bottom, label=f"layer {layer}")
        bottom += values[:, layer]
    ax.set(
        xlabel="setting",
        ylabel="bits per pixel",
        title="Bits per latent layer (layer 0 = top)",
    )
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    _save(fig, path)


def plot_rate_space(
    coarse: list[float], fine: list[float], psnr: list[float], path
) -> None:
    """The paper's picture: coarse-layer vs fine-layer bits, coloured by PSNR."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(coarse, fine, c=psnr, cmap="viridis", s=40)
    fig.colorbar(points, ax=ax, label="PSNR (dB)")
    ax.set(
        xlabel="bpp in the coarse (top) layers",
        ylabel="bpp in the fine (bottom) layers",
        title="Rate space",
    )
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_progressive(curves: dict[str, dict], path) -> None:
    """PSNR vs bpp when decoding the top K layers, one line per setting."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, curve in curves.items():
        ax.plot(curve["bpp"], curve["psnr"], "o-", markersize=3, label=name)
    ax.set(
        xlabel="bits per pixel (file cut after K layers)",
        ylabel="PSNR (dB)",
        title="Progressive decoding: top K layers",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def spaced_points(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the points to label so that no two labels overlap, newest first.

    A label is taken to be 8 % of the x range wide and 4 % of the y range tall;
    going from the last point back keeps a crowded end's latest label.
    """
    width = 0.08 * (max(xs) - min(xs))
    height = 0.04 * (max(ys) - min(ys))
    kept = []
    for i in reversed(range(len(xs))):
        if all(
            abs(xs[i] - xs[j]) >= width or abs(ys[i] - ys[j]) >= height for j in kept
        ):
            kept.append(i)
    return kept


def plot_learning_curve(
    cpu_hours: list[float], bd_rates: dict[str, list[float]], steps: list[int], path
) -> None:
    """BD-rate against reference codecs vs cumulative training time, steps marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, values in bd_rates.items():
        ax.plot(cpu_hours, values, "o-", markersize=4, label=f"vs {name}")
    first_curve = next(iter(bd_rates.values()))
    for i in spaced_points(cpu_hours, first_curve):
        ax.annotate(
            f"{steps[i]:,}",
            (cpu_hours[i], first_curve[i]),
            fontsize=7,
            xytext=(3, 4),
            textcoords="offset points",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(
        xlabel="cumulative training time (CPU-hours, 2 cores)",
        ylabel="Kodak BD-rate (%)",
        title="Learning curve (labels: steps)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
