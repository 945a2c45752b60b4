"""The ``.hvae`` container: a header, then one entropy-coded stream per latent layer.

Byte layout, version 3. Fields marked varint are unsigned LEB128 (seven bits per
byte, the lowest first, the top bit set on every byte but the last, at most five
bytes); the other integers are big-endian and unsigned unless marked signed;
floats are IEEE 754 binary32, big-endian.

====================  =========  ==============================================
field                 size       meaning
====================  =========  ==============================================
magic                 4          ``b"HVAE"``
version               1          format version (3)
mode                  1          0 = RGB, 1 = L (gray), 2 = RGBA, 3 = LA
width, height         varints    image size in pixels
name_length           1          length n of the model name
model_name            n          UTF-8
model_hash            8          first 8 bytes of the SHA-256 of the weights
lmbda_code            varint     the rate-distortion trade-off lambda as a code
                                 of the model's lambda grid (`models.config`)
lmbda                 4          float32, the lambda of that code (for display)
num_layers            1          L, the number of latent layers
beta_codes            L          signed, per-layer rate weight codes, top layer
                                 first: beta_l = 2 ** (code / 16)
extras                1          which payloads precede the streams: bit 0 an
                                 ICC profile, bit 1 an alpha plane (PNG bytes),
                                 bit 2 EXIF data (the orientation tag reset, the
                                 pixels being upright); other bits are 0
extra records         per extra  in that order, each: length (varint), CRC-32 (4)
layer records         L times    top layer first, each: length of the layer's
                                 stream (varint), its CRC-32 (4)
header_crc            4          CRC-32 of every header byte before it
payloads                         the extras present, then the streams of layer
                                 0, layer 1, ..., layer L-1
====================  =========  ==============================================

The latent shapes are not stored: they follow from the image size and the model
the header names. The top layer comes first, so a file whose tail is cut off
still holds the coarse layers: `read_container` can return the complete leading
layers for a progressive decode. Nothing is pickled; every length is checked
against the data before use, and every failure raises `CorruptStreamError`.

Every image is one piece, whatever its size: the networks run tile by tile
only to bound memory (`models.tiling`), which does not change the streams.
The rate settings are integer codes because the decoder's exact scale network
(`models.scales`) takes them as input: a float would have to be turned into
the network's input by a logarithm, whose last bit differs between machines.

Earlier versions. Version 2 (hvae-compress 0.2) is still read: the same fields
at fixed widths (width, height and every length 4 bytes, lmbda_code 2), the
three extras always recorded (length and CRC, 0 when absent) and every layer's
shape (channels 2, rows 4, cols 4) before its length: 176 header bytes for the
shipped model, where version 3 takes about 77. Version 1 (hvae-compress 0.1)
stored float rate settings, took its coding tables from float computations and
coded large images in independent tiles; its files are refused with a message
naming the version.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from ..entropy.errors import CorruptStreamError

MAGIC = b"HVAE"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
# beta = 2 ** (code / 16), the grid of models.config (a test checks they agree);
# read here without importing the model, so that reading a header stays light.
BETA_CODES_PER_OCTAVE = 16
MODES = ("RGB", "L", "RGBA", "LA")
MAX_LAYERS = 64
HASH_BYTES = 8
EXTRAS = ("ICC profile", "alpha plane", "EXIF data")  # the order of the payloads


@dataclass(frozen=True)
class LayerRecord:
    """Stream size and checksum of one latent layer; version 2 files also
    record its shape (channels, rows, cols)."""

    num_bytes: int
    crc: int
    shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Header:
    """Everything before the payloads."""

    mode: str
    width: int
    height: int
    model_name: str
    model_hash: bytes
    lmbda_code: int
    lmbda: float
    beta_codes: tuple[int, ...]
    layers: tuple[LayerRecord, ...] = ()  # filled in by the reader
    icc_length: int = 0
    icc_crc: int = 0
    alpha_length: int = 0
    alpha_crc: int = 0
    exif_length: int = 0
    exif_crc: int = 0
    header_bytes: int = 0  # filled in by the reader
    version: int = FORMAT_VERSION  # filled in by the reader

    @property
    def betas(self) -> tuple[float, ...]:
        return tuple(2 ** (code / BETA_CODES_PER_OCTAVE) for code in self.beta_codes)

    @property
    def rate_codes(self) -> tuple[int, ...]:
        """The lambda code, then the beta codes: the model's rate input."""
        return (self.lmbda_code, *self.beta_codes)

    @property
    def metadata_bytes(self) -> int:
        """The ICC profile, alpha plane and EXIF data between header and streams."""
        return self.icc_length + self.alpha_length + self.exif_length

    @property
    def payload_bytes(self) -> int:
        return self.metadata_bytes + sum(r.num_bytes for r in self.layers)

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


@dataclass(frozen=True)
class Container:
    """A parsed file: the header and the payloads (None for a layer cut off)."""

    header: Header
    layer_streams: tuple[bytes | None, ...]
    icc_profile: bytes
    alpha_png: bytes
    exif: bytes


def write_container(
    header: Header,
    layer_streams: list[bytes],
    icc_profile: bytes = b"",
    alpha_png: bytes = b"",
    exif: bytes = b"",
) -> bytes:
    """Serialize a header and its payloads in the current format version.

    The header's layer records, lengths and CRCs are ignored: they are
    computed here from the payloads.
    """
    if len(layer_streams) != len(header.beta_codes):
        raise ValueError(
            f"{len(layer_streams)} layer streams for {len(header.beta_codes)} layers"
        )
    extras = (icc_profile, alpha_png, exif)  # in the order of EXTRAS
    flags = sum(1 << i for i, payload in enumerate(extras) if payload)
    name = header.model_name.encode()
    out = bytearray(MAGIC)
    out += struct.pack(">BB", FORMAT_VERSION, MODES.index(header.mode))
    out += _varint(header.width) + _varint(header.height)
    out += struct.pack(">B", len(name)) + name + header.model_hash
    out += _varint(header.lmbda_code)
    out += struct.pack(">fB", header.lmbda, len(layer_streams))
    out += struct.pack(f">{len(layer_streams)}bB", *header.beta_codes, flags)
    payloads = [payload for payload in extras if payload] + list(layer_streams)
    for payload in payloads:
        out += _varint(len(payload)) + struct.pack(">I", zlib.crc32(payload))
    out += struct.pack(">I", zlib.crc32(out))
    return bytes(out) + b"".join(payloads)


def _varint(value: int) -> bytes:
    """Unsigned LEB128: seven bits per byte, the lowest first."""
    if not 0 <= value < 1 << 35:
        raise ValueError(f"{value} does not fit a header field")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Reader:
    """Reads header fields, failing cleanly at the end of the data."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise CorruptStreamError(f"file ends inside the {what}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(">" + fmt, self.take(struct.calcsize(">" + fmt), what))

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 35, 7):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise CorruptStreamError(f"a number of more than five bytes in the {what}")


def read_header(data: bytes, max_pixels: int | None = None) -> Header:
    """Parse and check the header (format version 2 or 3); payloads are not read.

    Raises:
        CorruptStreamError: wrong magic or version, impossible values, a header
            CRC mismatch, or an image larger than ``max_pixels``.
    """
    data = bytes(data)
    reader = _Reader(data)
    if reader.take(4, "magic number") != MAGIC:
        raise CorruptStreamError("not an .hvae file (wrong magic number)")
    version, mode = reader.unpack("BB", "header")
    if version not in READABLE_VERSIONS:
        raise CorruptStreamError(_version_message(version))
    if mode >= len(MODES):
        raise CorruptStreamError(f"unknown image mode {mode}")
    if version == 2:
        width, height = reader.unpack("II", "header")
    else:
        width, height = reader.varint("header"), reader.varint("header")
    if width == 0 or height == 0:
        raise CorruptStreamError(f"impossible image size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise CorruptStreamError(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    (name_length,) = reader.unpack("B", "header")
    try:
        model_name = reader.take(name_length, "model name").decode()
    except UnicodeDecodeError:
        raise CorruptStreamError("model name is not valid UTF-8") from None
    model_hash = reader.take(HASH_BYTES, "model hash")
    if version == 2:
        (lmbda_code,) = reader.unpack("H", "header")
    else:
        lmbda_code = reader.varint("header")
    lmbda, num_layers = reader.unpack("fB", "header")
    if not 0 < num_layers <= MAX_LAYERS:
        raise CorruptStreamError(f"impossible number of latent layers {num_layers}")
    beta_codes = reader.unpack(f"{num_layers}b", "rate settings")
    if not (math.isfinite(lmbda) and lmbda > 0):
        raise CorruptStreamError("lambda is not a positive finite number")
    if version == 2:
        extras = [reader.unpack("II", "header") for _ in EXTRAS]
        layers = tuple(_layer_record_v2(reader) for _ in range(num_layers))
    else:
        extras = _extra_records(reader)
        layers = tuple(_layer_record(reader) for _ in range(num_layers))
    (header_crc,) = struct.unpack(">I", reader.take(4, "header checksum"))
    if zlib.crc32(data[: reader.pos - 4]) != header_crc:
        raise CorruptStreamError("header checksum mismatch (damaged header)")
    (icc_length, icc_crc), (alpha_length, alpha_crc), (exif_length, exif_crc) = extras
    return Header(
        MODES[mode],
        width,
        height,
        model_name,
        model_hash,
        lmbda_code,
        lmbda,
        beta_codes,
        layers,
        icc_length,
        icc_crc,
        alpha_length,
        alpha_crc,
        exif_length,
        exif_crc,
        reader.pos,
        version,
    )


def _extra_records(reader: _Reader) -> list[tuple[int, int]]:
    """(length, CRC) of the ICC profile, alpha plane and EXIF data; (0, 0)
    for those the file does not hold (its extras byte says which)."""
    (present,) = reader.unpack("B", "header")
    if present >> len(EXTRAS):
        raise CorruptStreamError(f"unknown payload flags {present:#04x}")
    return [
        (reader.varint("header"), *reader.unpack("I", "header"))
        if present >> i & 1
        else (0, 0)
        for i in range(len(EXTRAS))
    ]


def _layer_record(reader: _Reader) -> LayerRecord:
    num_bytes = reader.varint("layer records")
    return LayerRecord(num_bytes, *reader.unpack("I", "layer records"))


def _layer_record_v2(reader: _Reader) -> LayerRecord:
    channels, rows, cols, num_bytes, crc = reader.unpack("HIIII", "layer records")
    return LayerRecord(num_bytes, crc, (channels, rows, cols))


def _version_message(version: int) -> str:
    if version == 1:
        return (
            ".hvae format version 1 (hvae-compress 0.1, not portable between "
            "machines) is no longer read; this version reads formats 2 and 3"
        )
    return (
        f"unsupported .hvae format version {version} (this hvae-compress reads "
        "versions 2 and 3; a newer release may read it)"
    )


def read_container(
    data: bytes, complete_layers: int | None = None, max_pixels: int | None = None
) -> Container:
    """Parse a whole file and check every length and CRC.

    Args:
        complete_layers: None requires the whole file, exactly. K accepts a file
            cut off after the first K layers: later layers come back as None.
    """
    data = bytes(data)
    header = read_header(data, max_pixels)
    if len(data) > header.total_bytes:
        raise CorruptStreamError(
            f"{len(data) - header.total_bytes} bytes of trailing garbage"
        )
    required = len(header.layers) if complete_layers is None else complete_layers
    reader = _Reader(data)
    reader.pos = header.header_bytes
    icc = _checked(
        reader.take(header.icc_length, "ICC profile"), header.icc_crc, "ICC profile"
    )
    alpha = _checked(
        reader.take(header.alpha_length, "alpha plane"), header.alpha_crc, "alpha plane"
    )
    exif = _checked(
        reader.take(header.exif_length, "EXIF data"), header.exif_crc, "EXIF data"
    )
    streams = []
    for index, record in enumerate(header.layers):
        if index >= required and reader.pos + record.num_bytes > len(data):
            streams += [None] * (len(header.layers) - index)
            break
        stream = reader.take(record.num_bytes, f"stream of layer {index}")
        streams.append(_checked(stream, record.crc, f"layer {index}"))
    return Container(header, tuple(streams), icc, alpha, exif)


def _checked(payload: bytes, crc: int, what: str) -> bytes:
    if zlib.crc32(payload) != crc:
        raise CorruptStreamError(f"checksum mismatch in the {what}")
    return payload
