"""`--from_segmentation`: layer-2 inputs computed from segmentation volumes.

Two steps per layer-2 chunk (docs/segmentation-input.md). `read_chunk` reads the chunk's
SUPERVOXELS (OBJECTS, AFFINITIES) once, writes its WATERSHED region and SV_MAP file, finds
the contacts inside it, and hands its ids and one-voxel boundary planes to itself and to
its face neighbours. `read` gets those parts (the neighbours' planes are the chunk's face
shell), adds the contacts across its faces, and writes the chunk's EDGES and COMPONENTS
files before handing the same edges and components to the layer-2 build. A retried chunk
writes identical bytes.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np

from ..chunk_inputs import ChunkInputs, ChunkReader
from ..deadline import within
from ..errors import InputError
from .precomputed import components_filename, edges_filename, encode_components, encode_edges
from .segmentation import ChunkPart, boundary, check_objects_agree, finish_chunk, in_chunk_contacts, label_chunk, \
    segment_table
from .storage_blocks import StorageBlocks

FACES = [tuple(d * (k == axis) for k in range(3)) for axis in range(3) for d in (-1, 1)]
WATERSHED_ENCODINGS = ("raw", "compressed_segmentation", "compresso", "crackle")  # exact for uint64 ids
WATERSHED_GZIP_LEVEL = 1  # level 9 (the default) took 28 ms per 64x64x32 chunk for 1.6x smaller files


def reuse_freed_memory(limit: int = 1 << 30) -> bool:
    """Ask glibc to serve blocks up to `limit` bytes from its heap and to keep freed memory
    there. By default every array over 32 MB is a fresh mmap whose pages fault in on first
    touch, and each numpy temporary of a large chunk is one: 256x256x128 chunks were read and
    processed ~1.5x faster with this (a worker's high-water mark is one chunk's anyway).
    Returns False where the C library is not glibc."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):
        return False


def as_unsigned(ids: np.ndarray) -> np.ndarray:
    """Signed ids by their bit pattern (two's complement): -1 of an int64 volume is the id
    2**64 - 1. Distinct ids stay distinct and 0 stays background; SV_MAP holds them so (view
    its arrays as the volume's signed type to get the original values back)."""
    if ids.dtype.kind == "i":
        return ids.view(np.dtype(f"u{ids.dtype.itemsize}"))
    return ids


def sv_map_filename(coord) -> str:
    x, y, z = (int(c) for c in coord)
    return f"sv_map_{x}_{y}_{z}.npy"


class SegmentationReader(ChunkReader):
    """Reads segmentation volumes per layer-2 chunk; writes what PyChunkedGraph reads."""

    def __init__(self, layout, mip: int, supervoxels: str, watershed: str, edges_out: str, components_out: str,
                 objects: str | None = None, affinities: str | None = None, sv_map: str | None = None,
                 in_place: bool = False, fill_missing: bool = False, with_voxels: bool = False):
        self._args = dict(layout=layout, mip=mip, supervoxels=supervoxels, watershed=watershed, edges_out=edges_out,
                          components_out=components_out, objects=objects, affinities=affinities, sv_map=sv_map,
                          in_place=in_place, fill_missing=fill_missing,
                          with_voxels=with_voxels)  # what a worker gets: no clients
        self.with_voxels = with_voxels  # the chunk's relabelled voxels go to itself (for the L2 cache)
        self.layout, self.mip = layout, int(mip)
        self.urls = dict(supervoxels=supervoxels, watershed=watershed, edges=edges_out, components=components_out,
                         objects=objects, affinities=affinities, sv_map=sv_map)
        self.in_place = in_place  # WATERSHED is SUPERVOXELS, already chunk-encoded: nothing is rewritten
        self.fill_missing = fill_missing  # a missing input storage file reads as 0
        self.requests = self.rounds = 0
        self._volumes = {}
        self._blocks = {}
        self._files = {}

    def __getstate__(self):
        return self._args

    def __setstate__(self, state):
        self.__init__(**state)

    def connect(self):
        reuse_freed_memory()
        for key in ("supervoxels", "objects", "affinities", "watershed"):
            self._storage(key)

    def _folder(self, key):
        """One OutputFolder per output folder and worker (each opens connections of its own)."""
        if key not in self._files:
            from ..outputs.files import OutputFolder
            config_key = {"edges": "data_source.EDGES", "components": "data_source.COMPONENTS",
                          "sv_map": "ingest_config.SV_MAP"}[key]
            self._files[key] = OutputFolder(config_key, self.urls[key])
        return self._files[key]

    def _volume(self, key):
        url = self.urls[key]
        if url is None:
            return None
        if key not in self._volumes:
            from cloudvolume import CloudVolume
            section = "data_source" if key == "watershed" else "ingest_config"
            where = f"{section}.{key.upper()}: {url}"
            try:
                self._volumes[key] = within(where, CloudVolume, url, mip=self.mip, progress=False,
                                            fill_missing=self._fills(key), bounded=False, cache=False, lru_bytes=0,
                                            non_aligned_writes=False, delete_black_uploads=False, provenance={})
            except InputError:
                raise
            except Exception as exc:  # storage errors vary
                raise InputError(f"{where} cannot be opened: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
        return self._volumes[key]

    def _fills(self, key) -> bool:
        """Whether a storage file missing from this volume reads as background (inputs only)."""
        return self.fill_missing and key != "watershed"

    def _storage(self, key):
        if self.urls[key] is None:
            return None
        if key not in self._blocks:
            self._blocks[key] = StorageBlocks(self._volume(key), fill_missing=self._fills(key))
        return self._blocks[key]

    # geometry -----------------------------------------------------------------------------
    def box(self, coord):
        """Absolute voxel `(start, stop)` of a chunk, clipped to the volume."""
        return self.layout.voxel_box(coord)

    def _read(self, key, start, stop, coord):
        blocks = self._storage(key)
        before = blocks.files_read
        try:
            return within(f"voxels {start.tolist()}..{stop.tolist()}", blocks.read, start, stop)
        except Exception as exc:  # storage and format errors vary
            raise InputError(f"ingest_config.{key.upper()}: {self.urls[key]} cannot be read for layer-2 chunk "
                             f"{tuple(coord)} (voxels {start.tolist()}..{stop.tolist()}): {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        finally:
            self.requests += max(blocks.files_read - before, 1)
            self.rounds += 1

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
    def read_chunk(self, coord, write: bool = True):
        """Reads one chunk; yields `(chunk, ChunkPart)` for itself and each face neighbour.
        `write`: also write its WATERSHED region and SV_MAP file (False for a chunk that is
        read only for its neighbours' sake)."""
        coord = tuple(int(c) for c in coord)
        where = f"layer-2 chunk {coord}"
        start, stop = self.box(coord)
        supervoxels = as_unsigned(self._read("supervoxels", start, stop, coord)[..., 0])
        objects = as_unsigned(self._read("objects", start, stop, coord)[..., 0]) if self.urls["objects"] else None
        affinities = None
        if self.urls["affinities"]:
            affinities = self._read("affinities", start, stop, coord)
            if affinities.shape[-1] != 3:
                raise InputError(f"ingest_config.AFFINITIES: {self.urls['affinities']} has {affinities.shape[-1]} "
                                 "channel(s), expected 3 (x, y, z)")
        ids, labels, rank_of = label_chunk(coord, supervoxels, objects, (1 << self.layout.segment_bits(1)) - 1, where)
        prefix = self._prefix(coord)
        new_id = segment_table(prefix, len(ids.ids))[rank_of]  # of each label
        if write:
            self._write_watershed(coord, labels, new_id, supervoxels, start)
            self._write_sv_map(coord, ids.ids)
        planes, lower = boundary(labels, rank_of, affinities)
        own = ChunkPart(ids, planes, lower, in_chunk_contacts(labels, len(ids.ids), affinities, rank_of))
        if self.with_voxels and write:
            own.voxels, own.voxel_ids = labels, new_id
        yield coord, own
        for n in self.neighbours(coord):
            axis = next(k for k in range(3) if n[k] != coord[k])
            side = 1 if n[axis] > coord[axis] else -1
            yield n, ChunkPart(ids, {(axis, side): planes[(axis, side)]}, {axis: lower[axis]} if side < 0 else {})

    def _write_watershed(self, coord, labels, new_id, original, start):
        """WATERSHED's region of the chunk: `new_id[labels]`."""
        if self.in_place:
            watershed = new_id[labels]
            if not np.array_equal(watershed, original):
                bad = original[watershed != original].ravel()[0]
                raise InputError(f"data_source.WATERSHED names SUPERVOXELS, but layer-2 chunk {coord} holds id "
                                 f"{int(bad)}, which is not chunk-encoded by the rule (it would be rewritten in "
                                 "place); give WATERSHED a path of its own")
            return
        try:
            within(f"data_source.WATERSHED: {self.urls['watershed']} (layer-2 chunk {coord})",
                   self._storage("watershed").write_mapped, start, labels, new_id, WATERSHED_GZIP_LEVEL)
        except InputError:
            raise
        except Exception as exc:  # storage errors vary
            raise InputError(f"data_source.WATERSHED: {self.urls['watershed']} could not be written for layer-2 chunk "
                             f"{coord}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None

    def _write_sv_map(self, coord, ids):
        if self.urls["sv_map"]:
            data = None  # a chunk without supervoxels has no file (one left by another run is removed)
            if len(ids):
                buffer = io.BytesIO()
                np.save(buffer, ids)  # original id of the new segment id k at position k - 1
                data = buffer.getvalue()
            self._folder("sv_map").sync(sv_map_filename(coord), data)

    # step 2 -------------------------------------------------------------------------------
    def coord_of(self, element):
        return tuple(int(c) for c in element[0])

    def read(self, element, write: bool = True) -> ChunkInputs:
        """`element`: (chunk, its parts from `read_chunk`). `write`: its EDGES and COMPONENTS files."""
        coord = self.coord_of(element)
        parts = {tuple(part.coord): part for part in element[1]}
        if coord not in parts or parts[coord].in_chunk is None:
            raise RuntimeError(f"layer-2 chunk {coord}: its own part did not arrive")
        own = parts.pop(coord)
        neighbours = [parts[c] for c in sorted(parts)]
        missing = sorted(set(self.neighbours(coord)) - set(parts))
        if missing:
            raise RuntimeError(f"layer-2 chunk {coord}: the parts of its neighbours {missing} did not arrive")
        where = f"layer-2 chunk {coord}"
        check_objects_agree(own.ids, [n.ids for n in neighbours], where)
        prefixes = {c: self._prefix(c) for c in [coord] + [n.coord for n in neighbours]}
        graph = finish_chunk(own, neighbours, prefixes, self.layout.segment_bits(1))
        if write:  # exactly this run's files: a chunk without edges (components) has none
            self._folder("edges").sync(edges_filename(coord), encode_edges(graph.edges)
                                       if any(len(e) for e in graph.edges.values()) else None)
            self._folder("components").sync(components_filename(coord), encode_components(
                graph.component_svs, graph.component_labels) if len(graph.component_svs) else None)
        inputs = ChunkInputs(coord, graph.edges, graph.component_svs, graph.component_labels)
        if own.voxels is not None:
            inputs.voxels = (own.voxels, own.voxel_ids)
        inputs.edges_file = f"{self.urls['edges'].rstrip('/')}/{edges_filename(coord)}"
        inputs.components_file = f"{self.urls['components'].rstrip('/')}/{components_filename(coord)}"
        return inputs

    def preview(self, coords):
        """`(chunk, ChunkInputs)` of these chunks, in process, writing nothing (a `--test` run's
        per-chunk counts)."""
        coords = sorted({tuple(int(v) for v in c) for c in coords})
        parts = {c: [] for c in coords}
        for source in sorted({n for c in coords for n in [c, *self.neighbours(c)]}):
            for target, part in self.read_chunk(source, write=False):
                if target in parts:
                    parts[target].append(part)
        for coord in coords:
            yield coord, self.read((coord, parts[coord]), write=False)


def _scale(info: dict, mip: int) -> dict:
    return info["scales"][mip]


@dataclasses.dataclass(frozen=True)
class CheckedVolumes:
    """What `check_segmentation_volumes` found: the volumes' geometry (a WatershedInfo), whether
    WATERSHED is SUPERVOXELS itself (`in_place`: relabelled ids are checked, never written),
    and the info to create WATERSHED with (None when it exists already or is in place)."""
    geometry: object
    in_place: bool
    watershed_info: dict | None = None


def check_segmentation_volumes(settings, mip: int, chunk_size) -> CheckedVolumes:
    """The launcher's checks of `--from_segmentation`'s volumes (docs/segmentation-input.md);
    raises a ConfigError/InputError naming the key."""
    from ..errors import ConfigError
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
    _check_codec("SUPERVOXELS", ic.SUPERVOXELS, sv_info, mip)
    if sv_info.get("type", "segmentation") != "segmentation" or not str(sv_info.get("data_type", "")).startswith(
            ("uint", "int")):
        raise InputError(f"ingest_config.SUPERVOXELS: {ic.SUPERVOXELS} is a {sv_info.get('type')} volume of "
                         f"{sv_info.get('data_type')}, expected an integer segmentation")
    if _channels(sv_info) != 1:
        raise InputError(f"ingest_config.SUPERVOXELS: {ic.SUPERVOXELS} has {_channels(sv_info)} channels, expected 1 "
                         "(one supervoxel id per voxel)")
    for key, expect in (("OBJECTS", "an integer segmentation with 1 channel"),
                        ("AFFINITIES", "float32 with 3 channels")):
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
        _check_codec(key, url, info, mip)
        ok = (str(info.get("data_type", "")).startswith(("uint", "int")) and _channels(info) == 1 if key == "OBJECTS"
              else info.get("data_type") == "float32" and _channels(info) == 3)
        if not ok:
            raise InputError(f"ingest_config.{key}: {url} holds {info.get('data_type')} with "
                             f"{_channels(info)} channel(s), expected {expect}")
    from ..locations import same_location
    in_place = same_location(ds.WATERSHED, ic.SUPERVOXELS)  # any two spellings of one place
    if in_place:
        if sv_info.get("data_type") != "uint64":
            raise InputError(f"data_source.WATERSHED names SUPERVOXELS, whose ids are {sv_info.get('data_type')}; "
                             "chunk-encoded ids need uint64: give WATERSHED a path of its own")
        return CheckedVolumes(geometry, in_place=True)
    if mip != 0:
        raise InputError(f"data_source.CV_MIP: {mip} with --from_segmentation: the WATERSHED the ingest writes has one "
                         "scale (the volumes' at CV_MIP), which PyChunkedGraph opens at mip CV_MIP; use CV_MIP: 0 on "
                         "volumes whose first scale is the one to ingest, or WATERSHED = SUPERVOXELS (in place)")
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
        return CheckedVolumes(geometry, in_place=False, watershed_info=wanted)
    scales = existing.get("scales") or [{}]
    scale = scales[0]
    same = (existing.get("data_type") == "uint64" and list(scale.get("voxel_offset", [])) == list(geometry.voxel_offset)
            and list(scale.get("size", [])) == list(geometry.size)
            and [float(r) for r in scale.get("resolution", [])] == list(geometry.resolution))
    if not same:
        raise InputError(f"data_source.WATERSHED: {ds.WATERSHED} exists and is not a uint64 volume with "
                         "SUPERVOXELS' resolution, offset and size; give the output another path or delete it")
    if _channels(existing) != 1:
        raise InputError(f"data_source.WATERSHED: {ds.WATERSHED} exists with {_channels(existing)} channels; the "
                         "watershed has 1: give the output another path or delete it")
    encoding = scale.get("encoding", "raw")
    if encoding not in WATERSHED_ENCODINGS:
        raise InputError(f"data_source.WATERSHED: {ds.WATERSHED} exists stored as {encoding}, which cannot hold "
                         f"uint64 ids exactly (the ingest writes {', '.join(WATERSHED_ENCODINGS)}): give the output "
                         "another path or delete it")
    _check_codec("WATERSHED", ds.WATERSHED, existing, 0, section="data_source")
    if scale.get("sharding"):
        raise InputError(f"data_source.WATERSHED: {ds.WATERSHED} exists and is sharded; the ingest writes it chunk "
                         "by chunk, as unsharded storage files: give the output another path or delete it")
    for sizes in scale.get("chunk_sizes", [[1, 1, 1]])[:1]:
        if any(c % s for c, s in zip(chunk_size, sizes)):
            raise InputError(f"data_source.WATERSHED: its storage chunk size {list(sizes)} does not divide "
                             f"graph_config.CHUNK_SIZE {list(chunk_size)} (two layer-2 chunks would write one "
                             "storage chunk)")
    return CheckedVolumes(geometry, in_place=False)


def _channels(info: dict) -> int:
    try:
        return int(info.get("num_channels", 1))
    except (TypeError, ValueError):
        return -1


def _check_codec(key, url, info, mip, section="ingest_config"):
    """A volume whose encoding this worker could not decode fails here, not at its first chunk."""
    from cloudvolume import chunks
    encoding = _scale(info, mip).get("encoding", "raw")
    try:
        if encoding not in chunks.SUPPORTED_ENCODINGS:
            raise ImportError(f"cloud-volume does not read {encoding!r}")
        chunks.check_installed(encoding)
    except ImportError as exc:
        raise InputError(f"{section}.{key}: {url} is stored as {encoding}, which cannot be decoded here: "
                         f"{exc}") from None


def _storage_chunk(chunk_size) -> list:
    """The WATERSHED output's storage chunk: the largest divisor of CHUNK_SIZE up to 128 per axis."""
    return [max(d for d in range(1, min(int(c), 128) + 1) if int(c) % d == 0) for c in chunk_size]
