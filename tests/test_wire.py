"""Our MutateRowsRequest bytes against protobuf's own serialization, on random inputs.

Every length prefix must count UTF-8 *bytes*: non-ASCII table names and family names,
long keys, qualifiers and values (1-, 2- and 3-byte varint lengths), timestamps up to
int64's maximum.
"""
import random

import numpy as np
import pytest
import zstandard
from google.cloud.bigtable_v2.types import MutateRowsRequest, MutateRowsResponse, Mutation

from beam_ingest.hierarchy.types import Groups, Rows
from beam_ingest.store import cells, row_writer, targets, wire

REQUEST = MutateRowsRequest.pb()
INT64_MAX = (1 << 63) - 1

# characters of 1, 2, 3 and 4 UTF-8 bytes
ALPHABETS = ["abcxyzABC_-.0189/ ", "éüßøñçÅ", "Ωλπ", "中文字表", "€₿", "\U0001F600\U0001F680\U00010348"]
VALUE_SIZES = [0, 1, 2, 8, 127, 128, 129, 255, 256, 1000, 16383, 16384, 16385, 40000, 70000]
TIMESTAMPS = [1, 127, 128, 16383, 16384, 1 << 31, 1_700_000_000_123_000, INT64_MAX - 1, INT64_MAX]


def text(rng: random.Random, n: int) -> str:
    alphabet = "".join(rng.sample(ALPHABETS, rng.randint(1, len(ALPHABETS))))
    return "".join(rng.choice(alphabet) for _ in range(n))


def blob(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def length(rng: random.Random, sizes=VALUE_SIZES) -> int:
    return rng.choice(sizes) if rng.random() < 0.5 else rng.randint(0, 300)


def table_name(rng: random.Random) -> str:
    table = text(rng, rng.choice([1, 5, 40, 60, 100, 130, 300]))
    return f"projects/{text(rng, rng.randint(1, 20))}/instances/{text(rng, rng.randint(1, 20))}/tables/{table}"


def timestamp(rng: random.Random) -> int:
    return rng.choice(TIMESTAMPS) if rng.random() < 0.5 else rng.randint(1, INT64_MAX)


def official(name: str, row_cells, ts: int) -> bytes:
    return REQUEST(table_name=name, entries=[
        {"row_key": key, "mutations": [{"set_cell": {"family_name": f, "column_qualifier": q, "timestamp_micros": ts,
                                                     "value": v}} for f, q, v in row]}
        for key, row in row_cells]).SerializeToString()


def has_defaults(row_cells, ts) -> bool:
    """proto3 leaves out empty / zero fields; we always write them (the same message, other bytes)."""
    return ts == 0 or any(not key or not row for key, row in row_cells) or any(
        not f or not q or not v for _, row in row_cells for f, q, v in row)


@pytest.mark.parametrize("seed", range(6))
def test_encode_cells_equals_protobuf(seed):
    rng = random.Random(seed)
    for case in range(60):
        name = table_name(rng)
        ts = timestamp(rng) if case % 20 else rng.choice([0, 1])
        row_cells = [(blob(rng, rng.choice([1, 20, 127, 128, 200, 4000])),
                      [(text(rng, rng.choice([0, 1, 3, 64, 130])), blob(rng, length(rng, [0, 1, 127, 128, 300, 16384])),
                        blob(rng, length(rng))) for _ in range(rng.randint(1, 4))])
                     for _ in range(rng.randint(1, 5))]
        entries = wire.encode_cells(row_cells, ts)
        ours = wire.request_prefix(name) + entries.payload
        theirs = official(name, row_cells, ts)
        parsed = REQUEST.FromString(ours)
        assert parsed == REQUEST.FromString(theirs)
        if not has_defaults(row_cells, ts):
            assert ours == theirs
        # field by field
        assert parsed.table_name == name
        assert [e.row_key for e in parsed.entries] == [key for key, _ in row_cells]
        for e, (_, row) in zip(parsed.entries, row_cells):
            assert [(m.set_cell.family_name, m.set_cell.column_qualifier, m.set_cell.value) for m in e.mutations] == row
            assert {m.set_cell.timestamp_micros for m in e.mutations} == {ts}
        # each entry on its own (retries re-send a subset) and its key
        for i, (key, row) in enumerate(row_cells):
            one = REQUEST.FromString(entries.entries.item(i))
            assert len(one.entries) == 1 and one.entries[0].row_key == key
            assert bytes(entries.keys[i]) == key.rstrip(b"\0")  # numpy "S" drops trailing NULs


def test_a_huge_value_has_a_four_byte_length():
    rng = random.Random(99)
    row_cells = [(b"k", [("0", b"q", blob(rng, (1 << 21) + 5))])]
    name = table_name(rng)
    assert wire.request_prefix(name) + wire.encode_cells(row_cells, INT64_MAX).payload == \
        official(name, row_cells, INT64_MAX)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2097151, 2097152, 1 << 35,
                                   INT64_MAX, -1, -128, -(1 << 63)])
def test_varint_equals_protobuf_int64(value):
    assert bytes([3 << 3]) + wire.varint(value) == Mutation.SetCell.pb()(timestamp_micros=value).SerializeToString() \
        or value == 0  # proto3 leaves a zero out
    parsed = Mutation.SetCell.pb().FromString(bytes([3 << 3]) + wire.varint(value))
    assert parsed.timestamp_micros == value


def test_request_prefix_counts_bytes_not_characters():
    for name in ["projects/p/instances/i/tables/t", "projects/p/instances/i/tables/t\u00e9",
                 "projects/p/instances/i/tables/" + "中" * 40, "projects/\U0001F600/instances/i/tables/" + "é" * 100]:
        assert wire.request_prefix(name) == REQUEST(table_name=name).SerializeToString()


class Capture:
    """A transport that keeps each request and acknowledges every entry."""

    def __init__(self):
        self.requests = []

    def mutate_rows(self, request, timeout):
        self.requests.append(request)
        yield MutateRowsResponse.pb()(entries=[{"index": i} for i in range(len(REQUEST.FromString(request).entries))])


@pytest.mark.parametrize("table_id", ["graph", "graph-é", "中" * 50, "\U0001F600" * 40])
def test_row_writer_sends_its_table_name_whole(table_id):
    """The table name's length prefix used to be its character count: any non-ASCII id broke every request."""
    capture = Capture()
    writer = row_writer.RowWriter(targets.Target("proj", "inst"), table_id, 1_700_000_000_123, batch_rows=3, max_inflight=1,
                                transport=capture)
    row_cells = [(b"%020d" % i, [("0", b"parents", b"%08d" % i)]) for i in range(7)]
    writer.write(row_cells)
    writer.flush()
    assert len(capture.requests) == 3 and writer.rows_written == 7
    parsed = [REQUEST.FromString(r) for r in capture.requests]
    assert {p.table_name for p in parsed} == {f"projects/proj/instances/inst/tables/{table_id}"}
    assert [e.row_key for p in parsed for e in p.entries] == [key for key, _ in row_cells]
    assert b"".join(capture.requests[:1]) == official(writer.table_name, row_cells[:3], writer.timestamp_micros)


def random_rows(rng: random.Random, np_rng: np.random.Generator) -> Rows:
    ids = lambda n: np.unique(np_rng.integers(1, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True))
    nodes = ids(rng.randint(0, 40))
    children_of = ids(rng.randint(0, 20))
    sizes = [rng.choice([1, 2, 31, 32, 33, 100, 2100, 3000]) for _ in children_of]
    values = [np.sort(np_rng.integers(0, 1 << 62, s, dtype=np.uint64)) for s in sizes]
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    children = Groups(np.concatenate(values) if values else np.empty(0, np.uint64), offsets)
    # cross edges: some on nodes that also have children (they share an entry), sorted by node, layer
    owners = np.concatenate([children_of[:rng.randint(0, len(children_of))], ids(rng.randint(0, 10))])
    cross = [(int(node), layer, int(np_rng.integers(0, 1 << 63)), int(np_rng.integers(0, 1 << 63)))
             for node in owners for layer in rng.sample(range(2, 12), rng.randint(1, 3))
             for _ in range(rng.choice([1, 2, 20, 2100]))]
    cross.sort(key=lambda c: (c[0], c[1]))
    column = lambda k, dtype: np.array([c[k] for c in cross], dtype)
    # lifted cross edges (family 4): rows [node, partner], on nodes with or without other cells
    lifted_owners = np.concatenate([owners[:rng.randint(0, len(owners))], ids(rng.randint(0, 6))])
    lifted = sorted({(int(node), layer, int(np_rng.integers(0, 1 << 63)))
                     for node in lifted_owners for layer in rng.sample(range(2, 12), rng.randint(1, 3))
                     for _ in range(rng.choice([1, 3, 40]))})
    lifted_column = lambda k, dtype: np.array([c[k] for c in lifted], dtype)
    n_counters = rng.randint(0, 3)
    counter_chunks = np.array([rng.randrange(1 << 60) for _ in range(n_counters)], np.uint64)
    counter_buckets = np.array([rng.choice([-1, 0, rng.randrange(256)]) for _ in range(n_counters)], np.int64)
    return Rows(node_ids=nodes, parent_ids=np_rng.integers(0, 1 << 63, len(nodes), dtype=np.uint64),
                children_of=children_of, children=children,
                cross_node=column(0, np.uint64), cross_layer=column(1, np.int64),
                cross_own=column(2, np.uint64), cross_other=column(3, np.uint64),
                lifted_node=lifted_column(0, np.uint64), lifted_layer=lifted_column(1, np.int64),
                lifted_partner=lifted_column(2, np.uint64),
                counter_chunks=counter_chunks, counter_buckets=counter_buckets,
                counter_values=np.array([rng.randint(-(1 << 40), 1 << 40) for _ in range(n_counters)], np.int64))


def expected_cells(rows: Rows, ts: int):
    """(row key, family, qualifier, timestamp, decoded value) of every cell, independently of wire.py."""
    out = []
    for node, parent in zip(rows.node_ids.tolist(), rows.parent_ids.tolist()):
        out.append((cells.row_key(node), "0", cells.PARENTS, ts, ("id", parent)))
    for i, node in enumerate(rows.children_of.tolist()):
        kids = rows.children.values[rows.children.offsets[i]:rows.children.offsets[i + 1]]
        out.append((cells.row_key(node), "0", cells.CHILDREN, ts, ("ids", tuple(kids.tolist()))))
    groups = {}
    for node, layer, own, other in zip(rows.cross_node.tolist(), rows.cross_layer.tolist(), rows.cross_own.tolist(),
                                       rows.cross_other.tolist()):
        groups.setdefault((node, layer), []).extend([own, other])
    for (node, layer), pairs in groups.items():
        out.append((cells.row_key(node), "3", cells.cross_edges_qualifier(layer), ts, ("ids", tuple(pairs))))
    lifted = {}
    for node, layer, partner in zip(rows.lifted_node.tolist(), rows.lifted_layer.tolist(),
                                    rows.lifted_partner.tolist()):
        lifted.setdefault((node, layer), []).extend([node, partner])
    for (node, layer), pairs in lifted.items():
        out.append((cells.row_key(node), "4", b"cross_edges_%d" % layer, ts, ("ids", tuple(pairs))))
    for chunk, bucket, value in zip(rows.counter_chunks.tolist(), rows.buckets().tolist(), rows.counter_values.tolist()):
        key = b"i%020d" % chunk if bucket < 0 else b"i%020d_%d" % (chunk, bucket)  # docs/table-format.md
        out.append((key, "1", cells.COUNTER, ts, ("counter", value)))
    return sorted(out)


def decoded(family, qualifier, value):
    if qualifier == cells.PARENTS:
        return ("id", cells.decode_id(value))
    if qualifier == cells.COUNTER:
        return ("counter", cells.decode_counter(value))
    return ("ids", tuple(cells.decode_ids(value).tolist()))


@pytest.mark.parametrize("seed", range(4))
def test_encode_rows_equals_protobuf(seed):
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    compressor = zstandard.ZstdCompressor(level=cells.ZSTD_LEVEL)
    for case in range(12):
        rows = random_rows(rng, np_rng)
        ts = timestamp(rng)
        name = table_name(rng)
        entries = wire.encode_rows(rows, ts, compressor)
        ours = wire.request_prefix(name) + entries.payload
        parsed = REQUEST.FromString(ours)
        assert parsed.table_name == name
        # the official serialization of the same fields, byte for byte
        theirs = REQUEST(table_name=name, entries=[
            {"row_key": e.row_key, "mutations": [{"set_cell": {
                "family_name": m.set_cell.family_name, "column_qualifier": m.set_cell.column_qualifier,
                "timestamp_micros": m.set_cell.timestamp_micros, "value": m.set_cell.value}} for m in e.mutations]}
            for e in parsed.entries]).SerializeToString()
        assert ours == theirs
        # and those fields are the rows' cells
        got = sorted((e.row_key, m.set_cell.family_name, m.set_cell.column_qualifier, m.set_cell.timestamp_micros,
                      decoded(m.set_cell.family_name, m.set_cell.column_qualifier, m.set_cell.value))
                     for e in parsed.entries for m in e.mutations)
        assert got == expected_cells(rows, ts)
        for i in range(len(entries)):
            one = REQUEST.FromString(entries.entries.item(i))
            assert len(one.entries) == 1 and one.entries[0].row_key == bytes(entries.keys[i])
