"""The L2 cache's table: created, checked and continued by the launcher, next to the graph's.

`--if_exists` covers it as it covers the graph table: `fail` refuses an existing cache table
before anything is created, `recreate` deletes it, `continue` keeps it when its meta names
this graph at this ingest's time (its rows are then rewritten with identical cells).
"""
from __future__ import annotations

import logging
import pickle

from ..store.bigtable import TableError
from .features import FAMILIES, META_ROW, cache_meta, meta_cells

log = logging.getLogger(__name__)
META = b"meta"


def check_absent(target, table_id: str, if_exists: str) -> None:
    """With `--if_exists=fail`: the cache table must not exist (checked before anything is created)."""
    from ..store import bigtable
    if if_exists == "fail" and bigtable.table_exists(bigtable.open_table(target, table_id, admin=True)):
        raise TableError(f"--l2cache_table: table {table_id!r} already exists; pass --if_exists=continue to "
                         "resume an interrupted ingest into it, or --if_exists=recreate to delete it and start over")


def prepare(target, table_id: str, graph_id: str, cv_path: str, ingest_ms: int, if_exists: str) -> None:
    """Create the cache table (or keep one this ingest began) and write its meta and version rows."""
    from ..store import bigtable
    from ..store.table_state import StateRows
    table = bigtable.open_table(target, table_id, admin=True)
    rows = StateRows(target, table_id)
    try:
        if bigtable.table_exists(table):
            if if_exists == "fail":  # created since the launcher's first look
                check_absent(target, table_id, if_exists)
            reason = None if if_exists == "recreate" else _not_ours(rows, graph_id, cv_path, ingest_ms)
            if reason is None and if_exists == "continue":
                log.info("continuing into the existing L2 cache table %s", table_id)
                return
            if if_exists == "continue" and reason.startswith("stale"):
                log.warning("L2 cache table %s: %s; deleting it and starting it afresh", table_id, reason)
            elif if_exists == "continue":
                raise TableError(f"--l2cache_table: table {table_id!r} {reason}; refusing to continue into it "
                                 "(--if_exists=recreate deletes it)")
            else:
                log.warning("deleting existing L2 cache table %s (--if_exists=recreate)", table_id)
            table.delete()
        bigtable.create_table(table, families={family: None for family in FAMILIES})
        for row_key, columns in meta_cells(graph_id, cv_path, ingest_ms):
            rows.write(dict(columns), ingest_ms, row_key=row_key)
    finally:
        rows.close()


def _not_ours(rows, graph_id: str, cv_path: str, ingest_ms: int) -> str | None:
    """Why an existing cache table is not this ingest's (None: it is). A reason starting with
    "stale" is a cache of this graph from an ingest at another time (safe to replace)."""
    found = rows.read(META_ROW).get(META)
    if found is None:
        return "stale: it has no meta row (a run stopped right after creating it)"
    try:
        theirs = pickle.loads(found[0])
        theirs_graph, theirs_path, theirs_time = theirs["graph_id"], theirs["cv_path"], theirs["timestamp"]
    except Exception as exc:  # any unpickling failure means "not a cache of this tool"
        return f"holds a meta row this tool cannot read ({type(exc).__name__})"
    ours = cache_meta(graph_id, cv_path, ingest_ms)
    if theirs_graph != graph_id:
        return f"is the L2 cache of graph {theirs_graph!r}, not {graph_id!r}"
    if theirs_path != ours["cv_path"]:
        return f"names cv_path {theirs_path!r}, this run {ours['cv_path']!r} (--l2cache_cv_path)"
    if theirs_time != ours["timestamp"]:
        return f"stale: it was written for an ingest at {theirs_time}, this table's is {ours['timestamp']}"
    return None
