"""Features of every layer-2 node of one chunk, for CAVE's L2 cache (docs/l2cache.md).

`chunk_features` computes all nodes of a chunk at once: one distance transform of the chunk,
then a fixed number of numpy passes whatever the number of nodes. Few of them touch every
voxel: the box is cut into runs along z (its contiguous axis) of one node each, and prefix
sums give each run's total distance and its voxels whose +x / +y neighbour is the same node.
Everything else is per run (exact integer moments, areas, the farthest voxel from a node's
mean) or per candidate voxel (the representative voxel), reduced per node with `ufunc.at`,
and one batched `eigh` over every node's 3x3 scatter matrix. `row_cells` and `meta_cells`
give the table's cells as bytes; `chunk_volume` builds the label volume from a chunk's
watershed block and the supervoxels' layer-2 parents.
"""
from __future__ import annotations

import dataclasses
import datetime
import pickle

import edt
import fastremap
import numpy as np

from .. import __version__
from ..store.ragged import decimal_keys

FAMILY = "0"                            # every cell of the cache
FAMILIES = ("0", "1", "2", "3", "4")    # the families the table is created with
META_ROW = b"meta"
VERSION_ROW = b"version"
PICKLE_PROTOCOL = 4                     # fixed, so the meta cell does not change with Python

PCA_MIN_UM3 = 0.01                      # smaller nodes get empty `pca` / `pca_val` cells
PCA_SAMPLE_POINTS = 10_000              # singular values are scaled to this many points

# qualifier -> little-endian dtype of its cell
CELL_DTYPES = {
    b"size_nm3": "<u4",
    b"area_nm2": "<u4",
    b"max_dt_nm": "<u2",
    b"mean_dt_nm": "<f2",
    b"rep_coord_nm": "<u2",
    b"chunk_intersect_count": "<u2",
    b"pca": "<f2",
    b"pca_val": "<f4",
}


@dataclasses.dataclass(frozen=True)
class Features:
    """One chunk's layer-2 nodes as columns, ascending id: row i describes node `ids[i]`."""
    ids: np.ndarray        # uint64 (n,)
    size: np.ndarray       # int64 (n,): voxels in the chunk
    area: np.ndarray       # float64 (n,): nm²
    max_dt: np.ndarray     # int64 (n,): nm, each voxel's distance truncated
    mean_dt: np.ndarray    # float64 (n,): nm
    rep_coord: np.ndarray  # int64 (n, 3): chunk-local voxel x, y, z
    intersect: np.ndarray  # int64 (n, 2, 3): voxels at [[x==0, y==0, z==0], [x==X-1, y==Y-1, z==Z-1]]
    has_pca: np.ndarray    # bool (n,): False below 0.01 µm³, whose `pca` cells are empty
    pca: np.ndarray        # float64 (n, 3, 3): unit axes as rows, decreasing singular value; 0 where not has_pca
    pca_val: np.ndarray    # float64 (n, 3): singular values, decreasing; 0 where not has_pca

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, order: np.ndarray) -> "Features":
        """The nodes in `order` (indices of rows)."""
        return Features(**{field.name: getattr(self, field.name)[order] for field in dataclasses.fields(self)})


def chunk_features(labels: np.ndarray, resolution) -> Features:
    """Features of every non-zero label of `labels`, a chunk's full (X, Y, Z) box of layer-2
    ids (0 = background or outside the dataset), with voxels of `resolution` nm (x, y, z)."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind != "u":
        raise ValueError(f"labels must be a 3-D unsigned integer array, not {labels.dtype} {labels.shape}")
    numbers, ids = _numbered_labels(labels)
    features = ranked_features(ids, numbers, resolution)
    return features.take(np.argsort(ids))


def ranked_features(ids: np.ndarray, ranks: np.ndarray, resolution) -> Features:
    """`chunk_features` of a box given as the ids and each voxel's 1-based rank among them
    (0 = background), as `chunk_ranks` gives them; the features are in the order of `ids`."""
    resolution = np.asarray(resolution, np.float64).reshape(3)
    n = len(ids)
    ranks = np.ascontiguousarray(ranks)
    box = _Box(ranks.ravel(), ranks.shape)
    dt = truncated_distance_transform(ranks, resolution).ravel()
    # no distance in the box exceeds its diagonal
    runs = _z_runs(box, dt, largest_dt=float(np.linalg.norm(np.multiply(ranks.shape, resolution))))
    size, sums, second = _integer_moments(runs, n)
    total_dt = np.zeros(n, np.int64)
    np.add.at(total_dt, runs.node, runs.dt_sum)
    rep_coord, max_dt = representative_voxels(box, dt, runs, size, sums, resolution)
    intersect = face_counts(ranks, n)
    has_pca = ~(size * np.prod(resolution) / 1e9 < PCA_MIN_UM3)
    pca, pca_val = principal_axes(box, size, has_pca, resolution, sums, second)
    return Features(
        ids=ids,
        size=size,
        area=surface_areas(runs, size, intersect, ranks.shape, resolution),
        max_dt=max_dt,
        mean_dt=total_dt / size,  # an exact integer total: the float mean of the values
        rep_coord=rep_coord,
        intersect=intersect,
        has_pca=has_pca,
        pca=pca,
        pca_val=pca_val,
    )


def _numbered_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box renumbered 1, 2, ... by first appearance (0 = background stays 0; fastremap's
    renumbering, in the smallest unsigned dtype) and the id of each number, 1-based."""
    numbered, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=False)
    originals = np.fromiter(mapping.keys(), np.uint64, len(mapping))
    numbers = np.fromiter(mapping.values(), np.int64, len(mapping))
    ids = np.zeros(int(numbers.max(initial=0)), np.uint64)
    nonzero = originals != 0
    ids[numbers[nonzero] - 1] = originals[nonzero]
    return numbered, ids


def truncated_distance_transform(labels: np.ndarray, resolution) -> np.ndarray:
    """Each voxel's distance in nm to the nearest voxel of another label (background
    included; the chunk's border is no boundary), truncated to an integer (int32: a chunk's
    distances are far below 2**31 nm; int64 beyond).

    A chunk holding a single label and no background has no boundary at all (edt gives
    infinity); its distances count as 0, which is what PCGL2Cache's integer cast of infinity
    yields."""
    distance = edt.edt(labels, anisotropy=tuple(float(r) for r in resolution), black_border=False, parallel=1)
    largest = distance.max() if distance.size else 0
    if np.isinf(largest):
        distance[np.isinf(distance)] = 0
        largest = distance.max()
    return distance.astype(np.int32 if largest < 2**31 - 1 else np.int64)


@dataclasses.dataclass(frozen=True)
class _Box:
    """A chunk's box of ranks (1-based node numbers, 0 = background), flat in C order of the
    (x, y, z) array."""
    flat: np.ndarray  # unsigned integers, contiguous
    shape: tuple      # X, Y, Z

    def coords(self, index: np.ndarray) -> tuple:
        """x, y, z (int64 each) of the voxels at flat `index`."""
        _, y_size, z_size = self.shape
        if len(self.flat) < 1 << 32:  # 32-bit division is several times faster
            index = index.astype(np.uint32)
            y_size, z_size = np.uint32(y_size), np.uint32(z_size)
        line = index // z_size
        x = line // y_size
        y, z = line - x * y_size, index - line * z_size
        return x.astype(np.int64), y.astype(np.int64), z.astype(np.int64)

    def voxels(self, nodes: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Every voxel of the nodes where the bool (n,) `nodes` is set, in C order: its node
        index (0-based) and its x, y, z."""
        wanted = np.concatenate([[False], nodes])[self.flat]
        index = np.flatnonzero(wanted)
        return self.flat[index].astype(np.intp) - 1, self.coords(index)



@dataclasses.dataclass(frozen=True)
class _Runs:
    """Every run of one node's voxels along z (the box's contiguous axis: a line of fixed x,
    y), background runs left out, in flat order."""
    start: np.ndarray    # int64: flat index of the run's first voxel
    length: np.ndarray   # int64: voxels in the run
    node: np.ndarray     # intp: 0-based node index
    x: np.ndarray        # int64
    y: np.ndarray        # int64
    z: np.ndarray        # int64: the first voxel's z; the run covers z .. z + length - 1
    dt_sum: np.ndarray   # int64: sum of the truncated distances over the run
    same_x: np.ndarray   # int64: voxels of the run whose +x neighbour is of the same node
    same_y: np.ndarray   # int64: the same for +y


def _z_runs(box: _Box, dt: np.ndarray, largest_dt: float) -> _Runs:
    """The runs along z: one starts at z == 0 and wherever the rank changes. Sums over each
    (of `dt`, at most `largest_dt`, and of the same-neighbour flags) are differences of
    prefix sums."""
    if len(box.flat) == 0:
        empty = np.zeros(0, np.int64)
        return _Runs(empty, empty, empty.astype(np.intp), empty, empty, empty, empty, empty, empty)
    starts_here = np.empty(len(box.flat), bool)
    starts_here[0] = True
    np.not_equal(box.flat[1:], box.flat[:-1], out=starts_here[1:])
    starts_here[::box.shape[2]] = True
    start = np.flatnonzero(starts_here)
    node = box.flat.take(start).astype(np.intp) - 1
    labelled = node >= 0
    ends = np.append(start[1:], len(box.flat))[labelled]  # one past each labelled run's last voxel
    start, node = start[labelled], node[labelled]
    x, y, z = box.coords(start)
    if box.shape[2] * largest_dt < 1 << 32 and dt.dtype == np.int32:
        dt_sum = _run_sums(dt.view(np.uint32), start, ends)  # the same bits: no cast
    else:
        dt_sum = _run_sums(dt.astype(np.int64), start, ends)
    same_x, same_y = _same_neighbours(box, start, ends)
    return _Runs(start, ends - start, node, x, y, z, dt_sum, same_x, same_y)


def _run_sums(values: np.ndarray, start: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per run, the sum of `values` from `start` to `ends` - 1 (int64): differences of prefix
    sums in the dtype of `values`. A uint32 prefix wraps, but a run's difference is still
    exact while the run's own sum is below 2**32; it is twice as fast as int64."""
    prefix = np.empty(len(values) + 1, values.dtype)
    prefix[0] = 0
    np.cumsum(values, out=prefix[1:])
    return (prefix.take(ends) - prefix.take(start)).astype(np.int64)


# Runs shorter than this have both neighbour counts packed in one uint32 prefix sum.
PACKED_RUN_LIMIT = 1 << 16


def _same_neighbours(box: _Box, start: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run (voxels `start` to `ends` - 1 of a z line), how many of its voxels have a +x
    neighbour, and a +y neighbour, of the same rank. Both counts come from one sum of
    (same +x) + 2**16 (same +y) in uint32, each count being below 2**16 (a run is at most
    Z voxels)."""
    ranks = box.flat.reshape(box.shape)
    packed = box.shape[2] < PACKED_RUN_LIMIT
    along_x = np.empty(box.shape, np.uint32 if packed else np.int64)
    along_y = np.empty_like(along_x)
    along_x[-1], along_y[:, -1] = 0, 0
    np.equal(ranks[:-1], ranks[1:], out=along_x[:-1], casting="unsafe")
    np.equal(ranks[:, :-1], ranks[:, 1:], out=along_y[:, :-1], casting="unsafe")
    if not packed:
        return _run_sums(along_x.ravel(), start, ends), _run_sums(along_y.ravel(), start, ends)
    along_y <<= np.uint32(16)
    along_x += along_y
    both = _run_sums(along_x.ravel(), start, ends)
    return both & 0xFFFF, both >> 16


def _integer_moments(runs: _Runs, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node: voxel count (n,), sum(x_i) (n, 3) and sum(x_i x_j) (n, 3, 3), exact in int64,
    from the runs: along a run from z = a to b, sum(z) and sum(z²) are differences of the
    prefix sums k(k+1)/2 and k(k+1)(2k+1)/6 at b and a - 1, and x, y are constant."""
    count, x, y = runs.length, runs.x, runs.y
    before, last = runs.z - 1, runs.z + count - 1
    sum_z = last * (last + 1) // 2 - before * (before + 1) // 2
    sum_zz = last * (last + 1) * (2 * last + 1) // 6 - before * (before + 1) * (2 * before + 1) // 6
    sum_x = count * x
    sum_y = count * y

    def per_node(values):
        out = np.zeros(n, np.int64)
        np.add.at(out, runs.node, values)
        return out

    size = per_node(count)
    first = np.stack([per_node(sum_x), per_node(sum_y), per_node(sum_z)], axis=1)
    second = np.empty((n, 3, 3), np.int64)
    second[:, 0, 0] = per_node(sum_x * x)
    second[:, 1, 1] = per_node(sum_y * y)
    second[:, 2, 2] = per_node(sum_zz)
    second[:, 0, 1] = second[:, 1, 0] = per_node(sum_x * y)
    second[:, 0, 2] = second[:, 2, 0] = per_node(sum_z * x)
    second[:, 1, 2] = second[:, 2, 1] = per_node(sum_z * y)
    return size, first, second


def representative_voxels(box: _Box, dt: np.ndarray, runs: _Runs, size: np.ndarray, sums: np.ndarray,
                          resolution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the voxel maximising `dt * (1 - d / max d)` (d = nm from the node's mean
    voxel), the smallest C-order flat index among equal scores, as (n, 3) x, y, z; and, in
    passing, the node's largest dt (n,).

    Only the voxels that can win are scored. Along a run (fixed x, y) d is largest at one of
    its two ends, so max d is taken over the run ends. A score is at most the voxel's dt, so
    once a node's best score is known to be at least B, voxels of dt below B can neither win
    nor tie: B is the best score among the middle voxels of every `SAMPLE_RUNS`-th run, and
    only voxels of dt >= B are scored then (all of a node's voxels if no run of it was
    sampled). Its largest dt is at least B, so those voxels hold the largest dt too. Scores
    are computed with the same float operations in the same order as one per voxel would
    be: the winners are the same."""
    n = len(size)
    mean = sums / np.maximum(size, 1)[:, None]  # exact integer sums: the float mean of the voxels
    mean = [np.ascontiguousarray(mean[:, axis]) for axis in range(3)]
    run_mean = [axis_mean.take(runs.node) for axis_mean in mean]
    # the end farther from the mean along z (float subtraction is monotone: the same winner)
    first_z, last_z = runs.z, runs.z + runs.length - 1
    far_z = np.where(np.abs(first_z - run_mean[2]) >= np.abs(last_z - run_mean[2]), first_z, last_z)
    farthest = np.zeros(n)
    np.maximum.at(farthest, runs.node, _distances((runs.x, runs.y, far_z), run_mean, resolution))
    single = size == 1  # w is 0/0 there: the node's only voxel wins whatever its score

    def scores(index, node):
        distance = _distances(box.coords(index), [axis_mean.take(node) for axis_mean in mean], resolution)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(single.take(node), 0.0, dt.take(index) * (1 - distance / farthest.take(node)))

    sampled = slice(None, None, SAMPLE_RUNS)
    middle = runs.start[sampled] + runs.length[sampled] // 2
    at_least = np.full(n, -np.inf)
    np.maximum.at(at_least, runs.node[sampled], scores(middle, runs.node[sampled]))
    # dt is an integer: dt >= B exactly when dt >= ceil(B). A lower bound is always safe, so
    # the bounds are clipped into dt's dtype; background (rank 0) is never a candidate.
    bound = np.empty(n + 1, dt.dtype)
    bound[0] = np.iinfo(dt.dtype).max
    bound[1:] = np.clip(np.ceil(at_least), -1, np.iinfo(dt.dtype).max // 2)
    candidates = np.flatnonzero(dt >= bound.take(box.flat))
    node = box.flat.take(candidates).astype(np.intp) - 1
    max_dt = np.zeros(n, dt.dtype)  # ufunc.at is fast only without a cast
    np.maximum.at(max_dt, node, dt.take(candidates))
    score = scores(candidates, node)
    best = np.full(n, -np.inf)
    np.maximum.at(best, node, score)
    winner = score == best.take(node)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, node[winner], candidates[winner])
    return np.stack(np.unravel_index(first, box.shape), axis=1).astype(np.int64), max_dt.astype(np.int64)


# Every this many runs' middle voxel is scored first, for a lower bound of each node's best.
SAMPLE_RUNS = 4


def _distances(coords: tuple, mean: list, resolution: np.ndarray) -> np.ndarray:
    """nm from each voxel to `mean` (its node's mean voxel, one row per voxel): the same
    operations, in the same order, as `np.linalg.norm((v - mean) * r, axis=1)`."""
    squared = None
    for axis, (axis_coords, r) in enumerate(zip(coords, resolution)):
        offset = (axis_coords - mean[axis]) * r
        squared = offset * offset if squared is None else squared + offset * offset
    return np.sqrt(squared)


def face_counts(ranks: np.ndarray, n: int) -> np.ndarray:
    """(n, 2, 3): each node's voxels on the chunk's low faces x, y, z, then its high faces."""
    out = np.zeros((n, 2, 3), np.int64)
    for axis in range(3):
        for side, index in enumerate((0, ranks.shape[axis] - 1)):
            face = np.take(ranks, index, axis=axis)
            out[:, side, axis] = np.bincount(face.ravel(), minlength=n + 1)[1:]
    return out


def surface_areas(runs: _Runs, size: np.ndarray, intersect: np.ndarray, shape, resolution: np.ndarray) -> np.ndarray:
    """nm² per node: every face between two voxels of different labels inside the chunk
    counts for each non-background side. Along z, each run's ends not on the chunk's border.
    Along x, a node's voxels off the high face whose +x neighbour differs, plus those off the
    low face whose -x neighbour differs: 2 * size - (voxels on either face) - 2 * (voxels
    whose +x neighbour is the same node); along y alike. Summed as x, then y, then z faces,
    as PCGL2Cache does."""
    n = len(size)
    rx, ry, rz = resolution
    face_area = (ry * rz, rx * rz, rx * ry)
    area = np.zeros(n)
    for axis, same in enumerate((runs.same_x, runs.same_y)):
        faces = 2 * size - intersect[:, 0, axis] - intersect[:, 1, axis] - 2 * np.bincount(runs.node, same, minlength=n)
        area = area + faces * face_area[axis]
    inner_ends = (runs.z > 0).astype(np.intp) + (runs.z + runs.length < shape[2])
    return area + np.bincount(runs.node, inner_ends, minlength=n) * face_area[2]


# Projections are summed per voxel only for nodes with a direction this thin (a singular
# value below this share of the largest), where the quadratic form loses digits.
THIN = 1e-3
# Scatter matrices come from integer moments while N * sum(x_i x_j) stays below this.
EXACT_LIMIT = 1 << 62


def principal_axes(box: _Box, size: np.ndarray, has_pca: np.ndarray, resolution: np.ndarray,
                   sums: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 3) axes and (n, 3) singular values of each node's centred voxel positions in nm
    (zeros where not `has_pca`), from the nodes' exact integer moments `sums` and `second`.

    The scatter matrices are, per node, N * sum(x_i x_j) - sum(x_i) sum(x_j) in int64 (voxel
    coordinates are integers), so no centring pass over the voxels (for a chunk so large that
    this could overflow int64: from the points centred in floating point); one batched `eigh`
    gives the axes. A singular value is sqrt(a' S a) for its axis a, except along thin
    directions (below THIN of the largest), where that quadratic form loses digits to
    cancellation: there the centred points are projected on the axis and their squares
    summed, as accurate as an SVD of the points (for every node when the moments were not
    used). Rows of exactly equal singular values (a symmetric node) keep eigh's order (for an
    axis-aligned node: x, then y, then z)."""
    n = len(size)
    pca, pca_val = np.zeros((n, 3, 3)), np.zeros((n, 3))
    if not has_pca.any():
        return pca, pca_val
    largest = max(int(s) for s in box.shape)
    exact = int(size.max()) ** 2 * largest * largest < EXACT_LIMIT
    if exact:
        scatter = _exact_scatter(sums, second, size, resolution)
    else:
        scatter = _centred_scatter(box, size, has_pca, resolution)
    _, vectors = np.linalg.eigh(scatter[has_pca])
    axes = np.zeros((n, 3, 3))
    axes[has_pca] = np.swapaxes(vectors, 1, 2)  # rows, ascending eigenvalue
    if exact:
        squares = np.maximum(np.einsum("nki,nij,nkj->nk", axes, scatter, axes), 0.0)
        projected = has_pca & (squares.min(axis=1) < THIN * THIN * squares.max(axis=1))
    else:
        projected = has_pca
        squares = np.zeros((n, 3))
    if projected.any():
        squares[projected] = _projected_squares(box, size, projected, axes, resolution)[projected]
    # N < 3: the points are taken three times over, which triples every sum of squares
    values = np.sqrt(squares * np.where(size < 3, 3.0, 1.0)[:, None])
    many = size > PCA_SAMPLE_POINTS
    values[many] *= np.sqrt(PCA_SAMPLE_POINTS / size[many])[:, None]
    order = np.argsort(-values, axis=1, kind="stable")  # equal values keep eigh's order
    values = np.take_along_axis(values, order, axis=1)
    axes = np.take_along_axis(axes, order[:, :, None], axis=1)
    pca[has_pca], pca_val[has_pca] = _signed(axes[has_pca]), values[has_pca]
    return pca, pca_val


def _exact_scatter(sums: np.ndarray, second: np.ndarray, size: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """(n, 3, 3) scatter matrices in nm² from exact integer moments."""
    count = size.astype(np.int64)
    scaled = np.empty((len(size), 3, 3))
    for i in range(3):
        for j in range(3):
            exact = count * second[:, i, j] - sums[:, i] * sums[:, j]  # N^2 * covariance, exact
            scaled[:, i, j] = exact * (resolution[i] * resolution[j])
    return scaled / np.maximum(count, 1)[:, None, None]


def _centred_points(box: _Box, size: np.ndarray, nodes: np.ndarray, resolution: np.ndarray):
    """The voxels of the nodes in `nodes`: their node index and their positions in nm (x, y,
    z), centred on their node's mean in floating point."""
    node, coords = box.voxels(nodes)
    centred = []
    for axis_coords, r in zip(coords, resolution):
        points = axis_coords * r
        centred.append(points - (np.bincount(node, points, minlength=len(size)) / size)[node])
    return node, centred


def _centred_scatter(box: _Box, size: np.ndarray, nodes: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """(n, 3, 3) scatter matrices in nm² of points centred in floating point (0 outside `nodes`)."""
    node, centred = _centred_points(box, size, nodes, resolution)
    scatter = np.empty((len(size), 3, 3))
    for i in range(3):
        for j in range(i, 3):
            scatter[:, i, j] = scatter[:, j, i] = np.bincount(node, centred[i] * centred[j], minlength=len(size))
    return scatter


def _projected_squares(box: _Box, size: np.ndarray, nodes: np.ndarray, axes: np.ndarray,
                       resolution: np.ndarray) -> np.ndarray:
    """(n, 3): per node in `nodes`, the sum of squared projections of its centred points (nm) on
    each of its axes (rows of `axes`); 0 elsewhere."""
    node, centred = _centred_points(box, size, nodes, resolution)
    squares = np.zeros((len(size), 3))
    for k in range(3):
        along = centred[0] * axes[:, k, 0][node]
        along += centred[1] * axes[:, k, 1][node]
        along += centred[2] * axes[:, k, 2][node]
        squares[:, k] = np.bincount(node, along * along, minlength=len(size))
    return squares


def _signed(axes: np.ndarray) -> np.ndarray:
    """Each row flipped so that its entry of largest absolute value is positive. The entries
    are compared as stored (float16), the first of equals winning: a row like (1, -1, 0)/√2
    then gets one sign, not one chosen by the last bits of a float64."""
    stored = np.abs(axes.astype(np.float16))
    largest = np.argmax(stored, axis=-1)[..., None]
    return axes * np.sign(np.take_along_axis(axes, largest, axis=-1))


def row_cells(features: Features) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """Each node's row: `(row key, [(qualifier, value), ...])`, family "0", in id order.
    The row key is the id as 20 decimal digits; values are raw little-endian bytes, and
    `pca` / `pca_val` are empty (shapes (0, 3) and (0,)) for a node below 0.01 µm³."""
    n = len(features)
    if n == 0:
        return []
    columns = {
        b"size_nm3": features.size,
        b"area_nm2": features.area,
        b"max_dt_nm": features.max_dt,
        b"mean_dt_nm": features.mean_dt,
        b"rep_coord_nm": features.rep_coord,
        b"chunk_intersect_count": features.intersect,
        b"pca": features.pca,
        b"pca_val": features.pca_val,
    }
    values = {qualifier: _bytes_per_row(column, CELL_DTYPES[qualifier]) for qualifier, column in columns.items()}
    for qualifier in (b"pca", b"pca_val"):
        values[qualifier] = [cell if keep else b"" for cell, keep in zip(values[qualifier], features.has_pca)]
    keys = _bytes_per_row(decimal_keys(features.ids), np.uint8)
    qualifiers = list(values)
    return [(key, list(zip(qualifiers, cells))) for key, cells in zip(keys, zip(*values.values()))]


def _bytes_per_row(column: np.ndarray, dtype) -> list[bytes]:
    """Row i of `column` cast to `dtype` as raw bytes. Casts as PCGL2Cache's: integers wrap,
    a float16 beyond 65504 is inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.ascontiguousarray(column.astype(dtype)).view(np.uint8).reshape(len(column), -1)
    return raw.view(f"V{raw.shape[1]}").ravel().tolist()


def meta_cells(graph_id: str, cv_path: str, ingest_ms: int) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """The table's `meta` and `version` rows, as `row_cells` gives rows (family "0").

    `meta:meta` is a pickle (protocol 4) of `{"graph_id", "cv_path", "timestamp"}`, the
    timestamp being the ingest's time, `ingest_ms` ms since the epoch, in UTC as
    "%Y-%m-%d %H:%M:%S"; `version:version` is this package's version (`beam_ingest.__version__`),
    the program that wrote the table."""
    meta = cache_meta(graph_id, cv_path, ingest_ms)
    return [(META_ROW, [(b"meta", pickle.dumps(meta, protocol=PICKLE_PROTOCOL))]),
            (VERSION_ROW, [(b"version", __version__.encode())])]


def cache_meta(graph_id: str, cv_path: str, ingest_ms: int) -> dict:
    """The dict the `meta` cell pickles."""
    when = datetime.datetime.fromtimestamp(int(ingest_ms) // 1000, tz=datetime.timezone.utc)
    return {"graph_id": graph_id, "cv_path": cv_path or "", "timestamp": when.strftime("%Y-%m-%d %H:%M:%S")}


def chunk_volume(watershed: np.ndarray, chunk_size, svs: np.ndarray, l2ids: np.ndarray) -> np.ndarray:
    """The chunk's full `chunk_size` (x, y, z) box of layer-2 ids, C order, uint64.

    `watershed` is the chunk's block of supervoxel ids, smaller than `chunk_size` along an
    axis at the dataset's far edge (the rest of the box is 0); `svs` (ascending) and `l2ids`
    say each supervoxel's layer-2 parent. Supervoxels not in `svs`, those whose parent is 0,
    and background are 0."""
    watershed = np.asarray(watershed)
    chunk_size = tuple(int(c) for c in chunk_size)
    if watershed.ndim != 3 or any(w > c for w, c in zip(watershed.shape, chunk_size)):
        raise ValueError(f"watershed block {watershed.shape} does not fit a chunk of {chunk_size}")
    svs, l2ids = np.asarray(svs, np.uint64), np.asarray(l2ids, np.uint64)
    numbers, mapping = fastremap.renumber(watershed, preserve_zero=True, in_place=False)
    present = np.fromiter(mapping.keys(), np.uint64, len(mapping))
    number = np.fromiter(mapping.values(), np.int64, len(mapping))
    slot = np.minimum(np.searchsorted(svs, present), max(len(svs) - 1, 0))
    found = (present != 0) & (svs[slot] == present) if len(svs) else np.zeros(len(present), bool)
    parent_of_number = np.zeros(int(number.max(initial=0)) + 1, np.uint64)
    parent_of_number[number[found]] = l2ids[slot[found]]
    out = np.zeros(chunk_size, np.uint64)
    out[tuple(slice(0, w) for w in watershed.shape)] = parent_of_number[numbers]
    return out


def chunk_ranks(labels: np.ndarray, id_of_label: np.ndarray, chunk_size, svs: np.ndarray,
                l2ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `chunk_volume` then a ranking of its ids give, without a uint64 voxel volume: the
    sorted layer-2 ids present and the full `chunk_size` box of their 1-based ranks (uint16;
    uint32 beyond 65,535 nodes).

    `labels` is the chunk's block of small label numbers (cut at the dataset's far edge) and
    `id_of_label` the supervoxel id of each number (0: background), as fastremap's
    renumbering or the segmentation reader give them; every number must occur in `labels`.
    `svs` (ascending) and `l2ids` say each supervoxel's layer-2 parent."""
    labels = np.asarray(labels)
    chunk_size = tuple(int(c) for c in chunk_size)
    if labels.ndim != 3 or any(w > c for w, c in zip(labels.shape, chunk_size)):
        raise ValueError(f"label block {labels.shape} does not fit a chunk of {chunk_size}")
    svs, l2ids = np.asarray(svs, np.uint64), np.asarray(l2ids, np.uint64)
    id_of_label = np.asarray(id_of_label, np.uint64)
    slot = np.minimum(np.searchsorted(svs, id_of_label), max(len(svs) - 1, 0))
    found = (id_of_label != 0) & (svs[slot] == id_of_label) if len(svs) else np.zeros(len(id_of_label), bool)
    parent = np.where(found, l2ids[slot] if len(svs) else 0, np.uint64(0)).astype(np.uint64)
    ids = np.unique(parent[parent != 0])
    rank_of_label = np.zeros(len(parent), _rank_dtype(len(ids)))
    rank_of_label[parent != 0] = np.searchsorted(ids, parent[parent != 0]) + 1
    if labels.shape == chunk_size:
        return ids, rank_of_label.take(labels)  # take: twice as fast as indexing
    ranks = np.zeros(chunk_size, rank_of_label.dtype)
    ranks[tuple(slice(0, w) for w in labels.shape)] = rank_of_label.take(labels)
    return ids, ranks


def _rank_dtype(n: int):
    """The smallest unsigned dtype for ranks 0..n: half the bytes for the usual chunk."""
    return np.uint16 if n < 1 << 16 else np.uint32


CELL_SHAPES = {b"rep_coord_nm": (3,), b"chunk_intersect_count": (2, 3), b"pca": (-1, 3)}


def decode_cells(cells: dict) -> dict:
    """`{qualifier: bytes}` of a cache row as arrays of the cells' dtypes and shapes (a scalar
    as a 0-d array's item)."""
    out = {}
    for qualifier, value in cells.items():
        array = np.frombuffer(value, CELL_DTYPES[qualifier])
        if qualifier in CELL_SHAPES:
            out[qualifier] = array.reshape(CELL_SHAPES[qualifier])
        elif qualifier == b"pca_val":
            out[qualifier] = array
        else:
            out[qualifier] = array[0].item()
    return out

