"""`--from_segmentation`: layer-2 inputs computed from segmentation volumes with CloudVolume.

Two steps per layer-2 chunk (spec/segmentation-input.md): `read_ids` reads the chunk's
SUPERVOXELS (and OBJECTS) and tells its original ids (and their objects); `read` gets the
id sets of the chunk and its face neighbours, reads the chunk plus a one-voxel shell
(SUPERVOXELS, AFFINITIES), and writes the chunk's WATERSHED region, EDGES, COMPONENTS and
SV_MAP files before handing the same edges and components to the layer-2 build. A retried
chunk writes identical bytes.
"""
from __future__ import annotations

import io

import numpy as np

from .precomputed import ChunkInputs, InputError, components_filename, edges_filename, encode_components, \
    encode_edges
from .segmentation import ChunkIds, check_objects_agree, chunk_graph, chunk_ids

FACES = [tuple(d * (k == axis) for k in range(3)) for axis in range(3) for d in (-1, 1)]


def sv_map_filename(coord) -> str:
    x, y, z = (int(c) for c in coord)
    return f"sv_map_{x}_{y}_{z}.npy"


class SegmentationReader:
    """Reads segmentation volumes per layer-2 chunk; writes what PyChunkedGraph reads."""

    def __init__(self, layout, mip: int, supervoxels: str, watershed: str, edges_out: str, components_out: str,
                 objects: str | None = None, affinities: str | None = None, sv_map: str | None = None,
                 in_place: bool = False):
        self._args = dict(layout=layout, mip=mip, supervoxels=supervoxels, watershed=watershed, edges_out=edges_out,
                          components_out=components_out, objects=objects, affinities=affinities, sv_map=sv_map,
                          in_place=in_place)  # what a worker gets: no clients
        self.layout, self.mip = layout, int(mip)
        self.urls = dict(supervoxels=supervoxels, watershed=watershed, edges=edges_out, components=components_out,
                         objects=objects, affinities=affinities, sv_map=sv_map)
        self.in_place = in_place  # WATERSHED is SUPERVOXELS, already chunk-encoded: nothing is rewritten
        self.requests = self.rounds = 0
        self._volumes = {}
        self._files = {}

    def __getstate__(self):
        return self._args

    def __setstate__(self, state):
        self.__init__(**state)

    def connect(self):
        for key in ("supervoxels", "objects", "affinities", "watershed"):
            self._volume(key)

    def _folder(self, key):
        """One CloudFiles per output folder and worker (each would open connections of its own)."""
        if key not in self._files:
            from cloudfiles import CloudFiles
            self._files[key] = CloudFiles(self.urls[key], progress=False)
        return self._files[key]

    def _volume(self, key):
        url = self.urls[key]
        if url is None:
            return None
        if key not in self._volumes:
            from cloudvolume import CloudVolume
            self._volumes[key] = CloudVolume(url, mip=self.mip, progress=False, fill_missing=False,
                                             bounded=False, cache=False, lru_bytes=0, non_aligned_writes=False,
                                             delete_black_uploads=False)
        return self._volumes[key]

    # geometry -----------------------------------------------------------------------------
    def box(self, coord, shell: int = 0):
        """Absolute voxel `(start, stop)` of a chunk, grown by `shell` and clipped to the volume."""
        layout = self.layout
        offset, size, chunk = (np.asarray(v, np.int64) for v in (layout.voxel_offset, layout.voxel_counts,
                                                                    layout.chunk_size))
        start = offset + np.asarray(coord, np.int64) * chunk
        stop = np.minimum(start + chunk, offset + size)
        return np.maximum(start - shell, offset), np.minimum(stop + shell, offset + size)

    def _read(self, key, start, stop, coord):
        cv = self._volume(key)
        self.requests += 1
        try:
            cutout = cv[int(start[0]):int(stop[0]), int(start[1]):int(stop[1]), int(start[2]):int(stop[2])]
        except Exception as exc:  # storage and format errors vary
            raise InputError(f"ingest_config.{key.upper()}: {self.urls[key]} cannot be read for layer-2 chunk "
                             f"{tuple(coord)} (voxels {start.tolist()}..{stop.tolist()}): {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        return np.asarray(cutout)

    def _read_shelled(self, key, start, stop, inner_start, inner_stop, coord, sides):
        """The box `start..stop` holding the chunk `inner_start..inner_stop` and its one-voxel face
        shells on `sides` (-1 lower, 1 upper), read as the chunk plus one thin slab per face: the
        shell's edges and corners (never part of a face contact) stay 0, and no whole neighbouring
        storage chunk row is fetched for them."""
        inner = self._read(key, inner_start, inner_stop, coord)
        out = np.zeros(tuple(int(v) for v in stop - start) + inner.shape[3:], inner.dtype)
        own = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(inner_start, inner_stop, start))
        out[own] = inner
        for axis in range(3):
            for side in sides:
                lo, hi = inner_start.copy(), inner_stop.copy()
                if side < 0 and inner_start[axis] > start[axis]:
                    lo[axis], hi[axis] = inner_start[axis] - 1, inner_start[axis]
                elif side > 0 and inner_stop[axis] < stop[axis]:
                    lo[axis], hi[axis] = inner_stop[axis], inner_stop[axis] + 1
                else:
                    continue
                target = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
                out[target] = self._read(key, lo, hi, coord)
        return out

    def _prefix(self, coord) -> int:
        return int(self.layout.chunk_id(1, *coord))

    def neighbours(self, coord):
        """The face neighbours of a chunk inside the grid."""
        n = self.layout.n_chunks
        for d in FACES:
            c = tuple(int(a + b) for a, b in zip(coord, d))
            if all(0 <= v < m for v, m in zip(c, n)):
                yield c

    # step 1 -------------------------------------------------------------------------------
    def read_ids(self, coord) -> ChunkIds:
        coord = tuple(int(c) for c in coord)
        start, stop = self.box(coord)
        sv = self._read("supervoxels", start, stop, coord)[..., 0]
        obj = self._read("objects", start, stop, coord)[..., 0] if self.urls["objects"] else None
        return chunk_ids(coord, sv, obj, max_segment=(1 << self.layout.segment_bits(1)) - 1)

    # step 2 -------------------------------------------------------------------------------
    @staticmethod
    def coord_of(element):
        return tuple(int(c) for c in element[0])

    def read(self, element) -> ChunkInputs:
        coord = self.coord_of(element)
        id_sets = {tuple(found.coord): found for found in element[1]}
        if coord not in id_sets:
            raise RuntimeError(f"layer-2 chunk {coord}: its own id set did not arrive")
        where = f"layer-2 chunk {coord}"
        check_objects_agree(id_sets[coord], [id_sets[c] for c in self.neighbours(coord) if c in id_sets], where)
        start, stop = self.box(coord, shell=1)
        inner_start, inner_stop = self.box(coord)
        own = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(inner_start, inner_stop, start))
        box = self._read_shelled("supervoxels", start, stop, inner_start, inner_stop, coord, (-1, 1))[..., 0]
        affinities = None
        if self.urls["affinities"]:
            # a link's affinity sits at its upper voxel: inside the chunk, or in an upper face shell
            affinities = self._read_shelled("affinities", start, stop, inner_start, inner_stop, coord, (1,))
            if affinities.shape[-1] != 3:
                raise InputError(f"ingest_config.AFFINITIES: {self.urls['affinities']} has {affinities.shape[-1]} "
                                 "channel(s), expected 3 (x, y, z)")
        prefixes = {c: self._prefix(c) for c in id_sets}
        graph = chunk_graph(box, own, prefixes, id_sets, coord, self.layout.segment_bits(1), affinities, where)
        self._write(coord, graph, box[own], id_sets[coord], inner_start, inner_stop)
        inputs = ChunkInputs(coord, graph.edges, graph.component_svs, graph.component_labels)
        inputs.edges_file = f"{self.urls['edges'].rstrip('/')}/{edges_filename(coord)}"
        inputs.components_file = f"{self.urls['components'].rstrip('/')}/{components_filename(coord)}"
        return inputs

    def _write(self, coord, graph, original, ids: ChunkIds, start, stop):
        if self.in_place:
            if not np.array_equal(graph.watershed, original):
                bad = original[graph.watershed != original].ravel()[0]
                raise InputError(f"data_source.WATERSHED names SUPERVOXELS, but layer-2 chunk {coord} holds id "
                                 f"{int(bad)}, which is not chunk-encoded by the rule (it would be rewritten in "
                                 "place); give WATERSHED a path of its own")
        else:
            cv = self._volume("watershed")
            cv[int(start[0]):int(stop[0]), int(start[1]):int(stop[1]), int(start[2]):int(stop[2])] = \
                graph.watershed[..., np.newaxis]
        if any(len(e) for e in graph.edges.values()):
            self._folder("edges").put(edges_filename(coord), encode_edges(graph.edges), raw=True, compress=None)
        if len(graph.component_svs):
            self._folder("components").put(
                components_filename(coord), encode_components(graph.component_svs, graph.component_labels),
                raw=True, compress=None)
        if self.urls["sv_map"] and len(ids.ids):
            buffer = io.BytesIO()
            np.save(buffer, ids.ids)  # original id of the new segment id k at position k - 1
            self._folder("sv_map").put(sv_map_filename(coord), buffer.getvalue(), raw=True, compress=None)



def _scale(info: dict, mip: int) -> dict:
    return info["scales"][mip]


def check_segmentation_volumes(settings, mip: int, chunk_size) -> dict:
    """The launcher's checks of `--from_segmentation`'s volumes (spec/segmentation-input.md);
    raises a ConfigError/InputError naming the key. Returns the plan: `{"geometry":
    WatershedInfo of SUPERVOXELS, "in_place": bool, "watershed_info": info to create or None}`."""
    from ..config import ConfigError
    from .watershed import read_info, read_watershed_info
    ic, ds = settings.ingest, settings.data_source
    if not ic.SUPERVOXELS:
        raise ConfigError("ingest_config.SUPERVOXELS: required key is missing (--from_segmentation reads the "
                          "supervoxel segmentation from it)")
    for key in ("EDGES", "COMPONENTS"):
        if not getattr(ds, key):
            raise ConfigError(f"data_source.{key}: required key is missing (--from_segmentation writes the "
                              f"{key.lower()} files there)")
    geometry = read_watershed_info(ic.SUPERVOXELS, mip)
    sv_info = read_info(ic.SUPERVOXELS)
    if sv_info.get("type", "segmentation") != "segmentation" or not str(sv_info.get("data_type", "")).startswith(
            ("uint", "int")):
        raise InputError(f"ingest_config.SUPERVOXELS: {ic.SUPERVOXELS} is a {sv_info.get('type')} volume of "
                         f"{sv_info.get('data_type')}, expected an integer segmentation")
    for key, expect in (("OBJECTS", "an integer segmentation"), ("AFFINITIES", "float32 with 3 channels")):
        url = getattr(ic, key)
        if not url:
            continue
        found = read_watershed_info(url, mip)
        if found != geometry:
            raise InputError(f"ingest_config.{key} and ingest_config.SUPERVOXELS differ at CV_MIP={mip}: "
                             f"offset {list(found.voxel_offset)} vs {list(geometry.voxel_offset)}, size "
                             f"{list(found.size)} vs {list(geometry.size)}, resolution {list(found.resolution)} vs "
                             f"{list(geometry.resolution)}")
        info = read_info(url)
        ok = (str(info.get("data_type", "")).startswith(("uint", "int")) if key == "OBJECTS"
              else info.get("data_type") == "float32" and int(info.get("num_channels", 1)) == 3)
        if not ok:
            raise InputError(f"ingest_config.{key}: {url} holds {info.get('data_type')} with "
                             f"{info.get('num_channels', 1)} channel(s), expected {expect}")
    in_place = ds.WATERSHED.rstrip("/") == ic.SUPERVOXELS.rstrip("/")
    if in_place:
        if sv_info.get("data_type") != "uint64":
            raise InputError(f"data_source.WATERSHED names SUPERVOXELS, whose ids are {sv_info.get('data_type')}; "
                             "chunk-encoded ids need uint64: give WATERSHED a path of its own")
        return {"geometry": geometry, "in_place": True, "watershed_info": None}
    storage = _storage_chunk(chunk_size)
    wanted = {"type": "segmentation", "data_type": "uint64", "num_channels": 1, "scales": [{
        "key": "_".join(f"{r:g}" for r in geometry.resolution), "resolution": list(geometry.resolution),
        "voxel_offset": list(geometry.voxel_offset), "size": list(geometry.size), "chunk_sizes": [storage],
        "encoding": "raw"}]}
    try:
        existing = read_info(ds.WATERSHED)
    except InputError as exc:
        if "not found" not in str(exc):
            raise
        return {"geometry": geometry, "in_place": False, "watershed_info": wanted}
    scales = existing.get("scales") or [{}]
    scale = scales[0]
    same = (existing.get("data_type") == "uint64" and list(scale.get("voxel_offset", [])) == list(geometry.voxel_offset)
            and list(scale.get("size", [])) == list(geometry.size)
            and [float(r) for r in scale.get("resolution", [])] == list(geometry.resolution))
    if not same:
        raise InputError(f"data_source.WATERSHED: {ds.WATERSHED} exists and is not a uint64 volume with "
                         "SUPERVOXELS' resolution, offset and size; give the output another path or delete it")
    for sizes in scale.get("chunk_sizes", [[1, 1, 1]])[:1]:
        if any(c % s for c, s in zip(chunk_size, sizes)):
            raise InputError(f"data_source.WATERSHED: its storage chunk size {list(sizes)} does not divide "
                             f"graph_config.CHUNK_SIZE {list(chunk_size)} (two layer-2 chunks would write one "
                             "storage chunk)")
    return {"geometry": geometry, "in_place": False, "watershed_info": None}


def _storage_chunk(chunk_size) -> list:
    """The WATERSHED output's storage chunk: the largest divisor of CHUNK_SIZE up to 128 per axis."""
    return [max(d for d in range(1, min(int(c), 128) + 1) if int(c) % d == 0) for c in chunk_size]


def create_watershed(url: str, info: dict) -> None:
    from cloudvolume import CloudVolume
    CloudVolume(url, info=info, progress=False).commit_info()
