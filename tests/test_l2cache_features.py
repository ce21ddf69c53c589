"""beam_ingest.l2cache.features against the one-node-at-a-time reference (tests/l2cache_reference.py),
cell by cell, and against hand-worked values for the rules a shortcut would get wrong.

Every cell must be byte-identical to the reference, with two exceptions in `pca` and
`pca_val` that no correct implementation can avoid (see `assert_pca_matches`). The
implementation takes its axes from one batched `eigh` of the nodes' 3x3 scatter matrices and
its singular values from the points projected on them; the reference takes both from an SVD
of each node's points. Both are backward-stable, so their float64 results differ by a few
float64 roundings (~1e-16 of the largest singular value), and:
- a singular value that is 0 in exact arithmetic (a flat or line-shaped node) comes out of
  either as rounding noise of that size, different noise in each: such values must both be
  below 1e-12 of the largest singular value, not equal;
- the axes of equal singular values (a symmetric node: a square, a cube, a line's two
  normals) are any orthonormal basis of their plane or space: those rows are compared as
  the subspace they span (to float16 precision), and each must be a unit vector whose
  largest entry is positive.
Everything else in these cells is required to be bit-identical, as it is on every seeded
volume here. (In principle a float64 value within ~1e-16 of a float32 / float16 rounding
boundary could round to the neighbouring value in one of the two; none does here, and the
volumes are seeded, so the strict test is stable. Should a new volume hit one, 1 ulp of the
stored dtype is the honest allowance.)
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import ndimage

from beam_ingest import __version__
from beam_ingest.l2cache import features
from beam_ingest.l2cache.features import chunk_features, chunk_volume, meta_cells, row_cells
from l2cache_reference import QUALIFIERS, reference_chunk_volume, reference_rows

ANISOTROPIC = [(8, 8, 40), (4, 6, 40)]


# ---- comparison with the reference -------------------------------------------------------

def cells_of(labels, resolution) -> dict:
    return {key: dict(cells) for key, cells in row_cells(chunk_features(labels, resolution))}


def assert_matches_reference(labels, resolution) -> dict:
    ours = cells_of(labels, resolution)
    expected = reference_rows(labels, resolution)
    assert list(ours) == list(expected)  # same rows, ascending id
    for key, cells in expected.items():
        assert list(ours[key]) == list(QUALIFIERS), key
        for qualifier in QUALIFIERS[:-2]:
            assert ours[key][qualifier] == cells[qualifier], (key, qualifier)
        assert_pca_matches(ours[key], cells, key)
    return ours


def assert_pca_matches(ours: dict, expected: dict, key) -> None:
    assert len(ours[b"pca"]) == len(expected[b"pca"]) and len(ours[b"pca_val"]) == len(expected[b"pca_val"]), key
    if not expected[b"pca_val"]:
        assert ours[b"pca"] == ours[b"pca_val"] == b""
        return
    values = np.frombuffer(ours[b"pca_val"], "<f4").astype(np.float64)
    values_ref = np.frombuffer(expected[b"pca_val"], "<f4").astype(np.float64)
    axes = np.frombuffer(ours[b"pca"], "<f2").reshape(3, 3).astype(np.float64)
    axes_ref = np.frombuffer(expected[b"pca"], "<f2").reshape(3, 3).astype(np.float64)
    largest = values_ref[0]
    zero = values_ref <= 1e-12 * largest
    assert np.array_equal(values[~zero], values_ref[~zero]), (key, values, values_ref)
    assert np.all(values[zero] <= 1e-12 * largest), (key, values, values_ref)
    assert np.all(np.diff(values) <= 0), (key, values)
    # our rows: unit vectors, largest entry positive (as stored)
    assert np.allclose(np.linalg.norm(axes, axis=1), 1, atol=2e-3), (key, axes)
    assert np.all(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)] > 0), (key, axes)
    for group in tied_groups(values_ref, largest):
        if len(group) == 1:
            assert np.array_equal(axes[group[0]], axes_ref[group[0]]), (key, group, axes, axes_ref)
        else:
            span, span_ref = axes[group].T @ axes[group], axes_ref[group].T @ axes_ref[group]
            assert np.abs(span - span_ref).max() < 4e-3, (key, group, axes, axes_ref)


def tied_groups(values: np.ndarray, largest: float) -> list:
    """Runs of singular values equal up to 1e-5 of the largest: their axes are not unique
    (or, that close, determined only to ~1e-16 * largest² / gap, visible in float16)."""
    groups = [[0]]
    for i in range(1, 3):
        if values[groups[-1][-1]] - values[i] <= 1e-5 * max(largest, 1e-300):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def node_row(labels, resolution, node_id) -> dict:
    return cells_of(labels, resolution)[b"%020d" % node_id]


def decoded(cells: dict) -> dict:
    return {
        "size": int(np.frombuffer(cells[b"size_nm3"], "<u4")[0]),
        "area": int(np.frombuffer(cells[b"area_nm2"], "<u4")[0]),
        "max_dt": int(np.frombuffer(cells[b"max_dt_nm"], "<u2")[0]),
        "mean_dt": float(np.frombuffer(cells[b"mean_dt_nm"], "<f2")[0]),
        "rep": tuple(int(v) for v in np.frombuffer(cells[b"rep_coord_nm"], "<u2")),
        "intersect": np.frombuffer(cells[b"chunk_intersect_count"], "<u2").reshape(2, 3).tolist(),
        "pca": np.frombuffer(cells[b"pca"], "<f2").reshape(-1, 3),
        "pca_val": np.frombuffer(cells[b"pca_val"], "<f4"),
    }


# ---- volumes -------------------------------------------------------------------------------

def voronoi_labels(shape, n_labels, seed, background=0.1, noise=0.02) -> np.ndarray:
    """Blobs around random seeds (some voxels background, a few single stray voxels), with
    large random uint64 ids."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, bool)
    seeds[tuple(rng.integers(0, s, n_labels) for s in shape)] = True
    _, nearest = ndimage.distance_transform_edt(~seeds, return_indices=True)
    numbers = np.zeros(shape, np.int64)
    numbers[seeds] = np.arange(1, seeds.sum() + 1)
    labels = numbers[tuple(nearest)]
    stray = rng.random(shape) < noise
    labels[stray] = rng.integers(1, seeds.sum() + 1, stray.sum())
    labels[rng.random(shape) < background] = 0
    distinct = rng.permutation(np.unique(rng.integers(1, 1 << 40, 2 * seeds.sum())))[:seeds.sum()]
    ids = np.concatenate([[0], distinct | (2 << 56)]).astype(np.uint64)  # a layer-2-like high byte
    return ids[labels]


@pytest.mark.parametrize("resolution", ANISOTROPIC + [(3.3, 4.5, 45)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_volumes_match_reference(resolution, seed):
    labels = voronoi_labels((20, 24, 12), 60, seed)
    rows = assert_matches_reference(labels, resolution)
    assert len(rows) > 50


@pytest.mark.parametrize("resolution", ANISOTROPIC)
def test_many_small_labels_match_reference(resolution):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 300, (10, 12, 9)).astype(np.uint64) * np.uint64(1 << 50)
    assert_matches_reference(labels, resolution)


@pytest.mark.parametrize("resolution", [(100, 100, 100), (200, 250, 300)])
def test_random_volumes_with_pca_on_tiny_nodes_match_reference(resolution):
    """Large voxels: nodes of 1, 2, 3 voxels get PCA too (the N < 3 rule, lines, planes)."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 120, (9, 10, 8)).astype(np.uint64)
    rows = assert_matches_reference(labels, resolution)
    sizes = [decoded(cells)["size"] for cells in rows.values()]
    assert min(sizes) <= 2


def test_partial_chunk_at_far_edge_matches_reference():
    rng = np.random.default_rng(3)
    chunk_size = (16, 16, 8)
    watershed = rng.integers(1, 40, (11, 16, 5)).astype(np.uint64) * np.uint64(1000)
    svs = np.unique(watershed)
    l2ids = (np.arange(len(svs)) // 3 + 1).astype(np.uint64) * np.uint64(7 << 40)
    labels = chunk_volume(watershed, chunk_size, svs, l2ids)
    assert labels.shape == chunk_size and labels.dtype == np.uint64 and labels.flags.c_contiguous
    assert not labels[11:].any() and not labels[:, :, 5:].any()
    assert_matches_reference(labels, (8, 8, 40))
    # the padding is background: a node on the cut face has area and finite distances there
    row = decoded(node_row(labels, (8, 8, 40), int(labels[10, 0, 0])))
    assert row["intersect"][1][0] == 0  # nothing at x == 15


def test_nodes_touching_every_face_match_reference():
    labels = np.full((8, 9, 10), 5, np.uint64)
    labels[2:6, 3:6, 3:7] = 9          # an interior node
    labels[0, 0, 0] = 0
    rows = assert_matches_reference(labels, (8, 8, 40))
    frame = decoded(rows[b"%020d" % 5])
    assert frame["intersect"] == [[9 * 10 - 1, 8 * 10 - 1, 8 * 9 - 1], [9 * 10, 8 * 10, 8 * 9]]
    inner = decoded(rows[b"%020d" % 9])
    assert inner["intersect"] == [[0, 0, 0], [0, 0, 0]]
    # the inner box's surface, in nm²: 2 * (3*4 * 8*40 + 4*4 * 8*40 + 4*3 * 8*8)
    assert inner["area"] == 2 * (12 * 320 + 16 * 320 + 12 * 64)


def test_node_above_10000_voxels_matches_reference():
    labels = np.zeros((40, 40, 20), np.uint64)
    labels[2:38, 5:35, 1:13] = 3        # 12,960 voxels
    labels[10:20, 10:20, 5:9] = 4
    rows = assert_matches_reference(labels, (8, 8, 40))
    big = decoded(rows[b"%020d" % 3])
    assert big["size"] == 36 * 30 * 12 - 10 * 10 * 4
    # the singular values are those of the full data scaled to 10,000 points
    points = np.argwhere(labels == 3) * np.array([8.0, 8, 40])
    full = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(big["pca_val"], full * np.sqrt(10_000 / big["size"]), rtol=1e-6)


def test_single_label_chunk_without_boundary():
    """No voxel of another label anywhere: edt gives infinity, the cells say 0."""
    labels = np.full((6, 5, 4), 77, np.uint64)
    rows = assert_matches_reference(labels, (8, 8, 40))
    row = decoded(rows[b"%020d" % 77])
    assert row["max_dt"] == 0 and row["mean_dt"] == 0 and row["rep"] == (0, 0, 0) and row["area"] == 0


def test_empty_chunk_has_no_rows():
    assert row_cells(chunk_features(np.zeros((4, 4, 4), np.uint64), (8, 8, 40))) == []


# ---- hand-worked values ----------------------------------------------------------------------

def isolated(shape, voxels, node_id=42) -> np.ndarray:
    labels = np.zeros(shape, np.uint64)
    labels[tuple(np.array(voxels).T)] = node_id
    return labels


def test_bar_of_three_picks_the_middle_voxel():
    labels = isolated((9, 9, 9), [(2, 5, 5), (3, 5, 5), (4, 5, 5)])
    row = decoded(node_row(labels, (8, 8, 40), 42))
    assert row["size"] == 3 and row["max_dt"] == 8 and row["rep"] == (3, 5, 5)
    assert row["mean_dt"] == 8.0
    # faces: 2 ends of 8*40, 3 voxels * 2 sides along y of 8*40, 3 * 2 along z of 8*8
    assert row["area"] == 2 * 320 + 6 * 320 + 6 * 64
    assert_matches_reference(labels, (8, 8, 40))


def test_bar_of_four_ties_to_the_smaller_flat_index():
    # d = (1.5, .5, .5, 1.5) voxels: w = (0, 2/3, 2/3, 0); equal dt: voxels 1 and 2 tie
    labels = isolated((9, 9, 9), [(2, 5, 5), (3, 5, 5), (4, 5, 5), (5, 5, 5)])
    assert decoded(node_row(labels, (8, 8, 40), 42))["rep"] == (3, 5, 5)
    assert_matches_reference(labels, (8, 8, 40))


def test_cube_ties_to_its_lowest_corner():
    # all 8 voxels are equally far from the centre: w = 0 everywhere, every score 0
    corners = [(x, y, z) for x in (3, 4) for y in (3, 4) for z in (3, 4)]
    labels = isolated((9, 9, 9), corners)
    for resolution in ANISOTROPIC + [(10, 10, 10)]:
        assert decoded(node_row(labels, resolution, 42))["rep"] == (3, 3, 3)
        assert_matches_reference(labels, resolution)


def test_tie_is_broken_in_c_order_of_the_xyz_array():
    # a symmetric pair: tie at score 0; C order picks x=2 first, Fortran order would pick (3, 2, 1)
    labels = isolated((6, 6, 6), [(2, 3, 1), (3, 2, 1)])
    assert decoded(node_row(labels, (8, 8, 40), 42))["rep"] == (2, 3, 1)
    assert_matches_reference(labels, (8, 8, 40))


def test_single_voxel_node():
    labels = isolated((5, 5, 5), [(0, 4, 2)])
    row = decoded(node_row(labels, (8, 8, 40), 42))
    assert row["size"] == 1 and row["rep"] == (0, 4, 2) and row["max_dt"] == 8
    assert row["intersect"] == [[1, 0, 0], [0, 1, 0]]
    assert row["pca"].shape == (0, 3) and row["pca_val"].shape == (0,)
    # faces on the chunk border add nothing: 1 along x (x=1), 1 along y (y=3), 2 along z
    assert row["area"] == 320 + 320 + 2 * 64
    assert_matches_reference(labels, (8, 8, 40))


def test_single_voxel_with_pca():
    # 250³ nm³ = 0.0156 µm³: PCA of one point taken three times, all singular values 0
    labels = isolated((5, 5, 5), [(2, 2, 2)])
    row = decoded(node_row(labels, (250, 250, 250), 42))
    assert row["pca_val"].tolist() == [0, 0, 0]
    assert row["pca"].tolist() == np.eye(3).tolist()  # eigh's basis for a zero matrix: x, y, z
    assert_matches_reference(labels, (250, 250, 250))


def test_two_voxels_are_taken_three_times():
    labels = isolated((5, 5, 5), [(1, 2, 2), (2, 2, 2)])
    row = decoded(node_row(labels, (200, 200, 200), 42))  # 2 * 0.008 µm³
    # 6 points at ±100 nm along x: sqrt(6 * 100²)
    assert row["pca_val"][0] == np.float32(np.sqrt(6) * 100)
    assert row["pca"][0].tolist() == [1, 0, 0]
    assert_matches_reference(labels, (200, 200, 200))


def test_axis_sign_makes_the_largest_entry_positive():
    # a diagonal pair: the axis is ±(1, -1, 0)/√2; the entries are equal in magnitude as stored,
    # the first wins
    labels = isolated((5, 5, 5), [(1, 2, 0), (2, 1, 0)])
    row = decoded(node_row(labels, (200, 200, 200), 42))
    axis = row["pca"][0].astype(np.float64)
    assert axis[0] > 0 and axis[1] < 0 and axis[2] == 0 and axis[0] == -axis[1]
    assert_matches_reference(labels, (200, 200, 200))
    # and an axis whose largest entry is negative in the data gets flipped
    labels = isolated((9, 9, 9), [(1, 4, 0), (2, 2, 0), (3, 0, 0)])  # along (1, -2, 0)
    axis = decoded(node_row(labels, (200, 200, 200), 42))["pca"][0].astype(np.float64)
    assert axis[1] > 0 and axis[0] < 0
    assert_matches_reference(labels, (200, 200, 200))


@pytest.mark.parametrize("resolution, below, at", [((100, 100, 100), 9, 10), ((8, 8, 40), 3906, 3907)])
def test_pca_threshold_of_one_hundredth_of_a_cubic_micron(resolution, below, at):
    labels = np.zeros((40, 40, 16), np.uint64)
    flat = labels.reshape(-1)
    flat[:below] = 1
    flat[5000:5000 + at] = 2
    rows = assert_matches_reference(labels, resolution)
    small, large = decoded(rows[b"%020d" % 1]), decoded(rows[b"%020d" % 2])
    assert small["size"] == below and small["pca"].shape == (0, 3) and small["pca_val"].shape == (0,)
    assert large["size"] == at and large["pca"].shape == (3, 3) and large["pca_val"].shape == (3,)


def test_cells_bytes_and_order():
    labels = isolated((5, 5, 5), [(1, 1, 1), (1, 2, 1)], node_id=(2 << 56) | 12345)
    [(key, cells)] = row_cells(chunk_features(labels, (8, 8, 40)))
    assert key == b"%020d" % ((2 << 56) | 12345) and len(key) == 20
    assert [q for q, _ in cells] == list(QUALIFIERS)
    assert [len(v) for _, v in cells] == [4, 4, 2, 2, 6, 12, 0, 0]
    assert dict(cells)[b"size_nm3"] == (2).to_bytes(4, "little")
    assert dict(cells)[b"rep_coord_nm"] == b"\x01\x00\x01\x00\x01\x00"


def test_max_dt_wraps_at_16_bits():
    labels = isolated((3, 3, 3), [(1, 1, 1)], node_id=8)
    row = decoded(node_row(labels, (70000, 70000, 70000), 8))
    assert row["max_dt"] == 70000 % 65536
    assert_matches_reference(labels, (70000, 70000, 70000))


# ---- the chunk volume ----------------------------------------------------------------------

def test_chunk_volume_maps_supervoxels_to_parents_and_pads():
    watershed = np.array([[[0, 5, 6], [7, 8, 5]]], np.uint64, order="F")  # (1, 2, 3), Fortran like cloud-volume
    svs = np.array([5, 7, 8], np.uint64)
    l2ids = np.array([50, 70, 0], np.uint64)  # 8 has no parent; 6 is not listed
    out = chunk_volume(watershed, (2, 3, 4), svs, l2ids)
    expected = np.zeros((2, 3, 4), np.uint64)
    expected[0, :2, :3] = [[0, 50, 0], [70, 0, 50]]
    assert out.tolist() == expected.tolist()
    assert out.tolist() == reference_chunk_volume(watershed, (2, 3, 4), {5: 50, 7: 70, 8: 0}).tolist()


def test_supervoxels_without_parent_have_no_row():
    rng = np.random.default_rng(5)
    watershed = rng.integers(0, 30, (10, 10, 6)).astype(np.uint64) + np.uint64(1 << 33)
    watershed[watershed == np.uint64(1 << 33)] = 0
    svs = np.unique(watershed[watershed != 0])
    l2ids = (np.arange(len(svs)) % 7).astype(np.uint64) * np.uint64(9 << 40)  # every 7th: parent 0
    keep = svs[::2]                                                              # others: unlisted
    labels = chunk_volume(watershed, (10, 12, 6), keep, l2ids[::2])
    parent_of = dict(zip(keep.tolist(), l2ids[::2].tolist()))
    assert labels.tolist() == reference_chunk_volume(watershed, (10, 12, 6), parent_of).tolist()
    rows = assert_matches_reference(labels, (8, 8, 40))
    assert b"%020d" % 0 not in rows
    assert set(rows) == {b"%020d" % p for p in set(parent_of.values()) if p}


def test_chunk_volume_refuses_a_block_larger_than_the_chunk():
    with pytest.raises(ValueError):
        chunk_volume(np.zeros((3, 2, 2), np.uint64), (2, 2, 2), np.zeros(0, np.uint64), np.zeros(0, np.uint64))


# ---- meta and version rows -------------------------------------------------------------------

def test_meta_and_version_rows():
    rows = dict(meta_cells("my_graph", "graphene://https://server/segmentation/table/my_graph", 1_700_000_000_999))
    assert list(rows) == [b"meta", b"version"]
    [(qualifier, value)] = rows[b"meta"]
    assert qualifier == b"meta"
    assert pickle.loads(value) == {"graph_id": "my_graph",
                                   "cv_path": "graphene://https://server/segmentation/table/my_graph",
                                   "timestamp": "2023-11-14 22:13:20"}
    assert rows[b"version"] == [(b"version", __version__.encode())]
    assert pickle.loads(dict(meta_cells("g", None, 0))[b"meta"][0][1])["cv_path"] == ""


@pytest.mark.parametrize("block_shape", [(9, 7, 5), (10, 8, 6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunk_ranks_equal_the_volume_then_its_ranks(seed, block_shape):
    """The pipeline's path (label numbers + their supervoxel ids -> ranks) gives exactly the
    ids and ranks of chunk_volume followed by the ranking, padding and orphans included."""
    from beam_ingest.l2cache.chunks import numbered
    from beam_ingest.l2cache.features import chunk_ranks
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 40, block_shape).astype(np.uint64) * np.uint64(1 << 40)
    svs = np.unique(block)[1:][rng.random(len(np.unique(block)) - 1) < 0.8]  # some without a parent
    l2 = (np.uint64(1 << 57) + rng.integers(1, 9, len(svs)).astype(np.uint64))
    ids, ranks = chunk_ranks(*numbered(block), (10, 8, 6), svs, l2)
    volume = chunk_volume(block, (10, 8, 6), svs, l2)
    present, rank_in_present = np.unique(volume, return_inverse=True)
    want_ids = present[present != 0]
    want_ranks = rank_in_present.reshape(volume.shape) + (0 if present[0] == 0 else 1)
    assert np.array_equal(ids, want_ids) and np.array_equal(ranks, want_ranks)
    assert ranks.shape == (10, 8, 6) and ranks.dtype == np.uint16


def test_more_nodes_than_16_bit_ranks():
    """Beyond 65,535 nodes in a chunk the ranks are uint32, and every node still gets its
    row: here each voxel is a node of its own."""
    from beam_ingest.l2cache.chunks import numbered
    from beam_ingest.l2cache.features import chunk_ranks
    shape = (40, 40, 42)  # 67,200 voxels
    block = np.arange(1, np.prod(shape) + 1, dtype=np.uint64).reshape(shape) * np.uint64(3)
    svs = block.ravel().copy()
    l2 = svs + np.uint64(1 << 57)
    ids, ranks = chunk_ranks(*numbered(block), shape, svs, l2)
    assert ranks.dtype == np.uint32 and ranks.max() == len(ids) == np.prod(shape)
    found = chunk_features(block + np.uint64(1 << 57), (8, 8, 40))
    assert np.array_equal(found.ids, ids) and np.all(found.size == 1)
    assert np.array_equal(found.rep_coord, np.argwhere(np.ones(shape, bool)))
    assert np.all(found.max_dt == 8)  # the nearest other label: a neighbour along x or y


@pytest.mark.parametrize("exact_limit", [features.EXACT_LIMIT, 0])
@pytest.mark.parametrize("resolution", [(100, 100, 100), (200, 250, 300), (33.3, 45.5, 450)])
def test_voronoi_nodes_with_pca_match_reference(monkeypatch, resolution, exact_limit):
    """Large voxels, so that most nodes get PCA. With the limit at 0, as for a chunk where N *
    sum(x_i x_j) could overflow int64 (~2**27 voxels), the scatter matrices come from points
    centred in floating point and every node's singular values from its projected points:
    the same cells."""
    monkeypatch.setattr(features, "EXACT_LIMIT", exact_limit)
    for seed in (4, 5):
        rows = assert_matches_reference(voronoi_labels((20, 24, 12), 60, seed), resolution)
        assert sum(len(cells[b"pca"]) > 0 for cells in rows.values()) > 40
    assert_matches_reference(np.pad(np.full((12, 10, 6), 9, np.uint64), 1), resolution)


@pytest.mark.parametrize("shape", [(1, 5, 7), (5, 1, 7), (5, 7, 1), (1, 1, 9), (2, 3, 1), (1, 1, 1), (9, 1, 1),
                                   (3, 17, 19)])
def test_flat_and_thin_boxes_match_reference(shape):
    """Boxes one voxel thin along some axes: no neighbours along them, runs of one voxel,
    flat neighbours that wrap across rows (which are not neighbours)."""
    rng = np.random.default_rng(sum(shape))
    for resolution in [(8, 8, 40), (100, 100, 100)]:
        for labels_count in (1, 2, 5):
            labels = rng.integers(0, labels_count + 1, shape).astype(np.uint64) * np.uint64(1 << 50)
            assert_matches_reference(labels, resolution)


def warped_labels(shape, n_labels, seed, warp=3.0) -> np.ndarray:
    """Nodes like real layer-2 nodes: the nearest of a few seeds over a grid warped by smooth
    noise, so boundaries wave and a node's runs along z break and rejoin."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64)
    for axis in range(3):
        grid[axis] += ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * warp / 0.1
    seeds = rng.random((n_labels, 3)) * np.asarray(shape)
    distance = ((grid[None] - seeds[:, :, None, None, None]) ** 2).sum(axis=1)
    ids = np.concatenate([[0], rng.choice(1 << 40, n_labels - 1, replace=False) | (2 << 56)]).astype(np.uint64)
    return ids[np.argmin(distance, axis=0)]


@pytest.mark.parametrize("seed", [0, 1])
def test_warped_nodes_match_reference(seed):
    """Tens of irregular nodes whose runs along z are broken by the others: the run sums,
    the same-neighbour counts and the run-middle sample all meet such shapes."""
    labels = warped_labels((24, 20, 30), 12, seed)
    assert_matches_reference(labels, (8, 8, 40))
    assert_matches_reference(labels, (40, 8, 8))


def test_runs_summed_without_packing_match_reference(monkeypatch):
    """The same-neighbour counts of runs too long to pack two to a uint32 (Z >= 2**16) are
    summed apart, in int64: forced here by lowering the limit."""
    monkeypatch.setattr(features, "PACKED_RUN_LIMIT", 1)
    for seed in (0, 1):
        assert_matches_reference(voronoi_labels((20, 24, 12), 60, seed), (8, 8, 40))
        assert_matches_reference(warped_labels((24, 20, 30), 12, seed), (4, 6, 40))


@pytest.mark.parametrize("resolution", [(2e8, 2e8, 2e8), (1.5e9, 1.5e9, 1.5e9)])
def test_distances_too_large_for_32_bit_run_sums_match_reference(resolution):
    """Voxels so large that a run's distances could pass 2**32 (and a single
    distance 2**31 at 1.5e9 nm): the run sums are taken in int64, the distances kept as int64."""
    deep = np.full((10, 6, 12), 5, np.uint64)
    deep[0] = 0  # distances grow along x, to 9 voxels: a run along z sums 12 of them
    for labels in (voronoi_labels((20, 24, 12), 60, 3), deep):
        assert_the_cells_but_pca_match_reference(labels, resolution)
    distances = features.truncated_distance_transform(deep, resolution)
    assert distances.dtype == (np.int64 if resolution[0] > 1e9 else np.int32)
    assert int(distances.max()) * 12 >= 1 << 32
    # the cell (float16) is inf at such sizes: the exact mean is compared before the cast
    found = chunk_features(deep, resolution)
    assert found.mean_dt[0] == distances[deep != 0].astype(np.int64).sum() / np.count_nonzero(deep)


def assert_the_cells_but_pca_match_reference(labels, resolution):
    rows = cells_of(labels, resolution)
    expected = reference_rows(labels, resolution)
    assert list(rows) == list(expected)
    for key, cells in expected.items():
        for qualifier in (b"size_nm3", b"max_dt_nm", b"mean_dt_nm", b"rep_coord_nm", b"chunk_intersect_count"):
            assert rows[key][qualifier] == cells[qualifier], (key, qualifier)


def test_features_follow_the_order_of_the_ids_given():
    """`ranked_features` keeps the order of the ids it is given (the pipeline passes them
    sorted; `chunk_features` numbers by first appearance and sorts at the end)."""
    labels = voronoi_labels((12, 10, 8), 20, 7)
    sorted_features = chunk_features(labels, (8, 8, 40))
    numbers, ids = features._numbered_labels(labels)
    assert not np.all(np.diff(ids.astype(np.float64)) > 0)  # first-appearance order, not sorted
    unsorted = features.ranked_features(ids, numbers, (8, 8, 40))
    order = np.argsort(ids)
    for field in ("ids", "size", "area", "max_dt", "mean_dt", "rep_coord", "intersect", "pca_val"):
        assert np.array_equal(getattr(unsorted, field)[order], getattr(sorted_features, field)), field
