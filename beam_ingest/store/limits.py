"""Cloud Bigtable's limits on what one write may hold, and the batches that respect them.

The emulator enforces none of these; the service rejects a whole MutateRows request that
breaks one (INVALID_ARGUMENT). Figures from Bigtable's documented quotas and limits and from
its Python client (`_MUTATE_ROWS_REQUEST_MUTATION_LIMIT`, the batcher's flush size).
"""
from __future__ import annotations

import numpy as np

MAX_MUTATIONS_PER_REQUEST = 100_000  # across all entries of one MutateRows request
MAX_ROW_KEY_BYTES = 4 * 1024
MAX_QUALIFIER_BYTES = 16 * 1024
MAX_CELL_BYTES = 100 * 1024 * 1024
MAX_ROW_BYTES = 256 * 1024 * 1024   # one row's data in one request
# Requests are closed before this many serialized bytes: the figure at which the client
# library's own batcher flushes (MAX_MUTATION_SIZE, 20 MiB). Far below the service's
# ceilings, and far above what throughput needs: a 2,000-row batch of a graph's rows is
# 0.1-2 MB, so the budget only bites for rows of unusual size.
MAX_REQUEST_BYTES = 20 * 1024 * 1024


class DataLimitError(ValueError):
    """A row the service would refuse whatever the batch: names the row, column and limit."""


def check_key(key: bytes) -> None:
    if len(key) > MAX_ROW_KEY_BYTES:
        raise DataLimitError(f"row key {key[:60]!r}... is {len(key):,} bytes, over Bigtable's limit of "
                             f"{MAX_ROW_KEY_BYTES:,} bytes a key")


def check_qualifier(key: bytes, family: str, qualifier: bytes) -> None:
    if len(qualifier) > MAX_QUALIFIER_BYTES:
        raise DataLimitError(f"row {key!r}, column {family}:{qualifier[:60]!r}...: a qualifier of "
                             f"{len(qualifier):,} bytes is over Bigtable's limit of {MAX_QUALIFIER_BYTES:,}")


def oversized_cells(value_sizes: np.ndarray) -> np.ndarray:
    """Indices of the values over the cell limit (usually none: one vectorized test)."""
    return np.flatnonzero(np.asarray(value_sizes) > MAX_CELL_BYTES)


def cell_error(key: bytes, column: str, size: int, count: int) -> DataLimitError:
    return DataLimitError(f"row {key!r}, column {column}: a value of {size:,} bytes is over Bigtable's "
                          f"limit of {MAX_CELL_BYTES:,} bytes a cell ({count} such cell(s))")


def check_entries(keys: np.ndarray, entry_bytes: np.ndarray, mutations: np.ndarray) -> None:
    """Each entry (one row's cells in one request) within the row limits: its size, and no
    more mutations than a whole request may carry."""
    entry_bytes, mutations = np.asarray(entry_bytes, np.int64), np.asarray(mutations, np.int64)
    big = np.flatnonzero(entry_bytes > MAX_ROW_BYTES)
    if len(big):
        i = int(big[0])
        raise DataLimitError(f"row {bytes(keys[i])!r}: {int(entry_bytes[i]):,} bytes in one write, over "
                             f"Bigtable's limit of {MAX_ROW_BYTES:,} bytes a row")
    many = np.flatnonzero(mutations > MAX_MUTATIONS_PER_REQUEST)
    if len(many):
        i = int(many[0])
        raise DataLimitError(f"row {bytes(keys[i])!r}: {int(mutations[i]):,} cells in one write, over "
                             f"Bigtable's limit of {MAX_MUTATIONS_PER_REQUEST:,} mutations a request")


def batch_stops(entry_bytes: np.ndarray, mutations: np.ndarray, max_rows: int,
                max_mutations: int | None = None, max_bytes: int | None = None) -> list[int]:
    """Where to cut entries into requests: the end index of each batch, in order. A batch
    closes at `max_rows` entries, or before its mutations would pass `max_mutations` or its
    bytes `max_bytes` (Bigtable's limits unless told), whichever comes first; an entry alone
    over a budget goes alone."""
    max_mutations = MAX_MUTATIONS_PER_REQUEST if max_mutations is None else max_mutations
    max_bytes = MAX_REQUEST_BYTES if max_bytes is None else max_bytes
    n = len(entry_bytes)
    total_bytes = np.concatenate([[0], np.cumsum(entry_bytes, dtype=np.int64)])
    total_mutations = np.concatenate([[0], np.cumsum(mutations, dtype=np.int64)])
    stops = []
    start = 0
    while start < n:
        stop = min(start + max_rows, n,
                   int(np.searchsorted(total_mutations, total_mutations[start] + max_mutations, "right")) - 1,
                   int(np.searchsorted(total_bytes, total_bytes[start] + max_bytes, "right")) - 1)
        stop = max(stop, start + 1)
        stops.append(stop)
        start = stop
    return stops
