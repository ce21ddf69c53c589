"""Layer 2: one atomic chunk's supervoxels -> layer-2 nodes (spec/hierarchy.md, Layer 2)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..inputs.precomputed import ChunkInputs, Edges, InputError
from ..layout import GraphLayout
from ..store.cells import counter_key
from .graph import components, lookup, pairs
from .types import Groups, RootBound, Rows, Summary


@dataclasses.dataclass
class Layer2Stats:
    svs: int = 0
    edges: int = 0
    active_edges: int = 0
    nodes: int = 0


def _unique_edges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(a) == 0:
        return a, b
    u = np.unique(pairs(a, b))
    return u["a"], u["b"]


def _oriented(edges: Edges, kind: str, in_chunk, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Between/cross edges with `ids1` in this chunk; an edge with neither end here is bad input."""
    a, b = edges.ids1, edges.ids2
    a_here, b_here = in_chunk(a), in_chunk(b)
    if np.any(a_here & b_here):
        i = int(np.flatnonzero(a_here & b_here)[0])
        raise InputError(f"{where}: {kind} edge #{i} ({a[i]}, {b[i]}) has both ends in this chunk")
    neither = ~a_here & ~b_here
    if np.any(neither):
        i = int(np.flatnonzero(neither)[0])
        raise InputError(f"{where}: {kind} edge #{i} ({a[i]}, {b[i]}) has neither end in this chunk "
                         f"({int(neither.sum())} such edges)")
    swap = ~a_here
    return np.where(swap, b, a), np.where(swap, a, b)


def build_layer2(inputs: ChunkInputs, layout: GraphLayout, where: str = ""):
    """Build one layer-2 chunk.

    Returns `(rows, summary, root_bound, stats)`: the chunk's cells, what its layer-3
    parent needs (nodes with cross edges and those edges), the nodes whose parent is a
    root (no cross edge at all), and counts for metrics.
    """
    where = where or f"layer-2 chunk {tuple(inputs.coord)}"
    x, y, z = inputs.coord
    sv_chunk = layout.chunk_id(1, x, y, z)

    def in_chunk(ids):
        return layout.chunk_of(ids, 1) == sv_chunk

    inside = inputs.edges["in_chunk"]
    if len(inside) and not np.all(in_chunk(inside.ids1) & in_chunk(inside.ids2)):
        bad = int(np.flatnonzero(~(in_chunk(inside.ids1) & in_chunk(inside.ids2)))[0])
        raise InputError(f"{where}: in_chunk edge #{bad} ({inside.ids1[bad]}, {inside.ids2[bad]}) "
                         "has an end outside this chunk")
    in_a, in_b = _unique_edges(inside.ids1, inside.ids2)
    bt_a, bt_b = _unique_edges(*_oriented(inputs.edges["between_chunk"], "between_chunk", in_chunk, where))
    cx_a, cx_b = _unique_edges(*_oriented(inputs.edges["cross_chunk"], "cross_chunk", in_chunk, where))

    # Component mapping: SV -> component index (-1 = none).
    order = np.argsort(inputs.component_svs, kind="stable")
    comp_svs = inputs.component_svs[order]
    comp_labels = inputs.component_labels[order]
    if len(comp_svs) > 1 and np.any(comp_svs[1:] == comp_svs[:-1]):
        dup = comp_svs[1:][comp_svs[1:] == comp_svs[:-1]][0]
        raise InputError(f"{where}: components file lists SV {dup} in more than one component")

    def same_component(a, b):
        la = lookup(comp_svs, comp_labels, a, -1)
        lb = lookup(comp_svs, comp_labels, b, -1)
        return (la >= 0) & (la == lb)

    in_active = same_component(in_a, in_b)
    bt_active = same_component(bt_a, bt_b)

    svs = np.unique(np.concatenate([in_a, in_b, bt_a, cx_a]))
    stats = Layer2Stats(svs=len(svs), edges=len(in_a) + len(bt_a) + len(cx_a),
                        active_edges=int(in_active.sum() + bt_active.sum()) + len(cx_a))
    if len(svs) == 0:
        return Rows(chunk=where), Summary(), None, stats

    labels = components(len(svs), np.searchsorted(svs, in_a[in_active]),
                        np.searchsorted(svs, in_b[in_active]))
    n_nodes = int(labels.max()) + 1
    stats.nodes = n_nodes
    members = Groups.from_labels(labels, svs, n_nodes)

    if layout.layer_count == 2:
        # The whole volume is this chunk: its components are the roots.
        return Rows(chunk=where), Summary(), RootBound(int(layout.chunk_id(2, x, y, z)), members), stats

    node_ids = layout.chunk_id(2, x, y, z) | np.arange(1, n_nodes + 1, dtype=np.uint64)

    # Atomic cross edges: every active between/cross edge, by the node of its own SV.
    own = np.concatenate([bt_a[bt_active], cx_a])
    other = np.concatenate([bt_b[bt_active], cx_b])
    own, other = _unique_edges(own, other)
    edge_node = node_ids[labels[np.searchsorted(svs, own)]]
    edge_layer = layout.cross_layer(np.broadcast_to(np.asarray(inputs.coord), (len(other), 3)),
                                    layout.coords_of(other, 1))
    order = np.lexsort((other, own, edge_layer, edge_node))
    edge_node, own, other, edge_layer = edge_node[order], own[order], other[order], edge_layer[order]

    rows = Rows(
        node_ids=svs, parent_ids=node_ids[labels],
        children_of=node_ids, children=members,
        cross_node=edge_node, cross_own=own, cross_other=other, cross_layer=edge_layer,
        counter_keys=[counter_key(layout.chunk_id(2, x, y, z))], counter_values=[n_nodes],
        chunk=where)

    has_edges = np.zeros(n_nodes, bool)
    has_edges[labels[np.searchsorted(svs, own)]] = True
    summary = Summary(node_ids[has_edges], edge_node, own, other, edge_layer)
    lonely = node_ids[~has_edges]
    root_bound = RootBound(int(layout.chunk_id(2, x, y, z)),
                           Groups(lonely, np.arange(len(lonely) + 1, dtype=np.int64)))
    return rows, summary, root_bound, stats
