"""The error every decoding failure ends in (kept apart: it needs no coder)."""


class CorruptStreamError(ValueError):
    """A stream or container that cannot be decoded: damaged, truncated or foreign."""
