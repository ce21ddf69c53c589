"""Root ids: components whose parent is a root -> root nodes (docs/table-format.md, Counters).

Root segment ids are `k * 256 + n`. Every chunk sends its root-bound components to one
bucket `n` (a hash of the chunk id), so the 256 buckets are built in parallel and no single
worker holds every isolated object. Inside a bucket, components are numbered `k = 1, 2, ...`
in order of their smallest child: ids depend only on the input.
"""
from __future__ import annotations

import numpy as np

from ..layout import ROOT_COUNTER_BUCKETS, GraphLayout
from .types import Groups, RootBound, Rows


def root_bucket(chunk_id: int) -> int:
    """The root-counter bucket of a chunk's root-bound components (Fibonacci hashing)."""
    return ((int(chunk_id) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 56


def build_roots(bucket: int, parts, layout: GraphLayout) -> Rows:
    """The root rows and counter of one bucket, from all `RootBound` parts sent to it."""
    comps = Groups.concat([p.components for p in parts if p is not None])
    order = np.argsort(comps.firsts(), kind="stable")
    comps = comps.take(order)
    n_roots = len(comps)
    k = np.arange(1, n_roots + 1, dtype=np.uint64)
    root_ids = layout.root_chunk_id | (k * np.uint64(ROOT_COUNTER_BUCKETS) + np.uint64(bucket))
    return Rows(
        node_ids=comps.values, parent_ids=np.repeat(root_ids, np.diff(comps.offsets)),
        children_of=root_ids, children=comps,
        counter_chunks=np.array([layout.root_chunk_id], np.uint64), counter_values=np.array([n_roots], np.int64),
        counter_buckets=np.array([bucket], np.int64))


def bucket_of(part: RootBound) -> int:
    return root_bucket(part.source_chunk)
