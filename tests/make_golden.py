"""Rewrite the golden files of the tests: only when the format changes on purpose.

    python -m tests.make_golden

Writes tests/golden/container.hvae (the container bytes of a fixed header) and
tests/golden/tiny_seed0.hvae (the seeded tiny model coding a seeded image).
"""

from __future__ import annotations

from hvae_compress import codec

from .conftest import make_tiny_model, natural_image
from .test_codec import GOLDEN as TINY_GOLDEN
from .test_container import GOLDEN as CONTAINER_GOLDEN
from .test_container import sample_file


def main() -> None:
    CONTAINER_GOLDEN.write_bytes(sample_file()[1])
    coder = codec.Codec(make_tiny_model(), "cpu")
    TINY_GOLDEN.write_bytes(coder.encode(natural_image(48, 64, seed=5), quality=50))
    print(f"wrote {CONTAINER_GOLDEN} and {TINY_GOLDEN}")


if __name__ == "__main__":
    main()
