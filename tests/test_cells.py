import pickle
import sys
import types

import numpy as np

from beam_ingest.config import parse_config
from beam_ingest.store import cells
from beam_ingest.store.meta import dumps_meta, meta_for


def test_row_keys():
    ids = np.array([0, 5, 2**64 - 1, 144185694460313600], np.uint64)
    assert cells.row_keys(ids) == [b"%020d" % int(i) for i in ids]
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


def _register_pychunkedgraph_standins(monkeypatch):
    """Stand-ins shaped like pychunkedgraph.graph.meta's classes."""
    from collections import namedtuple
    import datetime
    mod = types.ModuleType("pychunkedgraph.graph.meta")
    mod.GraphConfig = namedtuple("GraphConfig", ("ID", "ID_PREFIX", "CHUNK_SIZE", "FANOUT", "LAYER_ID_BITS",
                                                 "SPATIAL_BITS", "OVERWRITE", "ROOT_LOCK_EXPIRY", "ROOT_COUNTERS"))
    mod.DataSource = namedtuple("DataSource", ("EDGES", "COMPONENTS", "WATERSHED", "DATA_VERSION", "CV_MIP"))

    class ChunkedGraphMeta:
        def __init__(self, graph_config, data_source, custom_data={}):
            self._graph_config = graph_config
            self._data_source = data_source
            self._custom_data = custom_data

        def __getnewargs__(self):
            return (self._graph_config, self._data_source)

        def __setstate__(self, state):
            self.__init__(state["graph_config"], state["data_source"])
            self._custom_data = state.get("custom_data", {})

    mod.ChunkedGraphMeta = ChunkedGraphMeta
    for name in ("pychunkedgraph", "pychunkedgraph.graph"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "pychunkedgraph.graph.meta", mod)
    return mod, datetime


def test_meta_unpickles_into_pychunkedgraph_classes(monkeypatch):
    settings = parse_config({
        "data_source": {"EDGES": "gs://e", "COMPONENTS": "gs://c", "WATERSHED": "gs://w", "DATA_VERSION": 3,
                        "CV_MIP": 1},
        "graph_config": {"CHUNK_SIZE": [256, 256, 512], "ID_PREFIX": "pf"}})
    data = dumps_meta(meta_for("my_graph", settings))
    mod, datetime = _register_pychunkedgraph_standins(monkeypatch)
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
