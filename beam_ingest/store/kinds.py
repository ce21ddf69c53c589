"""What an existing table is, read from its small rows: a graph table, an L2 cache this tool
wrote, an empty table (created, then the launcher stopped), or somebody else's.

The launcher and the operator commands decide from this whether they may write into, delete
or read a table; nothing here writes.
"""
from __future__ import annotations

import dataclasses
import json

from . import cells

GRAPH = "graph"        # a PyChunkedGraph table (this tool's, an earlier version's, or PCG's own)
L2CACHE = "l2cache"    # an L2 cache written by this tool: its own row names the graph and the run
EMPTY = "empty"        # no row at all
FOREIGN = "foreign"    # anything else (a user's table, an L2 cache of another tool, ...)

CACHE_OF = "l2cache_of"  # key of a cache's run record naming its graph


@dataclasses.dataclass(frozen=True)
class TableKind:
    kind: str
    detail: str                 # what it is, for messages ("the L2 cache of graph 'g'")
    record: dict | None = None  # the run record (graph: RunRecord JSON; cache: {l2cache_of, identity})
    complete: dict | None = None  # the completion mark, when there is one
    families: tuple = ()

    @property
    def identity(self) -> str | None:
        return (self.record or {}).get("identity")

    @property
    def graph_id(self) -> str | None:
        record = self.record or {}
        return record.get(CACHE_OF) if self.kind == L2CACHE else record.get("graph_id")


def _json(found):
    if not found:
        return None
    try:
        value = json.loads(found[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _meta(found):
    """The meta cell unpickled (with the graph meta's stand-ins), or None."""
    if not found:
        return None
    from .meta import loads_meta
    try:
        return loads_meta(found[0])
    except Exception:  # any unpickling failure: a meta this tool cannot read
        return "unreadable"


def classify(target, table_id: str) -> TableKind | None:
    """The kind of table `table_id` (None when it does not exist)."""
    from . import admin, table_state, targets
    table = targets.open_table(target, table_id, admin=True)
    if not admin.table_exists(table):
        return None
    rows = table_state.StateRows(target, table_id)
    try:
        own = rows.read()
        meta_row = rows.read(cells.META_ROW)
        legacy = {q: v for q, v in meta_row.items() if q in table_state.LEGACY_QUALIFIERS}
        record = _json(own.get(table_state.RUN) or legacy.get(table_state.RUN))
        complete = _json(own.get(table_state.COMPLETE) or legacy.get(table_state.COMPLETE))
        meta = _meta(meta_row.get(cells.META))
        if record is not None and CACHE_OF in record:
            return TableKind(L2CACHE, f"the L2 cache of graph {record[CACHE_OF]!r}", record, complete)
        if hasattr(meta, "graph_config"):
            return TableKind(GRAPH, f"the table of graph {meta.graph_config.ID or table_id!r}", record, complete)
        if record is not None or own:  # a graph table whose launcher stopped before its meta row
            return TableKind(GRAPH, f"the table of graph {(record or {}).get('graph_id', table_id)!r}", record,
                             complete)
        if isinstance(meta, dict) and "graph_id" in meta:
            return TableKind(FOREIGN, f"an L2 cache of graph {meta['graph_id']!r} that this tool did not write "
                                      "(no record of the run that wrote it)")
        if meta is not None:
            return TableKind(FOREIGN, "a table whose meta row is not a graph's or an L2 cache's")
        if rows.has_any_row():
            return TableKind(FOREIGN, "a table with rows but no meta row or run record (not written by this tool)")
        families = tuple(sorted(admin_families(table)))
        return TableKind(EMPTY, "an empty table", families=families)
    finally:
        rows.close()


def admin_families(table) -> list[str]:
    from .admin import admin_call
    return list(admin_call(table, f"reading the column families of {table.table_id!r}",
                           lambda **kw: table.list_column_families()))


def cache_record(graph_id: str, identity: str) -> bytes:
    """The run record of an L2 cache: which graph it belongs to and which run wrote it."""
    return json.dumps({CACHE_OF: graph_id, "identity": identity}, sort_keys=True).encode()

