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

from ..arrays import distinct
from . import cells, limits, ragged


_SMALL_VARINTS = [bytes([v]) if v < 0x80 else bytes([v & 0x7F | 0x80, v >> 7]) for v in range(1 << 14)]


def varint(value: int) -> bytes:
    """Base-128 varint; a negative value is an int64 in two's complement (10 bytes), as protobuf writes it."""
    if 0 <= value < 1 << 14:
        return _SMALL_VARINTS[value]
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field; its length prefix counts bytes (a `str` payload is encoded as UTF-8 first)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def request_prefix(table_name: str) -> bytes:
    """`MutateRowsRequest.table_name` (field 1), to put before the serialized entries (field 2)."""
    return _field(1, table_name)


def set_cell(family: str, qualifier: bytes, value: bytes, timestamp_micros: int) -> bytes:
    """A serialized Mutation holding one SetCell."""
    return _field(1, cell_prefix(family, qualifier, timestamp_micros) + _field(4, value))


@functools.lru_cache(maxsize=256)
def cell_prefix(family: str, qualifier: bytes, timestamp_micros: int) -> bytes:
    """The SetCell fields before the value (the same for every cell of one column)."""
    return _field(1, family) + _field(2, qualifier) + bytes([3 << 3]) + varint(timestamp_micros)


def entry(row_key: bytes, mutations: list[bytes]) -> bytes:
    """A serialized Entry, framed as field 2 of MutateRowsRequest (ready to concatenate)."""
    return _field(2, _field(1, row_key) + b"".join(_field(2, m) for m in mutations))


ZSTD_FRAME_START = bytes([0x28, 0xB5, 0x2F, 0xFD, 0x20])  # magic; single segment, 1-byte content size
RAW_FRAME_MAX = 255  # content bytes a 1-byte content size can declare


@dataclasses.dataclass
class EncodedEntries:
    """Serialized entries, each framed as field 2 of MutateRowsRequest, their row keys and
    how many mutations (cells) each holds."""
    entries: ragged.Ragged
    keys: np.ndarray  # bytes (numpy "S"), for messages
    mutations: np.ndarray  # int64: SetCell mutations per entry (Bigtable counts them per request)
    labels: np.ndarray | None = None  # which part (chunk) of the encoded `Rows` each entry belongs to

    def __len__(self):
        return len(self.entries)

    @property
    def payload(self) -> bytes:
        return self.entries.flat[self.entries.offsets[0]:self.entries.offsets[-1]].tobytes()

    @property
    def offsets(self) -> np.ndarray:
        return self.entries.offsets - self.entries.offsets[0]

    def slice(self, start: int, stop: int) -> "EncodedEntries":
        return EncodedEntries(ragged.Ragged(self.entries.flat, self.entries.offsets[start:stop + 1]),
                              self.keys[start:stop], self.mutations[start:stop],
                              None if self.labels is None else self.labels[start:stop])

    def take(self, index) -> "EncodedEntries":
        index = np.asarray(index, np.int64)
        return EncodedEntries(self.entries.take(index), self.keys[index], self.mutations[index],
                              None if self.labels is None else self.labels[index])

    @classmethod
    def concat(cls, parts) -> "EncodedEntries":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(ragged.concat([]), np.empty(0, "S20"), np.zeros(0, np.int64))
        if len(parts) == 1:
            return parts[0]
        labels = (np.concatenate([p.labels for p in parts]) if all(p.labels is not None for p in parts)
                  else None)
        return cls(ragged.concat(p.entries for p in parts), np.concatenate([p.keys for p in parts]),
                   np.concatenate([p.mutations for p in parts]), labels)


def _key_bytes(node_ids: np.ndarray) -> np.ndarray:
    """Row keys as an (n, 20) uint8 array."""
    return ragged.decimal_keys(node_ids)


def _key_strings(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys).view("S20").reshape(-1)


def parent_entries(node_ids: np.ndarray, parent_ids: np.ndarray, timestamp_micros: int) -> EncodedEntries:
    """`0:parents` entries for many nodes at once, as fixed-size records."""
    n = len(node_ids)
    template = entry(b"0" * 20, [set_cell(cells.FAMILY_HIERARCHY, cells.PARENTS, b"\0" * 8, timestamp_micros)])
    size = len(template)
    key_at = template.index(b"0" * 20)
    records = np.tile(np.frombuffer(template, np.uint8), (n, 1))
    keys = _key_bytes(node_ids)
    records[:, key_at:key_at + 20] = keys
    records[:, size - 8:] = np.ascontiguousarray(parent_ids, "<u8").view(np.uint8).reshape(n, 8)
    return EncodedEntries(ragged.Ragged.fixed(records), _key_strings(keys), np.ones(n, np.int64))


def id_arrays(values: np.ndarray, offsets: np.ndarray, compressor) -> ragged.Ragged:
    """zstd frames of many uint64 arrays (array i = values[offsets[i]:offsets[i + 1]]).

    Small arrays (up to 31 ids, which zstd cannot shrink) become frames holding one raw
    block, built for all of them at once; larger ones go through the compressor.
    """
    data = ragged.Ragged(np.ascontiguousarray(values, "<u8").view(np.uint8), np.asarray(offsets, np.int64) * 8)
    sizes = data.lengths
    small = np.flatnonzero(sizes <= RAW_FRAME_MAX)
    large = np.flatnonzero(sizes > RAW_FRAME_MAX)
    n_small = len(small)
    small_sizes = sizes[small]
    block_header = ((small_sizes << 3) | 1).astype("<u4").view(np.uint8).reshape(n_small, 4)[:, :3]
    raw = ragged.join(n_small, [ZSTD_FRAME_START, small_sizes.astype(np.uint8).reshape(-1, 1), block_header,
                                data.take(small)])
    if not len(large):
        return raw
    packed = ragged.Ragged.from_bytes(compressor.compress(data.item(i)) for i in large)
    order = np.argsort(np.concatenate([small, large]), kind="stable")
    return ragged.concat([raw, packed]).take(order)


def node_entries(owner: np.ndarray, prefix_index: np.ndarray, prefixes: list[bytes],
                 values: ragged.Ragged, labels: np.ndarray | None = None) -> EncodedEntries:
    """Entries of cells on nodes: cell i is on `owner[i]` (sorted), column `prefixes[prefix_index[i]]`.

    All lengths are computed first, then every byte is placed by one `join`: each cell's
    framed mutation, preceded by its row's entry header where it is the row's first cell.
    """
    n = len(owner)
    oversized = limits.oversized_cells(values.lengths)
    if len(oversized):
        i = int(oversized[0])
        raise limits.cell_error(cells.row_key(int(owner[i])), _column_of(prefixes[prefix_index[i]]),
                                int(values.lengths[i]), len(oversized))
    prefix = ragged.Ragged.from_bytes(prefixes).take(prefix_index)
    value_len = ragged.varints(values.lengths)
    cell_len = prefix.lengths + 1 + value_len.lengths + values.lengths            # SetCell
    cell_len_v = ragged.varints(cell_len)
    mutation_len = 1 + cell_len_v.lengths + cell_len                                # Mutation
    mutation_len_v = ragged.varints(mutation_len)
    framed = 1 + mutation_len_v.lengths + mutation_len                             # Entry.mutations item
    first = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
    keys = _key_bytes(owner[first])
    entry_len = 22 + np.add.reduceat(framed, first)                                 # Entry
    entry_len_v = ragged.varints(entry_len)
    header = ragged.join(len(first), [b"\x12", entry_len_v, b"\x0a\x14", keys])
    header_len = np.zeros(n, np.int64)
    header_len[first] = header.lengths
    out = ragged.join(n, [ragged.Ragged.from_lengths(header.flat, header_len), b"\x12", mutation_len_v,
                          b"\x0a", cell_len_v, prefix, b"\x22", value_len, values])
    entry_offsets = np.concatenate([out.offsets[first], out.offsets[-1:]])
    return EncodedEntries(ragged.Ragged(out.flat, entry_offsets), _key_strings(keys), np.diff(first, append=n),
                          None if labels is None else labels[first])


def _column_of(prefix: bytes) -> str:
    """"family:qualifier" of a SetCell prefix (`cell_prefix`: two length-delimited fields),
    for messages."""
    fields, at = [], 0
    for _ in range(2):
        at += 1  # the field's tag
        length, shift = 0, 0
        while True:
            byte = prefix[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields.append(prefix[at:at + length].decode(errors="replace"))
        at += length
    return ":".join(fields)


def encode_rows(rows, timestamp_micros: int, compressor=None, part_sizes=None) -> EncodedEntries:
    """Every cell of a `Rows` batch as serialized entries, labelled by part: `part_sizes`
    (k, 5) gives each part's `Rows.column_lengths()` when `rows` concatenates k parts (None:
    one part, label 0).

    Parents are entries of their own; a node's children, cross-edge and lifted cross-edge
    cells share one entry (MutateRows allows several entries for a row, and these cells are independent).
    """
    compressor = compressor or zstandard.ZstdCompressor(level=cells.ZSTD_LEVEL)
    sizes = np.asarray([rows.column_lengths()] if part_sizes is None else part_sizes, np.int64).reshape(-1, 5)
    index = np.arange(len(sizes), dtype=np.int32)
    node_labels, children_labels, cross_labels, counter_labels, lifted_labels = (
        np.repeat(index, sizes[:, k]) for k in range(5))
    parts = []
    if len(rows.node_ids):
        parts.append(parent_entries(rows.node_ids, rows.parent_ids, timestamp_micros))
        parts[-1].labels = node_labels
    owners, owner_labels, prefix_index, values = [], [], [], []
    prefixes = [cell_prefix(cells.FAMILY_HIERARCHY, cells.CHILDREN, timestamp_micros)]
    if len(rows.children_of):
        owners.append(rows.children_of)
        owner_labels.append(children_labels)
        prefix_index.append(np.zeros(len(rows.children_of), np.int64))
        values.append(id_arrays(rows.children.values, rows.children.offsets, compressor))
    edge_sets = ((cells.FAMILY_CROSS_EDGES, cells.cross_edges_qualifier, rows.cross_node, rows.cross_layer,
                  rows.cross_own, rows.cross_other, cross_labels),
                 (cells.FAMILY_LIFTED, cells.lifted_qualifier, rows.lifted_node, rows.lifted_layer,
                  rows.lifted_node, rows.lifted_partner, lifted_labels))
    for family, qualifier, node, layer_of_row, own, other, labels in edge_sets:
        if not len(node):
            continue
        # one cell per (node, layer) run: its rows `[own, other]` as one id array
        change = np.flatnonzero((node[1:] != node[:-1]) | (layer_of_row[1:] != layer_of_row[:-1])) + 1
        starts = np.concatenate([[0], change])
        offsets = np.concatenate([starts, [len(node)]])
        layers = layer_of_row[starts]
        layer_values = distinct(layers)
        first_prefix = len(prefixes)
        prefixes += [cell_prefix(family, qualifier(layer), timestamp_micros) for layer in layer_values.tolist()]
        owners.append(node[starts])
        owner_labels.append(labels[starts])
        prefix_index.append(np.searchsorted(layer_values, layers) + first_prefix)
        pairs = np.stack([own, other], axis=1).reshape(-1)
        values.append(id_arrays(pairs, offsets * 2, compressor))
    if owners:
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        parts.append(node_entries(owner[order], np.concatenate(prefix_index)[order], prefixes,
                                  ragged.concat(values).take(order), np.concatenate(owner_labels)[order]))
    if len(rows.counter_chunks):
        keys = cells.counter_row_keys(rows.counter_chunks, rows.buckets())
        parts.append(encode_cells(
            ((k, [(cells.FAMILY_COUNTERS, cells.COUNTER, cells.encode_counter(v))])
             for k, v in zip(keys, rows.counter_values.tolist())), timestamp_micros))
        parts[-1].labels = counter_labels
    out = EncodedEntries.concat(parts)
    if out.labels is None:
        out.labels = np.zeros(len(out), np.int32)  # nothing to write
    return out


def encode_cells(row_cells, timestamp_micros: int) -> EncodedEntries:
    """Entries from `(row key, [(family, qualifier, value), ...])` pairs (counters, meta, version)."""
    keys, blobs, mutations = [], [], []
    for key, row in row_cells:
        limits.check_key(key)
        for family, qualifier, value in row:
            limits.check_qualifier(key, family, qualifier)
            if len(value) > limits.MAX_CELL_BYTES:
                raise limits.cell_error(key, f"{family}:{qualifier.decode(errors='replace')}", len(value), 1)
        keys.append(key)
        blobs.append(entry(key, [set_cell(f, q, v, timestamp_micros) for f, q, v in row]))
        mutations.append(len(row))
    return EncodedEntries(ragged.Ragged.from_bytes(blobs), np.array(keys, dtype=bytes), np.array(mutations, np.int64))
