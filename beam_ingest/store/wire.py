"""`MutateRowsRequest` entries serialized straight from numpy (google/bigtable/v2).

Building one `DirectRow` (or protobuf object) per row costs tens of microseconds in
Python; a whole-brain ingest writes 10^10 rows. Most rows are `0:parents` cells of
identical shape, so they are laid out as fixed-size byte records in one numpy array;
node rows (children, cross edges) are variable and encoded per node.

    Entry    { bytes row_key = 1; repeated Mutation mutations = 2; }
    Mutation { SetCell set_cell = 1; }
    SetCell  { string family_name = 1; bytes column_qualifier = 2;
               int64 timestamp_micros = 3; bytes value = 4; }
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import zstandard

from . import cells


_SMALL_VARINTS = [bytes([v]) if v < 0x80 else bytes([v & 0x7F | 0x80, v >> 7]) for v in range(1 << 14)]


def varint(value: int) -> bytes:
    if value < 1 << 14:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def set_cell(family: str, qualifier: bytes, value: bytes, timestamp_micros: int) -> bytes:
    """A serialized Mutation holding one SetCell."""
    return _field(1, cell_prefix(family, qualifier, timestamp_micros) + _field(4, value))


@functools.lru_cache(maxsize=256)
def cell_prefix(family: str, qualifier: bytes, timestamp_micros: int) -> bytes:
    """The SetCell fields before the value (the same for every cell of one column)."""
    return _field(1, family.encode()) + _field(2, qualifier) + bytes([3 << 3]) + varint(timestamp_micros)


def entry(row_key: bytes, mutations: list[bytes]) -> bytes:
    """A serialized Entry, framed as field 2 of MutateRowsRequest (ready to concatenate)."""
    return _field(2, _field(1, row_key) + b"".join(_field(2, m) for m in mutations))


@dataclasses.dataclass
class EncodedEntries:
    """Serialized entries back to back: entry i is `payload[offsets[i]:offsets[i + 1]]`."""
    payload: bytes
    offsets: np.ndarray
    keys: list  # row key of each entry, for messages

    def __len__(self):
        return len(self.offsets) - 1

    def slice(self, start: int, stop: int) -> "EncodedEntries":
        offs = self.offsets[start:stop + 1]
        return EncodedEntries(self.payload[offs[0]:offs[-1]], offs - offs[0], self.keys[start:stop])

    def take(self, index) -> "EncodedEntries":
        parts = [self.payload[self.offsets[i]:self.offsets[i + 1]] for i in index]
        offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        return EncodedEntries(b"".join(parts), offsets, [self.keys[i] for i in index])

    @classmethod
    def concat(cls, parts) -> "EncodedEntries":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(b"", np.zeros(1, np.int64), [])
        sizes = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return cls(b"".join(p.payload for p in parts), offsets, [k for p in parts for k in p.keys])


def parent_entries(node_ids: np.ndarray, parent_ids: np.ndarray, timestamp_micros: int) -> EncodedEntries:
    """`0:parents` entries for many nodes at once, as fixed-size records."""
    n = len(node_ids)
    template = entry(b"0" * 20, [set_cell(cells.FAMILY_HIERARCHY, cells.PARENTS, b"\0" * 8, timestamp_micros)])
    size = len(template)
    key_at = template.index(b"0" * 20)
    records = np.tile(np.frombuffer(template, np.uint8), (n, 1))
    keys = np.char.zfill(np.asarray(node_ids, np.uint64).astype("S20"), 20)
    records[:, key_at:key_at + 20] = keys.view(np.uint8).reshape(n, 20)
    records[:, size - 8:] = np.ascontiguousarray(parent_ids, "<u8").view(np.uint8).reshape(n, 8)
    return EncodedEntries(records.tobytes(), np.arange(n + 1, dtype=np.int64) * size, keys.tolist())


def encode_rows(rows, timestamp_micros: int, compressor=None) -> EncodedEntries:
    """Every cell of a `Rows` batch as serialized entries (one entry per row key)."""
    compressor = compressor or zstandard.ZstdCompressor(level=cells.ZSTD_LEVEL)
    parts = []
    node_rows: dict[int, list[bytes]] = {}
    # Rows whose only cell is 0:parents take the vectorized path; parents of rows that
    # get other cells in this batch are merged into those rows' entries.
    other_keys = np.union1d(rows.children_of, rows.cross_node)
    plain = ~np.isin(rows.node_ids, other_keys)
    if plain.any():
        parts.append(parent_entries(rows.node_ids[plain], rows.parent_ids[plain], timestamp_micros))
    for node, parent in zip(rows.node_ids[~plain].tolist(), rows.parent_ids[~plain].tolist()):
        node_rows.setdefault(node, []).append(
            set_cell(cells.FAMILY_HIERARCHY, cells.PARENTS, cells.encode_id(parent), timestamp_micros))
    if len(rows.children_of):
        values, offsets = rows.children.values, rows.children.offsets.tolist()
        for i, node in enumerate(rows.children_of.tolist()):
            blob = cells.encode_ids(values[offsets[i]:offsets[i + 1]], compressor)
            node_rows.setdefault(node, []).append(
                set_cell(cells.FAMILY_HIERARCHY, cells.CHILDREN, blob, timestamp_micros))
    if len(rows.cross_node):
        change = np.flatnonzero((rows.cross_node[1:] != rows.cross_node[:-1])
                                | (rows.cross_layer[1:] != rows.cross_layer[:-1])) + 1
        starts = np.concatenate([[0], change]).tolist()
        ends = starts[1:] + [len(rows.cross_node)]
        pairs = np.stack([rows.cross_own, rows.cross_other], axis=1)
        for node, layer, s, e in zip(rows.cross_node[starts].tolist(), rows.cross_layer[starts].tolist(),
                                     starts, ends):
            blob = cells.encode_ids(pairs[s:e], compressor)
            node_rows.setdefault(node, []).append(
                set_cell(cells.FAMILY_CROSS_EDGES, cells.cross_edges_qualifier(layer), blob, timestamp_micros))
    if node_rows:
        keys = [cells.row_key(n) for n in node_rows]
        blobs = [entry(k, m) for k, m in zip(keys, node_rows.values())]
        parts.append(_from_blobs(blobs, keys))
    if rows.counter_keys:
        blobs = [entry(k, [set_cell(cells.FAMILY_COUNTERS, cells.COUNTER, cells.encode_counter(v), timestamp_micros)])
                 for k, v in zip(rows.counter_keys, rows.counter_values)]
        parts.append(_from_blobs(blobs, list(rows.counter_keys)))
    return EncodedEntries.concat(parts)


def encode_cells(row_cells, timestamp_micros: int) -> EncodedEntries:
    """Entries from `(row key, [(family, qualifier, value), ...])` pairs (meta, version, tests)."""
    keys, blobs = [], []
    for key, row in row_cells:
        keys.append(key)
        blobs.append(entry(key, [set_cell(f, q, v, timestamp_micros) for f, q, v in row]))
    return _from_blobs(blobs, keys)


def _from_blobs(blobs, keys) -> EncodedEntries:
    offsets = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return EncodedEntries(b"".join(blobs), offsets, keys)
