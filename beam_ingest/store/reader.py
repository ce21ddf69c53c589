"""Reading a ChunkedGraph table back (for `inspect`, verification and tests)."""
from __future__ import annotations

from google.cloud.bigtable import row_filters

from . import cells


def read_node(table, node_id):
    """`{"parent": id|None, "children": array|None, "cross_edges": {layer: (n,2) array},
    "lifted": {layer: (n,2) array}}` (family 4, table version 3) or None."""
    row = table.read_row(cells.row_key(node_id), filter_=row_filters.CellsColumnLimitFilter(1))
    if row is None:
        return None
    return decode_row(row)


def decode_row(row):
    hierarchy = row.cells.get(cells.FAMILY_HIERARCHY, {})
    out = {"parent": None, "children": None, "cross_edges": {}, "lifted": {}}
    if cells.PARENTS in hierarchy:
        out["parent"] = cells.decode_id(hierarchy[cells.PARENTS][0].value)
    if cells.CHILDREN in hierarchy:
        out["children"] = cells.decode_ids(hierarchy[cells.CHILDREN][0].value)
    prefix = b"atomic_cross_edges_"
    for qualifier, found in row.cells.get(cells.FAMILY_CROSS_EDGES, {}).items():
        if qualifier.startswith(prefix):
            out["cross_edges"][int(qualifier[len(prefix):])] = cells.decode_edges(found[0].value)
    lifted = b"cross_edges_"
    for qualifier, found in row.cells.get(cells.FAMILY_LIFTED, {}).items():
        if qualifier.startswith(lifted):
            out["lifted"][int(qualifier[len(lifted):])] = cells.decode_edges(found[0].value)
    return out


def read_all(table):
    """Every row: `{row key: {(family, qualifier): [(value, timestamp), ...]}}` (all versions)."""
    out = {}
    for row in table.read_rows():
        out[row.row_key] = {(fam, q): [(c.value, c.timestamp) for c in found]
                            for fam, cols in row.cells.items() for q, found in cols.items()}
    return out
