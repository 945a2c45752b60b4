"""entropy/: integer tables and the ANS backend."""

from __future__ import annotations

import numpy as np
import pytest

from hvae_compress.entropy import (
    PRECISION,
    AnsBackend,
    CorruptStreamError,
    GaussianTables,
    build_tables,
)

from .conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "layer_stream.bin"


@pytest.fixture(scope="module")
def tables() -> GaussianTables:
    return build_tables()


@pytest.fixture(scope="module")
def backend(tables) -> AnsBackend:
    return AnsBackend(tables)


def gaussian_symbols(count: int, seed: int = 0, max_scale: float = 30.0):
    """Residuals drawn from the model family: (symbols, scales)."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.11), np.log(max_scale), count)).astype(
        np.float32
    )
    symbols = np.round(rng.normal(0, scales)).astype(np.int32)
    return symbols, scales


def nearest_tables(tables: GaussianTables, scales: np.ndarray) -> np.ndarray:
    """The table of each scale, nearest in log scale (the model computes these)."""
    boundaries = np.sqrt(tables.scales[:-1] * tables.scales[1:]).astype(np.float32)
    return np.searchsorted(boundaries, scales.astype(np.float32)).astype(np.int32)


def test_tables_sum_to_full_precision_with_no_empty_bin(tables):
    for i in range(tables.num_tables):
        pmf = tables.probabilities(i)
        assert pmf.sum() == 2**PRECISION
        assert (pmf > 0).all()
        assert len(pmf) == 2 * tables.half_widths[i] + 2


def test_table_scales_are_log_spaced_over_the_model_range(tables):
    assert tables.scales[0] == pytest.approx(0.11)
    assert tables.scales[-1] == pytest.approx(64.0)
    ratios = tables.scales[1:] / tables.scales[:-1]
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1.06


def test_tables_survive_the_array_round_trip(tables):
    again = GaussianTables.from_arrays(tables.to_arrays())
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            again.to_arrays().values(), tables.to_arrays().values(), strict=True
        )
    )


def test_tables_reject_inconsistent_arrays(tables):
    arrays = tables.to_arrays()
    broken = arrays["pmfs"].copy()
    broken[0, 0] += 1
    with pytest.raises(ValueError, match="sum"):
        GaussianTables.from_arrays({**arrays, "pmfs": broken})
    with pytest.raises(ValueError, match="shapes"):
        GaussianTables.from_arrays({**arrays, "scales": arrays["scales"][:-1]})


def test_round_trip_of_symbols_with_varied_scales(tables, backend):
    symbols, scales = gaussian_symbols(20_000)
    indexes = nearest_tables(tables, scales).reshape(4, 50, 100)
    data = backend.encode(symbols.reshape(4, 50, 100), indexes)
    decoded = backend.decode(data, indexes)
    assert decoded.shape == (4, 50, 100) and decoded.dtype == np.int32
    assert np.array_equal(decoded.ravel(), symbols)


def test_symbols_outside_the_support_are_escaped_not_clipped(tables, backend):
    extremes = [2**31 - 1, -(2**31 - 1), 5000, -3, 2, 0, 100_000]
    symbols = np.array(extremes, np.int32)
    indexes = np.zeros(len(symbols), np.int32)  # sigma = 0.11: support [-1, 1]
    assert np.array_equal(
        backend.decode(backend.encode(symbols, indexes), indexes), symbols
    )


def test_empty_layer_round_trips(backend):
    empty = np.zeros((0,), np.int32)
    assert backend.decode(backend.encode(empty, empty), empty).size == 0


def test_stream_size_is_within_one_percent_of_the_information_content(tables, backend):
    symbols, scales = gaussian_symbols(200_000, seed=1)
    indexes = nearest_tables(tables, scales)
    bits = 8 * len(backend.encode(symbols, indexes))
    ideal = tables.information_bits(symbols, indexes)
    assert ideal <= bits <= 1.01 * ideal


def test_decoder_rejects_truncated_extended_and_garbage_streams(tables, backend):
    symbols, scales = gaussian_symbols(5000, seed=2)
    indexes = nearest_tables(tables, scales)
    data = backend.encode(symbols, indexes)
    for bad in (data[:-4], data + b"\x01\x00\x00\x00", data[:-1], bytes(8), b""):
        with pytest.raises(CorruptStreamError):
            backend.decode(bad, indexes)


def test_decoder_rejects_streams_for_other_symbol_counts(tables, backend):
    symbols, scales = gaussian_symbols(5000, seed=3)
    indexes = nearest_tables(tables, scales)
    data = backend.encode(symbols, indexes)
    for other in (indexes[:-100], np.concatenate([indexes, indexes[:100]])):
        with pytest.raises(CorruptStreamError):
            backend.decode(data, other)


def test_encoder_checks_its_arguments(backend):
    with pytest.raises(ValueError, match="shape"):
        backend.encode(np.zeros(3, np.int32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="integers"):
        backend.encode(np.zeros(3, np.float32), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="indexes must lie"):
        backend.encode(np.zeros(3, np.int32), np.full(3, 999))


def test_golden_stream_bytes_are_pinned(tables, backend):
    """Fixed integer inputs -> fixed bytes: the format cannot change silently."""
    symbols, scales = gaussian_symbols(3000, seed=42)
    symbols[::500] = 777  # escapes too
    data = backend.encode(symbols, nearest_tables(tables, scales))
    assert data == GOLDEN.read_bytes()
