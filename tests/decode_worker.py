"""Decode .hvae files in a fresh process and report what a decoder computed.

    python -m tests.decode_worker MODEL OUT_DIR FILE...

prints one JSON object: for every file, the SHA-256 of every layer's table
indexes and symbols (what must be identical everywhere), of the float
reconstruction before rounding to pixels (what may differ), and the path of
the decoded PNG written to OUT_DIR. ``HVAE_TEST_NO_MKLDNN=1`` switches oneDNN
off; other kernel choices come from the environment (``DNNL_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``, ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from hvae_compress import codec


def recording_codec(model: str) -> tuple[codec.Codec, dict]:
    """A Codec whose entropy decoder and network outputs are hashed as they pass."""
    coder = codec.Codec(model, "cpu")
    digests = {}
    decode_layer = coder.backend.decode

    def decode_recorded(data, indexes):
        symbols = decode_layer(data, indexes)
        digests["symbols"].update(indexes.astype("<i4").tobytes())
        digests["symbols"].update(symbols.astype("<i4").tobytes())
        return symbols

    def record_float(module, inputs, output):
        digests["float"].update(output.float().contiguous().numpy().tobytes())

    coder.backend.decode = decode_recorded
    # The reconstruction before rounding to pixels: what kernels may round differently.
    coder.model.output.register_forward_hook(record_float)
    return coder, digests


def decode_hashed(coder: codec.Codec, digests: dict, data: bytes):
    """Decode one file with a `recording_codec`: the image and the hex digests."""
    digests.update(symbols=hashlib.sha256(), float=hashlib.sha256())
    image = coder.decode(data)
    return image, {name: digest.hexdigest() for name, digest in digests.items()}


def main(argv: list[str]) -> None:
    if os.environ.get("HVAE_TEST_NO_MKLDNN") == "1":
        torch.backends.mkldnn.enabled = False
    model, out_dir, *files = argv
    coder, digests = recording_codec(model)
    report = {}
    for name in files:
        image, hashes = decode_hashed(coder, digests, Path(name).read_bytes())
        png = Path(out_dir) / (Path(name).stem + ".png")
        image.save(png)
        report[name] = {**hashes, "png": str(png)}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
