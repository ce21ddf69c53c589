"""A plain reference for the L2 cache cells (docs/l2cache.md), one node at a time.

Written straight from the rules, for clarity rather than speed: masks per node, an SVD of
each node's centred points, explicit per-axis face comparisons. tests/test_l2cache_features.py
compares beam_ingest.l2cache.features with it cell by cell.
"""
from __future__ import annotations

import edt
import numpy as np

QUALIFIERS = (b"size_nm3", b"area_nm2", b"max_dt_nm", b"mean_dt_nm", b"rep_coord_nm",
              b"chunk_intersect_count", b"pca", b"pca_val")


def reference_chunk_volume(watershed, chunk_size, parent_of: dict) -> np.ndarray:
    """The full chunk box of layer-2 ids: each supervoxel's parent (0 when it has none),
    background and the box beyond the block 0."""
    watershed = np.asarray(watershed)
    out = np.zeros(tuple(chunk_size), np.uint64)
    block = out[:watershed.shape[0], :watershed.shape[1], :watershed.shape[2]]
    for sv in np.unique(watershed):
        if sv != 0:
            block[watershed == sv] = parent_of.get(int(sv), 0)
    return out


def truncated_dt(labels, resolution) -> np.ndarray:
    distance = edt.edt(labels, anisotropy=tuple(float(r) for r in resolution), black_border=False)
    distance = np.where(np.isfinite(distance), distance, 0)  # one label, no boundary: 0
    return np.floor(distance).astype(np.int64)


def node_cells(labels, resolution, node_id, dt) -> dict:
    """{qualifier: bytes} of one node."""
    r = np.asarray(resolution, np.float64)
    shape = labels.shape
    mask = labels == node_id
    coords = np.argwhere(mask)             # C order of the (x, y, z) array
    dts = dt[mask]                         # same order
    flat = np.ravel_multi_index(coords.T, shape)
    n = len(coords)

    if n == 1:
        rep = coords[0]
    else:
        d = np.linalg.norm((coords - coords.mean(axis=0)) * r, axis=1)
        score = dts * (1 - d / d.max())
        tied = np.flatnonzero(score == score.max())
        rep = coords[tied[np.argmin(flat[tied])]]

    intersect = np.array([[np.sum(coords[:, a] == 0) for a in range(3)],
                          [np.sum(coords[:, a] == shape[a] - 1) for a in range(3)]])

    face_area = (r[1] * r[2], r[0] * r[2], r[0] * r[1])
    area = 0.0
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        lo, hi = labels[tuple(low)], labels[tuple(high)]
        faces = np.sum((lo == node_id) & (hi != node_id)) + np.sum((hi == node_id) & (lo != node_id))
        area += faces * face_area[axis]

    if n * np.prod(r) / 1e9 < 0.01:
        pca, pca_val = np.zeros((0, 3)), np.zeros((0,))
    else:
        points = coords * r
        if n < 3:
            points = np.concatenate([points, points, points])
        _, pca_val, pca = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)
        if n > 10_000:
            pca_val = pca_val * np.sqrt(10_000 / n)
        pca = np.array([positive_largest(row) for row in pca])

    with np.errstate(over="ignore", invalid="ignore"):  # the casts wrap or saturate as the cells do
        return _encoded(n, area, dts, rep, intersect, pca, pca_val)


def _encoded(n, area, dts, rep, intersect, pca, pca_val) -> dict:
    return {
        b"size_nm3": np.uint32(n).tobytes(),
        b"area_nm2": np.float64(area).astype("<u4").tobytes(),
        b"max_dt_nm": dts.max().astype("<u2").tobytes(),
        b"mean_dt_nm": np.float16(dts.mean()).tobytes(),
        b"rep_coord_nm": rep.astype("<u2").tobytes(),
        b"chunk_intersect_count": intersect.astype("<u2").tobytes(),
        b"pca": pca.astype("<f2").tobytes(),
        b"pca_val": pca_val.astype("<f4").tobytes(),
    }


def positive_largest(row: np.ndarray) -> np.ndarray:
    """The row with the sign that makes its entry of largest absolute value positive,
    magnitudes compared as stored (float16), the first of equals winning."""
    k = int(np.argmax(np.abs(row.astype(np.float16))))
    return row if row[k] > 0 else -row


def reference_rows(labels, resolution) -> dict:
    """{row key: {qualifier: bytes}} of every non-zero label of the chunk box `labels`."""
    labels = np.asarray(labels)
    dt = truncated_dt(labels, resolution)
    return {b"%020d" % int(node_id): node_cells(labels, resolution, node_id, dt)
            for node_id in np.unique(labels) if node_id != 0}
