"""The weights shipped inside the package, found by name (no network access)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "base"


def shipped_models() -> list[str]:
    """Names of the models whose weights are installed with the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def weights_path(name: str) -> Path:
    """Path of a shipped model's weights file; lists the valid names if unknown."""
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        valid = ", ".join(shipped_models()) or "none installed"
        raise ValueError(f"no shipped model named {name!r} (shipped: {valid})")
    return path
