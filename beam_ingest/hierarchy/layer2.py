"""Layer 2: one atomic chunk's supervoxels -> layer-2 nodes (docs/hierarchy.md, Layer 2)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..arrays import distinct
from ..chunk_inputs import ChunkInputs, off_grid_text
from ..errors import InputError
from ..layout import GraphLayout
from ..graph import components
from .types import Groups, RootBound, Rows, Summary


@dataclasses.dataclass
class Layer2Stats:
    svs: int = 0
    edges: int = 0
    active_edges: int = 0
    nodes: int = 0
    far_edges: int = 0  # between/cross edges (as given, copies counted) to a chunk that is not a neighbour


def _check_orientation(kind: str, a_here, b_here, a, b, where: str) -> np.ndarray:
    """Which between/cross edges to swap so `ids1` is in this chunk; bad edges raise."""
    both = a_here & b_here
    if np.any(both):
        i = int(np.flatnonzero(both)[0])
        raise InputError(f"{where}: {kind} edge #{i} ({a[i]}, {b[i]}) has both ends in this chunk")
    neither = ~a_here & ~b_here
    if np.any(neither):
        i = int(np.flatnonzero(neither)[0])
        raise InputError(f"{where}: {kind} edge #{i} ({a[i]}, {b[i]}) has neither end in this chunk "
                         f"({int(neither.sum())} such edges)")
    return ~a_here


_PART_KINDS = ("in_chunk", "in_chunk", "between_chunk", "between_chunk", "cross_chunk", "cross_chunk", None)


def _first_use(bad: np.ndarray, parts, inputs: ChunkInputs):
    """The first place (in file order) where one of the dense ids flagged in `bad` is used.

    Returns `(id position in its part, which part, text)`: text names the edge
    ("in_chunk edge #i (a, b)") or "the components".
    """
    for p, part in enumerate(parts):
        hits = np.flatnonzero(bad[part])
        if len(hits):
            i = int(hits[0])
            kind = _PART_KINDS[p]
            if kind is None:
                return int(inputs.component_svs[i]), p, "the components"
            e = inputs.edges[kind]
            return int((e.ids1, e.ids2)[p % 2][i]), p, f"{kind} edge #{i} ({e.ids1[i]}, {e.ids2[i]})"
    raise AssertionError("no flagged id is used")


def dense_ids(all_ids: np.ndarray, sv_chunk, segment_bits: int):
    """Replace ids by small integers ordered like the ids.

    Returns `(ids, dense, here)`: `ids[dense] == all_ids`, `ids` ascending, and `here`
    tells which entries of `ids` belong to chunk `sv_chunk`. Segment ids inside a chunk
    are nearly contiguous in practice, so the chunk's own SVs index by segment id with no
    sort; only the (few) ids of other chunks are sorted. Sparse segment ids fall back
    to a full sort.
    """
    sv_chunk = np.uint64(sv_chunk)
    mask = np.uint64((1 << segment_bits) - 1)
    in_chunk = (all_ids & ~mask) == sv_chunk
    segments = (all_ids & mask).astype(np.int64)
    top = int(segments[in_chunk].max()) if in_chunk.any() else 0
    if top > 4 * len(all_ids) + 1024:
        ids, dense = np.unique(all_ids, return_inverse=True)
        return ids, dense.astype(np.int64), (ids & ~mask) == sv_chunk
    foreign, foreign_dense = np.unique(all_ids[~in_chunk], return_inverse=True)
    # other chunks' ids sort after or before ours as a block; keep `ids` ascending
    below = foreign < sv_chunk
    n_below = int(below.sum())
    own = sv_chunk | np.arange(top + 1, dtype=np.uint64)
    ids = np.concatenate([foreign[:n_below], own, foreign[n_below:]])
    dense = np.empty(len(all_ids), np.int64)
    dense[in_chunk] = segments[in_chunk] + n_below
    shifted = foreign_dense.astype(np.int64)
    shifted[shifted >= n_below] += top + 1
    dense[~in_chunk] = shifted
    here = np.zeros(len(ids), bool)
    here[n_below:n_below + top + 1] = True
    return ids, dense, here


def _distinct(a: np.ndarray, b: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs of dense indices < size, ordered by (a, b)."""
    keys = distinct(a * size + b)
    return keys // size, keys % size


@dataclasses.dataclass
class _DenseInputs:
    """One chunk's inputs with every id replaced by its rank (`ids[rank]` is the id), checked,
    each cross-chunk edge oriented from this chunk: the edges' ends and the component
    members as dense ranks, and where messages name the edges and components."""
    ids: np.ndarray
    in1: np.ndarray
    in2: np.ndarray
    bt1: np.ndarray
    bt2: np.ndarray
    cx1: np.ndarray
    cx2: np.ndarray
    comp: np.ndarray
    far_edges: int
    in_edges: str
    in_comps: str


def _dense_inputs(inputs: ChunkInputs, layout: GraphLayout, where: str) -> _DenseInputs:
    """Every id of the chunk's inputs replaced by its rank among them (one sort), so the rest
    works on small dense integers; raises InputError naming the file for ids that are not
    supervoxels of the grid, in-chunk edges that leave the chunk, and misoriented edges."""
    chunk = f"chunk {tuple(inputs.coord)}"
    x, y, z = inputs.coord
    inside, between, cross = (inputs.edges[k] for k in ("in_chunk", "between_chunk", "cross_chunk"))
    parts = [inside.ids1, inside.ids2, between.ids1, between.ids2, cross.ids1, cross.ids2,
             inputs.component_svs]
    ids, dense, here = dense_ids(np.concatenate(parts), layout.chunk_id(1, x, y, z), layout.segment_bits(1))
    bounds = np.cumsum([0] + [len(p) for p in parts])
    in1, in2, bt1, bt2, cx1, cx2, comp = (dense[bounds[i]:bounds[i + 1]] for i in range(len(parts)))
    in_edges = f"{inputs.edges_file} ({chunk})" if inputs.edges_file else where
    in_comps = f"{inputs.components_file} ({chunk})" if inputs.components_file else where
    dense_parts = (in1, in2, bt1, bt2, cx1, cx2, comp)
    not_svs = layout.layer_of(ids) != 1
    if np.any(not_svs):
        bad, part, what = _first_use(not_svs, dense_parts, inputs)
        raise InputError(f"{in_comps if part == 6 else in_edges}: id {bad} of {what} is not a supervoxel id (its "
                         f"layer bits say {int(layout.layer_of(bad))}, expected 1); {int(not_svs.sum())} such ids")
    id_coords = layout.coords_of(ids, 1)  # layer-2 chunk of every distinct id, (n_ids, 3)
    outside_grid = np.any(id_coords >= np.asarray(layout.n_chunks, np.int64), axis=1)
    if np.any(outside_grid):
        bad, part, what = _first_use(outside_grid, dense_parts, inputs)
        raise InputError(f"{in_comps if part == 6 else in_edges}: SV {bad} of {what} {off_grid_text(layout, bad)}; "
                         f"{int(outside_grid.sum())} such ids")

    outside = ~(here[in1] & here[in2])
    if np.any(outside):
        bad = int(np.flatnonzero(outside)[0])
        raise InputError(f"{in_edges}: in_chunk edge #{bad} ({inside.ids1[bad]}, {inside.ids2[bad]}) "
                         "has an end outside this chunk")
    swap = _check_orientation("between_chunk", here[bt1], here[bt2], between.ids1, between.ids2, in_edges)
    bt1, bt2 = np.where(swap, bt2, bt1), np.where(swap, bt1, bt2)
    swap = _check_orientation("cross_chunk", here[cx1], here[cx2], cross.ids1, cross.ids2, in_edges)
    cx1, cx2 = np.where(swap, cx2, cx1), np.where(swap, cx1, cx2)
    # Duplicate copies need no removal here: they change neither the SV set nor the
    # components, and the stored cross edges are made distinct below.
    # Edges to a chunk that is not a neighbour (face, edge or corner) are valid input but
    # unusual (docs/input-formats.md): counted, and reported by the caller.
    others = np.concatenate([bt2, cx2])
    far_edges = int(np.count_nonzero(np.any(np.abs(id_coords[others] - np.asarray(inputs.coord)) > 1, axis=1)))
    return _DenseInputs(ids, in1, in2, bt1, bt2, cx1, cx2, comp, far_edges, in_edges, in_comps)


def _active(d: _DenseInputs, component_labels: np.ndarray):
    """Which in-chunk and between-chunk edges join two SVs of one component (cross-chunk
    edges are all active)."""
    n_ids = len(d.ids)
    comp_of = np.full(n_ids, -1, np.int64)  # SV -> component index (-1 = none)
    if len(d.comp) and np.bincount(d.comp, minlength=n_ids).max() > 1:
        dup = d.ids[np.flatnonzero(np.bincount(d.comp, minlength=n_ids) > 1)[0]]
        raise InputError(f"{d.in_comps}: SV {dup} is listed in more than one component")
    comp_of[d.comp] = component_labels
    in_active = (comp_of[d.in1] >= 0) & (comp_of[d.in1] == comp_of[d.in2])
    bt_active = (comp_of[d.bt1] >= 0) & (comp_of[d.bt1] == comp_of[d.bt2])
    return in_active, bt_active


def build_layer2(inputs: ChunkInputs, layout: GraphLayout, where: str = "", lifted: bool = False):
    """Build one layer-2 chunk.

    Returns `(rows, summary, root_bound, stats)`: the chunk's cells, what its layer-3
    parent needs (nodes with cross edges and those edges), the nodes whose parent is a
    root (no cross edge at all), and counts for metrics. With `lifted` (table version 3)
    the rows also count the layer-1 chunk's largest segment id, and the summary starts
    each edge's chain of holders.

    Every id of the chunk's inputs is replaced by its rank among them (one sort), so the
    rest works on small dense integers: no further searches over 64-bit ids.
    """
    where = where or f"layer-2 chunk {tuple(inputs.coord)}"
    x, y, z = inputs.coord
    d = _dense_inputs(inputs, layout, where)
    ids, in1, in2, bt1, bt2, cx1, cx2 = d.ids, d.in1, d.in2, d.bt1, d.bt2, d.cx1, d.cx2
    n_ids = len(ids)
    in_active, bt_active = _active(d, inputs.component_labels)

    is_sv = np.zeros(n_ids, bool)
    for part in (in1, in2, bt1, cx1):
        is_sv[part] = True
    sv_dense = np.flatnonzero(is_sv)
    svs = ids[sv_dense]
    stats = Layer2Stats(svs=len(svs), edges=len(in1) + len(bt1) + len(cx1),
                        active_edges=int(in_active.sum() + bt_active.sum()) + len(cx1), far_edges=d.far_edges)
    if len(svs) == 0:
        return Rows(), Summary(), None, stats

    local = np.full(n_ids, -1, np.int64)
    local[sv_dense] = np.arange(len(svs))
    labels = components(len(svs), local[in1[in_active]], local[in2[in_active]])
    n_nodes = int(labels.max()) + 1
    stats.nodes = n_nodes
    members = Groups.from_labels(labels, svs, n_nodes)
    chunk_id = layout.chunk_id(2, x, y, z)

    layer1 = Rows()
    if lifted:
        layer1.counter_chunks = np.array([layout.chunk_id(1, x, y, z)], np.uint64)
        layer1.counter_values = np.array([int(layout.segment_of(svs.max(), 1))], np.int64)  # one chunk
    if layout.layer_count == 2:
        # The whole volume is this chunk: its components are the roots.
        return layer1, Summary(), RootBound(int(chunk_id), members), stats

    node_ids = chunk_id | np.arange(1, n_nodes + 1, dtype=np.uint64)

    # Atomic cross edges: every active between/cross edge, by the node of its own SV.
    own, other = _distinct(np.concatenate([bt1[bt_active], cx1]), np.concatenate([bt2[bt_active], cx2]), n_ids)
    own_label = labels[local[own]]
    own, other = ids[own], ids[other]
    edge_layer = layout.cross_layer(np.broadcast_to(np.asarray(inputs.coord), (len(other), 3)),
                                    layout.coords_of(other, 1))
    order = np.lexsort((edge_layer, own_label))  # by node, then layer; (own, other) order kept
    own_label, own, other, edge_layer = own_label[order], own[order], other[order], edge_layer[order]
    edge_node = node_ids[own_label]

    rows = Rows(
        node_ids=svs, parent_ids=node_ids[labels],
        children_of=node_ids, children=members,
        cross_node=edge_node, cross_own=own, cross_other=other, cross_layer=edge_layer,
        counter_chunks=np.concatenate([layer1.counter_chunks, [chunk_id]]).astype(np.uint64),
        counter_values=np.concatenate([layer1.counter_values, [n_nodes]]).astype(np.int64))

    has_edges = np.zeros(n_nodes, bool)
    has_edges[own_label] = True
    summary = Summary(node_ids[has_edges], edge_node, own, other, edge_layer)
    if lifted:
        summary.edge_chain = edge_node.reshape(-1, 1)
    lonely = node_ids[~has_edges]
    root_bound = RootBound(int(chunk_id), Groups(lonely, np.arange(len(lonely) + 1, dtype=np.int64)))
    return rows, summary, root_bound, stats
