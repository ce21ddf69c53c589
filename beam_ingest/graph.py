"""Small vectorized graph helpers shared by the layer builds and the raw input reader."""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components


def pair_keys(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense indices of the ids in `a` and `b` (one shared numbering) and the ids numbered
    (ascending: index i is `ids[i]`).

    `ia * len(ids) + ib` is then an int64 key per (a, b) pair that sorts and searches far
    faster than 16-byte records.
    """
    ids, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    inverse = inverse.astype(np.int64)
    return inverse[:len(a)], inverse[len(a):], ids


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


def min_per_group(labels: np.ndarray, values: np.ndarray, n: int, empty) -> np.ndarray:
    """Minimum of `values` per integer label in [0, n); `empty` for labels with no value."""
    out = np.full(n, empty, dtype=np.result_type(values, np.asarray(empty)))
    if len(labels):
        np.minimum.at(out, labels, values)
    return out
