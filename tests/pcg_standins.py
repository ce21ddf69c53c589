"""Classes shaped like `pychunkedgraph.graph.meta`'s, registered under that module's name.

PyChunkedGraph itself is not installed in the tests (its 2.x/3.x lines are not on the
package index); these stand-ins let `pickle.loads` of the `meta` cell, inside kvdbclient or
plain, resolve the names the cell carries to real classes, so a test sees a wrong name or
field as a failure rather than the lenient placeholder kvdbclient falls back to.
"""
import contextlib
import sys
import types
from collections import namedtuple

GraphConfig = namedtuple("GraphConfig", ("ID", "ID_PREFIX", "CHUNK_SIZE", "FANOUT", "LAYER_ID_BITS",
                                         "SPATIAL_BITS", "OVERWRITE", "ROOT_LOCK_EXPIRY", "ROOT_COUNTERS"))
DataSource = namedtuple("DataSource", ("EDGES", "COMPONENTS", "WATERSHED", "DATA_VERSION", "CV_MIP"))


class ChunkedGraphMeta:
    def __init__(self, graph_config, data_source, custom_data=None):
        self._graph_config = graph_config
        self._data_source = data_source
        self._custom_data = custom_data or {}

    def __getnewargs__(self):
        return (self._graph_config, self._data_source)

    def __setstate__(self, state):
        self.__init__(state["graph_config"], state["data_source"], state.get("custom_data", {}))

    @property
    def graph_config(self):
        return self._graph_config

    @property
    def data_source(self):
        return self._data_source

    @property
    def custom_data(self):
        return self._custom_data


def module():
    mod = types.ModuleType("pychunkedgraph.graph.meta")
    mod.GraphConfig, mod.DataSource, mod.ChunkedGraphMeta = GraphConfig, DataSource, ChunkedGraphMeta
    return mod


@contextlib.contextmanager
def registered():
    """`pychunkedgraph.graph.meta` importable as the stand-ins, for the duration."""
    names = ("pychunkedgraph", "pychunkedgraph.graph", "pychunkedgraph.graph.meta")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules["pychunkedgraph"] = types.ModuleType("pychunkedgraph")
    sys.modules["pychunkedgraph.graph"] = types.ModuleType("pychunkedgraph.graph")
    sys.modules["pychunkedgraph.graph.meta"] = module()
    try:
        yield sys.modules["pychunkedgraph.graph.meta"]
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
