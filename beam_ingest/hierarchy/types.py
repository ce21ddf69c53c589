"""Columnar values that travel between the build stages (numpy arrays, no per-node objects)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..arrays import distinct

_U64 = np.uint64


def _empty_u64():
    return np.empty(0, _U64)


@dataclasses.dataclass
class Summary:
    """What a chunk hands to its parent chunk.

    `nodes` still need a parent above this layer; `edge_*` are their remaining atomic
    cross edges, one row per edge: the node holding it, its own SV, the SV in the other
    chunk, and the edge's cross layer. With lifted edges (table version 3) `edge_chain`
    holds each edge's holders so far, one column per layer 2, 3, ... (a node carried
    past a layer as a singleton repeats); otherwise it has no columns.
    """
    nodes: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    edge_node: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    edge_own: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    edge_other: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    edge_layer: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    edge_chain: np.ndarray = dataclasses.field(default_factory=lambda: np.empty((0, 0), _U64))

    @classmethod
    def concat(cls, parts) -> "Summary":
        parts = list(parts)
        if not parts:
            return cls()
        width = max(p.edge_chain.shape[1] for p in parts)
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "edge_chain"]
        out = cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in fields))
        chains = [p.edge_chain for p in parts if len(p.edge_chain)]
        if chains and any(c.shape[1] != width for c in chains):
            raise ValueError("summaries of different layers cannot be merged")
        out.edge_chain = np.concatenate(chains) if chains else np.empty((0, width), _U64)
        return out


@dataclasses.dataclass
class Groups:
    """A ragged array: group i is `values[offsets[i]:offsets[i + 1]]`."""
    values: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    offsets: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1, np.int64))

    def __len__(self):
        return len(self.offsets) - 1

    @classmethod
    def from_labels(cls, labels: np.ndarray, values: np.ndarray, n_groups: int) -> "Groups":
        """Group ascending `values` by integer `labels` in [0, n_groups); groups stay sorted."""
        small = labels.astype(np.uint16) if n_groups <= 1 << 16 else labels
        order = np.argsort(small, kind="stable")  # a radix sort for 16-bit keys
        counts = np.bincount(labels, minlength=n_groups)
        offsets = np.zeros(n_groups + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(values[order], offsets)

    @classmethod
    def concat(cls, parts) -> "Groups":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        values = np.concatenate([p.values for p in parts])
        sizes = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return cls(values, offsets)

    def firsts(self) -> np.ndarray:
        return self.values[self.offsets[:-1]]

    def take(self, index: np.ndarray) -> "Groups":
        """The groups at `index`, in that order."""
        index = np.asarray(index, np.int64)
        starts = self.offsets[index]
        sizes = self.offsets[index + 1] - starts
        offsets = np.zeros(len(index) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1])
        return Groups(self.values[gather], offsets)


@dataclasses.dataclass
class RootBound:
    """Components whose parent is a root, from one chunk: each group is a root's children."""
    source_chunk: int
    components: Groups


@dataclasses.dataclass
class Rows:
    """The Bigtable cells one build step produces, column by column.

    - `parents`: `node_ids[i]` gets `0:parents = parent_ids[i]`.
    - `children`: `children_of[i]` gets `0:children = children.group(i)`.
    - atomic cross edges on layer-2 nodes: edge i is `[cross_own[i], cross_other[i]]` on
      node `cross_node[i]`, qualifier layer `cross_layer[i]`; sorted by node, layer.
    - counters: chunk `counter_chunks[i]` counts `counter_values[i]` ids; with
      `counter_buckets[i]` >= 0 it is that root-id bucket's counter (root ids are
      `k * 256 + bucket`). Where a counter is stored is the store's business.
    """
    node_ids: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    parent_ids: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    children_of: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    children: Groups = dataclasses.field(default_factory=Groups)
    cross_node: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    cross_own: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    cross_other: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    cross_layer: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    counter_chunks: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    counter_values: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    counter_buckets: np.ndarray | None = None  # None: -1 for every counter (chunk counters)
    # lifted cross edges (table version 3): node `lifted_node[i]` gets the row
    # `[lifted_node[i], lifted_partner[i]]` in its `cross_edges_<lifted_layer[i]>` cell; sorted
    # by node, layer, partner, distinct.
    lifted_node: np.ndarray = dataclasses.field(default_factory=_empty_u64)
    lifted_layer: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    lifted_partner: np.ndarray = dataclasses.field(default_factory=_empty_u64)

    @classmethod
    def concat(cls, parts) -> "Rows":
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        arrays = ("node_ids", "parent_ids", "children_of", "cross_node", "cross_own", "cross_other", "cross_layer",
                  "counter_chunks", "counter_values", "lifted_node", "lifted_layer", "lifted_partner")
        out = cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in arrays})
        out.counter_buckets = np.concatenate([p.buckets() for p in parts])
        out.children = Groups.concat([p.children for p in parts])
        return out

    def buckets(self) -> np.ndarray:
        """`counter_buckets`, -1 (a chunk's own counter) where none was given."""
        if self.counter_buckets is None:
            return np.full(len(self.counter_chunks), -1, np.int64)
        return np.asarray(self.counter_buckets, np.int64)

    def column_lengths(self) -> list[int]:
        """The lengths of node_ids, children_of, cross_node, counter_chunks and lifted_node:
        the rows' groups whose entries are labelled by part when batches are concatenated."""
        return [len(self.node_ids), len(self.children_of), len(self.cross_node), len(self.counter_chunks),
                len(self.lifted_node)]

    def row_count(self) -> int:
        """Distinct row keys written (a node row may carry several cells)."""
        nodes = distinct(np.concatenate([self.node_ids, self.children_of, self.cross_node, self.lifted_node]))
        return len(nodes) + len(self.counter_chunks)
