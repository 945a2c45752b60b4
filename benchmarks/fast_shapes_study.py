"""How much faster than `fast` would slimmer decoders decode a 12-megapixel photo?

    python -m benchmarks.fast_shapes_study
    # writes benchmarks/fast_shapes_study.{json,md}

`benchmarks.large` found `fast`'s first two releases decoding its 12 MP mosaic
in float32 1.6x faster than the release 86b5011, short of the 2x the
large-photos issue asks for. This study priced the shapes that could close the
gap (its last is the shape of `fast`'s third release): the mosaic is
encoded by `fast`'s first release at quality 50 and decoded in float32 by float
networks of other shapes (random weights beside `fast`'s own scale network,
`decode_profile.slim_decode_seconds`), which takes the time a trained decoder
of that shape would. Each time is the fastest of ``RUNS`` decodes in one
process; the first decode of the release itself in that process is reported
too (`benchmarks.large` times first decodes, in fresh processes).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from hvae_compress import models
from hvae_compress.codec import Codec

from .decode_profile import slim_decode_seconds
from .large import mosaic
from .run import fastest_seconds, machine, write_results

HERE = Path(__file__).resolve().parent
QUALITY = 50
RUNS = 3
# fast's first release (its second has the same shape): the study's committed
# results slim it, and the shipped fast now has the last shape of SHAPES.
STUDIED = "7a4c088edd21fe92"
# name -> changes to fast's config (widths and decoder blocks per level, top
# first: strides 64, 32, 16, 8, 4).
SHAPES = {
    "fast (random weights)": {},
    "stride 16 at 144 channels": {"widths": (192, 192, 144, 64, 32)},
    "stride 16 at 128 channels": {"widths": (192, 192, 128, 64, 32)},
    "no decoder block at stride 8": {"decoder_blocks": (0, 0, 0, 0, 3)},
    "one decoder block fewer at stride 4": {"decoder_blocks": (0, 0, 0, 1, 2)},
    "stride 16 at 128, one block fewer at stride 4": {
        "widths": (192, 192, 128, 64, 32),
        "decoder_blocks": (0, 0, 0, 1, 2),
    },
    "stride 16 at 128, one block fewer at strides 8 and 4": {
        "widths": (192, 192, 128, 64, 32),
        "decoder_blocks": (0, 0, 0, 0, 2),
    },
}


def studied_weights() -> Path:
    """The release the study slims: `fast` before it took the last shape here."""
    return models.released_weights_path("fast", bytes.fromhex(STUDIED))


def run() -> dict:
    coder = Codec(studied_weights(), "cpu", precision="fp32")
    data = coder.encode(mosaic(), quality=QUALITY)
    start = time.perf_counter()
    coder.decode(data)
    first = time.perf_counter() - start
    shipped = fastest_seconds(lambda: coder.decode(data), RUNS)
    shapes = {}
    for name, change in SHAPES.items():
        config = dataclasses.replace(coder.config, **change)
        shapes[name] = slim_decode_seconds(coder, data, config, RUNS)
        print(f"  {name}: {shapes[name]:.2f} s", flush=True)
    return {
        "machine": machine(),
        "model": coder.fingerprint.hex(),
        "bytes": len(data),
        "first_decode_seconds": first,
        "decode_seconds": shipped,
        "shapes": shapes,
    }


def markdown(results: dict) -> str:
    m = results["machine"]
    reference = results["shapes"]["fast (random weights)"]
    lines = [
        "# Slimmer decoders than `fast` on a 12-megapixel photo",
        "",
        f"Written by `python -m benchmarks.fast_shapes_study` on {m['date']}: "
        f"{m['cpu']} ({m['kernels']}), {m['torch_threads']} threads, torch "
        f"{m['torch']}. The mosaic of `benchmarks.large` (4000x2667) encoded by `fast` "
        f"({results['model']}) at quality {QUALITY} ({results['bytes']:,} bytes), "
        "decoded in float32. The release's own first decode in the process took "
        f"{results['first_decode_seconds']:.2f} s, its fastest of {RUNS} "
        f"{results['decode_seconds']:.2f} s.",
        "",
        "| float network | decode s | speed-up |",
        "| --- | ---: | ---: |",
    ]
    for name, seconds in results["shapes"].items():
        lines.append(f"| {name} | {seconds:.2f} | {reference / seconds:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    write_results(run(), HERE / "fast_shapes_study.json", markdown)


if __name__ == "__main__":
    main()
