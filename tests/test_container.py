"""codec/container: the byte layout, its checks and its golden bytes."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import pytest

from hvae_compress.codec.container import (
    FORMAT_VERSION,
    MAGIC,
    Header,
    read_container,
    read_header,
    write_container,
)
from hvae_compress.entropy import CorruptStreamError

from .conftest import REPO

GOLDEN = REPO / "tests" / "golden"


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
    )
    streams = [bytes([layer * 16 + 5]) * (4 * (layer + 1)) for layer in range(3)]
    return header, write_container(
        header, streams, icc_profile=b"ICC!", alpha_png=b"alpha"
    )


def with_header_crc(data: bytearray, end: int) -> bytes:
    """The data with the checksum of its first ``end`` header bytes recomputed."""
    data[end - 4 : end] = struct.pack(">I", zlib.crc32(bytes(data[: end - 4])))
    return bytes(data)


def test_header_fields_survive_a_round_trip():
    header, data = sample_file()
    parsed = read_header(data)
    assert parsed.version == FORMAT_VERSION == 3
    assert (parsed.mode, parsed.width, parsed.height) == ("RGBA", 40, 24)
    assert parsed.model_name == "tiny" and parsed.model_hash == bytes(range(8))
    assert parsed.lmbda == pytest.approx(0.0125) and parsed.betas == (1.0, 2.0, 0.5)
    assert parsed.rate_codes == (1234, 0, 16, -16)
    assert [r.num_bytes for r in parsed.layers] == [4, 8, 12]
    assert all(r.shape is None for r in parsed.layers)  # the model knows them
    assert (parsed.icc_length, parsed.alpha_length, parsed.exif_length) == (4, 5, 0)
    assert parsed.total_bytes == len(data)


def test_payloads_survive_a_round_trip():
    header, data = sample_file()
    container = read_container(data)
    assert container.icc_profile == b"ICC!" and container.alpha_png == b"alpha"
    assert container.exif == b""
    assert container.layer_streams[2] == bytes([2 * 16 + 5]) * 12


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 2**32 - 1])
def test_sizes_of_every_magnitude_survive_a_round_trip(size):
    header, _ = sample_file()
    wide = dataclasses.replace(header, width=size, lmbda_code=size % 65536)
    streams = [b"", bytes(size % 300), b"x"]
    container = read_container(write_container(wide, streams, exif=b"E" * 200))
    assert (container.header.width, container.header.height) == (size, 24)
    assert container.header.lmbda_code == size % 65536
    assert container.layer_streams == tuple(streams) and container.exif == b"E" * 200


def test_the_shipped_models_header_takes_77_bytes_where_version_2_took_176():
    header = Header("RGB", 768, 512, "base", bytes(8), 2048, 0.01, (0,) * 6)
    streams = [bytes(n) for n in (200, 600, 2000, 1500, 9000, 5000)]
    assert read_header(write_container(header, streams)).header_bytes == 77


def test_reader_rejects_a_wrong_magic_number():
    _, data = sample_file()
    with pytest.raises(CorruptStreamError, match="magic"):
        read_container(b"PNG!" + data[4:])


def test_reader_rejects_unknown_versions():
    _, data = sample_file()
    with pytest.raises(CorruptStreamError, match="version 4 .* newer release"):
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
    flipped[10] ^= 0x04  # inside the model name
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
    header, _ = sample_file()
    data = write_container(header, [b"a" * 10**6, b"b", b"c"])
    cut = data[: read_header(data).header_bytes + 100]
    with pytest.raises(CorruptStreamError, match="ends inside the stream of layer 0"):
        read_container(cut)


def test_reader_rejects_numbers_longer_than_five_bytes():
    data = bytearray(MAGIC + bytes([FORMAT_VERSION, 0]) + b"\xff" * 5 + b"\x01")
    with pytest.raises(CorruptStreamError, match="more than five bytes"):
        read_header(bytes(data + bytes(40)))


def test_reader_rejects_unknown_payload_flags():
    _, data = sample_file()
    extras_at = 4 + 2 + 1 + 1 + 1 + 4 + 8 + 2 + 4 + 1 + 3  # after the beta codes
    patched = bytearray(data)
    assert patched[extras_at] == 0b011  # ICC profile and alpha plane
    patched[extras_at] |= 0b1000
    with pytest.raises(CorruptStreamError, match="unknown payload flags"):
        read_container(with_header_crc(patched, read_header(data).header_bytes))


def test_reader_rejects_huge_images_before_allocating_anything():
    header, _ = sample_file()
    huge = dataclasses.replace(header, width=2**31, height=2**31)
    data = write_container(huge, [b""] * 3)
    with pytest.raises(CorruptStreamError, match="exceeds the limit"):
        read_header(data, max_pixels=2**26)


def test_progressive_read_accepts_a_file_cut_after_the_needed_layers():
    header, data = sample_file()
    parsed = read_header(data)
    # The extras, layers 0 and 1, and part of layer 2.
    cut = data[: parsed.header_bytes + 4 + 5 + 4 + 8 + 3]
    container = read_container(cut, complete_layers=2)
    assert container.layer_streams[2] is None
    assert container.layer_streams[1] == bytes([16 + 5]) * 8
    with pytest.raises(CorruptStreamError):
        read_container(cut, complete_layers=3)


def test_golden_container_bytes_are_pinned():
    _, data = sample_file()
    assert data == (GOLDEN / "container_v3.hvae").read_bytes()


def test_version_2_files_still_read():
    """hvae-compress 0.2 wrote fixed-width fields and every layer's shape."""
    container = read_container((GOLDEN / "container_v2.hvae").read_bytes())
    parsed = container.header
    assert parsed.version == 2 and parsed.header_bytes == 119
    assert (parsed.mode, parsed.width, parsed.height) == ("RGBA", 40, 24)
    assert (parsed.model_name, parsed.rate_codes) == ("tiny", (1234, 0, 16, -16))
    assert [r.shape for r in parsed.layers] == [(4, 1, 2), (4, 3, 5), (4, 5, 8)]
    current = read_container(sample_file()[1])
    assert container.layer_streams == current.layer_streams
    assert (container.icc_profile, container.alpha_png) == (b"ICC!", b"alpha")
