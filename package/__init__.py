"""hvae-compress: a learned lossy image codec built on a hierarchical VAE.

    >>> import hvae_compress
    >>> data = hvae_compress.encode("photo.png", quality=60)  # doctest: +SKIP
    >>> image = hvae_compress.decode(data)  # doctest: +SKIP

Importing it also teaches Pillow the ``.hvae`` format (`codec.pillow_plugin`).
The subpackages are the rooms of the repository: ``codec`` (this API, the
container, image I/O), ``models`` (the networks and training), ``entropy`` (the
entropy coder) and ``cli`` (the command line). Names that need torch are
imported on first use: reading a header stays light.
"""

import importlib.metadata

from . import codec
from .codec import CorruptStreamError, Header, ImageReadError, read_header
from .codec import pillow_plugin as _pillow_plugin  # noqa: F401 (registers .hvae)

__version__ = importlib.metadata.version("hvae-compress")

_FROM_CODEC = {
    "DEFAULT_QUALITY",
    "Codec",
    "ConversionWarning",
    "EncodeReport",
    "decode",
    "encode",
}

__all__ = [
    "CorruptStreamError",
    "Header",
    "ImageReadError",
    "__version__",
    "read_header",
    *sorted(_FROM_CODEC),
]


def __getattr__(name: str):
    if name in _FROM_CODEC:
        return getattr(codec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
