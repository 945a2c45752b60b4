"""The public API: encode and decode real images with a hierarchical VAE.

    >>> import codec
    >>> data = codec.encode("photo.png", quality=75)        # doctest: +SKIP
    >>> image = codec.decode(data)                          # doctest: +SKIP

Use a `Codec` to keep a model loaded across many images.
"""

from entropy import CorruptStreamError

from .api import (
    DEFAULT_QUALITY,
    Codec,
    ConversionWarning,
    EncodeReport,
    decode,
    encode,
    export_model,
    shipped_model_for,
)
from .container import Header, read_header
from .image_io import DEFAULT_MAX_PIXELS, ImageReadError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_QUALITY",
    "Codec",
    "ConversionWarning",
    "CorruptStreamError",
    "EncodeReport",
    "Header",
    "ImageReadError",
    "decode",
    "encode",
    "export_model",
    "read_header",
    "shipped_model_for",
]
