"""Rewrite the golden files of the tests: only when the format changes on purpose.

    python -m tests.make_golden

Writes tests/golden/container_v3.hvae (the container bytes of a fixed header;
container_v2.hvae keeps those of format version 2, which must stay readable),
tests/golden/tiny_seed0.hvae (the seeded tiny model coding a seeded image) and
each shipped model's golden files: a 256x192 crop of the bundled sample image
at three qualities, their decoded pixels and tests/golden/MODEL.json with the
hashes of their symbols (see tests/test_golden.py). When a model's shipped
weights changed, the set of the earlier ones moves to
tests/golden/MODEL-<their fingerprint>/ first (their weights must move to
models/weights/released/ likewise).
"""

from __future__ import annotations

import json
from importlib.resources import files

from PIL import Image

from hvae_compress import codec, models

from .conftest import make_tiny_model, natural_image
from .decode_worker import decode_hashed, recording_codec
from .test_codec import GOLDEN as TINY_GOLDEN
from .test_container import sample_file
from .test_golden import GOLDEN, pins_file


def shipped_model_files(model: str) -> None:
    sample = files("hvae_compress.codec") / "data" / "sample.png"
    crop = Image.open(sample).convert("RGB").crop((256, 160, 512, 352))
    coder, digests = recording_codec(model)
    keep_earlier_release(model, coder.fingerprint.hex())
    pins = {"model_hash": coder.fingerprint.hex(), "files": {}}
    for quality in (10, 50, 90):
        name = f"{model}_q{quality}.hvae"
        data = coder.encode(crop, quality=quality)
        (GOLDEN / name).write_bytes(data)
        decoded, hashes = decode_hashed(coder, digests, data)
        decoded.save(GOLDEN / f"{model}_q{quality}.png")
        pins["files"][name] = {
            "symbols": hashes["symbols"],
            "pixels": f"{model}_q{quality}.png",
        }
    pins_file(GOLDEN, model).write_text(json.dumps(pins, indent=2) + "\n")


def keep_earlier_release(model: str, fingerprint: str) -> None:
    """Move the golden set of other weights aside: it must keep decoding."""
    pins_path = pins_file(GOLDEN, model)
    if not pins_path.is_file():
        return
    pins = json.loads(pins_path.read_text())
    if pins["model_hash"] == fingerprint:
        return
    folder = GOLDEN / f"{model}-{pins['model_hash']}"
    folder.mkdir()
    for name, pin in pins["files"].items():
        (GOLDEN / name).rename(folder / name)
        (GOLDEN / pin["pixels"]).rename(folder / pin["pixels"])
    pins_path.rename(pins_file(folder, model))


def main() -> None:
    (GOLDEN / "container_v3.hvae").write_bytes(sample_file()[1])
    coder = codec.Codec(make_tiny_model(), "cpu", precision="fp32")
    TINY_GOLDEN.write_bytes(coder.encode(natural_image(48, 64, seed=5), quality=50))
    for model in models.shipped_models():
        shipped_model_files(model)
    print(f"wrote the golden files in {GOLDEN}")


if __name__ == "__main__":
    main()
