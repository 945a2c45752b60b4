"""The weights shipped inside the package, found by name (no network access).

The weights are part of the file format: a file can only be decoded by the
weights that wrote it. So when new weights of a model ship, the earlier ones
stay installed in ``weights/released/``, named by model and fingerprint
(``base-43361b09fe745c02.pt``), and decoders find them from a file's header.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
RELEASED_DIR = WEIGHTS_DIR / "released"
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


def released_weights_path(name: str, fingerprint: bytes) -> Path | None:
    """Path of an earlier release of a shipped model, if it is installed."""
    if name not in shipped_models():  # a name read from a file: never a path
        return None
    path = RELEASED_DIR / f"{name}-{fingerprint.hex()}.pt"
    return path if path.is_file() else None
