"""Which output file each input goes to, and reading / writing them safely."""

from __future__ import annotations

import sys
from pathlib import Path

STDIO = "-"


class UsageError(Exception):
    """Inputs and outputs that cannot work together (exit code 2)."""


def label(path: str | Path) -> str:
    return "<stdio>" if str(path) == STDIO else str(path)


def plan(inputs: list[str], output: str | None, suffix: str) -> list[tuple[str, str]]:
    """Pair every input with its output path (or '-' for stdout).

    One input: ``output`` is a file, a folder, '-' or (None) the input's name
    with ``suffix``. Several inputs: ``output`` is a folder (created if needed).
    An input is never an output.
    """
    for source in inputs:
        if source != STDIO and Path(source).is_dir():
            raise UsageError(f"{source} is a directory, not a file")
    if len(inputs) > 1 and STDIO in inputs:
        raise UsageError("'-' (stdin) must be the only input")
    if len(inputs) > 1 and output == STDIO:
        raise UsageError("several inputs cannot all be written to stdout")
    if len(inputs) > 1 and output is not None:
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(
                f"with several inputs, -o must name a folder; {output} is a file"
            )
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (source, _target(source, output, suffix, len(inputs) > 1)) for source in inputs
    ]
    targets = [t for _, t in jobs if t != STDIO]
    if len(set(map(_resolved, targets))) != len(targets):
        raise UsageError("two inputs would be written to the same output file")
    inputs_resolved = {_resolved(s) for s in inputs if s != STDIO}
    for _, target in jobs:
        if target != STDIO and _resolved(target) in inputs_resolved:
            raise UsageError(f"refusing to overwrite the input {target}")
    return jobs


def _target(source: str, output: str | None, suffix: str, several: bool) -> str:
    if output is None:
        return STDIO if source == STDIO else str(Path(source).with_suffix(suffix))
    if output == STDIO:
        return STDIO
    if several or Path(output).is_dir():
        stem = "stdin" if source == STDIO else Path(source).stem
        return str(Path(output) / (stem + suffix))
    return output


def _resolved(path: str) -> Path:
    return Path(path).resolve()


def read_input(source: str) -> bytes | str:
    """The bytes of stdin for '-', else the path itself."""
    return sys.stdin.buffer.read() if source == STDIO else source


def read_bytes(source: str) -> bytes:
    """The bytes of stdin or a file, with one-line errors."""
    if source == STDIO:
        return sys.stdin.buffer.read()
    path = Path(source)
    if path.is_dir():
        raise IsADirectoryError(f"{source} is a directory")
    return path.read_bytes()


def check_target(target: str, force: bool) -> None:
    """Fail early, before any work, if an existing output would be overwritten."""
    if target != STDIO and Path(target).exists() and not force:
        raise FileExistsError(f"{target} exists (use -f/--force to overwrite)")


def write_output(target: str, data: bytes, force: bool) -> None:
    if target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        from codec.image_io import write_atomic

        write_atomic(target, data, overwrite=force)
