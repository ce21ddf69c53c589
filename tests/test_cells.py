import datetime
import os
import pickle

import numpy as np

from beam_ingest.launch.config import parse_config
from beam_ingest.store import cells
from beam_ingest.store.meta import dumps_meta, meta_for
import pcg_standins


def test_row_keys():
    assert cells.row_key(5) == b"00000000000000000005"
    assert cells.counter_key(7) == b"i00000000000000000007"
    assert cells.root_counter_key(288230376151711744, 12) == b"i00288230376151711744_12"


def test_encodings_round_trip():
    assert cells.encode_id(2**63 + 5) == (2**63 + 5).to_bytes(8, "little")
    assert cells.decode_id(cells.encode_id(12345678901234567)) == 12345678901234567
    assert cells.encode_counter(258) == b"\x00\x00\x00\x00\x00\x00\x01\x02"
    assert cells.decode_counter(cells.encode_counter(-3)) == -3
    ids = np.array([3, 1, 2**64 - 1], np.uint64)
    assert cells.decode_ids(cells.encode_ids(ids)).tolist() == ids.tolist()
    edges = np.array([[1, 2], [3, 4]], np.uint64)
    assert cells.decode_edges(cells.encode_ids(edges)).tolist() == edges.tolist()
    assert cells.cross_edges_qualifier(3) == b"atomic_cross_edges_3"


def test_meta_unpickles_into_pychunkedgraph_classes():
    settings = parse_config({
        "data_source": {"EDGES": "gs://e", "COMPONENTS": "gs://c", "WATERSHED": "gs://w", "DATA_VERSION": 3,
                        "CV_MIP": 1},
        "graph_config": {"CHUNK_SIZE": [256, 256, 512], "ID_PREFIX": "pf"}})
    data = dumps_meta(meta_for("my_graph", settings))
    with pcg_standins.registered() as mod:
        meta = pickle.loads(data)
    assert type(meta) is mod.ChunkedGraphMeta
    gc, ds = meta._graph_config, meta._data_source
    assert type(gc) is mod.GraphConfig and type(ds) is mod.DataSource
    assert gc.ID == "my_graph" and gc.ID_PREFIX == "pf" and list(gc.CHUNK_SIZE) == [256, 256, 512]
    assert (gc.FANOUT, gc.LAYER_ID_BITS, gc.SPATIAL_BITS, gc.OVERWRITE) == (2, 8, 10, False)
    assert gc.ROOT_LOCK_EXPIRY == datetime.timedelta(minutes=3) and gc.ROOT_COUNTERS == 8
    assert ds == mod.DataSource("gs://e", "gs://c", "gs://w", 3, 1)
    assert meta._custom_data == {}
    assert b"beam_ingest" not in data  # nothing of ours is needed to read it


def test_wire_entries_equal_protobuf_serialization():
    """The hand-laid entries are byte-for-byte what the protobuf library writes."""
    from google.cloud.bigtable_v2.types import MutateRowsRequest

    from beam_ingest.hierarchy.types import Groups, Rows
    from beam_ingest.store import wire
    ts = 1_700_000_000_123_000
    rows = Rows(node_ids=np.array([5, 2**63 + 9], np.uint64), parent_ids=np.array([77, 2**64 - 1], np.uint64),
                children_of=np.array([100, 101], np.uint64),
                children=Groups(np.concatenate([[5, 6], np.arange(1000, 1100)]).astype(np.uint64),
                                np.array([0, 2, 102])),
                cross_node=np.array([100, 100], np.uint64), cross_own=np.array([5, 6], np.uint64),
                cross_other=np.array([8, 9], np.uint64), cross_layer=np.array([2, 3]),
                counter_chunks=np.array([1], np.uint64), counter_values=np.array([3]))
    encoded = wire.encode_rows(rows, ts)
    parsed = MutateRowsRequest.pb().FromString(encoded.payload)
    got = {}
    for e in parsed.entries:
        for m in e.mutations:
            c = m.set_cell
            assert c.timestamp_micros == ts
            got.setdefault(e.row_key, {})[(c.family_name, c.column_qualifier)] = c.value
    assert encoded.keys.tolist() == [e.row_key for e in parsed.entries]
    assert got[b"%020d" % 5] == {("0", b"parents"): cells.encode_id(77)}
    assert got[b"%020d" % (2**63 + 9)] == {("0", b"parents"): cells.encode_id(2**64 - 1)}
    node = got[b"%020d" % 100]
    assert cells.decode_ids(node[("0", b"children")]).tolist() == [5, 6]
    assert cells.decode_edges(node[("3", b"atomic_cross_edges_2")]).tolist() == [[5, 8]]
    assert cells.decode_edges(node[("3", b"atomic_cross_edges_3")]).tolist() == [[6, 9]]
    assert cells.decode_ids(got[b"%020d" % 101][("0", b"children")]).tolist() == list(range(1000, 1100))
    assert got[b"i00000000000000000001"] == {("1", b"counter"): cells.encode_counter(3)}
    # PyChunkedGraph decompresses with a streaming decompressor: raw-block frames must work there too
    import zstandard
    small = node[("0", b"children")]
    assert np.frombuffer(zstandard.ZstdDecompressor().decompressobj().decompress(small), "<u8").tolist() == [5, 6]
    # and the fixed-size records equal the library's own serialization of the same entry
    pb = MutateRowsRequest.pb()()
    entry = pb.entries.add(row_key=b"%020d" % 5)
    entry.mutations.add().set_cell.MergeFrom(type(entry.mutations[0].set_cell)(
        family_name="0", column_qualifier=b"parents", timestamp_micros=ts, value=cells.encode_id(77)))
    first = encoded.payload[encoded.offsets[0]:encoded.offsets[1]]
    assert first == pb.SerializeToString()


def test_decimal_keys_vectorized():
    from beam_ingest.store.ragged import decimal_keys, varints
    ids = np.array([0, 7, 10**19, 2**64 - 1, 144185694460313600], np.uint64)
    assert [bytes(r) for r in decimal_keys(ids)] == [b"%020d" % int(i) for i in ids]
    from beam_ingest.store.wire import varint
    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2**35, 2**63], np.uint64)
    encoded = varints(values)
    assert [encoded.item(i) for i in range(len(values))] == [varint(int(v)) for v in values]


def test_hierarchy_knows_nothing_of_the_table_format():
    """The pure core hands counters over as (chunk ids, values); the store makes their row keys."""
    import subprocess
    import sys
    code = ("import sys, beam_ingest.hierarchy.layer2, beam_ingest.hierarchy.parents, beam_ingest.hierarchy.roots; "
            "print(' '.join(m for m in sys.modules if m.startswith(('beam_ingest.store', 'apache_beam', "
            "'google.cloud.bigtable'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    assert out.strip() == ""
