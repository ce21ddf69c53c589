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

import numpy as np

from ..chunk_inputs import ChunkInputs, ChunkReader
from ..deadline import within
from ..errors import InputError
from .segmentation import ChunkPart, boundary, check_objects_agree, finish_chunk, in_chunk_contacts, label_chunk, \
    segment_table
from .storage_blocks import open_blocks

FACES = [tuple(d * (k == axis) for k in range(3)) for axis in range(3) for d in (-1, 1)]
WATERSHED_ENCODINGS = ("raw", "compressed_segmentation", "compresso", "crackle")  # exact for uint64 ids


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


@dataclasses.dataclass
class RelabelledChunk:
    """One layer-2 chunk read from the volumes (step 1): its voxel box's `start`, its
    supervoxels as read (`supervoxels`), their labels and each label's new id (`new_id[labels]`
    is the chunk's WATERSHED), the original id of each new segment id k at `original_ids[k - 1]`,
    and the parts it sends: `(chunk, ChunkPart)` for itself and each face neighbour."""
    coord: tuple
    start: np.ndarray
    supervoxels: np.ndarray
    labels: np.ndarray
    new_id: np.ndarray
    original_ids: np.ndarray
    parts: list


class SegmentationReader(ChunkReader):
    """Reads segmentation volumes per layer-2 chunk: step 1 (`read_chunk`) relabels a chunk and
    cuts the parts its neighbours need, step 2 (`read`) finishes a chunk's graph from its parts.
    It writes nothing (outputs.chunk_files writes WATERSHED, SV_MAP, EDGES and COMPONENTS)."""

    ARGS = ("layout", "mip", "supervoxels", "objects", "affinities", "fill_missing", "with_voxels")

    def __init__(self, layout, mip: int, supervoxels: str, objects: str | None = None, affinities: str | None = None,
                 fill_missing: bool = False, with_voxels: bool = False):
        self.layout, self.mip = layout, int(mip)
        self.supervoxels, self.objects, self.affinities = supervoxels, objects, affinities
        self.with_voxels = with_voxels  # the chunk's relabelled voxels go to itself (for the L2 cache)
        self.fill_missing = fill_missing  # a missing input storage file reads as 0
        self.urls = dict(supervoxels=supervoxels, objects=objects, affinities=affinities)
        self.requests = self.rounds = 0
        self._blocks = {}

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.ARGS}  # what a worker gets: no clients

    def __setstate__(self, state):
        self.__init__(**state)

    def connect(self):
        reuse_freed_memory()
        for key in ("supervoxels", "objects", "affinities"):
            self._storage(key)

    def _storage(self, key):
        if self.urls[key] is None:
            return None
        if key not in self._blocks:
            self._blocks[key] = open_blocks(f"ingest_config.{key.upper()}: {self.urls[key]}", self.urls[key],
                                            self.mip, self.fill_missing)
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
    def read_chunk(self, coord, built: bool = True) -> RelabelledChunk:
        """Reads and relabels one chunk, with the parts for itself and each face neighbour.
        `built`: the chunk is built by this run (else it is read only for its neighbours'
        sake, and its own part carries no voxels)."""
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
        new_id = segment_table(self._prefix(coord), len(ids.ids))[rank_of]  # of each label
        planes, lower = boundary(labels, rank_of, affinities)
        own = ChunkPart(ids, planes, lower, in_chunk_contacts(labels, len(ids.ids), affinities, rank_of))
        if self.with_voxels and built:
            own.voxels, own.voxel_ids = labels, new_id
        parts = [(coord, own)]
        for n in self.neighbours(coord):
            axis = next(k for k in range(3) if n[k] != coord[k])
            side = 1 if n[axis] > coord[axis] else -1
            parts.append((n, ChunkPart(ids, {(axis, side): planes[(axis, side)]},
                                       {axis: lower[axis]} if side < 0 else {})))
        return RelabelledChunk(coord, start, supervoxels, labels, new_id, ids.ids, parts)

    # step 2 -------------------------------------------------------------------------------
    def coord_of(self, element):
        return tuple(int(c) for c in element[0])

    def read(self, element) -> ChunkInputs:
        """`element`: (chunk, its parts from `read_chunk`)."""
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
        inputs = ChunkInputs(coord, graph.edges, graph.component_svs, graph.component_labels)
        if own.voxels is not None:
            inputs.voxels = (own.voxels, own.voxel_ids)
        return inputs

    def preview(self, coords):
        """`(chunk, ChunkInputs)` of these chunks, in process (a `--test` run's per-chunk
        counts, `verify`'s expected inputs)."""
        coords = sorted({tuple(int(v) for v in c) for c in coords})
        parts = {c: [] for c in coords}
        for source in sorted({n for c in coords for n in [c, *self.neighbours(c)]}):
            for target, part in self.read_chunk(source, built=False).parts:
                if target in parts:
                    parts[target].append(part)
        for coord in coords:
            yield coord, self.read((coord, parts[coord]))


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
