"""Layer L >= 3: one chunk's children -> their parents (docs/hierarchy.md, Layer L)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..arrays import distinct_pairs
from ..layout import GraphLayout
from ..graph import components, min_per_group, pair_keys
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

    Returns `(row, partner_row, n_dangling)`: one pair per matched copy, the summary row of
    `[a, b]` and the summary row of its mirror `[b, a]`.
    """
    join = np.flatnonzero(summary.edge_layer == layer)
    own, other = summary.edge_own[join], summary.edge_other[join]
    if len(own) == 0:
        return join, join, 0
    i_own, i_other, ids = pair_keys(own, other)
    size = len(ids)
    keys = i_own * size + i_other
    order = np.argsort(keys)
    keys_sorted = keys[order]
    wanted = i_other * size + i_own
    pos = np.minimum(np.searchsorted(keys_sorted, wanted), len(keys_sorted) - 1)
    found = keys_sorted[pos] == wanted
    return join[found], join[order[pos[found]]], int((~found).sum())


def lifted_edges(summary: Summary, row: np.ndarray, partner_row: np.ndarray, layer: int, layout: GraphLayout):
    """The `cross_edges_<layer>` rows (table version 3) that the matched edges `row` (with
    their mirrors `partner_row`) give every node on their holders' chains.

    Column k of a chain is the edge end's holder at layer k + 2; the holder at layer c is a
    node of layer c, or one of a lower layer carried past c as a singleton, which is the
    highest ancestor at a layer <= c that docs/table-format.md asks for. Each node takes its rows at its own
    layer. Returns `(node, layer, partner)` sorted by node, then partner, distinct.
    """
    own_chain, other_chain = summary.edge_chain[row], summary.edge_chain[partner_row]
    width = own_chain.shape[1]
    at = np.arange(2, 2 + width, dtype=np.int64)
    own_layers = layout.layer_of(own_chain.reshape(-1)).reshape(own_chain.shape).astype(np.int64)
    keep = own_layers == at  # the node's own layer, not a layer it is carried through
    node, partner = own_chain[keep], other_chain[keep]
    node, partner = distinct_pairs(node, partner)
    return node, np.full(len(node), layer, np.int64), partner


def build_parent_layer(layer: int, coord, summaries, layout: GraphLayout, where: str = "", lifted: bool = False):
    """Build chunk `coord` of `layer` from its children's summaries.

    Returns `(rows, summary, root_bound, stats)` like `build_layer2`. With `lifted` (table
    version 3) the rows also hold the `cross_edges_<layer - 1>` cells of every node below
    whose edges join here, and the summary extends each edge's chain of holders.
    """
    where = where or f"layer-{layer} chunk {tuple(coord)}"
    merged = Summary.concat(summaries)
    nodes = np.sort(merged.nodes)
    stats = ParentStats(children=len(nodes))
    if len(nodes) == 0:
        return Rows(), Summary(), None, stats
    if len(nodes) > 1 and np.any(nodes[1:] == nodes[:-1]):
        raise RuntimeError(f"{where}: a child node arrived twice (duplicate summaries)")

    row_a, row_b, stats.dangling_edges = mirrored_partners(merged, layer - 1)
    node_a, node_b = merged.edge_node[row_a], merged.edge_node[row_b]
    lifted_rows = {}
    if lifted:
        names = ("lifted_node", "lifted_layer", "lifted_partner")
        lifted_rows = dict(zip(names, lifted_edges(merged, row_a, row_b, layer - 1, layout)))
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
        return Rows(**lifted_rows), Summary(), RootBound(chunk, members), stats

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
                children_of=parent_ids, children=children, **lifted_rows)
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
    if lifted:
        summary.edge_chain = np.concatenate([merged.edge_chain[remaining], edge_holder.reshape(-1, 1)], axis=1)

    to_root = np.sort(np.concatenate([parent_ids[~parent_has_edges], members.firsts()[lonely]]))
    stats.nodes = n_parents
    stats.skipped = int(carried.sum())
    stats.root_bound = len(to_root)
    root_bound = RootBound(int(chunk_id), Groups(to_root, np.arange(len(to_root) + 1, dtype=np.int64)))
    return rows, summary, root_bound, stats
