"""Files: listing and reading images, and writing any file atomically.

The one home of these three, shared by the codec (inputs and outputs), the
models (training images, checkpoints) and the evaluation; it imports nothing
else of the package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(items: list[str | os.PathLike]) -> list[Path]:
    """Image files: files as given, folders expanded to the images directly inside."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ValueError(f"no images in folder {item}")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise ValueError(f"no such file or folder: {item}")
    return paths


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as an RGB PIL image, turned upright by its EXIF orientation."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> None:
    """Write a file so that no crash, kill or error leaves a partial file behind.

    The bytes go to an unnamed temporary file in the destination folder
    (O_TMPFILE, which vanishes with the process if it is killed), which is
    linked into place only when complete. Where the file system has no
    O_TMPFILE, a hidden named temporary file is renamed into place instead.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    try:
        _write(path, data)
    except OSError as error:
        # Name the file the caller asked for, not a temporary one.
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"cannot write {path}: {reason}") from None


def _write(path: Path, data: bytes) -> None:
    folder = path.parent
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        return _write_via_named_temporary(path, data)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        staging = folder / f".{path.name}.{os.getpid()}.part"
        _link_unnamed(f.fileno(), staging)
    try:
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _link_unnamed(fd: int, target: Path) -> None:
    """Give an O_TMPFILE file a name (linkat with AT_SYMLINK_FOLLOW on /proc/self/fd).

    A dir_fd makes CPython call linkat() rather than link(), which would not
    follow the /proc link.
    """
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(
            f"/proc/self/fd/{fd}", target.name, dst_dir_fd=folder, follow_symlinks=True
        )
    finally:
        os.close(folder)


def _write_via_named_temporary(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
