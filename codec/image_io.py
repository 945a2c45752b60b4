"""Image input and output: any Pillow-readable image <-> 8-bit planes.

Encoding sees an RGB uint8 array (gray images are replicated to three planes),
plus an optional alpha plane and ICC profile. Conversions that lose something
(16-bit to 8-bit, palette to RGB, CMYK to RGB) are allowed and reported as notes.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 2**26  # 67 megapixels, e.g. 8192 x 8192


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

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def load_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """A path, file bytes, PIL image or uint8/uint16 numpy array -> `SourceImage`.

    EXIF orientation is applied; the ICC profile is kept.

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
        with warnings.catch_warnings():
            # Our own pixel limit replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_size(image.size, max_pixels)
                image.load()
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


def _from_pil(image: Image.Image) -> SourceImage:
    icc = image.info.get("icc_profile") or b""
    notes = []
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
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
) -> Image.Image:
    """Decoded RGB planes (and alpha) -> a PIL image in the original mode."""
    image = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    return image


def encode_alpha(alpha: np.ndarray) -> bytes:
    """Lossless alpha plane: PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(alpha, "L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_alpha(data: bytes, size: tuple[int, int]) -> np.ndarray:
    from entropy import CorruptStreamError

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


def image_bytes(
    image: Image.Image, path: str | os.PathLike | None, default_format: str = "PNG"
) -> bytes:
    """Serialize an image in the format its file name implies (PNG by default)."""
    image_format = default_format
    if path is not None and Path(path).suffix:
        extension = Path(path).suffix.lower()
        image_format = Image.registered_extensions().get(extension)
        if image_format is None:
            raise ValueError(f"unknown image format for output file {path}")
    if image_format in ("JPEG", "BMP", "PPM") and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])  # these formats cannot store alpha
    buffer = io.BytesIO()
    save_options = (
        {"icc_profile": image.info["icc_profile"]}
        if "icc_profile" in image.info
        else {}
    )
    try:
        image.save(buffer, format=image_format, **save_options)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"cannot write {image.mode} image as {image_format}: {error}"
        ) from None
    return buffer.getvalue()


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> None:
    """Write via a temporary file in the same folder and rename it into place.

    A crash or kill mid-write leaves the destination untouched: either the old
    file (or no file), or the complete new one.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
