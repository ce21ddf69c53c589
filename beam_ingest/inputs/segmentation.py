"""Segmentation input (spec/segmentation-input.md): pure numpy, no storage, no Beam.

A supervoxel volume with ids of its own becomes one supervoxel per (original id, layer-2
chunk), numbered `k = 1, 2, ...` by ascending original id inside the chunk; face contacts
between voxels (6-connectivity) become in_chunk, between_chunk and cross_chunk edges; the
objects (or, without them, the original ids) become each chunk's components.
"""
from __future__ import annotations

import dataclasses

import fastremap
import numpy as np

from .precomputed import EDGE_KINDS, Edges, InputError

AXES = "xyz"


@dataclasses.dataclass
class ChunkIds:
    """What a chunk's neighbours need of it: its original ids, ascending (their rank is the
    new segment id), and the object of each (0: unmapped; None without OBJECTS)."""
    coord: tuple
    ids: np.ndarray
    objects: np.ndarray | None = None


def chunk_ids(coord, supervoxels: np.ndarray, objects: np.ndarray | None = None, max_segment: int | None = None,
              where: str = "") -> ChunkIds:
    """The original ids in a chunk's voxels (and each one's object)."""
    coord = tuple(int(c) for c in coord)
    where = where or f"layer-2 chunk {coord}"
    ids = fastremap.unique(supervoxels)
    ids = ids[ids != 0].astype(np.uint64)
    if max_segment is not None and len(ids) > max_segment:
        raise InputError(f"SUPERVOXELS: {where} holds {len(ids)} supervoxel ids, more than its {max_segment} segment "
                         "ids can number (raise SPATIAL_BITS' headroom: fewer layers, or a smaller CHUNK_SIZE)")
    if objects is None:
        return ChunkIds(coord, ids)
    sv, obj = supervoxels.reshape(-1), objects.reshape(-1)
    labelled = (sv != 0) & (obj != 0)
    sv_index = np.searchsorted(ids, sv[labelled].astype(np.uint64))
    labels, obj_index = fastremap.unique(obj[labelled], return_inverse=True)
    labels = labels.astype(np.uint64)
    # distinct (supervoxel, object) pairs as one int64 key each, in (supervoxel, object) order
    keys = np.unique(sv_index.astype(np.int64) * len(labels) + obj_index.reshape(-1).astype(np.int64))
    pair_sv, pair_obj = keys // max(len(labels), 1), keys % max(len(labels), 1)
    twice = np.flatnonzero(pair_sv[1:] == pair_sv[:-1])
    if len(twice):
        k = twice[0]
        s, a, b = int(ids[pair_sv[k]]), int(labels[pair_obj[k]]), int(labels[pair_obj[k + 1]])
        raise InputError(f"OBJECTS: supervoxel {s} lies under two objects, {a} and {b}, in {where}")
    out = np.zeros(len(ids), np.uint64)
    out[pair_sv] = labels[pair_obj]
    return ChunkIds(coord, ids, out)


def check_objects_agree(own: ChunkIds, neighbours: list[ChunkIds], where: str):
    """One original supervoxel, pieces in face-adjacent chunks: at most one non-zero object."""
    if own.objects is None:
        return
    for other in neighbours:
        common, i, j = np.intersect1d(own.ids, other.ids, assume_unique=True, return_indices=True)
        a, b = own.objects[i], other.objects[j]
        clash = np.flatnonzero((a != 0) & (b != 0) & (a != b))
        if len(clash):
            k = clash[0]
            raise InputError(f"OBJECTS: supervoxel {int(common[k])} lies under object {int(a[k])} in {where} and "
                             f"under object {int(b[k])} in its neighbour layer-2 chunk {other.coord}")


def relabel(supervoxels: np.ndarray, chunk_prefix: int, ids: np.ndarray) -> np.ndarray:
    """New ids of a block of one chunk: `chunk_prefix | rank`, background 0."""
    out = np.zeros(supervoxels.shape, np.uint64)
    present = supervoxels != 0
    rank = np.searchsorted(ids, supervoxels[present].astype(np.uint64)) + 1
    out[present] = np.uint64(chunk_prefix) | rank.astype(np.uint64)
    return out


@dataclasses.dataclass
class ChunkGraph:
    """What one chunk's voxels give: its relabelled region, its edges and components."""
    watershed: np.ndarray
    edges: dict
    component_svs: np.ndarray
    component_labels: np.ndarray
    n_svs: int = 0


def chunk_graph(box: np.ndarray, own: tuple, prefixes: dict, id_sets: dict, coord, segment_bits: int,
                affinities=None, where: str = "") -> ChunkGraph:
    """Edges and components of chunk `coord` from `box`: its voxels plus a one-voxel shell.

    `own`: the chunk's region inside `box` (a tuple of slices); `prefixes[c]` and
    `id_sets[c]` (ChunkIds) for the chunk and each face neighbour the shell reaches;
    `affinities`: `box`'s shape + (3,) float32, channel k the link along axis k ending at
    a voxel, or None (affinity 1.0).
    """
    coord = tuple(int(c) for c in coord)
    where = where or f"layer-2 chunk {coord}"
    mine = id_sets[coord]
    new = np.zeros(box.shape, np.uint64)
    origin = np.zeros(box.shape, np.uint64)  # original id of every mapped voxel (0 elsewhere)
    inside = np.zeros(box.shape, bool)
    inside[own] = True
    new[own] = relabel(box[own], prefixes[coord], mine.ids)
    origin[own] = box[own]
    for axis in range(3):
        for step in (-1, 1):
            neighbour = tuple(c + step * (k == axis) for k, c in enumerate(coord))
            shell = list(own)
            edge = own[axis].start - 1 if step < 0 else own[axis].stop
            if edge < 0 or edge >= box.shape[axis] or neighbour not in id_sets:
                continue
            shell[axis] = slice(edge, edge + 1)
            shell = tuple(shell)
            new[shell] = relabel(box[shell], prefixes[neighbour], id_sets[neighbour].ids)
            origin[shell] = box[shell]

    parts = {kind: [] for kind in EDGE_KINDS}  # (own, other, affinity sum, pairs)
    for axis in range(3):
        lo = tuple(slice(0, -1) if k == axis else slice(None) for k in range(3))
        hi = tuple(slice(1, None) if k == axis else slice(None) for k in range(3))
        a, b = new[lo], new[hi]
        in_a, in_b = inside[lo], inside[hi]
        keep = (a != 0) & (b != 0) & (a != b) & (in_a | in_b)
        if not keep.any():
            continue
        a, b, in_a, in_b = a[keep], b[keep], in_a[keep], in_b[keep]
        same = origin[lo][keep] == origin[hi][keep]
        aff = np.ones(len(a), np.float64) if affinities is None else affinities[hi + (axis,)][keep].astype(np.float64)
        both = in_a & in_b
        own_end, other_end = np.where(in_a, a, b), np.where(in_a, b, a)
        # in_chunk pairs are unordered: the smaller id first
        own_end = np.where(both, np.minimum(a, b), own_end)
        other_end = np.where(both, np.maximum(a, b), other_end)
        for kind, mask in (("in_chunk", both), ("cross_chunk", ~both & same), ("between_chunk", ~both & ~same)):
            if mask.any():
                parts[kind].append((own_end[mask], other_end[mask], aff[mask]))
    edges = {kind: _sum_pairs(parts[kind], kind == "cross_chunk") for kind in EDGE_KINDS}

    svs = np.uint64(prefixes[coord]) | np.arange(1, len(mine.ids) + 1, dtype=np.uint64)
    touched = np.concatenate([edges["in_chunk"].ids1, edges["in_chunk"].ids2, edges["between_chunk"].ids1,
                              edges["cross_chunk"].ids1])
    alone = svs[~np.isin(svs, touched)]
    if len(alone):  # a piece touching no other piece: a self-edge keeps it in the graph
        selfs = Edges(alone, alone.copy(), np.ones(len(alone), np.float32), np.zeros(len(alone), np.uint64))
        edges["in_chunk"] = _concat_edges([edges["in_chunk"], selfs])

    component_svs, component_labels = _components(svs, edges["between_chunk"].ids2, prefixes, id_sets,
                                                  segment_bits)
    return ChunkGraph(new[own], edges, component_svs, component_labels, len(svs))


def _sum_pairs(parts, cross: bool) -> Edges:
    """Distinct (own, other) pairs, their voxel-pair count (area) and mean affinity."""
    if not parts:
        return Edges.empty()
    own = np.concatenate([p[0] for p in parts])
    other = np.concatenate([p[1] for p in parts])
    aff = np.concatenate([p[2] for p in parts])
    ids, inverse = np.unique(np.concatenate([own, other]), return_inverse=True)
    i, j = inverse[:len(own)].astype(np.int64), inverse[len(own):].astype(np.int64)
    keys, group = np.unique(i * len(ids) + j, return_inverse=True)
    area = np.bincount(group, minlength=len(keys))
    affinity = np.full(len(keys), np.inf, np.float32) if cross else \
        (np.bincount(group, aff, minlength=len(keys)) / area).astype(np.float32)
    return Edges(ids[keys // len(ids)], ids[keys % len(ids)], affinity, area.astype(np.uint64))


def _concat_edges(parts) -> Edges:
    return Edges(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Edges)))


def _components(svs, reached, prefixes, id_sets, segment_bits: int):
    """The chunk's SVs and the neighbour SVs its between edges reach, grouped by object
    (by original id without OBJECTS; unmapped ones left out), groups ordered by smallest member."""
    members = np.unique(np.concatenate([svs, reached]))
    segment_mask = np.uint64((1 << segment_bits) - 1)
    chunk_part = members & ~segment_mask
    rank = (members & segment_mask).astype(np.int64) - 1
    label = np.zeros(len(members), np.uint64)
    for c, prefix in prefixes.items():
        in_c = chunk_part == np.uint64(prefix)
        if in_c.any():
            found = id_sets[c]
            label[in_c] = (found.ids if found.objects is None else found.objects)[rank[in_c]]
    keep = label != 0
    members, label = members[keep], label[keep]
    if not len(members):
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    _, group = np.unique(label, return_inverse=True)
    first = np.full(int(group.max()) + 1, len(members), np.int64)
    np.minimum.at(first, group, np.arange(len(members)))  # members ascending: first = smallest member
    rank_of_group = np.empty(len(first), np.int64)
    rank_of_group[np.argsort(first)] = np.arange(len(first))
    return members, rank_of_group[group]
