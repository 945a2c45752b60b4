"""The ``.hvae`` container: a header, then one entropy-coded stream per latent layer.

Byte layout, version 1. All integers are unsigned big-endian; floats are IEEE
754 binary32, big-endian.

====================  =========  ==============================================
field                 size       meaning
====================  =========  ==============================================
magic                 4          ``b"HVAE"``
version               1          format version (1)
mode                  1          0 = RGB, 1 = L (gray), 2 = RGBA, 3 = LA
width, height         4 + 4      image size in pixels
tile_size             4          tile edge in pixels; 0 = the image is one tile
name_length           1          length n of the model name
model_name            n          UTF-8
model_hash            8          first 8 bytes of the SHA-256 of the weights
lmbda                 4          float32, the rate-distortion trade-off
num_layers            1          L, the number of latent layers
betas                 4 L        float32 per-layer rate weights, top layer first
icc_length, icc_crc   4 + 4      ICC profile bytes (0 if none) and their CRC-32
alpha_length,         4 + 4      alpha plane as PNG bytes (0 if none), CRC-32
alpha_crc
layer records         L times    top layer first, each:
  channels            2            latent channels
  rows, cols          4 + 4        latent height and width, summed over tiles
  crc                 4            CRC-32 of the layer's payload
  tile_lengths        4 T          stream length of every tile, row-major;
                                   T = ceil(height / tile) * ceil(width / tile)
header_crc            4          CRC-32 of every header byte before it
payloads                         ICC bytes, alpha bytes, then layer 0 (all
                                 tiles), layer 1, ..., layer L-1
====================  =========  ==============================================

The top layer comes first, so a file whose tail is cut off still holds the
coarse layers: `read_container` can return the complete leading layers for a
progressive decode. Nothing is pickled; every length is checked against the
data before use, and every failure raises `CorruptStreamError`.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from dataclasses import dataclass

from entropy import CorruptStreamError

MAGIC = b"HVAE"
FORMAT_VERSION = 1
MODES = ("RGB", "L", "RGBA", "LA")
MAX_LAYERS = 64
HASH_BYTES = 8


@dataclass(frozen=True)
class LayerRecord:
    """Shape and stream sizes of one latent layer."""

    channels: int
    rows: int
    cols: int
    crc: int
    tile_lengths: tuple[int, ...]

    @property
    def num_bytes(self) -> int:
        return sum(self.tile_lengths)


@dataclass(frozen=True)
class Header:
    """Everything before the payloads."""

    mode: str
    width: int
    height: int
    tile_size: int
    model_name: str
    model_hash: bytes
    lmbda: float
    betas: tuple[float, ...]
    layers: tuple[LayerRecord, ...]
    icc_length: int = 0
    icc_crc: int = 0
    alpha_length: int = 0
    alpha_crc: int = 0
    header_bytes: int = 0  # filled in by the reader

    @property
    def num_tiles(self) -> int:
        return tile_count(self.width, self.height, self.tile_size)

    @property
    def payload_bytes(self) -> int:
        return (
            self.icc_length + self.alpha_length + sum(r.num_bytes for r in self.layers)
        )

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


@dataclass(frozen=True)
class Container:
    """A parsed file: the header and the payloads (None for a layer cut off)."""

    header: Header
    layer_streams: tuple[tuple[bytes, ...] | None, ...]  # [layer][tile]
    icc_profile: bytes
    alpha_png: bytes


def tile_count(width: int, height: int, tile_size: int) -> int:
    if tile_size == 0:
        return 1
    return math.ceil(width / tile_size) * math.ceil(height / tile_size)


def write_container(
    header: Header,
    layer_streams: list[list[bytes]],
    icc_profile: bytes = b"",
    alpha_png: bytes = b"",
) -> bytes:
    """Serialize a header (its lengths and CRCs are recomputed here) and payloads."""
    records = [
        LayerRecord(
            r.channels, r.rows, r.cols, zlib.crc32(b"".join(s)), tuple(map(len, s))
        )
        for r, s in zip(header.layers, layer_streams, strict=True)
    ]
    name = header.model_name.encode()
    out = bytearray(MAGIC)
    out += struct.pack(">BB", FORMAT_VERSION, MODES.index(header.mode))
    out += struct.pack(">III", header.width, header.height, header.tile_size)
    out += struct.pack(">B", len(name)) + name + header.model_hash
    out += struct.pack(">fB", header.lmbda, len(records))
    out += struct.pack(f">{len(records)}f", *header.betas)
    out += struct.pack(">II", len(icc_profile), zlib.crc32(icc_profile))
    out += struct.pack(">II", len(alpha_png), zlib.crc32(alpha_png))
    for record in records:
        if len(record.tile_lengths) != header.num_tiles:
            raise ValueError("one stream per tile is needed for every layer")
        out += struct.pack(
            ">HIII", record.channels, record.rows, record.cols, record.crc
        )
        out += struct.pack(f">{header.num_tiles}I", *record.tile_lengths)
    out += struct.pack(">I", zlib.crc32(out))
    out += icc_profile + alpha_png
    for streams in layer_streams:
        out += b"".join(streams)
    return bytes(out)


class _Reader:
    """Reads big-endian fields, failing cleanly at the end of the data."""

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


def read_header(data: bytes, max_pixels: int | None = None) -> Header:
    """Parse and check the header; payloads are not read.

    Raises:
        CorruptStreamError: wrong magic or version, impossible values, a header
            CRC mismatch, or an image larger than ``max_pixels``.
    """
    data = bytes(data)
    reader = _Reader(data)
    if reader.take(4, "magic number") != MAGIC:
        raise CorruptStreamError("not an .hvae file (wrong magic number)")
    version, mode = reader.unpack("BB", "header")
    if version != FORMAT_VERSION:
        raise CorruptStreamError(
            f"unsupported .hvae format version {version} (reader: {FORMAT_VERSION})"
        )
    if mode >= len(MODES):
        raise CorruptStreamError(f"unknown image mode {mode}")
    width, height, tile_size = reader.unpack("III", "header")
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
    lmbda, num_layers = reader.unpack("fB", "header")
    if not 0 < num_layers <= MAX_LAYERS:
        raise CorruptStreamError(f"impossible number of latent layers {num_layers}")
    betas = reader.unpack(f"{num_layers}f", "rate settings")
    if not all(math.isfinite(v) and v > 0 for v in (lmbda, *betas)):
        raise CorruptStreamError("rate settings are not positive finite numbers")
    icc_length, icc_crc, alpha_length, alpha_crc = reader.unpack("IIII", "header")
    num_tiles = tile_count(width, height, tile_size)
    if num_tiles * num_layers * 4 > len(data):
        raise CorruptStreamError(f"file too short for {num_tiles} tiles")
    layers = []
    for _ in range(num_layers):
        channels, rows, cols, crc = reader.unpack("HIII", "layer records")
        lengths = reader.unpack(f"{num_tiles}I", "layer records")
        layers.append(LayerRecord(channels, rows, cols, crc, lengths))
    (header_crc,) = struct.unpack(">I", reader.take(4, "header checksum"))
    if zlib.crc32(data[: reader.pos - 4]) != header_crc:
        raise CorruptStreamError("header checksum mismatch (damaged header)")
    return Header(
        MODES[mode],
        width,
        height,
        tile_size,
        model_name,
        model_hash,
        lmbda,
        betas,
        tuple(layers),
        icc_length,
        icc_crc,
        alpha_length,
        alpha_crc,
        reader.pos,
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
    streams = []
    for index, record in enumerate(header.layers):
        if index >= required and reader.pos + record.num_bytes > len(data):
            streams += [None] * (len(header.layers) - index)
            break
        payload = _checked(
            reader.take(record.num_bytes, f"stream of layer {index}"),
            record.crc,
            f"layer {index}",
        )
        offsets = [0, *itertools.accumulate(record.tile_lengths)]
        streams.append(tuple(payload[a:b] for a, b in itertools.pairwise(offsets)))
    return Container(header, tuple(streams), icc, alpha)


def _checked(payload: bytes, crc: int, what: str) -> bytes:
    if zlib.crc32(payload) != crc:
        raise CorruptStreamError(f"checksum mismatch in the {what}")
    return payload
