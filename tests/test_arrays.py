import numpy as np
import pytest

from beam_ingest.arrays import distinct, distinct_pairs, run_starts


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_distinct_is_np_unique(n):
    rng = np.random.default_rng(n)
    values = (np.uint64(5) << np.uint64(56)) | rng.integers(0, max(n // 3, 1), n).astype(np.uint64)
    got = distinct(values)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, np.unique(values))
    np.testing.assert_array_equal(distinct(values.reshape(-1, 1)), np.unique(values))


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_distinct_pairs_are_np_unique_rows(n):
    rng = np.random.default_rng(n)
    first = (np.uint64(1) << np.uint64(63)) | rng.integers(0, 7, n).astype(np.uint64)  # past int64: numeric order
    second = rng.integers(0, 9, n).astype(np.uint64)
    a, b = distinct_pairs(first, second)
    rows = np.unique(np.stack([first, second], axis=1), axis=0)
    np.testing.assert_array_equal(a, rows[:, 0])
    np.testing.assert_array_equal(b, rows[:, 1])
    assert a.dtype == b.dtype == np.uint64


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_run_starts_are_where_np_unique_first_sees_each_value(n):
    values = np.sort(np.random.default_rng(n).integers(0, max(n // 3, 1), n).astype(np.uint64))
    _, first = np.unique(values, return_index=True)
    np.testing.assert_array_equal(run_starts(values), first)
    np.testing.assert_array_equal(run_starts(np.array([3, 3, 1, 1, 3])), [0, 2, 4])  # runs, not distinct values
