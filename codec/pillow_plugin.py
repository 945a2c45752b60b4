"""A Pillow plugin: ``Image.open("x.hvae")`` decodes, ``image.save("y.hvae")`` encodes.

Registered when `hvae_compress` is imported (as pillow-avif-plugin does for
AVIF). Opening reads only the header; the pixels are decoded, with the shipped
model the file names, when Pillow first needs them. Saving takes the options
of `Codec.encode`: ``image.save("y.hvae", quality=60)``, ``lmbda=...``,
``max_bytes=...``, ``min_psnr=...``, ``layer_weights=[...]``, and ``model=`` (a
shipped name or a checkpoint path).
"""

from __future__ import annotations

import io

from PIL import Image, ImageFile

from .container import MAGIC, read_header

FORMAT = "HVAE"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class HvaeImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "hvae-compress learned image codec"

    def _open(self) -> None:
        self._data = self.fp.read()
        header = read_header(self._data)
        self._size = (header.width, header.height)
        self._mode = header.mode
        start = header.header_bytes
        if header.icc_length:
            self.info["icc_profile"] = self._data[start : start + header.icc_length]
        self.tile = []

    def load(self):
        if self._data is not None:
            from .api import decode

            decoded = decode(self._data)
            self._data = None
            self.fp = io.BytesIO(decoded.tobytes())
            self.tile = [ImageFile._Tile("raw", (0, 0, *self.size), 0, self.mode)]
        return super().load()


def _save(image: Image.Image, fp, filename) -> None:
    from .api import encode

    options = image.encoderinfo
    keys = ("quality", "lmbda", "max_bytes", "min_psnr", "layer_weights", "model")
    fp.write(encode(image, **{k: options[k] for k in keys if k in options}))


Image.register_open(FORMAT, HvaeImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".hvae")
Image.register_mime(FORMAT, "image/x-hvae")
