"""Synthetic segmentation input (docs/segmentation-input.md): precomputed volumes + config.yml.

    python -m beam_ingest generate --segmentation --out seg_data [--chunks 4 4 2] [--no-objects]

writes, with cloud-volume, at mip 0 on one grid (Neuroglancer precomputed, raw encoding):
  supervoxels/   uint64 (or uint32) segmentation with arbitrary original ids, 0 = background
  objects/       uint64 agglomerated segmentation (optional)
  affinities/    float32, 3 channels (x, y, z) (optional)
and a `config.yml` in the ingest's format whose WATERSHED / EDGES / COMPONENTS name outputs
that are NOT created here.

The volume is a Voronoi labelling (each voxel takes its nearest random seed, so there are
many contacts) with the awkward cases painted over it at fixed places of the chunk grid
(positions scale with CHUNK_SIZE: they are given in eighths of a chunk). `generate_segmentation`
returns where each one is (`"cases"`): supervoxels crossing 1, 2 and 3 chunk faces, a U that
leaves its chunk and comes back, pairs touching only diagonally across a chunk edge / corner,
an isolated supervoxel (only background around it) inside one chunk and one crossing a
face, a supervoxel in two disconnected parts, a background hole across a chunk corner,
random small holes, an empty chunk, an object spanning the volume along three lines,
unmapped supervoxels (object 0), a supervoxel partly under object 0 and partly under its
object. Every voxel-level choice comes from `seed`; the segmentation does not depend on the
`objects` / `affinities` flags (separate random streams).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import yaml

_MAX_VOXELS = 1 << 29  # the Voronoi labelling needs ~25 bytes per voxel at once (labels + EDT indices)


@dataclasses.dataclass
class SegmentationSpec:
    chunks: tuple[int, int, int] = (3, 3, 3)          # layer-2 chunks per axis
    chunk_size: tuple[int, int, int] = (8, 8, 4)      # graph_config.CHUNK_SIZE (voxels)
    voxel_offset: tuple[int, int, int] = (5, 3, 2)
    resolution: tuple[int, int, int] = (4, 4, 40)
    partial_last_chunk: bool = True   # the last chunk on every axis is chunk_size - chunk_size // 3
    objects: bool = True              # write objects/ (ingest_config.OBJECTS)
    affinities: bool = True           # write affinities/ (ingest_config.AFFINITIES)
    seed: int = 0
    dtype: str = "uint64"             # supervoxels' data type: "uint64" or "uint32"
    voxels_per_sv: float = 24.0       # density: mean volume of a Voronoi cell (voxels)
    holes_per_chunk: float = 0.3      # random small background holes, per layer-2 chunk
    unmapped_fraction: float = 0.1    # Voronoi supervoxels left under object 0
    object_span: int = 2              # Voronoi supervoxels are grouped into objects by blocks of
                                      # object_span chunks per axis (their seed's block)
    cases: bool = True                # paint the awkward cases (off: Voronoi + holes only)
    storage_chunk: tuple | None = None  # the volumes' storage chunk size (default: storage_chunk_size)

    def storage_chunk_size(self) -> tuple[int, int, int]:
        return tuple(int(c) for c in self.storage_chunk) if self.storage_chunk else storage_chunk_size(self.chunk_size)


def storage_chunk_size(chunk_size) -> tuple[int, int, int]:
    """Half of CHUNK_SIZE on each axis where it is even, else CHUNK_SIZE: it divides CHUNK_SIZE."""
    return tuple(int(c) // 2 if int(c) % 2 == 0 else int(c) for c in chunk_size)


def volume_size(spec: SegmentationSpec) -> np.ndarray:
    cs = np.asarray(spec.chunk_size, np.int64)
    size = np.asarray(spec.chunks, np.int64) * cs
    if spec.partial_last_chunk:
        size = size - cs // 3
    return size


# --------------------------------------------------------------------------------------------
# geometry: boxes are [lo, hi) in local voxel coordinates (0 = voxel_offset)

def _box_overlaps(a, b, margin=0) -> bool:
    return all(a[0][i] - margin < b[1][i] and b[0][i] - margin < a[1][i] for i in range(3))


def _clip(box, size):
    lo = np.maximum(np.asarray(box[0]), 0)
    hi = np.minimum(np.asarray(box[1]), size)
    return (tuple(int(v) for v in lo), tuple(int(v) for v in hi))


def _grow(box, by, size):
    return _clip((tuple(v - by for v in box[0]), tuple(v + by for v in box[1])), size)


def _eighths(k, cs):
    """k/8 of cs voxels, rounded away from 0: a non-zero offset from a chunk boundary stays non-zero."""
    return -((-k * cs) // 8) if k > 0 else (k * cs) // 8


class _Grid:
    def __init__(self, spec: SegmentationSpec):
        self.cs = np.asarray(spec.chunk_size, np.int64)
        self.n = np.asarray(spec.chunks, np.int64)
        self.size = volume_size(spec)
        self.offset = np.asarray(spec.voxel_offset, np.int64)

    def box(self, x, y, z):
        """Each of x, y, z is (chunk index, lo, hi) in eighths of a chunk: [i*cs + lo*cs/8, i*cs + hi*cs/8)
        (rounded away from the chunk's origin; at least one voxel).

        None when the chunk does not exist or the box leaves the volume."""
        lo, hi = [], []
        for axis, (i, klo, khi) in enumerate((x, y, z)):
            if not 0 <= i < self.n[axis]:
                return None
            cs = int(self.cs[axis])
            a, b = i * cs + _eighths(klo, cs), i * cs + _eighths(khi, cs)
            b = max(b, a + 1)
            if a < 0 or b > self.size[axis]:
                return None
            lo.append(int(a))
            hi.append(int(b))
        return tuple(lo), tuple(hi)

    def chunks_of(self, box):
        """The layer-2 chunk coordinates a box touches (sorted lists)."""
        lo = np.asarray(box[0]) // self.cs
        hi = (np.asarray(box[1]) - 1) // self.cs
        return [[int(a), int(b), int(c)] for a in range(lo[0], hi[0] + 1)
                for b in range(lo[1], hi[1] + 1) for c in range(lo[2], hi[2] + 1)]

    def chunk_box(self, c):
        lo = np.asarray(c) * self.cs
        return _clip((tuple(lo), tuple(lo + self.cs)), self.size)

    def global_box(self, box):
        return [[int(v + o) for v, o in zip(box[0], self.offset)], [int(v + o) for v, o in zip(box[1], self.offset)]]


def _plan_cases(grid: _Grid):
    """The awkward cases as painted boxes; a case whose boxes do not fit the grid is left out.

    Each case: name -> dict(parts=[(part name, box)], shell=box or None (zeroed around the
    parts), zero=[boxes] (background regions), footprint=[boxes] (what must not overlap
    another case)). Positions (eighths of a chunk) for the default 8x8x4 chunks, in voxels:
    the comments give the local boxes of the default 3x3x3 grid (22x22x11 voxels).
    """
    B = grid.box
    plans = {}
    # a supervoxel crossing 3 faces: a box centred on the chunk corner (8, 8, 4)       [6,10)x[6,10)x[3,5)
    plans["crosses_3_faces"] = {"parts": [("sv", B((1, -2, 2), (1, -2, 2), (1, -2, 2)))]}
    # crossing 2 faces: centred on the chunk edge along y at x=16, z=4                 [14,18)x[1,5)x[3,5)
    plans["crosses_2_faces"] = {"parts": [("sv", B((2, -2, 2), (0, 1, 5), (1, -2, 2)))]}
    # crossing 1 face: across the face x=8 inside chunk row y=2, z=0                    [6,10)x[18,20)x[0,3)
    plans["crosses_1_face"] = {"parts": [("sv", B((1, -2, 2), (2, 2, 4), (0, 0, 6)))]}
    # a U: two arms in chunk (0,0,0) reaching the face y=8, joined by a base in chunk (0,1,0)
    plans["u_shape"] = {"parts": [("arm", B((0, 2, 3), (0, 4, 8), (0, 2, 6))),     # [2,3)x[4,8)x[1,3)
                                  ("arm", B((0, 6, 7), (0, 4, 8), (0, 2, 6))),     # [6,7)x[4,8)x[1,3)
                                  ("base", B((0, 2, 7), (1, 0, 2), (0, 2, 6)))]}   # [2,7)x[8,10)x[1,3)
    # two SVs touching only along the chunk edge (x=16, y=8) (along z): opposite quadrants
    plans["diagonal_edge"] = {"parts": [("a", B((2, -2, 0), (1, -2, 0), (0, 2, 6))),  # [14,16)x[6,8)x[1,3)
                                        ("b", B((2, 0, 2), (1, 0, 2), (0, 2, 6)))]}   # [16,18)x[8,10)x[1,3)
    # two SVs touching only at the chunk corner (16, 16, 4): opposite octants
    plans["diagonal_corner"] = {"parts": [("a", B((2, -2, 0), (2, -2, 0), (1, -2, 0))),  # [14,16)x[14,16)x[3,4)
                                          ("b", B((2, 0, 2), (2, 0, 2), (1, 0, 2)))]}    # [16,18)x[16,18)x[4,5)
    # an isolated SV inside chunk (0,2,0), a background shell around it               [2,4)x[18,20)x[1,3)
    plans["isolated"] = {"parts": [("sv", B((0, 2, 4), (2, 2, 4), (0, 2, 6)))], "shell": 1}
    # an isolated SV crossing the z face at 4 (chunks (2,0,0), (2,0,1)), shell around it [19,21)x[2,4)x[3,5)
    plans["isolated_crossing"] = {"parts": [("sv", B((2, 3, 5), (0, 2, 4), (1, -2, 2)))], "shell": 1}
    # one SV in two parts that touch nowhere, both in chunk (1,0,0)
    plans["disconnected"] = {"parts": [("part", B((1, 1, 3), (0, 1, 3), (0, 0, 2))),   # [9,11)x[1,3)x[0,1)
                                       ("part", B((1, 3, 5), (0, 4, 6), (0, 4, 6)))]}  # [11,13)x[4,6)x[2,3)
    # a background hole across the chunk corner (8, 16, 4)                           [6,10)x[14,18)x[3,5)
    plans["hole"] = {"parts": [], "zero": [B((1, -2, 2), (2, -2, 2), (1, -2, 2))]}

    placed = {}
    footprints = []
    for name, plan in plans.items():
        boxes = [box for _, box in plan["parts"]] + plan.get("zero", [])
        if any(box is None for box in boxes):
            continue
        shell = None
        if plan.get("shell"):
            lo = np.min([b[0] for b in boxes], 0)
            hi = np.max([b[1] for b in boxes], 0)
            shell = _grow((tuple(lo), tuple(hi)), plan["shell"], grid.size)
        footprint = boxes + ([shell] if shell else [])
        if any(_box_overlaps(f, g) for f in footprint for g in footprints):
            continue
        if not _case_shape_ok(grid, name, plan, shell):
            continue
        footprints.extend(footprint)
        placed[name] = dict(plan, shell=shell)
    return placed


def _case_shape_ok(grid, name, plan, shell) -> bool:
    """The intended chunk crossings hold on this grid (odd chunk sizes can collapse a case)."""
    parts = [box for _, box in plan["parts"]]
    chunks = [grid.chunks_of(b) for b in parts]
    if name.startswith("crosses_"):
        return len(chunks[0]) == {"crosses_1_face": 2, "crosses_2_faces": 4, "crosses_3_faces": 8}[name]
    if name == "u_shape":
        arm1, arm2, base = parts
        return (len(chunks[0]) == 1 and chunks[0] == chunks[1] and len(chunks[2]) == 1
                and chunks[2] != chunks[0] and arm2[0][0] - arm1[1][0] >= 1
                and arm1[1][1] == base[0][1] and arm2[1][1] == base[0][1])
    if name.startswith("diagonal_"):
        a, b = parts
        return (len(chunks[0]) == 1 and len(chunks[1]) == 1 and chunks[0] != chunks[1]
                and sum(a[1][i] == b[0][i] for i in range(3)) == (2 if name == "diagonal_edge" else 3))
    if name == "isolated":
        return len(grid.chunks_of(shell)) == 1
    if name == "isolated_crossing":
        return len(chunks[0]) == 2
    if name == "disconnected":
        a, b = parts
        return len(chunks[0]) == 1 and chunks[0] == chunks[1] and not _box_overlaps(a, b, margin=1)
    return True


# --------------------------------------------------------------------------------------------

def _unique_ids(rng, count, high):
    """`count` distinct integers in [1, high), in random order."""
    out = np.empty(0, np.uint64)
    while len(out) < count:
        draw = rng.integers(1, high, size=2 * (count - len(out)) + 8, dtype=np.uint64)
        out = np.concatenate([out, draw])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out[:count]


def _voronoi(rng, size, n_seeds):
    """int32 labels 1..n_seeds: each voxel takes its nearest seed (Euclidean in voxels)."""
    from scipy import ndimage
    total = int(np.prod(size))
    if total > _MAX_VOXELS:
        raise ValueError(f"volume of {total} voxels is too large for the synthetic generator")
    n_seeds = int(min(max(n_seeds, 1), total))
    flat = rng.choice(total, size=n_seeds, replace=False)
    seeds = np.stack(np.unravel_index(flat, tuple(int(s) for s in size)), 1)
    seed_labels = np.zeros(tuple(int(s) for s in size), np.int32)
    seed_labels.reshape(-1)[flat] = np.arange(1, n_seeds + 1, dtype=np.int32)
    indices = ndimage.distance_transform_edt(seed_labels == 0, return_distances=False, return_indices=True)
    labels = seed_labels[indices[0], indices[1], indices[2]]
    return labels, seeds


def generate_segmentation(out_dir: str, spec: SegmentationSpec = SegmentationSpec()) -> dict:
    """Write supervoxels/ (+ objects/, affinities/) and config.yml under `out_dir`; describe them."""
    if spec.dtype not in ("uint64", "uint32"):
        raise ValueError(f"dtype must be 'uint64' or 'uint32', got {spec.dtype!r}")
    if any(int(c) < 1 for c in spec.chunks) or any(int(c) < 1 for c in spec.chunk_size):
        raise ValueError("chunks and chunk_size must be positive")
    grid = _Grid(spec)
    size = grid.size
    rng = np.random.default_rng([spec.seed, 0])       # the segmentation
    rng_obj = np.random.default_rng([spec.seed, 1])   # objects
    rng_aff = np.random.default_rng([spec.seed, 2])   # affinities

    n_seeds = int(round(float(np.prod(size)) / float(spec.voxels_per_sv)))
    labels, seeds = _voronoi(rng, size, n_seeds)
    plans = _plan_cases(grid) if spec.cases else {}
    case_indices, n_index = _case_indices(plans, len(seeds))
    id_high = (1 << 40) if spec.dtype == "uint64" else (1 << 32)
    id_of = np.zeros(n_index, np.uint64)
    id_of[1:] = _unique_ids(rng, n_index - 1, id_high)
    lines = _lines(grid)
    holes, empty_chunks = _paint(rng, spec, grid, labels, plans, case_indices, lines)
    cases = _describe_cases(grid, plans, case_indices, id_of, holes, empty_chunks)
    obj_of = None
    if spec.objects:
        obj_of, id_of, present = _add_objects(spec, grid, rng_obj, labels, seeds, plans, case_indices, lines, id_of,
                                              cases)
    else:
        present = np.bincount(labels.reshape(-1), minlength=n_index) > 0
        present[0] = False
    n_supervoxels = int(len(np.unique(id_of[present])))

    absolute = os.path.abspath(out_dir)
    os.makedirs(absolute, exist_ok=True)
    urls = {"supervoxels": f"file://{absolute}/supervoxels",
            "objects": f"file://{absolute}/objects" if spec.objects else None,
            "affinities": f"file://{absolute}/affinities" if spec.affinities else None}
    _write_volumes(spec, grid, labels, id_of, obj_of, rng_aff, urls)
    config_path = _write_config(absolute, spec, urls)
    return {"config": config_path, "supervoxels": urls["supervoxels"], "objects": urls["objects"],
            "affinities": urls["affinities"], "size": [int(v) for v in size],
            "voxel_offset": [int(v) for v in spec.voxel_offset], "resolution": [int(v) for v in spec.resolution],
            "chunk_size": [int(v) for v in spec.chunk_size], "n_chunks": [int(v) for v in grid.n],
            "storage_chunk_size": list(spec.storage_chunk_size()), "dtype": spec.dtype,
            "n_supervoxels": n_supervoxels,
            "cases": cases}


def _slices(box):
    return tuple(slice(a, b) for a, b in zip(*box))


def _case_indices(plans: dict, n_seeds: int):
    """Labels hold indices; index -> (original id, object), 0 = background. Cases get the
    indices after the Voronoi seeds; a case SV may own two indices (same id, different
    object: the part of `partial_object` under object 0). Returns `({case: {part: index}},
    the number of indices)`."""
    case_indices = {}
    next_index = n_seeds + 1
    for name, plan in plans.items():
        names = sorted({part for part, _ in plan["parts"]} if name.startswith("diagonal_") else
                       ({"sv"} if plan["parts"] else set()))
        case_indices[name] = {p: next_index + k for k, p in enumerate(names)}
        next_index += len(names)
    return case_indices, next_index


def _paint(rng, spec, grid, labels, plans, case_indices, lines):
    """Random background holes away from the cases and the spanning object's lines, the
    cases, and one empty layer-2 chunk; returns `(holes, empty chunks)`."""
    size = grid.size
    reserved = []  # cases (with a margin) and the spanning object's lines; holes keep out
    for plan in plans.values():
        reserved.extend([box for _, box in plan["parts"]] + plan.get("zero", []) +
                        ([plan["shell"]] if plan.get("shell") else []))
    reserved.extend(lines)
    holes = []
    n_holes = int(round(spec.holes_per_chunk * float(np.prod(grid.n))))
    max_hole = np.maximum(grid.cs // 4, 1)
    for _ in range(n_holes):
        extent = rng.integers(1, max_hole + 1)
        lo = rng.integers(0, np.maximum(size - extent, 0) + 1)
        box = _clip((tuple(lo), tuple(lo + extent)), size)
        if any(_box_overlaps(box, r, margin=1) for r in reserved):
            continue
        holes.append(box)
        labels[_slices(box)] = 0

    for name, plan in plans.items():
        if plan.get("shell"):
            labels[_slices(plan["shell"])] = 0
        for box in plan.get("zero", []):
            labels[_slices(box)] = 0
        for part, box in plan["parts"]:
            index = case_indices[name].get(part, case_indices[name].get("sv"))
            labels[_slices(box)] = index

    empty_chunks = []  # away from the cases and the lines
    if int(np.prod(grid.n)) >= 4 and spec.cases:
        c = [int(grid.n[0]) - 1, min(1, int(grid.n[1]) - 1), int(grid.n[2]) - 1]
        box = grid.chunk_box(c)
        if not any(_box_overlaps(box, r) for r in reserved):
            labels[_slices(box)] = 0
            empty_chunks.append(c)
    return holes, empty_chunks


def _describe_cases(grid, plans, case_indices, id_of, holes, empty_chunks) -> dict:
    """Where each case is: its ids, chunks and boxes (what the tests check)."""
    cases = {}
    for name, plan in plans.items():
        idx = case_indices[name]
        parts = [box for _, box in plan["parts"]]
        entry = {}
        if name.startswith("diagonal_"):
            entry["ids"] = [int(id_of[idx["a"]]), int(id_of[idx["b"]])]
            entry["chunks"] = [grid.chunks_of(parts[0])[0], grid.chunks_of(parts[1])[0]]
        elif parts:
            entry["id"] = int(id_of[idx["sv"]])
            entry["chunks"] = sorted({tuple(c) for b in parts for c in grid.chunks_of(b)})
            entry["chunks"] = [list(c) for c in entry["chunks"]]
        else:
            entry["chunks"] = [list(c) for c in sorted({tuple(c) for b in plan["zero"] for c in grid.chunks_of(b)})]
        if name == "u_shape":
            entry["chunk"] = grid.chunks_of(parts[0])[0]      # where it is in two parts
            entry["through"] = grid.chunks_of(parts[2])[0]    # the neighbour that joins them
        if name in ("isolated", "disconnected"):
            entry["chunk"] = grid.chunks_of(parts[0])[0]
        if plan.get("shell"):
            entry["shell"] = grid.global_box(plan["shell"])
        entry["boxes"] = [grid.global_box(b) for b in parts + plan.get("zero", [])]
        cases[name] = entry
    cases["empty_chunks"] = empty_chunks
    cases["random_holes"] = [grid.global_box(b) for b in holes]
    return cases


def _add_objects(spec, grid, rng_obj, labels, seeds, plans, case_indices, lines, id_of, cases):
    """The objects of every index, and the object cases (added to `cases`). Returns
    `(object of each index, id of each index, indices present)`: the partial object's
    part under object 0 gets an index of its own."""
    n_index = len(id_of)
    obj_of, object_cases = _objects(spec, grid, rng_obj, labels, seeds, n_index, plans, case_indices, lines)
    partial = object_cases.pop("_partial_box", None)
    if partial is not None:
        # part of the 1-face SV lies under object 0: a second index, same id, object 0
        sv = case_indices["crosses_1_face"]["sv"]
        region = labels[_slices(partial)]
        region[region == sv] = n_index
        id_of = np.append(id_of, id_of[sv])
        obj_of = np.append(obj_of, np.uint64(0))
        n_index += 1
        object_cases["partial_object"]["id"] = int(id_of[sv])
        object_cases["partial_object"]["unlabelled_box"] = grid.global_box(partial)
    present = np.bincount(labels.reshape(-1), minlength=n_index) > 0
    present[0] = False
    if partial is not None:
        present[n_index - 1] = False  # its id is listed with its object, not as unmapped
    for name, idx in case_indices.items():
        if name.startswith("diagonal_"):
            cases[name]["objects"] = [int(obj_of[idx["a"]]), int(obj_of[idx["b"]])]
        elif "sv" in idx:
            cases[name]["object"] = int(obj_of[idx["sv"]])
    object_cases["unmapped"] = sorted(int(v) for v in np.unique(id_of[present & (obj_of == 0)]))
    span = object_cases["spanning_object"]
    span["ids"] = sorted(int(v) for v in id_of[span.pop("indices")])
    cases.update(object_cases)
    return obj_of, id_of, present


def _lines(grid: _Grid):
    """Three axis-parallel lines of voxels through the whole volume (the spanning object)."""
    def at(axis, chunk, eighths):
        c = min(chunk, int(grid.n[axis]) - 1)
        return int(min(c * grid.cs[axis] + (eighths * int(grid.cs[axis])) // 8, grid.size[axis] - 1))
    x, y, z = at(0, 1, 4), at(1, 1, 4), at(2, 0, 2)
    sx, sy, sz = (int(v) for v in grid.size)
    return [((0, y, z), (sx, y + 1, z + 1)), ((x, 0, z), (x + 1, sy, z + 1)), ((x, y, 0), (x + 1, y + 1, sz))]


def _objects(spec, grid, rng, labels, seeds, n_index, plans, case_indices, lines):
    """index -> object label (uint64, 0 = unmapped), and the object cases."""
    n_seeds = len(seeds)
    obj_of = np.zeros(n_index, np.uint64)
    # Voronoi SVs: one object per block of object_span chunks (by the seed's position)
    block = seeds // (grid.cs * max(int(spec.object_span), 1))
    keys, inverse = np.unique(block, axis=0, return_inverse=True)
    n_case_objects = 4 + sum(len(idx) for idx in case_indices.values())
    labels_pool = _unique_ids(rng, len(keys) + n_case_objects + 1, 1 << 40)
    obj_of[1:n_seeds + 1] = labels_pool[np.asarray(inverse).reshape(-1)]
    unmapped = rng.random(n_seeds) < spec.unmapped_fraction
    obj_of[1:n_seeds + 1][unmapped] = 0
    extra = iter(labels_pool[len(keys):])
    spanning = next(extra)

    cases = {}
    # the spanning object: every Voronoi SV on the three lines through the volume
    on_line = np.unique(np.concatenate([labels[tuple(slice(a, b) for a, b in zip(*line))].reshape(-1)
                                        for line in lines]))
    on_line = on_line[(on_line > 0) & (on_line <= n_seeds)]
    obj_of[on_line] = spanning
    cases["spanning_object"] = {"object": int(spanning), "indices": on_line,
                                "lines": [grid.global_box(line) for line in lines]}

    # the cases' own objects
    for name, idx in case_indices.items():
        if name == "diagonal_corner":  # one object for both: its members touch only diagonally
            label = next(extra)
            for i in idx.values():
                obj_of[i] = label
        elif name == "isolated_crossing":
            for i in idx.values():
                obj_of[i] = 0          # unmapped, in both chunks
        else:
            for i in idx.values():
                obj_of[i] = next(extra)
    if "crosses_1_face" in plans:
        # its lowest quarter chunk along z (default: the voxels at z = 0) goes under object 0;
        # each of its two pieces keeps voxels under its object
        box = plans["crosses_1_face"]["parts"][0][1]
        depth = max(1, (2 * int(grid.cs[2])) // 8)
        top = min(box[0][2] + depth, box[1][2] - 1)
        if top > box[0][2]:
            sv = case_indices["crosses_1_face"]["sv"]
            cases["partial_object"] = {"object": int(obj_of[sv])}
            cases["_partial_box"] = (box[0], (box[1][0], box[1][1], top))
    return obj_of, cases


def _write_volumes(spec, grid, labels, id_of, obj_of, rng_aff, urls):
    from cloudvolume import CloudVolume
    size = [int(v) for v in grid.size]
    common = dict(resolution=[int(v) for v in spec.resolution], voxel_offset=[int(v) for v in spec.voxel_offset],
                  volume_size=size, chunk_size=list(spec.storage_chunk_size()))
    volumes = {}
    sv_dtype = np.dtype(spec.dtype)
    for key, num_channels, layer_type, dtype in (("supervoxels", 1, "segmentation", spec.dtype),
                                                 ("objects", 1, "segmentation", "uint64"),
                                                 ("affinities", 3, "image", "float32")):
        if urls[key] is None:
            continue
        info = CloudVolume.create_new_info(num_channels=num_channels, layer_type=layer_type, data_type=dtype,
                                           encoding="raw", **common)
        # gzip (fast level) for the labels; random affinities do not compress: stored raw
        options = dict(compress=False) if key == "affinities" else dict(compress="gzip", compress_level=1)
        vol = CloudVolume(urls[key], info=info, progress=False, **options)
        vol.commit_info()
        volumes[key] = vol
    # slabs of about one chunk along z, aligned to the storage chunks: bounded memory
    off = [int(v) for v in spec.voxel_offset]
    storage_z = int(spec.storage_chunk_size()[2])
    step = storage_z * -(-int(grid.cs[2]) // storage_z)
    sv_ids = id_of.astype(sv_dtype)
    for z0 in range(0, size[2], step):
        z1 = min(z0 + step, size[2])
        lab = labels[:, :, z0:z1]
        where = np.s_[off[0]:off[0] + size[0], off[1]:off[1] + size[1], off[2] + z0:off[2] + z1]
        volumes["supervoxels"][where] = sv_ids[lab][..., None]
        if "objects" in volumes:
            volumes["objects"][where] = obj_of[lab][..., None]
        if "affinities" in volumes:
            volumes["affinities"][where] = rng_aff.random(lab.shape + (3,), dtype=np.float32)


def _write_config(absolute, spec, urls):
    config = {
        "data_source": {"WATERSHED": f"file://{absolute}/watershed", "EDGES": f"file://{absolute}/edges",
                        "COMPONENTS": f"file://{absolute}/components", "CV_MIP": 0},
        "graph_config": {"CHUNK_SIZE": [int(v) for v in spec.chunk_size], "FANOUT": 2, "LAYER_ID_BITS": 8,
                         "SPATIAL_BITS": 10},
        "backend_client": {"TYPE": "bigtable", "CONFIG": {"ADMIN": True, "READ_ONLY": False}},
        "ingest_config": {"SUPERVOXELS": urls["supervoxels"]},
    }
    if urls["objects"]:
        config["ingest_config"]["OBJECTS"] = urls["objects"]
    if urls["affinities"]:
        config["ingest_config"]["AFFINITIES"] = urls["affinities"]
    path = os.path.join(absolute, "config.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


def copy_volume(url: str, dest: str, sharded: bool = False, encoding: str | None = None,
                data_encoding: str = "gzip", minishard_bits: int = 3) -> str:
    """`url`'s volume (first scale) rewritten at `dest`: as one shard file (identity hash,
    `2**minishard_bits` minishards, chunks stored with `data_encoding`), and/or in another
    `encoding`. A volume with a partial last chunk cannot be sharded this way: CloudVolume
    pads those chunks in the shard, then cannot read them back."""
    from cloudvolume import CloudVolume
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification
    source = CloudVolume(url, progress=False)
    info = dict(source.info, scales=[dict(source.info["scales"][0])])
    if sharded:
        info["scales"][0]["sharding"] = ShardingSpecification(
            "neuroglancer_uint64_sharded_v1", preshift_bits=0, hash="identity", minishard_bits=minishard_bits,
            shard_bits=0, minishard_index_encoding="gzip", data_encoding=data_encoding).to_dict()
    if encoding:
        info["scales"][0]["encoding"] = encoding
    copy = CloudVolume(dest, info=info, progress=False)
    copy.commit_info()
    copy[:, :, :] = source[:, :, :]
    return dest
