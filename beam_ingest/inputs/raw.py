"""Raw agglomeration input (`ingest_config.AGGLOMERATION`): sharded edge and remap files.

Reads one layer-2 chunk's in-chunk / between / fake edges and its component mapping by
the file rules of docs/input-formats.md, and (unless the paths are unset) writes the
chunk's EDGES and COMPONENTS files in the precomputed formats, once: a retried chunk
finds them written and leaves them.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..chunk_inputs import ChunkReader, ChunkInputs, Edges, off_grid, off_grid_text
from ..graph import components, pair_keys
from ..errors import InputError
from .sharded import ShardReader


def edge_dtype(data_version: int) -> np.dtype:
    if data_version == 2:
        return np.dtype([("sv1", "<u8"), ("sv2", "<u8"), ("aff", "<f4"), ("area", "<u8")])
    aff = "<f8" if data_version == 3 else "<f4"
    if data_version not in (3, 4):
        raise InputError(f"data_source.DATA_VERSION: {data_version} is not a raw edge format (2, 3 or 4)")
    return np.dtype([("sv1", "<u8"), ("sv2", "<u8"), ("aff_x", aff), ("area_x", "<u8"),
                     ("aff_y", aff), ("area_y", "<u8"), ("aff_z", aff), ("area_z", "<u8")])


def decode_records(data: bytes, data_version: int, resolution, where: str):
    """(sv1, sv2, affinity, area) of one payload; versions 3/4 weighted by the resolution."""
    dtype = edge_dtype(data_version)
    if len(data) % dtype.itemsize:
        raise InputError(f"{where}: payload of {len(data)} bytes is not whole DATA_VERSION {data_version} "
                         f"records ({dtype.itemsize} bytes each); is DATA_VERSION right?")
    rec = np.frombuffer(data, dtype)
    if data_version == 2:
        return rec["sv1"], rec["sv2"], rec["aff"].astype(np.float64), rec["area"].astype(np.float64)
    rx, ry, rz = (float(r) for r in resolution)
    aff = rec["aff_x"] * rx + rec["aff_y"] * ry + rec["aff_z"] * rz
    area = rec["area_x"] * rx + rec["area_y"] * ry + rec["area_z"] * rz
    return rec["sv1"], rec["sv2"], aff.astype(np.float64), area.astype(np.float64)


def sum_duplicates(sv1, sv2, aff, area) -> Edges:
    """Records of the same (sv1, sv2) pair summed, pairs in (sv1, sv2) order."""
    if len(sv1) == 0:
        return Edges.empty()
    i1, i2, ids = pair_keys(sv1, sv2)
    size = len(ids)
    unique_keys, group = np.unique(i1 * size + i2, return_inverse=True)
    return Edges(ids[unique_keys // size], ids[unique_keys % size],
                 np.bincount(group, aff).astype(np.float32), np.bincount(group, area).astype(np.uint64))


def _between_files(layout, coord, neighbour) -> list[str]:
    """The between/fake file coordinates that can hold edges of chunk `coord` and face neighbour."""
    axis = int(np.flatnonzero(np.asarray(neighbour) != np.asarray(coord))[0])
    larger = max(coord, neighbour, key=lambda c: c[axis])
    out = []
    for d in itertools.product((0, -1), repeat=3):
        if d == (0, 0, 0) or d[axis] != -1:
            continue
        c = tuple(int(a + b) for a, b in zip(larger, d))
        if all(0 <= v < n for v, n in zip(c, layout.n_chunks)):
            out.append(c)
    return out


def _name(prefix, coord) -> str:
    return f"{prefix}_" + "_".join(str(int(v)) for v in coord) + ".data"


class RawReader(ChunkReader):
    """ChunkInputs from the raw agglomeration (the layer-2 stage writes them as precomputed
    files: outputs.chunk_files)."""

    def __init__(self, agglomeration_url: str, layout, data_version: int, resolution):
        self.url = agglomeration_url.rstrip("/")
        self.layout = layout
        self.data_version = data_version
        self.resolution = tuple(resolution)
        self._edges = self._remap = None

    def connect(self):
        if self._edges is None:
            self._edges = ShardReader(f"{self.url}/chunked_rg", self._key_name)
            self._remap = ShardReader(f"{self.url}/remap", self._key_name)

    def _key_name(self, key) -> str:
        """A shard key in words: the layer-1 chunk coordinates of its chunk id(s)."""
        keys = key if isinstance(key, tuple) else (key,)
        coords = [str(tuple(int(v) for v in self.layout.coords_of(np.uint64(k), 1)[0])) for k in keys]
        return f"layer-1 chunk {coords[0]}" if len(coords) == 1 else f"layer-1 chunks {' and '.join(coords)}"

    def _check_grid(self, svs: np.ndarray, name: str, key, where: str):
        """Every SV of a payload must lie in the chunk grid: refuse before anything is written."""
        outside = off_grid(self.layout, svs)
        if np.any(outside):
            bad = int(svs[np.flatnonzero(outside)[0]])
            raise InputError(f"{name} ({where}): SV {bad} of the payload keyed {key} {off_grid_text(self.layout, bad)}"
                             f"; {int(outside.sum())} such ids in that payload")

    @property
    def requests(self) -> int:
        return 0 if self._edges is None else self._edges.requests + self._remap.requests

    @property
    def rounds(self) -> int:
        return 0 if self._edges is None else self._edges.rounds + self._remap.rounds

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_edges"] = state["_remap"] = None
        return state

    def _in_bounds(self, c) -> bool:
        return all(0 <= v < n for v, n in zip(c, self.layout.n_chunks))

    def _face_neighbours(self, coord):
        for axis in range(3):
            for step in (-1, 1):
                n = list(coord)
                n[axis] += step
                if self._in_bounds(n):
                    yield tuple(n)

    def read_edges(self, coord) -> dict:
        coord = tuple(int(c) for c in coord)
        where = f"chunk {coord}"
        me = int(self.layout.chunk_id(1, *coord))
        x, y, z = coord
        in_files = {_name("in_chunk_0", c): {me} for c in itertools.product((x - 1, x), (y - 1, y), (z - 1, z))
                    if self._in_bounds(c)}
        pair_files = {}
        for neighbour in self._face_neighbours(coord):
            other = int(self.layout.chunk_id(1, *neighbour))
            for c in _between_files(self.layout, coord, neighbour):
                for prefix in ("between_chunks_0", "fake_0"):
                    pair_files.setdefault(_name(prefix, c), set()).update({(me, other), (other, me)})
        got = self._edges.read({**in_files, **pair_files}, lambda name: not name.startswith("in_chunk"), where)
        parts = {"in_chunk": [], "between_chunk": [], "cross_chunk": []}
        for (name, key), data in got.items():
            sv1, sv2, aff, area = decode_records(data, self.data_version, self.resolution, f"{name} ({where})")
            self._check_grid(np.concatenate([sv1, sv2]), f"{self._edges.url}/{name}", key, where)
            if name.startswith("in_chunk"):
                parts["in_chunk"].append((sv1, sv2, aff, area))
                continue
            kind = "between_chunk" if name.startswith("between") else "cross_chunk"
            if key[0] != me:  # keyed (neighbour, this chunk): swap so sv1 is ours
                sv1, sv2 = sv2, sv1
            parts[kind].append((sv1, sv2, aff, area))
        edges = {}
        for kind, chunks in parts.items():
            cols = [np.concatenate([c[i] for c in chunks]) if chunks else np.empty(0) for i in range(4)]
            edges[kind] = sum_duplicates(cols[0].astype(np.uint64), cols[1].astype(np.uint64), cols[2], cols[3])
        fake = edges["cross_chunk"]  # cuts of one SV: infinite affinity, unit area
        edges["cross_chunk"] = Edges(fake.ids1, fake.ids2, np.full(len(fake), np.inf, np.float32),
                                     np.ones(len(fake), np.uint64))
        return edges

    def read_components(self, coord):
        coord = tuple(int(c) for c in coord)
        wanted = {}
        for c in [coord] + list(self._face_neighbours(coord)):
            key = int(self.layout.chunk_id(1, *c))
            for mip in range(self.layout.layer_count - 1):
                wanted.setdefault(_name(f"done_{mip}", [v >> mip for v in c]), set()).add(key)
        where = f"chunk {coord}"
        got = self._remap.read(wanted, False, where)
        pairs = []
        for (name, key), data in got.items():
            if len(data) % 16:
                raise InputError(f"{self._remap.url}/{name} ({where}): the payload keyed {key} is not whole uint64 "
                                 "pairs")
            pairs.append(np.frombuffer(data, "<u8").reshape(-1, 2))
            self._check_grid(pairs[-1].ravel(), f"{self._remap.url}/{name}", key, where)
        pairs = [p for p in pairs if len(p)]
        if not pairs:
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        pairs = np.concatenate(pairs)
        a, b, svs = pair_keys(pairs[:, 0], pairs[:, 1])
        return svs, components(len(svs), a, b)

    def read(self, coord) -> ChunkInputs:
        self.connect()
        coord = tuple(int(c) for c in coord)
        return ChunkInputs(coord, self.read_edges(coord), *self.read_components(coord))
