"""Decoder fuzzing: every input must decode to an image or raise CorruptStreamError.

Seeded, structure-aware mutations of valid ``.hvae`` files: bit flips,
truncations, spliced headers, rewritten length and header fields, random
payloads, random bytes. Mutations that would only be caught by a checksum are
also made with the checksums recomputed, so the deeper checks (shapes, lengths,
the entropy decoder itself) are exercised too.

    python -m tests.fuzz --cases 100000                      # long seeded run
    python -m tests.fuzz_atheris -atheris_runs=100000 CORPUS  # coverage-guided

The tests run a few thousand seeded cases and a short atheris run in CI.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hvae_compress import codec
from hvae_compress.codec.container import read_header, write_container

from .conftest import make_tiny_model, natural_image


def seed_files(coder: codec.Codec) -> list[bytes]:
    """Valid files of several shapes, modes and rate settings."""
    rng = np.random.default_rng(0)
    rgba = np.dstack([natural_image(20, 33), natural_image(20, 33)[..., 0]])
    return [
        coder.encode(natural_image(48, 64), quality=50),
        coder.encode(
            natural_image(17, 5, seed=1), quality=90, layer_weights=[1, 2, 0.5]
        ),
        coder.encode(natural_image(30, 40, seed=2)[..., 0]),
        coder.encode(rgba),
        coder.encode(natural_image(40, 70, seed=3), lmbda=0.01),
        coder.encode(rng.integers(0, 256, (16, 16, 3), dtype="uint8"), quality=100),
    ]


def _fix_header_crc(data: bytearray, header_end: int) -> bytearray:
    """Recompute the header checksum so a mutation reaches the checks behind it.

    ``header_end`` comes from the file before mutation; where a mutation moved
    the header's end, the checksum lands elsewhere, like any random damage.
    """
    if header_end <= len(data):
        data[header_end - 4 : header_end] = struct.pack(
            ">I", zlib.crc32(bytes(data[: header_end - 4]))
        )
    return data


def _payload_spans(data: bytes) -> list[tuple[int, int]]:
    header = read_header(data)
    spans, pos = [], header.header_bytes + header.metadata_bytes
    for record in header.layers:
        spans.append((pos, pos + record.num_bytes))
        pos += record.num_bytes
    return spans


def _fix_layer_crcs(data: bytearray) -> bytearray:
    """The file written anew around its (mutated) payloads: every payload CRC
    and the header CRC recomputed, the lengths unchanged."""
    header = read_header(bytes(data))
    lengths = (header.icc_length, header.alpha_length, header.exif_length)
    lengths += tuple(record.num_bytes for record in header.layers)
    payloads, pos = [], header.header_bytes
    for length in lengths:
        payloads.append(bytes(data[pos : pos + length]))
        pos += length
    icc, alpha, exif, *streams = payloads
    return bytearray(write_container(header, streams, icc, alpha, exif))


def mutate(data: bytes, others: list[bytes], rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a valid file: (kind, mutated bytes)."""
    kind = rng.choice(MUTATIONS)
    out = bytearray(data)
    header_end = read_header(data).header_bytes
    if kind == "bit_flips":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        out = out[: rng.randrange(len(out))]
    elif kind == "append":
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "splice":
        other = rng.choice(others)
        out = out[:header_end] + other[rng.randrange(len(other)) :]
    elif kind == "header_field":
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(4, header_end - 4)] = rng.randrange(256)
        out = _fix_header_crc(out, header_end)
    elif kind == "random_length":
        at = rng.randrange(4, header_end - 8)
        value = rng.choice([0, 1, 3, 4, 2**31, 2**32 - 1, rng.randrange(2**32)])
        out[at : at + 4] = struct.pack(">I", value)
        out = _fix_header_crc(out, header_end)
    elif kind == "payload_garbage":
        a, b = rng.choice(_payload_spans(data))
        for i in range(a, b):
            if rng.random() < 0.3:
                out[i] = rng.randrange(256)
        out = _fix_layer_crcs(out)
    elif kind == "random_bytes":
        out = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        if rng.random() < 0.5:
            out[:5] = b"HVAE\x01"
    return kind, bytes(out)


MUTATIONS = (
    "bit_flips",
    "truncate",
    "append",
    "splice",
    "header_field",
    "random_length",
    "payload_garbage",
    "random_bytes",
)


@dataclass
class FuzzReport:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    slowest: float = 0.0


def decode_case(coder: codec.Codec, data: bytes, layers: int | None) -> str:
    """'image' or 'corrupt'; any other exception propagates."""
    try:
        image = coder.decode(data, layers=layers)
    except codec.CorruptStreamError:
        return "corrupt"
    header = read_header(data)
    assert image.size == (header.width, header.height), (
        "decoded size differs from header"
    )
    return "image"


def run(cases: int, seed: int = 0, coder: codec.Codec | None = None) -> FuzzReport:
    """Run ``cases`` seeded mutations through the full decoder."""
    coder = coder or codec.Codec(make_tiny_model(), "cpu", max_pixels=2**22)
    seeds = seed_files(coder)
    rng = random.Random(seed)
    report = FuzzReport()
    for case in range(cases):
        base = rng.choice(seeds)
        kind, data = mutate(base, seeds, rng)
        layers = rng.choice([None, None, 1, 2])
        start = time.perf_counter()
        try:
            outcome = decode_case(coder, data, layers)
        except Exception as error:  # anything but CorruptStreamError is a finding
            report.failures.append((case, kind, type(error).__name__, str(error)[:200]))
            outcome = "FAILURE"
        report.slowest = max(report.slowest, time.perf_counter() - start)
        report.outcomes[f"{kind}:{outcome}"] += 1
        report.cases += 1
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args.cases, args.seed)
    for name, count in sorted(report.outcomes.items()):
        print(f"{name:32} {count}")
    failures = len(report.failures)
    print(f"{report.cases} cases, {failures} failures, slowest {report.slowest:.2f} s")
    for failure in report.failures[:20]:
        print("FAILURE", failure)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
