"""Row keys and cell encodings of the PyChunkedGraph v2 table (spec/table-format.md)."""
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

ZSTD_LEVEL = 3


def cross_edges_qualifier(layer: int) -> bytes:
    return b"atomic_cross_edges_%d" % int(layer)


FAMILY_LIFTED = "4"  # PyChunkedGraph 3.x: cross edges lifted to every non-root node
VERSION_STRINGS = {2: "2.0.0", 3: "3.1.7"}  # the `0:version` cell per table version


def lifted_qualifier(layer: int) -> bytes:
    return b"cross_edges_%d" % int(layer)


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
