"""Small vectorized graph helpers shared by the layer builds."""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

def pair_keys(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense indices of the ids in `a` and `b` (one shared numbering) and its size.

    `ia * size + ib` is then an int64 key per (a, b) pair that sorts and searches far
    faster than 16-byte records.
    """
    uniq, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    inverse = inverse.astype(np.int64)
    return inverse[:len(a)], inverse[len(a):], len(uniq)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs, ordered by (a, b)."""
    if len(a) == 0:
        return a, b
    ia, ib, size = pair_keys(a, b)
    _, first = np.unique(ia * size + ib, return_index=True)
    return a[first], b[first]


def components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected-component label of each of `n` vertices, numbered by smallest vertex.

    Vertex i's label is the rank of its component when components are ordered by their
    smallest vertex index, so callers that sort vertices by id get ids numbered by their
    smallest member.
    """
    if n == 0:
        return np.empty(0, np.int64)
    graph = csr_array((np.ones(len(src)), (src, dst)), shape=(n, n))  # float data: no conversion inside
    _, labels = connected_components(graph, directed=False)
    labels = labels.astype(np.int64)
    # scipy numbers components in order of their lowest vertex; check that cheaply
    # (each label is at most one more than every label before it) before relying on it.
    running_max = np.maximum.accumulate(labels)
    if labels[0] == 0 and np.all(np.diff(running_max) <= 1):
        return labels
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of `ids` in `sorted_ids` (all must be present)."""
    return np.searchsorted(sorted_ids, ids)


def lookup(sorted_keys: np.ndarray, values: np.ndarray, ids: np.ndarray, missing) -> np.ndarray:
    """`values[sorted_keys == id]` for each id, `missing` where id is absent."""
    out = np.full(len(ids), missing, dtype=values.dtype)
    if len(sorted_keys) == 0 or len(ids) == 0:
        return out
    pos = np.searchsorted(sorted_keys, ids)
    pos_clip = np.minimum(pos, len(sorted_keys) - 1)
    hit = sorted_keys[pos_clip] == ids
    out[hit] = values[pos_clip[hit]]
    return out


def min_per_group(labels: np.ndarray, values: np.ndarray, n: int, empty) -> np.ndarray:
    """Minimum of `values` per integer label in [0, n); `empty` for labels with no value."""
    out = np.full(n, empty, dtype=np.result_type(values, np.asarray(empty)))
    if len(labels):
        np.minimum.at(out, labels, values)
    return out
