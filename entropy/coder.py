"""The entropy coding backend: one latent layer's symbols <-> one byte string.

Symbols are grouped by table index and each group goes through constriction in a
single vectorized call, so the cost is a handful of calls per layer rather than
one Python step per symbol. Symbols outside a table's support become the escape
bin and are sent exactly afterwards, with a sign and an Elias-gamma-style
magnitude; nothing is ever clipped.

Stream layout (ANS is a stack, so it is written in the reverse of this order)::

    bins of table i_0, bins of table i_1, ...   (increasing table index)
    escape levels, escape signs, escape mantissa bits   (in symbol order)

Bytes are the coder's 32-bit words, little-endian.
"""

from __future__ import annotations

import constriction
import numpy as np

from .errors import CorruptStreamError
from .tables import ESCAPE_LEVELS, GaussianTables

_MAX_LEVEL = ESCAPE_LEVELS - 1  # escape magnitudes are < 2**32 (symbols are int32)


class AnsBackend:
    """Codes int32 symbols under per-symbol tables with constriction's ANS coder."""

    def __init__(self, tables: GaussianTables):
        self.tables = tables
        make = constriction.stream.model.Categorical
        self._models = [
            make(tables.probabilities(i).astype(np.float64), perfect=False)
            for i in range(tables.num_tables)
        ]
        # int32 throughout the per-symbol arrays: a large image's layer has
        # 10^7 symbols, and int64 copies of them would double the peak memory.
        self._half_widths = tables.half_widths.astype(np.int32)
        self._bit = constriction.stream.model.Uniform(2)
        self._level = constriction.stream.model.Uniform(_MAX_LEVEL + 1)

    def encode(self, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
        """Encode symbols (any shape, int) under the tables ``indexes`` (same shape)."""
        symbols, indexes = self._check(np.asarray(symbols), indexes)
        # A large image's layer has 10^7 symbols: every full-size temporary
        # counts, so the bins are built in place of the half widths.
        values = symbols.astype(np.int32, copy=False)
        bins = self._half_widths[indexes]
        escaped = np.flatnonzero(np.abs(values) > bins)
        escaped_values = values[escaped].astype(np.int64)
        escaped_half = bins[escaped].astype(np.int64)
        bins += values  # wraps around only where escaped, overwritten there
        bins[escaped] = 2 * escaped_half + 1
        coder = constriction.stream.stack.AnsCoder()
        self._encode_escapes(coder, escaped_values, escaped_half)
        for table, positions in reversed(_groups(indexes)):
            coder.encode_reverse(bins[positions], self._models[table])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, indexes: np.ndarray) -> np.ndarray:
        """Decode the symbols for ``indexes``; the stream must be used up exactly."""
        indexes = self._check_indexes(indexes)
        shape, indexes = indexes.shape, indexes.ravel()
        if len(data) % 4:
            raise CorruptStreamError("stream length is not a multiple of 4 bytes")
        if indexes.size and not data:
            # An ANS decoder would happily read symbols from nothing.
            raise CorruptStreamError("empty stream for a layer that has symbols")
        try:
            coder = constriction.stream.stack.AnsCoder(
                np.frombuffer(data, "<u4").astype(np.uint32)
            )
            bins = np.empty(indexes.size, np.int32)
            for table, positions in _groups(indexes):
                bins[positions] = coder.decode(self._models[table], len(positions))
            half = self._half_widths[indexes]
            values = bins - half
            escaped = bins == 2 * half + 1
            values[escaped] = self._decode_escapes(
                coder, half[escaped].astype(np.int64)
            )
            exhausted = coder.is_empty()
        except CorruptStreamError:
            raise
        except Exception as error:  # constriction rejects some malformed streams itself
            raise CorruptStreamError(f"undecodable stream: {error}") from None
        if not exhausted:
            raise CorruptStreamError("stream has data left over after the last symbol")
        return values.reshape(shape)

    def _encode_escapes(self, coder, values: np.ndarray, half: np.ndarray) -> None:
        magnitude = np.abs(values) - half - 1  # >= 0
        # Bit length of each magnitude; exact below 2**53.
        levels = np.frexp(magnitude.astype(np.float64))[1]
        mantissa_bits = _mantissa_mask(levels)
        bits = (magnitude[:, None] >> np.arange(_MAX_LEVEL - 1)) & 1
        coder.encode_reverse(bits[mantissa_bits].astype(np.int32), self._bit)
        coder.encode_reverse((values < 0).astype(np.int32), self._bit)
        coder.encode_reverse(levels.astype(np.int32), self._level)

    def _decode_escapes(self, coder, half: np.ndarray) -> np.ndarray:
        count = len(half)
        levels = coder.decode(self._level, count).astype(np.int64)
        negative = coder.decode(self._bit, count).astype(bool)
        mantissa_bits = _mantissa_mask(levels)
        bits = np.zeros(mantissa_bits.shape, np.int64)
        bits[mantissa_bits] = coder.decode(self._bit, int(mantissa_bits.sum()))
        leading = np.where(levels > 0, np.left_shift(1, np.maximum(levels - 1, 0)), 0)
        magnitude = leading + (bits << np.arange(_MAX_LEVEL - 1)).sum(1)
        values = np.where(negative, -1, 1) * (half + 1 + magnitude)
        if (np.abs(values) > np.iinfo(np.int32).max).any():
            raise CorruptStreamError("escaped symbol out of range")
        return values

    def _check(self, symbols: np.ndarray, indexes) -> tuple[np.ndarray, np.ndarray]:
        indexes = self._check_indexes(indexes)
        if symbols.shape != indexes.shape:
            raise ValueError(
                f"symbols shape {symbols.shape} != indexes shape {indexes.shape}"
            )
        if not np.issubdtype(symbols.dtype, np.integer):
            raise ValueError(f"symbols must be integers, got {symbols.dtype}")
        limit = np.iinfo(np.int32).max
        if symbols.size and not (-limit <= symbols.min() and symbols.max() <= limit):
            raise ValueError("symbols must fit in int32 (excluding its minimum)")
        return symbols.ravel(), indexes.ravel()

    def _check_indexes(self, indexes) -> np.ndarray:
        indexes = np.asarray(indexes)
        if not np.issubdtype(indexes.dtype, np.integer):
            raise ValueError(f"indexes must be integers, got {indexes.dtype}")
        if indexes.size and (
            indexes.min() < 0 or indexes.max() >= self.tables.num_tables
        ):
            raise ValueError(f"indexes must lie in [0, {self.tables.num_tables})")
        return indexes.astype(np.int32, copy=False)


def _groups(indexes: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(table, flat positions) for each table in use, in increasing table order."""
    flat = indexes.ravel()
    if not flat.size:
        return []
    # Table indexes are small, and numpy's stable sort of 8/16-bit integers is a
    # radix sort: several times faster than sorting them as int64.
    small = flat.astype(np.min_scalar_type(flat.max()))
    order = np.argsort(small, kind="stable")
    starts = np.flatnonzero(np.diff(small[order])) + 1
    return [(int(flat[group[0]]), group) for group in np.split(order, starts)]


def _mantissa_mask(levels: np.ndarray) -> np.ndarray:
    """(E, 31) bool: which bits below the leading one each escape magnitude sends."""
    return np.arange(_MAX_LEVEL - 1) < (levels - 1)[:, None]
