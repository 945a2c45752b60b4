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

    One input: ``output`` is a file, an existing folder, '-' or (None) the
    input's name with ``suffix``. Several inputs: ``output`` is an existing
    folder (as with cwebp, a mistyped file name never becomes a folder). An
    input is never an output, and binary data never goes to a terminal.
    """
    if len(inputs) > 1 and STDIO in inputs:
        raise UsageError("'-' (stdin) must be the only input")
    if len(inputs) > 1 and output == STDIO:
        raise UsageError("several inputs cannot all be written to stdout")
    if len(inputs) > 1 and output is not None and not Path(output).is_dir():
        raise UsageError(
            f"with several inputs, -o must name an existing folder; {output} is not one"
        )
    jobs = [
        (source, _target(source, output, suffix, len(inputs) > 1)) for source in inputs
    ]
    # A folder given as an input fails on its own (`check_source`), like a
    # missing file: the other inputs are still processed.
    jobs_with_files = [(s, t) for s, t in jobs if not _is_folder(s)]
    targets = [t for _, t in jobs_with_files if t != STDIO]
    if len(set(map(_resolved, targets))) != len(targets):
        raise UsageError("two inputs would be written to the same output file")
    inputs_resolved = {_resolved(s) for s in inputs if s != STDIO}
    for _, target in jobs_with_files:
        if target != STDIO and _resolved(target) in inputs_resolved:
            raise UsageError(f"refusing to overwrite the input {target}")
    if any(t == STDIO for _, t in jobs) and sys.stdout.isatty():
        raise UsageError(
            "refusing to write binary data to a terminal; redirect stdout or give -o"
        )
    return jobs


def check_output_folders(outputs) -> None:
    """Fail before any work if an output's folder does not exist (a long run
    must not end in "cannot write")."""
    for output in outputs:
        if output is not None and not Path(output).parent.is_dir():
            raise UsageError(f"cannot write {output}: no folder {Path(output).parent}")


def _is_folder(source: str) -> bool:
    return source != STDIO and Path(source).is_dir()


def check_source(source: str) -> None:
    """Fail (for this input only) if it is a folder."""
    if _is_folder(source):
        raise IsADirectoryError(f"{source} is a directory")


def _target(source: str, output: str | None, suffix: str, several: bool) -> str:
    if _is_folder(source):
        return source  # never written: check_source fails first
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
    check_source(source)
    return Path(source).read_bytes()


def check_target(target: str, force: bool) -> None:
    """Fail early, before any work, if an existing output would be overwritten."""
    if target != STDIO and Path(target).exists() and not force:
        raise FileExistsError(f"{target} exists (use -f/--force to overwrite)")


def write_output(target: str, data: bytes, force: bool) -> None:
    if target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        from ..files import write_atomic

        write_atomic(target, data, overwrite=force)
