"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer).

    python -m tests.fuzz_atheris -atheris_runs=100000 CORPUS_DIR

The seeded valid files of `tests.fuzz` are written into CORPUS_DIR first.
Anything but a decoded image or CorruptStreamError is reported as a crash.
"""

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["codec", "entropy"]):
    from hvae_compress import codec
from .conftest import make_tiny_model
from .fuzz import seed_files


def main() -> None:
    coder = codec.Codec(make_tiny_model(), "cpu", max_pixels=2**22)

    def target(data: bytes) -> None:
        try:
            coder.decode(data)
        except codec.CorruptStreamError:
            pass

    folders = [a for a in sys.argv[1:] if not a.startswith("-")]
    for folder in folders[:1]:
        for i, data in enumerate(seed_files(coder)):
            Path(folder, f"seed{i}.hvae").write_bytes(data)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
