"""A table read the way PyChunkedGraph reads it: through kvdbclient, its Bigtable client.

kvdbclient is PyChunkedGraph 3.x's client library (PCG 3.1.7 pins 0.6.0); its attribute
registry holds PyChunkedGraph 2.x's columns too (families 0-3). Every row PyChunkedGraph may
read is read here without a column filter, so every column goes through the registry
(`attributes.from_key`), which raises on a column PyChunkedGraph does not know: exactly what
made the server fail to open tables whose `meta` row held the ingest's own cells.
"""
from __future__ import annotations

import re

import numpy as np
from kvdbclient import BigTableClient, BigTableConfig, attributes
from kvdbclient.serializers import deserialize_uint64

import pcg_standins
from beam_ingest.store import cells

NODE_KEY = re.compile(rb"\d{20}")
COUNTER_KEY = re.compile(rb"i\d{20}(_\d+)?")
PCG_NAMED_ROWS = (b"meta", b"version")


class PcgRead:
    """Every row of a table as kvdbclient decodes it.

    `meta` (the unpickled graph meta, PyChunkedGraph's classes), `version`, and per row
    `{attribute: [Cell(value, timestamp)]}` for node rows (`nodes`, keyed by node id) and
    counter rows (`counters`, keyed by row key). `other_keys`: row keys PyChunkedGraph never
    reads (only the ingest's own row may be there)."""

    def __init__(self, graph_id: str, project: str, instance: str):
        client = BigTableClient(graph_id, config=BigTableConfig(PROJECT=project, INSTANCE=instance, ADMIN=False,
                                                                READ_ONLY=True))
        try:
            with pcg_standins.registered():
                self.meta = client.read_table_meta()  # the whole meta row, through the registry
            self.version = client.read_table_version()  # the whole version row
            keys = sorted(client.read_all_rows().rows)  # raw: no registry, just the keys
            node_keys = [k for k in keys if NODE_KEY.fullmatch(k)]
            counter_keys = [k for k in keys if COUNTER_KEY.fullmatch(k)]
            self.other_keys = [k for k in keys if k not in PCG_NAMED_ROWS and not NODE_KEY.fullmatch(k)
                               and not COUNTER_KEY.fullmatch(k)]
            ids = np.array([int(deserialize_uint64(k)) for k in node_keys], dtype=np.uint64)
            self.nodes = {int(k): v for k, v in client.read_nodes(node_ids=ids).items()} if len(ids) else {}
            self.counters = client._read_byte_rows(row_keys=counter_keys) if counter_keys else {}
            self.whole_rows = {k: client._read_byte_row(k) for k in PCG_NAMED_ROWS}
            self._client = client
        except BaseException:
            client.close()
            raise

    def max_node_id(self, chunk_id: int, root_chunk: bool = False) -> int:
        """The server's own `get_max_node_id` (for the root chunk: over its 256 counter rows)."""
        return int(self._client.get_max_node_id(np.uint64(chunk_id), root_chunk=root_chunk))

    def close(self):
        self._client.close()


def decoded(read: PcgRead, expect_ms: int | None):
    """The table through kvdbclient's decoders, in the shape `helpers.TableStructure` checks:
    parent, children, cross (family 3), lifted (family 4), counters, every cell checked to be
    single-versioned and (with `expect_ms`) at the ingest timestamp."""
    out = {"parent": {}, "children": {}, "cross": {}, "lifted": {}, "counters": {}}

    def cell_of(where, attr, found):
        assert len(found) == 1, f"{where} {attr.family_id}:{attr.key} has {len(found)} versions"
        if expect_ms is not None:
            assert int(found[0].timestamp.timestamp() * 1000) == expect_ms, (where, attr.key)
        return found[0].value

    for node, columns in read.nodes.items():
        for attr, found in columns.items():
            value = cell_of(node, attr, found)
            if attr == attributes.Hierarchy.Parent:
                out["parent"][node] = int(value)
            elif attr == attributes.Hierarchy.Child:
                out["children"][node] = np.asarray(value, np.uint64).tolist()
            elif attr.family_id == cells.FAMILY_CROSS_EDGES and attr.key.startswith(b"atomic_cross_edges_"):
                out["cross"].setdefault(node, {})[attr.index] = np.asarray(value, np.uint64).reshape(-1, 2)
            elif attr.family_id == cells.FAMILY_LIFTED and attr.key.startswith(b"cross_edges_"):
                out["lifted"].setdefault(node, {})[attr.index] = np.asarray(value, np.uint64).reshape(-1, 2)
            else:
                raise AssertionError(f"node {node}: unexpected column {attr.family_id}:{attr.key!r}")
    for key, columns in read.counters.items():
        assert list(columns) == [attributes.Concurrency.Counter], (key, list(columns))
        out["counters"][key] = int(cell_of(key, attributes.Concurrency.Counter,
                                           columns[attributes.Concurrency.Counter]))
    for key, columns in read.whole_rows.items():
        for attr, found in columns.items():
            cell_of(key, attr, found)
    return out
