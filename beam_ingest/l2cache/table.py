"""The L2 cache's table: checked before anything is created, then created afresh by every run
that writes it, so it never holds a row this run did not write.

A table named by `--l2cache_table` is written into, deleted or kept only when it is an L2
cache this tool wrote for this graph (its own row, `beam_ingest`, names the graph and the run
identity); any other existing table is refused, whatever `--if_exists` says:

- absent: created;
- `--if_exists=fail`: refused;
- `--if_exists=recreate`: this graph's cache is deleted and created again;
- `--if_exists=continue`: this graph's cache *of this run* (the graph table's run identity) is
  kept when its completion mark is this run's (the whole ingest is then done), else deleted
  and created again: the run writes every layer-2 chunk's rows anyway.

An empty table with the cache's families is a cache whose launcher stopped right after
creating it. Creation writes the run record first, then `meta` and `version`.
"""
from __future__ import annotations

import json
import logging

from ..store import kinds
from ..errors import TableError
from .features import FAMILIES, meta_cells

log = logging.getLogger(__name__)

CREATE, REBUILD, COMPLETE = "create", "rebuild", "complete"


def decide(found, table_id: str, graph_id: str, if_exists: str, identity: str | None) -> str:
    """What a run does with the cache table it names: CREATE, REBUILD (delete, then create) or
    COMPLETE (this run's cache, proven complete). `found`: its `kinds.TableKind` (None: absent);
    `identity`: the run identity of the graph table this run continues (None: a new one).
    Raises TableError for every table the run must not touch."""
    if found is None:
        return CREATE
    name = f"--l2cache_table: table {table_id!r}"
    if found.kind == kinds.GRAPH:
        raise TableError(f"{name} is {found.detail}, not an L2 cache; refusing to write into it (choose another "
                         "table id for the cache)")
    if found.kind == kinds.FOREIGN or (found.kind == kinds.EMPTY and found.families != FAMILIES):
        raise TableError(f"{name} is {found.detail}: this tool writes, replaces or deletes only L2 caches it wrote "
                         "for this graph; choose another table id for the cache (or delete that table yourself)")
    if if_exists == "fail":
        raise TableError(f"{name} already exists; pass --if_exists=continue to resume an interrupted ingest into "
                         "it, or --if_exists=recreate to delete it and start over")
    if found.kind == kinds.EMPTY:
        return REBUILD
    if found.graph_id != graph_id:
        raise TableError(f"{name} is {found.detail}, not of graph {graph_id!r}; refusing to touch another graph's "
                         "cache (--if_exists applies only to this graph's own)")
    if if_exists == "recreate":
        return REBUILD
    if identity is None or found.identity != identity:
        ours = "this run starts a new graph table" if identity is None else f"the graph table's run is {identity}"
        raise TableError(f"{name} holds the L2 cache of another run of graph {graph_id!r} (its run is "
                         f"{found.identity}, {ours}); refusing to continue into it (--if_exists=recreate replaces it)")
    if (found.complete or {}).get("identity") == identity:
        return COMPLETE
    return REBUILD


def graph_identity(target, graph_id: str, if_exists: str) -> str | None:
    """The run identity a `--if_exists=continue` run of `graph_id` would continue (None: the
    run starts a new graph table). Read only: nothing is created."""
    if if_exists != "continue":
        return None
    found = kinds.classify(target, graph_id)
    return found.identity if found is not None and found.kind == kinds.GRAPH else None


def check(target, table_id: str, graph_id: str, if_exists: str) -> str:
    """Before anything is created: what the run will do with the cache table (`decide`)."""
    return decide(kinds.classify(target, table_id), table_id, graph_id, if_exists,
                  graph_identity(target, graph_id, if_exists))


def prepare(target, table_id: str, graph_id: str, cv_path: str, ingest_ms: int, if_exists: str,
            identity: str) -> None:
    """Create the cache table for the run `identity` (deleting this graph's earlier cache; see
    `decide`, checked again: the table may have changed since the launcher's first look), with
    its run record, meta and version rows."""
    from ..store import admin, cells, targets
    from ..store.table_state import RUN, StateRows
    found = kinds.classify(target, table_id)
    action = decide(found, table_id, graph_id, if_exists, identity)
    table = targets.open_table(target, table_id, admin=True)
    if action != CREATE:
        log.warning("L2 cache table %s (%s): deleting it; this run writes it again", table_id, found.detail)
        admin.admin_call(table, f"deleting table {table_id!r}", lambda **kw: table.delete())
    admin.create_table(table, families={family: None for family in FAMILIES})
    rows = StateRows(target, table_id)
    try:
        rows.write({RUN: kinds.cache_record(graph_id, identity)}, ingest_ms, row_key=cells.BOOKKEEPING_ROW)
        for row_key, columns in meta_cells(graph_id, cv_path, ingest_ms):
            rows.write(dict(columns), ingest_ms, row_key=row_key)
    finally:
        rows.close()


def completion_mark(target, table_id: str) -> dict | None:
    """The cache's completion mark (None: absent, or no such table)."""
    found = kinds.classify(target, table_id)
    return None if found is None else found.complete


def mark_cells(identity: str, totals: dict) -> tuple:
    """The cache's completion mark, as the row cells the completion proof writes."""
    from ..store import cells
    from ..store.table_state import COMPLETE
    mark = {"identity": identity, **totals}
    return (cells.BOOKKEEPING_ROW, [(cells.FAMILY_HIERARCHY, COMPLETE, json.dumps(mark, sort_keys=True).encode())])
