"""The `meta` cell: a pickle that PyChunkedGraph's `pickle.loads` turns into its own classes.

The pickle names `pychunkedgraph.graph.meta.{ChunkedGraphMeta, GraphConfig, DataSource}`
without importing PyChunkedGraph: local stand-ins are written under those names.
"""
from __future__ import annotations

import collections
import datetime
import io
import pickle

PCG_META_MODULE = "pychunkedgraph.graph.meta"

GraphConfig = collections.namedtuple(
    "GraphConfig",
    ("ID", "ID_PREFIX", "CHUNK_SIZE", "FANOUT", "LAYER_ID_BITS", "SPATIAL_BITS", "OVERWRITE",
     "ROOT_LOCK_EXPIRY", "ROOT_COUNTERS"),
    defaults=("", None, 2, 8, 10, False, datetime.timedelta(minutes=3), 8),
)
DataSource = collections.namedtuple(
    "DataSource", ("EDGES", "COMPONENTS", "WATERSHED", "DATA_VERSION", "CV_MIP"),
    defaults=(None, None, None, None, 0),
)


class ChunkedGraphMeta:
    """Pickles like PyChunkedGraph's: new-args (graph_config, data_source) + a state dict."""

    def __init__(self, graph_config: GraphConfig, data_source: DataSource, custom_data=None):
        self.graph_config = graph_config
        self.data_source = data_source
        self.custom_data = custom_data or {}

    def __getnewargs__(self):
        return (self.graph_config, self.data_source)

    def __getstate__(self):
        return {"graph_config": self.graph_config, "data_source": self.data_source,
                "custom_data": self.custom_data}

    def __setstate__(self, state):
        self.__init__(state["graph_config"], state["data_source"], state.get("custom_data"))


_FOREIGN_NAMES = {GraphConfig: "GraphConfig", DataSource: "DataSource",
                  ChunkedGraphMeta: "ChunkedGraphMeta"}


class _MetaPickler(pickle._Pickler):
    """Writes the stand-in classes as globals of PyChunkedGraph's module.

    It owns its dispatch table: other libraries (dill) patch the shared one of
    `pickle._Pickler`, which would bypass an overridden `save_global`.
    """
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_class(self, obj):
        foreign = _FOREIGN_NAMES.get(obj)
        if foreign is None:
            return pickle._Pickler.save_global(self, obj)
        self.write(pickle.GLOBAL + f"{PCG_META_MODULE}\n{foreign}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = _save_class


def meta_for(graph_id: str, settings, custom_data: dict | None = None) -> ChunkedGraphMeta:
    gc, ds = settings.graph_config, settings.data_source
    graph_config = GraphConfig(
        ID=graph_id, ID_PREFIX=gc.ID_PREFIX, CHUNK_SIZE=list(gc.CHUNK_SIZE), FANOUT=gc.FANOUT,
        LAYER_ID_BITS=gc.LAYER_ID_BITS, SPATIAL_BITS=gc.SPATIAL_BITS)
    data_source = DataSource(EDGES=ds.EDGES, COMPONENTS=ds.COMPONENTS, WATERSHED=ds.WATERSHED,
                             DATA_VERSION=ds.DATA_VERSION, CV_MIP=ds.CV_MIP)
    return ChunkedGraphMeta(graph_config, data_source, custom_data)


def dumps_meta(meta: ChunkedGraphMeta) -> bytes:
    buf = io.BytesIO()
    _MetaPickler(buf, protocol=3).dump(meta)
    return buf.getvalue()


def loads_meta(data: bytes) -> ChunkedGraphMeta:
    """Read a meta cell back into the local stand-ins (for verification)."""

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == PCG_META_MODULE:
                return {"GraphConfig": GraphConfig, "DataSource": DataSource,
                        "ChunkedGraphMeta": ChunkedGraphMeta}[name]
            return super().find_class(module, name)

    return _Unpickler(io.BytesIO(data)).load()
