"""The codec: encode and decode real images, the ``.hvae`` container, image I/O.

    >>> from hvae_compress import codec
    >>> data = codec.encode("photo.png", quality=75)        # doctest: +SKIP
    >>> image = codec.decode(data)                          # doctest: +SKIP

Use a `Codec` to keep a model loaded across many images. Reading a header
(`read_header`) needs no torch: the coding API is imported on first use.
"""

import importlib

from ..entropy.errors import CorruptStreamError
from .container import Header, read_header
from .image_io import DEFAULT_MAX_PIXELS, ImageReadError

_LAZY = {
    "DEFAULT_QUALITY": "api",
    "Codec": "api",
    "ConversionWarning": "api",
    "EncodeReport": "api",
    "decode": "api",
    "encode": "api",
    "export_model": "api",
    "shipped_model_for": "api",
}

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "CorruptStreamError",
    "Header",
    "ImageReadError",
    "read_header",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
