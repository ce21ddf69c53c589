"""Reading a graph's table for the operator commands: what it is, one SV's chain, its completion."""
from __future__ import annotations

import os
import typing

import numpy as np

from ..errors import CommandError


def open_graph_table(args):
    from ..store import admin, targets
    target = targets.resolve_target(args.project or os.environ.get("BIGTABLE_PROJECT"),
                                     args.instance or os.environ.get("BIGTABLE_INSTANCE"))
    table = targets.open_table(target, args.graph_id, admin=True)
    if not admin.table_exists(table):
        raise CommandError(f"table {args.graph_id!r} does not exist in {target.describe()}")
    check_graph_table(target, args.graph_id)
    return table


def check_graph_table(target, table_id: str, option: str = "--graph_id"):
    """An existing table that is not a graph's (an L2 cache, a user's table) -> CommandError."""
    from ..store import kinds
    found = kinds.classify(target, table_id)
    if found is not None and found.kind not in (kinds.GRAPH, kinds.EMPTY):
        hint = " (verify --l2cache_table checks an L2 cache against its graph)" if found.kind == kinds.L2CACHE else ""
        raise CommandError(f"{option}: table {table_id!r} is {found.detail}, not a graph table{hint}")
    return found


def _layout_of(table):
    from ..launch.plan import layout_for
    from ..store import cells
    from ..store.admin import read_cell
    from ..store.meta import loads_meta
    found = read_cell(table, cells.META_ROW, cells.FAMILY_HIERARCHY, cells.META)
    if found is None:
        raise CommandError(f"table {table.table_id!r} has no meta row")
    meta = loads_meta(found[0])
    return layout_for(meta.graph_config, meta.data_source)[0]


def describe_cache_row(table, node_id: int) -> list[str]:
    """One line per cell of a layer-2 node's L2 cache row, decoded with its dtype."""
    from ..l2cache.features import decode_cells
    row = table.read_row(b"%020d" % node_id)
    if row is None:
        return ["  (no row: the node has no voxel)"]
    found = decode_cells({q: columns[q][0].value for columns in row.cells.values() for q in columns})
    return [f"  {q.decode():<22} "
            + (str(v) if np.isscalar(v) else " ".join(np.array2string(v, precision=4, separator=", ").split()))
            for q, v in sorted(found.items())]


def describe_chain(table, sv: int) -> list[str]:
    """One line per node from `sv` up to its root: layer, id, children count."""
    from ..store.reader import read_node
    layout = _layout_of(table)
    lines = []
    node_id = sv
    seen = set()
    while node_id is not None and node_id not in seen:
        seen.add(node_id)
        layer = int(layout.layer_of(np.uint64(node_id)))
        node = read_node(table, node_id)
        if node is None and not lines:
            raise CommandError(f"--sv: node {node_id} has no row in table {table.table_id!r} (not a supervoxel "
                               "of this graph)")
        if node is None:
            raise CommandError(f"node {node_id} (layer {layer}, the parent named on the line above) has no row in "
                               f"table {table.table_id!r}: the table is incomplete", code=1)
        kids = "" if node["children"] is None else f"  children: {len(node['children'])}"
        edges = "".join(f"  atomic_cross_edges_{k}: {len(v)}" for k, v in sorted(node["cross_edges"].items()))
        edges += "".join(f"  4:cross_edges_{k}: {len(v)}" for k, v in sorted(node["lifted"].items()))
        coord = tuple(int(v) for v in layout.coords_of(np.uint64(node_id), max(layer, 1))[0])
        lines.append(f"layer {layer:>2}  {node_id}  chunk {coord}{kids}{edges}")
        node_id = node["parent"]
    return lines


def layer_summary(table) -> list[str]:
    """Nodes per layer (a full scan of the hierarchy family; for small and test graphs)."""
    from google.cloud.bigtable import row_filters
    layout = _layout_of(table)
    counts = {}
    for row in table.read_rows(filter_=row_filters.FamilyNameRegexFilter("0")):
        if not row.row_key[:1].isdigit():  # meta, version, the ingest's own row
            continue
        layer = int(layout.layer_of(np.uint64(int(row.row_key))))
        counts[layer] = counts.get(layer, 0) + 1
    names = {1: "supervoxels"}
    return [f"layer {layer:>2}: {counts[layer]:>9} {names.get(layer, 'nodes')}"
            + ("  (roots)" if layer == layout.layer_count else "") for layer in sorted(counts)]


def some_sv(table, layout):
    """An SV whose root is several layers up (the most interesting chain), from a short scan."""
    from ..store.reader import read_node
    best, best_len = None, -1
    for row in table.read_rows(limit=400):
        if not row.row_key[:1].isdigit():  # counters, meta, version, the ingest's own row
            continue
        node_id = int(row.row_key)
        if int(layout.layer_of(np.uint64(node_id))) != 1:
            continue
        n, length = node_id, 0
        while n is not None:
            n = read_node(table, n)["parent"]
            length += 1
        if length > best_len:
            best, best_len = node_id, length
    return best


class TableStatus(typing.NamedTuple):
    line: str | None  # `table   : ...`, one line saying what the table is
    identity: str | None  # the run identity in the table
    state: str | None = None  # missing, empty, partial, old (complete, written by an earlier version), complete


def table_completion(graph_id: str, project=None, instance=None) -> TableStatus:
    """What the table is (missing, empty, partial, complete but of an earlier version, complete),
    in one line; all None when no Bigtable is configured."""
    import datetime
    import json

    from ..store import admin, table_state, targets
    project = project or os.environ.get("BIGTABLE_PROJECT")
    instance = instance or os.environ.get("BIGTABLE_INSTANCE")
    if not (os.environ.get("BIGTABLE_EMULATOR_HOST") or (project and instance)):
        return TableStatus(None, None)
    target = targets.resolve_target(project, instance)
    table = targets.open_table(target, graph_id, admin=True)
    if not admin.table_exists(table):
        return TableStatus(f"table   : {graph_id!r} does not exist in {target.describe()}", None, "missing")
    from ..store import kinds
    if check_graph_table(target, graph_id).kind == kinds.EMPTY:
        return TableStatus("table   : EMPTY: created, but no ingest wrote into it (its launcher stopped before the "
                           "first row); rerun the ingest with --if_exists=recreate", None, "empty")
    rows = table_state.StateRows(target, graph_id)
    state = rows.read()
    legacy = rows.legacy_cells()
    for qualifier in (table_state.RUN, table_state.COMPLETE):  # a table of an earlier version
        if qualifier in legacy and qualifier not in state:
            state[qualifier] = legacy[qualifier]
    record = json.loads(state[table_state.RUN][0]) if table_state.RUN in state else {}
    identity = record.get("identity")
    mark = json.loads(state[table_state.COMPLETE][0]) if table_state.COMPLETE in state else None
    if mark is None or mark.get("identity") != identity:
        return TableStatus("table   : NOT complete (no completion mark: the ingest is running, failed, or was "
                           "stopped; rerun with --if_exists=continue)", identity, "partial")
    cache = (record.get("inputs") or {}).get("l2cache")
    if cache:  # the run wrote an L2 cache: complete only with the cache's own mark of this run
        from ..l2cache.table import completion_mark
        cache_mark = completion_mark(target, cache["table"])
        if (cache_mark or {}).get("identity") != identity:
            return TableStatus(f"table   : NOT complete: its L2 cache table {cache['table']!r} is missing or holds no "
                               "completion mark of this run (rerun with --if_exists=continue, which writes the cache "
                               "again)", identity, "partial")
    when = datetime.datetime.fromtimestamp(mark["finished_ms"] / 1000, tz=datetime.timezone.utc)
    scope = " (--test scope)" if mark.get("scope") == "test" else ""
    if legacy:
        return TableStatus(f"table   : complete{scope}, but written by an earlier version of this ingest: PyChunkedGraph "
                           "cannot open it until a rerun with --if_exists=continue moves the ingest's own cells out "
                           "of its meta row (nothing else is rewritten)", identity, "old")
    return TableStatus(f"table   : complete{scope}: every chunk proven written ({mark['chunks']} chunks, "
                       f"{mark['rows']} rows, finished {when:%Y-%m-%d %H:%M:%S} UTC)", identity, "complete")


def foreign_columns(table) -> str | None:
    """Columns outside PyChunkedGraph's registry in its `meta` and `version` rows (which it
    reads whole), as `row 'meta': 0:a, 0:b`; None when there are none. Earlier versions of
    this tool kept their own cells in the meta row."""
    from ..store import cells
    found = []
    for key in (cells.META_ROW, cells.VERSION_ROW):
        row = table.read_row(key)
        if row is None:
            continue
        bad = [f"{family}:{qualifier.decode(errors='replace')}" for family, columns in sorted(row.cells.items())
               for qualifier in sorted(columns) if not cells.is_pcg_column(family, qualifier)]
        if bad:
            found.append(f"row {key.decode()!r} holds column(s) it does not know: {', '.join(bad)}")
    return "; ".join(found) or None
