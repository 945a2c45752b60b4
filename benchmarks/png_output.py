"""Writing decoded photos as PNG: time and size at each zlib level.

    python -m benchmarks.png_output [--repeats N]
    # writes benchmarks/png_output.{json,md}

`hvae-compress decode` writes PNG by default, and at 12 megapixels Pillow's
PNG writer at zlib's default level took almost as long as the network's
decode. The image: the large-photo benchmark's 4000x2667 mosaic, coded at
quality 50 and decoded by the shipped model (decoded photos compress like
that, not like the source). The levels take turns, ``--repeats`` rounds
(median kept), in this process; Pillow's writer runs on one thread.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from .large import SIZE, mosaic

HERE = Path(__file__).resolve().parent
LEVELS = (0, 1, 2, 3, 4, 6, 9)


def decoded_mosaic():
    from hvae_compress import codec

    coder = codec.Codec(None, "cpu")
    return coder.decode(coder.encode(mosaic(), quality=50))


def png_seconds_and_bytes(image, level: int) -> tuple[float, int]:
    buffer = io.BytesIO()
    start = time.perf_counter()
    image.save(buffer, format="PNG", compress_level=level)
    return time.perf_counter() - start, buffer.tell()


def measure(repeats: int) -> dict:
    from hvae_compress.codec.image_io import DEFAULT_PNG_COMPRESSION

    from .run import machine

    image = decoded_mosaic()
    runs = {level: [] for level in LEVELS}
    for _ in range(repeats):
        for level in LEVELS:
            runs[level].append(png_seconds_and_bytes(image, level))
    return {
        "size": SIZE,
        "repeats": repeats,
        "machine": machine(),
        "default_level": DEFAULT_PNG_COMPRESSION,
        "levels": {
            str(level): {
                "seconds": statistics.median(s for s, _ in done),
                "bytes": done[0][1],
            }
            for level, done in runs.items()
        },
    }


def markdown(results: dict) -> str:
    width, height = results["size"]
    levels = results["levels"]
    zlib_default = levels["6"]
    lines = [
        f"# Writing a decoded {width}x{height} photo as PNG",
        "",
        "Written by `python -m benchmarks.png_output`: Pillow's PNG writer at "
        "each zlib level, the large-photo mosaic coded at quality 50 and "
        f"decoded by the shipped model; median of {results['repeats']} runs. "
        f"Machine: {results['machine']['cpu']}. `hvae-compress decode` writes "
        f"level {results['default_level']} unless `--png-compress` says otherwise.",
        "",
        "| zlib level | seconds | MB | time vs level 6 | size vs level 6 |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for level, row in levels.items():
        lines.append(
            f"| {level} | {row['seconds']:.2f} | {row['bytes'] / 1e6:.2f} | "
            f"{row['seconds'] / zlib_default['seconds']:.2f}x | "
            f"{row['bytes'] / zlib_default['bytes']:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from .run import write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per level")
    parser.add_argument(
        "--out", default=str(HERE / "png_output.json"), help="results JSON"
    )
    args = parser.parse_args(argv)
    results = measure(args.repeats)
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
