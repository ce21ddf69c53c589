"""Row keys and cell encodings of the PyChunkedGraph v2 table (docs/table-format.md)."""
from __future__ import annotations

import numpy as np
import zstandard

from ..layout import ROOT_COUNTER_BUCKETS

FAMILY_HIERARCHY = "0"
FAMILY_COUNTERS = "1"
FAMILY_OPERATIONS = "2"
FAMILY_CROSS_EDGES = "3"

PARENTS = b"parents"
CHILDREN = b"children"
COUNTER = b"counter"
META = b"meta"
VERSION = b"version"
META_ROW = b"meta"
VERSION_ROW = b"version"

# The ingest's own row (run identity, launcher claim, completion mark: store/table_state.py).
# PyChunkedGraph never reads it: its key is not a 20-digit node id, not `meta`, `version`,
# `params` or `ioperations`, and does not start with `i` (counters) or `f` (fake edges).
BOOKKEEPING_ROW = b"beam_ingest"

ZSTD_LEVEL = 3


def cross_edges_qualifier(layer: int) -> bytes:
    return b"atomic_cross_edges_%d" % int(layer)


FAMILY_LIFTED = "4"  # PyChunkedGraph 3.x: cross edges lifted to every non-root node
VERSION_STRINGS = {2: "2.0.0", 3: "3.1.7"}  # the `0:version` cell per table version


def lifted_qualifier(layer: int) -> bytes:
    return b"cross_edges_%d" % int(layer)


# The rule for every row PyChunkedGraph may read (every row but BOOKKEEPING_ROW): it holds
# only columns of PyChunkedGraph's attribute registry. PCG 2.x (`read_graph_meta`) and 3.x
# (kvdbclient's `read_table_meta`) read whole rows and map each (family, qualifier) through
# that registry, which raises on any other column, so the server could not open the table.
# The registry knows `atomic_cross_edges_<n>` and `cross_edges_<n>` for n < 20 only.
PCG_LAYER_COLUMNS = 20
PCG_COLUMNS = frozenset(
    [(FAMILY_HIERARCHY, PARENTS), (FAMILY_HIERARCHY, CHILDREN), (FAMILY_COUNTERS, COUNTER),
     (FAMILY_HIERARCHY, META), (FAMILY_HIERARCHY, VERSION)]
    + [(FAMILY_CROSS_EDGES, cross_edges_qualifier(n)) for n in range(PCG_LAYER_COLUMNS)]
    + [(FAMILY_LIFTED, lifted_qualifier(n)) for n in range(PCG_LAYER_COLUMNS)])


def is_pcg_column(family: str, qualifier: bytes) -> bool:
    """A column PyChunkedGraph's registry knows, among those an ingest writes."""
    return (family, qualifier) in PCG_COLUMNS


def check_pcg_columns(row_key: bytes, columns) -> None:
    """Refuse (ValueError) a column outside PyChunkedGraph's registry in a row it may read."""
    if row_key == BOOKKEEPING_ROW:
        return
    bad = [f"{family}:{qualifier.decode(errors='replace')}" for family, qualifier in columns
           if not is_pcg_column(family, qualifier)]
    if bad:
        raise ValueError(f"row {row_key!r}: column(s) {', '.join(bad)} are not PyChunkedGraph's; the ingest's "
                         f"own cells belong in row {BOOKKEEPING_ROW.decode()!r}")


def row_key(node_id) -> bytes:
    return b"%020d" % int(node_id)


def counter_key(chunk_id) -> bytes:
    return b"i%020d" % int(chunk_id)


def root_counter_key(root_chunk_id, bucket: int) -> bytes:
    if not 0 <= bucket < ROOT_COUNTER_BUCKETS:
        raise ValueError(f"root counter bucket {bucket} out of range")
    return b"i%020d_%d" % (int(root_chunk_id), bucket)


def counter_row_keys(chunk_ids, buckets) -> list[bytes]:
    """Row keys of counters: a chunk's own (`bucket` < 0) or a root-id bucket's."""
    return [counter_key(c) if b < 0 else root_counter_key(c, b)
            for c, b in zip(np.asarray(chunk_ids).tolist(), np.asarray(buckets).tolist())]


def encode_id(node_id) -> bytes:
    return int(node_id).to_bytes(8, "little")


def decode_id(value: bytes) -> int:
    return int.from_bytes(value, "little")


def encode_counter(value: int) -> bytes:
    return int(value).to_bytes(8, "big", signed=True)


def decode_counter(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


def encode_ids(ids: np.ndarray, compressor=None) -> bytes:
    compressor = compressor or zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor.compress(np.ascontiguousarray(ids, dtype="<u8").tobytes())


def decode_ids(value: bytes) -> np.ndarray:
    return np.frombuffer(zstandard.ZstdDecompressor().decompress(value), dtype="<u8").astype(np.uint64)


def decode_edges(value: bytes) -> np.ndarray:
    return decode_ids(value).reshape(-1, 2)
