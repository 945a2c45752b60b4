"""Image input and output: any Pillow-readable image <-> 8-bit planes.

Encoding sees an RGB uint8 array (gray images are replicated to three planes),
plus an optional alpha plane and ICC profile. Conversions that lose something
(16-bit to 8-bit, palette to RGB, CMYK to RGB) are allowed and reported as notes.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 2**26  # 67 megapixels, e.g. 8192 x 8192
DEEP_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16- and 32-bit gray


class ImageReadError(ValueError):
    """An input that is not a readable image (or is too large to read safely)."""


@dataclass
class SourceImage:
    """An image ready for the model: RGB planes, alpha, profile, conversion notes."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mode: str  # the mode to decode back to: "RGB", "L", "RGBA" or "LA"
    alpha: np.ndarray | None = None  # (H, W) uint8
    icc_profile: bytes = b""
    notes: list[str] = field(default_factory=list)
    exif: bytes = b""  # with the orientation tag reset: the pixels are upright

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def load_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A path, file bytes, PIL image or uint8/uint16 numpy array -> `SourceImage`.

    EXIF orientation is applied; the ICC profile and the EXIF data (with the
    orientation reset, as cwebp -metadata does) are kept.

    Raises:
        ImageReadError: unreadable or corrupt file, unsupported array, or more
            than ``max_pixels`` pixels (checked before the pixels are decoded).
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.size, max_pixels)
        return _from_pil(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            raise ImageReadError(f"{path} is a directory")
        return _open(path, str(path), max_pixels)
    if isinstance(image, (bytes, bytearray)):
        return _open(io.BytesIO(image), "input", max_pixels)
    raise TypeError(
        f"image must be a path, bytes, PIL image or numpy array, not "
        f"{type(image).__name__}"
    )


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageReadError(f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageReadError(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} "
            "pixels (raise it with --max-pixels if the file is trusted)"
        )


def _open(source, name: str, max_pixels: int) -> SourceImage:
    """Decode a file (path or file object) with one-line errors."""
    try:
        png_bit_depth = _check_png(source, name)
        with warnings.catch_warnings():
            # Our own pixel limit replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_size(image.size, max_pixels)
                image.load()
                if png_bit_depth and "transparency" in image.info:
                    _rescale_colour_key(image, png_bit_depth)
                return _from_pil(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not an image file (or an unsupported format)"
        ) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
    ) as error:
        raise ImageReadError(f"{name}: damaged or unreadable image ({error})") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(source, name: str) -> int | None:
    """Check every PNG chunk's CRC (Pillow skips those of the image data).

    Returns the PNG's bit depth (None for other formats).
    """
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
    else:
        with open(source, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return None
            data = PNG_SIGNATURE + f.read()
    if not data.startswith(PNG_SIGNATURE):
        return None
    bit_depth, pos = None, len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk = data[pos + 4 : pos + 8 + length]
        stored = data[pos + 8 + length : pos + 12 + length]
        if len(stored) < 4:
            break  # truncated: Pillow reports it
        if zlib.crc32(chunk) != struct.unpack(">I", stored)[0]:
            kind = chunk[:4].decode("latin-1")
            raise ImageReadError(
                f"{name}: damaged PNG ({kind} chunk checksum mismatch)"
            )
        if chunk[:4] == b"IHDR" and len(chunk) >= 13:
            bit_depth = chunk[12]
        if chunk[:4] == b"IEND":
            break
        pos += 12 + length
    return bit_depth


def _rescale_colour_key(image: Image.Image, bit_depth: int) -> None:
    """Express a PNG colour key in the units of the pixels Pillow decoded.

    Pillow widens 1-, 2- and 4-bit gray to 8 bits and narrows 16-bit RGB to 8
    bits, but leaves the tRNS key in the file's units.
    """
    key = image.info["transparency"]
    if image.mode == "L" and bit_depth < 8:
        image.info["transparency"] = key * 255 // (2**bit_depth - 1)
    elif image.mode == "RGB" and bit_depth == 16:
        image.info["transparency"] = tuple(k >> 8 for k in key)


EXIF_ORIENTATION = 0x0112


def _from_pil(image: Image.Image) -> SourceImage:
    source = _planes_from_pil(image)
    exif = image.getexif()
    if exif:
        if EXIF_ORIENTATION in exif:
            exif[EXIF_ORIENTATION] = 1
        source.exif = exif.tobytes()
    return source


def _planes_from_pil(image: Image.Image) -> SourceImage:
    icc = image.info.get("icc_profile") or b""
    notes = []
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    key = (
        image.info.get("transparency")
        if mode in ("1", "L", "RGB", *DEEP_GRAY)
        else None
    )
    if key is not None:
        # A colour key (PNG tRNS): pixels of exactly this value are transparent.
        pixels = np.asarray(image)
        hidden = np.all(pixels.reshape(*pixels.shape[:2], -1) == key, axis=-1)
        opaque = image.copy()
        del opaque.info["transparency"]
        source = _planes_from_pil(opaque)
        source.mode = "RGBA" if source.mode == "RGB" else "LA"
        source.alpha = np.where(hidden, 0, 255).astype(np.uint8)
        source.notes.insert(0, "transparent colour key converted to an alpha plane")
        return source
    if mode in DEEP_GRAY:
        notes.append(f"{mode} image reduced to 8 bits")
        gray = _scale_to_uint8(np.asarray(image), 65535)
        return SourceImage(np.repeat(gray[..., None], 3, axis=2), "L", None, icc, notes)
    if mode == "F":
        notes.append("floating-point image clipped to [0, 255] and rounded")
        gray = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
        return SourceImage(np.repeat(gray[..., None], 3, axis=2), "L", None, icc, notes)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        notes.append("palette image converted to " + ("RGBA" if has_alpha else "RGB"))
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode not in ("RGB", "L", "RGBA", "LA"):
        notes.append(f"{mode} image converted to RGB")
        image = image.convert("RGBA" if "A" in mode else "RGB")
    return _from_planes(np.asarray(image), image.mode, icc, notes)


def _from_planes(
    pixels: np.ndarray, mode: str, icc: bytes, notes: list[str]
) -> SourceImage:
    """uint8 pixels in PIL layout for mode RGB, L, RGBA or LA."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    color = (
        pixels[..., :3]
        if mode.startswith("RGB")
        else np.repeat(pixels[..., :1], 3, axis=2)
    )
    alpha = pixels[..., -1] if mode.endswith("A") else None
    return SourceImage(np.ascontiguousarray(color), mode, alpha, icc, notes)


def _scale_to_uint8(values: np.ndarray, peak: int) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) * (255 / peak)), 0, 255).astype(
        np.uint8
    )


def _from_array(array: np.ndarray, max_pixels: int) -> SourceImage:
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[-1] in (2, 3, 4):
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    else:
        raise ValueError(
            f"image array must be (H, W) or (H, W, 2|3|4), got shape {array.shape}"
        )
    _check_size((array.shape[1], array.shape[0]), max_pixels)
    notes = []
    if array.dtype == np.uint16:
        notes.append("16-bit array reduced to 8 bits")
        array = _scale_to_uint8(array, 65535)
    elif array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 or uint16, got {array.dtype}")
    return _from_planes(array, mode, b"", notes)


def to_pil(
    rgb: np.ndarray,
    mode: str,
    alpha: np.ndarray | None = None,
    icc_profile: bytes = b"",
    exif: bytes = b"",
) -> Image.Image:
    """Decoded RGB planes (and alpha) -> a PIL image in the original mode."""
    image = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    if exif:
        image.info["exif"] = exif
    return image


def encode_alpha(alpha: np.ndarray) -> bytes:
    """Lossless alpha plane: PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(alpha, "L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_alpha(data: bytes, size: tuple[int, int]) -> np.ndarray:
    from ..entropy.errors import CorruptStreamError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode != "L" or image.size != size:
                raise CorruptStreamError("alpha plane has the wrong size or mode")
            return np.asarray(image)
    except CorruptStreamError:
        raise
    except Exception:
        raise CorruptStreamError("alpha plane is not a valid PNG") from None


# Output formats that carry EXIF data, and the lossy ones that take a quality.
EXIF_FORMATS = {"PNG", "JPEG", "WEBP", "AVIF", "TIFF"}
LOSSY_FORMATS = {"JPEG", "WEBP", "AVIF"}
DEFAULT_OUTPUT_QUALITY = 95
# zlib level of PNG outputs. Writing a decoded 12-megapixel photo took 1.06 s at
# level 4 against 2.89 s at zlib's default (6), most of the network's decode
# time, for a file 2.7 % larger; level 1 took 0.60 s for 10 % more
# (benchmarks/png_output.md).
DEFAULT_PNG_COMPRESSION = 4


def image_bytes(
    image: Image.Image,
    path: str | os.PathLike | None,
    default_format: str = "PNG",
    quality: int = DEFAULT_OUTPUT_QUALITY,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
) -> bytes:
    """Serialize an image in the format its file name implies (PNG by default).

    Lossy formats (JPEG, WebP, AVIF) are written at ``quality``, PNG at zlib
    level ``png_compression`` (0-9); the ICC profile and EXIF data go along
    where the format can hold them.
    """
    image_format = default_format
    if path is not None and Path(path).suffix:
        extension = Path(path).suffix.lower()
        image_format = Image.registered_extensions().get(extension)
        if image_format is None:
            raise ValueError(f"unknown image format for output file {path}")
    if image_format in ("JPEG", "BMP", "PPM") and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])  # these formats cannot store alpha
    options = {}
    if "icc_profile" in image.info:
        options["icc_profile"] = image.info["icc_profile"]
    if image.info.get("exif") and image_format in EXIF_FORMATS:
        options["exif"] = image.info["exif"]
    if image_format in LOSSY_FORMATS:
        options["quality"] = round(quality)
    if image_format == "PNG":
        options["compress_level"] = png_compression
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=image_format, **options)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"cannot write {image.mode} image as {image_format}: {error}"
        ) from None
    return buffer.getvalue()
