"""An independent reference of docs/segmentation-input.md: plain Python loops and dicts.

Slow on purpose, for tiny volumes (~24x24x12): one loop over the voxels and one over the
voxel pairs (p, p + e_axis). numpy only holds the input arrays; the rules themselves are
written out voxel by voxel, and nothing is shared with the pipeline except the protobuf
message definitions (for reading what a pipeline wrote).

Conventions (all keys and values are plain Python ints / floats / tuples):
- arrays are indexed [x, y, z] and cover the whole volume at CV_MIP; array index 0 on every
  axis is the volume's `voxel_offset`;
- chunk grid: chunk (0,0,0) starts at the voxel offset (docs/table-format.md, and
  `beam_ingest.layout`), so the layer-2 chunk of array index i on an axis is
  `i // chunk_size` (the offset itself plays no part);
- a supervoxel piece is `(original id, chunk coord)`; its new id is
  `chunk_id_of(coord) | k`, k = rank (from 1) of the original id among the chunk's
  non-zero original ids in ascending order.

`seg_reference(...)` returns a dict:
- "relabel":    {(s, c): new id}
- "sv_map":     {c: {new id: s}}  (the SV_MAP content, in dict form)
- "objects":    {(s, c): object label, 0 = unmapped}  (original id s without OBJECTS)
- "watershed":  uint64 array, the relabeled volume (0 stays 0)
- "edges":      {c: {"in_chunk": {...}, "between_chunk": {...}, "cross_chunk": {...}}},
                each {(id1, id2): (affinity, area)}. in_chunk keyed (min, max) (self-edges
                (s, s)); between/cross keyed (own SV, other SV). All three kinds are
                present in every entry (possibly empty); a chunk with no edge (no
                non-zero voxel) has no entry.
- "components": {c: [tuple, ...]}: groups ascending, ordered by smallest member. A chunk
                whose list would be empty (no voxel, or every member unmapped) has no entry.
Affinities are `float(np.float32(mean))` with the mean taken in float64 (the value a
float32 file holds); 1.0 without affinities; `math.inf` on cross_chunk edges.

`read_seg_outputs(...)` reads EDGES / COMPONENTS folders into the same shapes.
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict

import numpy as np
import zstandard

from beam_ingest.inputs.protos import ChunkComponentsMsg, ChunkEdgesMsg

KINDS = ("in_chunk", "between_chunk", "cross_chunk")


def _volume(array, name, shape=None, channels=None):
    """A 3-D (or, with `channels`, 4-D) nested list from `array`; a trailing 1 channel is dropped."""
    a = np.asarray(array)
    want = 3 if channels is None else 4
    if a.ndim == want + 1 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != want:
        raise ValueError(f"{name}: expected {want} dimensions, got shape {a.shape}")
    if channels is not None and a.shape[3] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got shape {a.shape}")
    if shape is not None and tuple(a.shape[:3]) != tuple(shape):
        raise ValueError(f"{name}: shape {a.shape[:3]} differs from SUPERVOXELS {tuple(shape)}")
    return a.tolist()


def _chunk(p, chunk_size):
    return (p[0] // chunk_size[0], p[1] // chunk_size[1], p[2] // chunk_size[2])


def seg_reference(supervoxels, chunk_size, voxel_offset, chunk_id_of, objects=None, affinities=None,
                  max_segment=None):
    """The outputs docs/segmentation-input.md defines for a whole (tiny) volume; raises ValueError on its error cases.

    `chunk_id_of((x, y, z)) -> int`: layer-1 chunk id of a layer-2 chunk coordinate, e.g.
    `lambda c: int(layout.chunk_id(1, *c))`. `max_segment`: the largest segment id a chunk may
    use (e.g. `(1 << layout.segment_bits(1)) - 1`); a chunk with more original ids is an error.
    `voxel_offset` is accepted for the record only: the grid starts at it, so indices suffice.
    """
    if len(tuple(voxel_offset)) != 3 or len(tuple(chunk_size)) != 3:
        raise ValueError("voxel_offset and chunk_size need 3 values")
    chunk_size = tuple(int(v) for v in chunk_size)
    S = _volume(supervoxels, "SUPERVOXELS")
    shape = np.asarray(supervoxels).shape[:3]
    O = None if objects is None else _volume(objects, "OBJECTS", shape)
    A = None if affinities is None else _volume(affinities, "AFFINITIES", shape, channels=3)
    nx, ny, nz = shape
    voxels = [(x, y, z) for x in range(nx) for y in range(ny) for z in range(nz)]

    def at(vol, p):
        return vol[p[0]][p[1]][p[2]]

    # -- supervoxels: one per (original id, chunk) -------------------------------------
    ids_in = defaultdict(set)
    for p in voxels:
        s = int(at(S, p))
        if s != 0:
            ids_in[_chunk(p, chunk_size)].add(s)
    relabel, sv_map = {}, {}
    for c in sorted(ids_in):
        ids = sorted(ids_in[c])
        if max_segment is not None and len(ids) > max_segment:
            raise ValueError(f"chunk {c} has {len(ids)} supervoxel ids, more than the "
                             f"{max_segment} its segment bits hold")
        base = int(chunk_id_of(c))
        sv_map[c] = {}
        for k, s in enumerate(ids, start=1):
            relabel[(s, c)] = base | k
            sv_map[c][base | k] = s
    piece_of = {new: piece for piece, new in relabel.items()}
    if len(piece_of) != len(relabel):
        raise ValueError("chunk_id_of gives colliding ids (its low bits are not free)")

    watershed = np.zeros(shape, dtype=np.uint64)
    for p in voxels:
        s = int(at(S, p))
        if s != 0:
            watershed[p] = relabel[(s, _chunk(p, chunk_size))]

    # -- objects of pieces -------------------------------------------------------------
    piece_objects = {}
    if O is None:
        for (s, c) in relabel:
            piece_objects[(s, c)] = s
    else:
        labels = defaultdict(set)
        for p in voxels:
            s = int(at(S, p))
            o = int(at(O, p))
            if s != 0 and o != 0:
                labels[(s, _chunk(p, chunk_size))].add(o)
        for piece in sorted(relabel):
            found = sorted(labels.get(piece, ()))
            if len(found) > 1:
                s, c = piece
                raise ValueError(f"supervoxel {s} has two object labels {found[0]} and {found[1]} "
                                 f"under its voxels in chunk {c}")
            piece_objects[piece] = found[0] if found else 0
        for (s, c) in sorted(relabel):
            for axis in range(3):
                n = list(c)
                n[axis] += 1
                n = tuple(n)
                if (s, n) not in relabel:
                    continue
                a, b = piece_objects[(s, c)], piece_objects[(s, n)]
                if a != 0 and b != 0 and a != b:
                    raise ValueError(f"supervoxel {s} has object label {a} in chunk {c} and object "
                                     f"label {b} in the face-adjacent chunk {n}")

    # -- contacts -> edges -------------------------------------------------------------
    sums = {}  # (kind, lo, hi) -> [sum of affinities, voxel pair count], lo < hi new ids
    for p in voxels:
        a = int(at(S, p))
        if a == 0:
            continue
        cp = _chunk(p, chunk_size)
        for axis in range(3):
            q = list(p)
            q[axis] += 1
            q = tuple(q)
            if q[axis] >= shape[axis]:
                continue
            b = int(at(S, q))
            if b == 0:
                continue
            cq = _chunk(q, chunk_size)
            if (a, cp) == (b, cq):
                continue
            if cp == cq:
                kind = "in_chunk"
            elif a != b:
                kind = "between_chunk"
            else:
                kind = "cross_chunk"
            u, v = relabel[(a, cp)], relabel[(b, cq)]
            key = (kind, min(u, v), max(u, v))
            value = 1.0 if A is None else float(at(A, q)[axis])
            entry = sums.setdefault(key, [0.0, 0])
            entry[0] += value
            entry[1] += 1

    edges = {}

    def slot(c):
        return edges.setdefault(c, {kind: {} for kind in KINDS})

    touched = set()
    for (kind, lo, hi), (total, count) in sorted(sums.items()):
        aff = math.inf if kind == "cross_chunk" else float(np.float32(total / count))
        touched.add(lo)
        touched.add(hi)
        c_lo, c_hi = piece_of[lo][1], piece_of[hi][1]
        if kind == "in_chunk":
            slot(c_lo)[kind][(lo, hi)] = (aff, count)
        else:
            slot(c_lo)[kind][(lo, hi)] = (aff, count)
            slot(c_hi)[kind][(hi, lo)] = (aff, count)
    for new, (s, c) in sorted(piece_of.items()):
        if new not in touched:
            slot(c)["in_chunk"][(new, new)] = (1.0, 0)

    # -- components --------------------------------------------------------------------
    components = {}
    for c in sorted(ids_in):
        members = {relabel[(s, c)] for s in ids_in[c]}
        for own, other in edges.get(c, {}).get("between_chunk", {}):
            members.add(other)
        groups = defaultdict(list)
        for sv in members:
            obj = piece_objects[piece_of[sv]]
            if O is not None and obj == 0:
                continue
            groups[obj].append(sv)
        listed = sorted(tuple(sorted(g)) for g in groups.values())
        if listed:
            components[c] = listed

    return {"relabel": relabel, "sv_map": sv_map, "objects": piece_objects, "watershed": watershed,
            "edges": edges, "components": components}


# -- reading what a pipeline wrote ------------------------------------------------------

def _u64(buf):
    return [int.from_bytes(buf[i:i + 8], "little") for i in range(0, len(buf), 8)]


def _f32(buf):
    return [float(v) for v in np.frombuffer(bytes(buf), dtype="<f4")]


def _listing(folder, pattern):
    folder = folder.removeprefix("file://")
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(pattern, name)
        if m:
            out.append((tuple(int(g) for g in m.groups()), os.path.join(folder, name)))
    return out


def read_edges_file(path, coord, coord_of):
    """One edges_<x>_<y>_<z>.proto.zst into {kind: {(id1, id2): (affinity, area)}}, normalised.

    in_chunk keyed (min, max); between/cross keyed (own SV, other SV). Strict: an edge whose
    ends are in the wrong chunks, a between/cross edge inside one chunk, ragged arrays or a
    duplicate (in either orientation) raise ValueError naming the file.
    """
    coord = tuple(coord)
    with open(path, "rb") as fh:
        msg = ChunkEdgesMsg.FromString(zstandard.ZstdDecompressor().decompress(fh.read()))
    out = {}
    for kind in KINDS:
        part = getattr(msg, kind)
        ids1, ids2 = _u64(part.node_ids1), _u64(part.node_ids2)
        affs, areas = _f32(part.affinities), _u64(part.areas)
        if not len(ids1) == len(ids2) == len(affs) == len(areas):
            raise ValueError(f"{path}: {kind} arrays of different lengths "
                             f"{len(ids1)}, {len(ids2)}, {len(affs)}, {len(areas)}")
        found = {}
        for a, b, aff, area in zip(ids1, ids2, affs, areas):
            ca, cb = tuple(coord_of(a)), tuple(coord_of(b))
            if kind == "in_chunk":
                if ca != coord or cb != coord:
                    raise ValueError(f"{path}: in_chunk edge ({a}, {b}) has an end outside {coord}")
                key = (min(a, b), max(a, b))
            else:
                if ca == cb:
                    raise ValueError(f"{path}: {kind} edge ({a}, {b}) has both ends in chunk {ca}")
                if cb == coord:
                    a, b = b, a
                elif ca != coord:
                    raise ValueError(f"{path}: {kind} edge ({a}, {b}) has no end in {coord}")
                key = (a, b)
            if key in found:
                raise ValueError(f"{path}: duplicate {kind} edge {key}")
            found[key] = (aff, area)
        out[kind] = found
    return out


def read_components_file(path):
    """One components_<x>_<y>_<z>.proto into a list of tuples, in file order (not re-sorted)."""
    with open(path, "rb") as fh:
        flat = list(ChunkComponentsMsg.FromString(fh.read()).components)
    groups, i = [], 0
    while i < len(flat):
        n = int(flat[i])
        if n <= 0 or i + 1 + n > len(flat):
            raise ValueError(f"{path}: bad group length {n} at position {i}")
        groups.append(tuple(int(v) for v in flat[i + 1:i + 1 + n]))
        i += 1 + n
    return groups


def read_seg_outputs(edges_dir, components_dir, coord_of):
    """(edges, components) read from the folders, in `seg_reference`'s shapes.

    `coord_of(sv) -> (x, y, z)`: layer-2 chunk coordinate of a supervoxel id, e.g.
    `lambda sv: tuple(int(v) for v in layout.coords_of(sv, 1)[0])`. A file whose edges or
    groups are all empty gives no entry (as the reference does); groups keep file order.
    """
    edges = {}
    for coord, path in _listing(edges_dir, r"edges_(\d+)_(\d+)_(\d+)\.proto\.zst"):
        kinds = read_edges_file(path, coord, coord_of)
        if any(kinds.values()):
            edges[coord] = kinds
    components = {}
    for coord, path in _listing(components_dir, r"components_(\d+)_(\d+)_(\d+)\.proto"):
        groups = read_components_file(path)
        if groups:
            components[coord] = groups
    return edges, components


def diff_edges(expected, actual, rel=0.0):
    """Human-readable differences between two edges dicts (empty list = equal).

    `rel`: relative tolerance on affinities (0 = exact; inf must equal inf).
    """
    out = []
    for c in sorted(set(expected) | set(actual)):
        if c not in actual:
            out.append(f"chunk {c}: missing (expected {expected[c]})")
            continue
        if c not in expected:
            out.append(f"chunk {c}: unexpected {actual[c]}")
            continue
        for kind in KINDS:
            e, a = expected[c].get(kind, {}), actual[c].get(kind, {})
            for key in sorted(set(e) | set(a)):
                if key not in a:
                    out.append(f"chunk {c} {kind} {key}: missing, expected {e[key]}")
                elif key not in e:
                    out.append(f"chunk {c} {kind} {key}: unexpected {a[key]}")
                else:
                    (ea, er), (aa, ar) = e[key], a[key]
                    same_aff = ea == aa or (rel > 0 and math.isfinite(ea) and math.isfinite(aa)
                                            and abs(ea - aa) <= rel * max(abs(ea), abs(aa)))
                    if er != ar or not same_aff:
                        out.append(f"chunk {c} {kind} {key}: expected {e[key]}, got {a[key]}")
    return out
