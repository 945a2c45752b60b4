"""codec/container: the byte layout, its checks and its golden bytes."""

from __future__ import annotations

import struct
import zlib

import pytest

from hvae_compress.codec.container import (
    FORMAT_VERSION,
    Header,
    LayerRecord,
    read_container,
    read_header,
    write_container,
)
from hvae_compress.entropy import CorruptStreamError

from .conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "container.hvae"


def sample_file(width: int = 40, height: int = 24) -> tuple[Header, bytes]:
    header = Header(
        mode="RGBA",
        width=width,
        height=height,
        model_name="tiny",
        model_hash=bytes(range(8)),
        lmbda_code=1234,
        lmbda=0.0125,
        beta_codes=(0, 16, -16),
        layers=tuple(LayerRecord(4, 2 * i + 1, 3 * i + 2) for i in range(3)),
    )
    streams = [bytes([layer * 16 + 5]) * (4 * (layer + 1)) for layer in range(3)]
    return header, write_container(
        header, streams, icc_profile=b"ICC!", alpha_png=b"alpha"
    )


def test_header_fields_survive_a_round_trip():
    header, data = sample_file()
    parsed = read_header(data)
    assert (parsed.mode, parsed.width, parsed.height) == ("RGBA", 40, 24)
    assert parsed.model_name == "tiny" and parsed.model_hash == bytes(range(8))
    assert parsed.lmbda == pytest.approx(0.0125) and parsed.betas == (1.0, 2.0, 0.5)
    assert parsed.rate_codes == (1234, 0, 16, -16)
    assert [(r.channels, r.rows, r.cols) for r in parsed.layers] == [
        (4, 1, 2),
        (4, 3, 5),
        (4, 5, 8),
    ]
    assert [r.num_bytes for r in parsed.layers] == [4, 8, 12]
    assert parsed.total_bytes == len(data)


def test_payloads_survive_a_round_trip():
    header, data = sample_file()
    container = read_container(data)
    assert container.icc_profile == b"ICC!" and container.alpha_png == b"alpha"
    assert container.layer_streams[2] == bytes([2 * 16 + 5]) * 12


def test_reader_rejects_a_wrong_magic_number():
    _, data = sample_file()
    with pytest.raises(CorruptStreamError, match="magic"):
        read_container(b"PNG!" + data[4:])


def test_reader_rejects_unknown_versions():
    _, data = sample_file()
    with pytest.raises(CorruptStreamError, match="version 3"):
        read_container(data[:4] + bytes([FORMAT_VERSION + 1]) + data[5:])


def test_reader_names_the_old_version_of_a_version_1_file():
    _, data = sample_file()
    with pytest.raises(CorruptStreamError, match="format version 1 .* no longer"):
        read_container(data[:4] + bytes([1]) + data[5:])


def test_beta_codes_use_the_models_grid():
    from hvae_compress.codec import container
    from hvae_compress.models import config

    assert container.BETA_CODES_PER_OCTAVE == config.BETA_CODES_PER_OCTAVE


def test_reader_rejects_a_damaged_header():
    _, data = sample_file()
    flipped = bytearray(data)
    flipped[20] ^= 0x04  # inside the model name
    with pytest.raises(CorruptStreamError, match="header checksum"):
        read_container(bytes(flipped))


def test_reader_rejects_a_damaged_payload():
    _, data = sample_file()
    flipped = bytearray(data)
    flipped[-3] ^= 0x80
    with pytest.raises(CorruptStreamError, match="checksum mismatch in the layer 2"):
        read_container(bytes(flipped))


def test_reader_rejects_truncation_and_trailing_garbage():
    _, data = sample_file()
    for cut in (3, 30, len(data) - 1):
        with pytest.raises(CorruptStreamError):
            read_container(data[:cut])
    with pytest.raises(CorruptStreamError, match="trailing garbage"):
        read_container(data + b"\0")


def test_reader_rejects_lengths_beyond_the_data():
    header, data = sample_file()
    # Rewrite layer 0's length to a huge value and fix the header checksum.
    crc_at = header_size = read_header(data).header_bytes
    record_at = header_size - 4 - 3 * 18
    patched = bytearray(data)
    patched[record_at + 10 : record_at + 14] = struct.pack(">I", 10**9)
    patched[crc_at - 4 : crc_at] = struct.pack(
        ">I", zlib.crc32(bytes(patched[: crc_at - 4]))
    )
    with pytest.raises(CorruptStreamError, match="ends inside"):
        read_container(bytes(patched))


def test_reader_rejects_huge_images_before_allocating_anything():
    header, _ = sample_file()
    huge = Header(
        **{**header.__dict__, "width": 2**31, "height": 2**31, "header_bytes": 0}
    )
    data = write_container(huge, [b""] * 3)
    with pytest.raises(CorruptStreamError, match="exceeds the limit"):
        read_header(data, max_pixels=2**26)


def test_progressive_read_accepts_a_file_cut_after_the_needed_layers():
    header, data = sample_file()
    parsed = read_header(data)
    cut = data[
        : parsed.header_bytes + 4 + 5 + 4 + 8 + 3
    ]  # extras, layers 0-1, part of 2
    container = read_container(cut, complete_layers=2)
    assert container.layer_streams[2] is None
    assert container.layer_streams[1] == bytes([16 + 5]) * 8
    with pytest.raises(CorruptStreamError):
        read_container(cut, complete_layers=3)


def test_golden_container_bytes_are_pinned():
    _, data = sample_file()
    assert data == GOLDEN.read_bytes()
