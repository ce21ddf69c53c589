"""Segmentation input (docs/segmentation-input.md): pure numpy, no storage, no Beam.

A supervoxel volume with ids of its own becomes one supervoxel per (original id, layer-2
chunk), numbered `k = 1, 2, ...` by ascending original id inside the chunk; face contacts
between voxels (6-connectivity) become in_chunk, between_chunk and cross_chunk edges; the
objects (or, without them, the original ids) become each chunk's components.

Each chunk is read once (`label_chunk`, `in_chunk_contacts`, `boundary`): its labels give the
WATERSHED region and the contacts inside it. Contacts across a face need the neighbour's
voxels on the other side: every chunk hands its one-voxel boundary planes (ranks, and the
affinities on its lower planes) to its face neighbours, and `finish_chunk` pairs
them with its own (`face_edges`), which is the chunk's one-voxel face shell without reading
it twice.
"""
from __future__ import annotations

import dataclasses
import functools

import fastremap
import numpy as np

from ..arrays import distinct, run_starts
from ..chunk_inputs import EDGE_KINDS, Edges
from ..errors import InputError

DENSE_PAIR_CODES = 1 << 21  # up to this many possible codes (and a few per pair), counting is a bincount, not a sort


@dataclasses.dataclass
class ChunkIds:
    """What a chunk's neighbours need of it: its original ids, ascending (their rank is the
    new segment id), and the object of each (0: unmapped; None without OBJECTS)."""
    coord: tuple
    ids: np.ndarray
    objects: np.ndarray | None = None


@dataclasses.dataclass
class ChunkPart:
    """What reading one chunk hands on: to the chunk itself (`in_chunk` set, every face), or
    to one face neighbour (`in_chunk` None, the face toward it).

    `planes[(axis, side)]`: the chunk's boundary plane of ranks (`label_chunk`) at its lower
    (-1) or upper (+1) end along `axis`; `affinities[axis]`: channel `axis` of the affinities on its
    lower plane along `axis`, where the links to the chunk below end (None without AFFINITIES);
    `in_chunk`: its in_chunk edges in ranks (`in_chunk_contacts`), a third of their size as ids.
    """
    ids: ChunkIds
    planes: dict
    affinities: dict
    in_chunk: Edges | None = None
    voxels: np.ndarray | None = None     # with the L2 cache, the chunk's own part: its label volume
    voxel_ids: np.ndarray | None = None  # and the new supervoxel id of each label

    @property
    def coord(self):
        return self.ids.coord

    @property
    def nbytes(self) -> int:
        arrays = [self.ids.ids, self.ids.objects, *self.planes.values(), *self.affinities.values(), self.voxels,
                  self.voxel_ids]
        if self.in_chunk is not None:
            arrays += [getattr(self.in_chunk, f.name) for f in dataclasses.fields(Edges)]
        return sum(a.nbytes for a in arrays if a is not None)


def label_chunk(coord, supervoxels: np.ndarray, objects: np.ndarray | None = None, max_segment: int | None = None,
                where: str = "") -> tuple[ChunkIds, np.ndarray, np.ndarray]:
    """A chunk's original ids (ascending; each one's object), its label volume (fastremap's
    labels in order of first appearance, 0 on background) and `rank_of[label]`: `k` for the
    label of `ids[k - 1]` (the new segment id), 0 for background. The volume stays in labels:
    only planes, pairs and tables are mapped to ranks, not every voxel."""
    coord = tuple(int(c) for c in coord)
    where = where or f"layer-2 chunk {coord}"
    labels, mapping = fastremap.renumber(supervoxels, preserve_zero=True, in_place=False)
    ids = np.fromiter(mapping.keys(), np.uint64, len(mapping))
    label_of_id = np.fromiter(mapping.values(), np.int64, len(mapping))
    order = np.argsort(ids, kind="stable")
    ids, label_of_id = ids[order], label_of_id[order]
    if len(ids) and ids[0] == 0:
        ids, label_of_id = ids[1:], label_of_id[1:]
    if max_segment is not None and len(ids) > max_segment:
        raise InputError(f"SUPERVOXELS: {where} holds {len(ids)} supervoxel ids, more than its {max_segment} segment "
                         "ids can number (raise SPATIAL_BITS' headroom: fewer layers, or a smaller CHUNK_SIZE)")
    rank_of = np.zeros(int(label_of_id.max(initial=0)) + 1, np.min_scalar_type(len(ids) + 1))
    rank_of[label_of_id] = np.arange(1, len(ids) + 1)
    if objects is None:
        return ChunkIds(coord, ids), labels, rank_of
    found = _objects_of(labels, objects, ids, rank_of, where)
    return ChunkIds(coord, ids, found[label_of_id].astype(np.uint64)), labels, rank_of


def _objects_of(labels, objects, ids, rank_of, where):
    """The one non-zero object under each label's voxels (0 if none), by label."""
    r, o = _flat(labels), _flat(objects)
    change = np.empty(len(r), bool)  # runs of one (supervoxel, object) along x: a tenth of the voxels
    change[:1] = True
    np.not_equal(r[1:], r[:-1], out=change[1:])
    change[1:] |= o[1:] != o[:-1]
    change &= o != 0
    labelled = np.flatnonzero(change)
    r, o = r[labelled], o[labelled]
    found = np.zeros(len(rank_of), o.dtype)
    found[r] = o  # any one of each supervoxel's labels; all must agree with it
    clash = found[r] != o
    clash &= r != 0  # labels on background are ignored
    if clash.any():
        k = r[np.argmax(clash)]
        a, b = np.unique(o[r == k])[:2]
        raise InputError(f"OBJECTS: supervoxel {int(ids[rank_of[k] - 1])} lies under two objects, {int(a)} and "
                         f"{int(b)}, in {where}")
    return found


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


def segment_table(prefix: int, n: int) -> np.ndarray:
    """New id of each rank: `prefix | k` (rank 0, background, stays 0)."""
    table = np.zeros(n + 1, np.uint64)
    table[1:] = np.uint64(prefix) | np.arange(1, n + 1, dtype=np.uint64)
    return table


def _flat(volume: np.ndarray) -> np.ndarray:
    """x fastest, as volumes are stored (a view for Fortran-ordered arrays)."""
    return volume.reshape(-1, order="F")


@functools.lru_cache(maxsize=16)
def _neighbour_steps(shape: tuple) -> tuple:
    """Per axis: the flat (x-fastest) offset of the next voxel along it, and which voxels have
    one (not on the upper boundary; None along the last axis, where every voxel before the
    last plane has one)."""
    size = int(np.prod(shape))
    steps = []
    stride = 1
    for axis in range(3):
        has_next = None
        if axis < 2:
            has_next = np.ones(shape, bool, order="F")
            has_next[(slice(None),) * axis + (-1,)] = False
            has_next = _flat(has_next)[:max(size - stride, 0)]
        steps.append((stride, has_next))
        stride *= shape[axis]
    return tuple(steps)


def in_chunk_contacts(labels: np.ndarray, n: int, affinities: np.ndarray | None, rank_of: np.ndarray) -> Edges:
    """Contacts between different supervoxels inside one chunk as in_chunk edges between
    ranks (`ids1 < ids2`, ascending; `n` ranks): area (voxel pairs, uint32) and mean affinity
    at the upper voxel of each pair (1.0 without affinities). `labels`: the chunk's labels
    and `rank_of` each one's rank (`label_chunk`)."""
    flat = _flat(labels)
    aff = None if affinities is None else affinities.reshape(-1, affinities.shape[-1], order="F")
    lows, highs, weights = [], [], []
    for axis, (step, has_next) in enumerate(_neighbour_steps(tuple(int(s) for s in labels.shape))):
        if step >= len(flat):
            continue
        a, b = flat[:-step], flat[step:]
        contact = a != b
        if has_next is not None:
            contact &= has_next
        at = np.flatnonzero(contact)
        a, b = a[at], b[at]
        lows.append(np.minimum(a, b))
        highs.append(np.maximum(a, b))
        weights.append(None if aff is None else aff[step:, axis][at])  # at the upper voxel, p + step
    if not sum(len(low) for low in lows):
        return Edges(*(np.empty(0, t) for t in (np.uint8, np.uint8, np.float32, np.uint32)))
    keys, area, affinity_sum = _count_pairs(lows, highs, weights, n + 1, (n + 1) ** 2)
    # a face on background (label 0, the lower end) is no contact: few are, so they are
    # counted with the rest and dropped here, at the front of the ascending keys
    real = int(np.searchsorted(keys, n + 1))
    keys, area = keys[real:], area[real:]
    affinity_sum = None if affinity_sum is None else affinity_sum[real:]
    affinity = np.ones(len(keys), np.float32) if aff is None else (affinity_sum / area).astype(np.float32)
    rank = np.min_scalar_type(n)
    # pairs of labels to pairs of ranks, ascending again
    a, b = rank_of[keys // (n + 1)].astype(np.int64), rank_of[keys % (n + 1)].astype(np.int64)
    a, b = np.minimum(a, b), np.maximum(a, b)
    order = np.argsort(a * (n + 1) + b)
    a, b, affinity, area = a[order], b[order], affinity[order], area[order]
    return Edges(a.astype(rank), b.astype(rank), affinity, area.astype(np.uint32))


def _count_pairs(firsts: list, seconds: list, weights: list, width: int, n_codes: int):
    """Distinct pair codes `first * width + second` (each list holds arrays of one part of
    the pairs; `weights`: a float32 array per part, or None each) ascending, how often each
    occurs, and the sum of its weights (float64; None without weights)."""
    total = sum(len(f) for f in firsts)
    weighted = weights[0] is not None

    def int64_codes():
        return np.concatenate([f.astype(np.int64) * width + s for f, s in zip(firsts, seconds)])

    if n_codes <= min(DENSE_PAIR_CODES, 8 * total + 4096):  # counting is a bincount
        code = int64_codes()
        area = np.bincount(code, minlength=n_codes)
        keys = np.flatnonzero(area)
        sums = np.bincount(code, np.concatenate(weights), minlength=n_codes)[keys] if weighted else None
        return keys, area[keys], sums
    if n_codes > 1 << 32:
        keys, group = np.unique(int64_codes(), return_inverse=True)
        sums = np.bincount(group, np.concatenate(weights), minlength=len(keys)) if weighted else None
        return keys, np.bincount(group, minlength=len(keys)), sums
    # code and weight (float32 bits) in one uint64 (without weights, the code alone in a
    # uint32), written part by part into its 32-bit halves: one plain sort, no argsort
    # (np.unique's inverse), no concatenated copies
    packed = np.empty(total, np.uint64 if weighted else np.uint32)
    if weighted:
        words = packed.view(np.uint32).reshape(-1, 2)  # (weight bits, code) on little-endian
        low, high = (0, 1) if np.little_endian else (1, 0)
    else:
        words, high = packed.reshape(-1, 1), 0
    ordered = words[:, high]  # a view
    i = 0
    for first, second, weight in zip(firsts, seconds, weights):
        code = first.astype(np.uint32)  # codes fit: n_codes <= 2**32 here
        code *= np.uint32(width)
        np.add(code, second, out=code, casting="unsafe")
        words[i:i + len(first), high] = code
        if weighted:
            words[i:i + len(first), low] = np.asarray(weight, np.float32).view(np.uint32)
        i += len(first)
    packed.sort()
    starts = run_starts(ordered)
    area = np.diff(starts, append=len(ordered))
    sums = np.add.reduceat(words[:, low].view(np.float32), starts, dtype=np.float64) if weighted else None
    return ordered[starts].astype(np.int64), area, sums


def boundary(labels: np.ndarray, rank_of: np.ndarray, affinities: np.ndarray | None = None) -> tuple[dict, dict]:
    """A chunk's six boundary planes of ranks (`label_chunk`'s labels mapped by `rank_of`),
    and the affinities on its lower planes (channel = axis), for `ChunkPart`."""
    planes, lower = {}, {}
    for axis in range(3):
        for side, index in ((-1, 0), (1, labels.shape[axis] - 1)):
            at = (slice(None),) * axis + (index,)
            planes[(axis, side)] = rank_of[labels[at]]
            if side < 0:
                lower[axis] = None if affinities is None else np.ascontiguousarray(affinities[..., axis][at])
    return planes, lower


def face_edges(own: ChunkPart, other: ChunkPart, prefixes: dict) -> tuple[Edges, Edges]:
    """The between_chunk and cross_chunk edges across the face between chunk `own` and its
    face neighbour `other`, own end first: area (voxel pairs) and mean affinity at each
    pair's upper voxel (cross_chunk: inf). A pair of pieces meets across one face only, so
    each face's counts are final."""
    axis = next(k for k in range(3) if own.coord[k] != other.coord[k])
    side = 1 if other.coord[axis] > own.coord[axis] else -1
    mine, theirs = own.planes[(axis, side)], other.planes[(axis, -side)]
    upper = other if side > 0 else own  # the link's affinity sits at its upper voxel
    aff = upper.affinities.get(axis)
    width = len(other.ids.ids) + 1
    keys, area, affinity_sum = _count_pairs([mine.ravel()], [theirs.ravel()], [None if aff is None else aff.ravel()],
                                            width, (len(own.ids.ids) + 1) * width)
    a, b = keys // width, keys % width
    touching = (a != 0) & (b != 0)  # pairs with background (rank 0) counted with the rest, dropped here
    keys, area, a, b = keys[touching], area[touching], a[touching], b[touching]
    affinity_sum = None if affinity_sum is None else affinity_sum[touching]
    same = own.ids.ids[a - 1] == other.ids.ids[b - 1]
    affinity = np.ones(len(keys), np.float32) if aff is None else (affinity_sum / area).astype(np.float32)
    affinity[same] = np.inf
    ids1 = np.uint64(prefixes[own.coord]) | a.astype(np.uint64)
    ids2 = np.uint64(prefixes[other.coord]) | b.astype(np.uint64)
    area = area.astype(np.uint64)
    return (Edges(ids1[~same], ids2[~same], affinity[~same], area[~same]),
            Edges(ids1[same], ids2[same], affinity[same], area[same]))


@dataclasses.dataclass
class ChunkGraph:
    """What one chunk's voxels give: its edges and components."""
    edges: dict
    component_svs: np.ndarray
    component_labels: np.ndarray
    n_svs: int = 0


def finish_chunk(own: ChunkPart, neighbours: list, prefixes: dict, segment_bits: int) -> ChunkGraph:
    """A chunk's edges (its in_chunk ones, both kinds across its faces, self-edges for pieces
    touching nothing) and its components, from its own part and its face neighbours' parts.
    `prefixes[c]`: chunk id (layer 1) of the chunk and of each neighbour."""
    coord = own.coord
    faces = [face_edges(own, other, prefixes) for other in neighbours]
    table = segment_table(prefixes[coord], len(own.ids.ids))
    inside = own.in_chunk
    edges = {"in_chunk": Edges(table[inside.ids1], table[inside.ids2], inside.affinities, inside.areas.astype(np.uint64))}
    for k, kind in enumerate(("between_chunk", "cross_chunk")):
        edges[kind] = _ascending(_concat_edges([face[k] for face in faces] or [Edges.empty()]))

    svs = table[1:]
    touched = np.zeros(len(table), bool)  # by rank
    touched[inside.ids1] = touched[inside.ids2] = True
    for kind in ("between_chunk", "cross_chunk"):
        touched[(edges[kind].ids1 - np.uint64(prefixes[coord])).astype(np.int64)] = True
    alone = svs[~touched[1:]]
    if len(alone):  # a piece touching no other piece: a self-edge keeps it in the graph
        selfs = Edges(alone, alone.copy(), np.ones(len(alone), np.float32), np.zeros(len(alone), np.uint64))
        edges["in_chunk"] = _concat_edges([edges["in_chunk"], selfs])
    id_sets = {coord: own.ids, **{other.coord: other.ids for other in neighbours}}
    component_svs, component_labels = _components(svs, edges["between_chunk"].ids2, prefixes, id_sets,
                                                  segment_bits)
    return ChunkGraph({kind: edges[kind] for kind in EDGE_KINDS}, component_svs, component_labels, len(svs))


def _ascending(edges: Edges) -> Edges:
    """Ordered by (own, other) end."""
    order = np.lexsort((edges.ids2, edges.ids1))
    return Edges(*(getattr(edges, f.name)[order] for f in dataclasses.fields(Edges)))


def _concat_edges(parts) -> Edges:
    return Edges(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Edges)))


def _components(svs, reached, prefixes, id_sets, segment_bits: int):
    """The chunk's SVs and the neighbour SVs its between edges reach, grouped by object
    (by original id without OBJECTS; unmapped ones left out), groups ordered by smallest member."""
    members = distinct(np.concatenate([svs, reached]))
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
