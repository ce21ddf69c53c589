"""Layer L >= 3: one chunk's children -> their parents (spec/hierarchy.md, Layer L)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..layout import GraphLayout
from .graph import components, min_per_group, pair_keys
from .types import Groups, RootBound, Rows, Summary

NO_LAYER = np.iinfo(np.int64).max


@dataclasses.dataclass
class ParentStats:
    children: int = 0
    nodes: int = 0
    skipped: int = 0          # single children carried past this layer
    dangling_edges: int = 0   # cross-edge copies of layer L-1 whose mirror never showed up
    root_bound: int = 0


def mirrored_partners(summary: Summary, layer: int):
    """Edges of cross layer `layer` whose mirror copy is stored too.

    Returns `(node, partner_node, n_dangling)`: one row per matched copy, pairing the node
    holding `[a, b]` with the node holding `[b, a]`.
    """
    join = summary.edge_layer == layer
    own, other, node = summary.edge_own[join], summary.edge_other[join], summary.edge_node[join]
    if len(own) == 0:
        return node, node, 0
    i_own, i_other, size = pair_keys(own, other)
    keys = i_own * size + i_other
    order = np.argsort(keys)
    keys_sorted = keys[order]
    wanted = i_other * size + i_own
    pos = np.minimum(np.searchsorted(keys_sorted, wanted), len(keys_sorted) - 1)
    found = keys_sorted[pos] == wanted
    partner = node[order[pos[found]]]
    return node[found], partner, int((~found).sum())


def build_parent_layer(layer: int, coord, summaries, layout: GraphLayout, where: str = ""):
    """Build chunk `coord` of `layer` from its children's summaries.

    Returns `(rows, summary, root_bound, stats)` like `build_layer2`.
    """
    where = where or f"layer-{layer} chunk {tuple(coord)}"
    merged = Summary.concat(summaries)
    nodes = np.sort(merged.nodes)
    stats = ParentStats(children=len(nodes))
    if len(nodes) == 0:
        return Rows(chunk=where), Summary(), None, stats
    if len(nodes) > 1 and np.any(nodes[1:] == nodes[:-1]):
        raise RuntimeError(f"{where}: a child node arrived twice (duplicate summaries)")

    node_a, node_b, stats.dangling_edges = mirrored_partners(merged, layer - 1)
    labels = components(len(nodes), np.searchsorted(nodes, node_a), np.searchsorted(nodes, node_b))
    n_comp = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_comp)

    remaining = merged.edge_layer >= layer
    rem_node = merged.edge_node[remaining]
    rem_index = np.searchsorted(nodes, rem_node)
    node_min_layer = min_per_group(rem_index, merged.edge_layer[remaining], len(nodes), NO_LAYER)
    comp_min_layer = min_per_group(labels, node_min_layer, n_comp, NO_LAYER)

    members = Groups.from_labels(labels, nodes, n_comp)
    if layer == layout.layer_count:
        stats.root_bound = n_comp
        chunk = int(layout.chunk_id(layer, *coord))
        return Rows(chunk=where), Summary(), RootBound(chunk, members), stats

    gets_parent = (sizes >= 2) | (comp_min_layer == layer)
    carried = ~gets_parent & (comp_min_layer != NO_LAYER)
    lonely = ~gets_parent & ~carried           # a single child with no edge left: parent is a root

    parent_comps = np.flatnonzero(gets_parent)  # ordered by smallest child: deterministic ids
    n_parents = len(parent_comps)
    chunk_id = layout.chunk_id(layer, *coord)
    parent_ids = chunk_id | np.arange(1, n_parents + 1, dtype=np.uint64)
    comp_parent = np.zeros(n_comp, np.uint64)
    comp_parent[parent_comps] = parent_ids
    children = members.take(parent_comps)
    child_ids = children.values
    child_parents = np.repeat(parent_ids, np.diff(children.offsets))

    rows = Rows(node_ids=child_ids, parent_ids=child_parents,
                children_of=parent_ids, children=children, chunk=where)
    if n_parents:
        rows.counter_chunks = np.array([chunk_id], np.uint64)
        rows.counter_values = np.array([n_parents], np.int64)

    # Edges that stay: a node with a parent hands its edges to that parent.
    node_parent = comp_parent[labels]
    edge_holder = np.where(node_parent[rem_index] != 0, node_parent[rem_index], rem_node)
    parent_has_edges = comp_min_layer[parent_comps] != NO_LAYER
    up_nodes = np.concatenate([parent_ids[parent_has_edges], members.firsts()[carried]])
    summary = Summary(np.sort(up_nodes), edge_holder, merged.edge_own[remaining],
                      merged.edge_other[remaining], merged.edge_layer[remaining])

    to_root = np.sort(np.concatenate([parent_ids[~parent_has_edges], members.firsts()[lonely]]))
    stats.nodes = n_parents
    stats.skipped = int(carried.sum())
    stats.root_bound = len(to_root)
    root_bound = RootBound(int(chunk_id), Groups(to_root, np.arange(len(to_root) + 1, dtype=np.int64)))
    return rows, summary, root_bound, stats
