"""Every file a run writes per layer-2 chunk, written here and nowhere else.

- EDGES and COMPONENTS (with `--raw` and `--from_segmentation`): the chunk's inputs in the
  precomputed format, written by the layer-2 stage once it has read them;
- WATERSHED's region and SV_MAP (with `--from_segmentation`): the chunk's relabelled
  supervoxels and their original ids, written by the stage that reads the volumes;
- the box of the OCDBT copy of WATERSHED (`--ocdbt`, outputs/ocdbt.py): from the relabelled
  chunk with `--from_segmentation`, else from the WATERSHED block the layer-2 stage reads.

Each file holds exactly this run's data (`files.OutputFolder`). A `ChunkFiles` travels to
the workers with the job: it holds paths only, and each worker opens its own connections.
"""
from __future__ import annotations

import dataclasses
import io
import time

import numpy as np

from ..deadline import within
from ..errors import InputError
from ..metrics import count
from ..inputs.precomputed import components_filename, edges_filename, encode_components, encode_edges
from .files import OutputFolder

WATERSHED_GZIP_LEVEL = 1  # level 9 (the default) took 28 ms per 64x64x32 chunk for 1.6x smaller files


def sv_map_filename(coord) -> str:
    x, y, z = (int(c) for c in coord)
    return f"sv_map_{x}_{y}_{z}.npy"


@dataclasses.dataclass
class ChunkFiles:
    """Where a run writes its per-chunk files (None: not written). `watershed_in_place`:
    WATERSHED is SUPERVOXELS itself, already chunk-encoded, so its relabelled ids are
    checked against it, never written. Pickled as these paths; each worker opens its own
    folders, WATERSHED and copy on first use."""
    edges: str | None = None
    components: str | None = None
    sv_map: str | None = None
    watershed: str | None = None
    watershed_mip: int = 0
    watershed_in_place: bool = False
    ocdbt: str | None = None  # --ocdbt: the WATERSHED whose copy is written
    ocdbt_from_watershed: bool = False  # its boxes come from WATERSHED blocks (precomputed and raw input)

    def __post_init__(self):
        self._folders, self._blocks, self._copy = {}, None, None

    def __getstate__(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state):
        self.__init__(**state)

    def _folder(self, key: str) -> OutputFolder:
        if key not in self._folders:
            config_key = {"edges": "data_source.EDGES", "components": "data_source.COMPONENTS",
                          "sv_map": "ingest_config.SV_MAP"}[key]
            self._folders[key] = OutputFolder(config_key, getattr(self, key))
        return self._folders[key]

    def write_graph_files(self, inputs) -> None:
        """A chunk's EDGES and COMPONENTS files, exactly (a retry finds them equal and keeps
        them; a chunk without edges or components has no file)."""
        if self.edges:
            self._folder("edges").sync(edges_filename(inputs.coord), encode_edges(inputs.edges)
                                       if any(len(e) for e in inputs.edges.values()) else None)
        if self.components:
            self._folder("components").sync(components_filename(inputs.coord), encode_components(
                inputs.component_svs, inputs.component_labels) if len(inputs.component_svs) else None)

    def write_relabelled(self, chunk) -> None:
        """A chunk read from segmentation volumes (`inputs.volumes.RelabelledChunk`): its
        WATERSHED region, `new_id[labels]`, and its SV_MAP file."""
        if self.watershed:
            self._write_watershed(chunk)
        if self.ocdbt:
            self.write_copy(chunk.coord, chunk.start, chunk.new_id[chunk.labels])
        if self.sv_map:
            data = None  # a chunk without supervoxels has no file (one left by another run is removed)
            if len(chunk.original_ids):
                buffer = io.BytesIO()
                np.save(buffer, chunk.original_ids)  # original id of the new segment id k at position k - 1
                data = buffer.getvalue()
            self._folder("sv_map").sync(sv_map_filename(chunk.coord), data)

    def write_copy(self, coord, start, voxels: np.ndarray) -> None:
        """The chunk's box of WATERSHED's OCDBT copy: `voxels`, its supervoxel ids, at `start`."""
        began = time.perf_counter()
        if self._copy is None:
            from .ocdbt import CopyWriter
            self._copy = CopyWriter(self.ocdbt)
        self._copy.write(coord, start, voxels)
        count("ocdbt_us", (time.perf_counter() - began) * 1e6)
        count("ocdbt_voxels", voxels.size)

    def _write_watershed(self, chunk) -> None:
        coord = chunk.coord
        if self.watershed_in_place:
            watershed = chunk.new_id[chunk.labels]
            if not np.array_equal(watershed, chunk.supervoxels):
                bad = chunk.supervoxels[watershed != chunk.supervoxels].ravel()[0]
                raise InputError(f"data_source.WATERSHED names SUPERVOXELS, but layer-2 chunk {coord} holds id "
                                 f"{int(bad)}, which is not chunk-encoded by the rule (it would be rewritten in "
                                 "place); give WATERSHED a path of its own")
            return
        try:
            within(f"data_source.WATERSHED: {self.watershed} (layer-2 chunk {coord})",
                   self._watershed_blocks().write_mapped, chunk.start, chunk.labels, chunk.new_id,
                   WATERSHED_GZIP_LEVEL)
        except InputError:
            raise
        except Exception as exc:  # storage errors vary
            raise InputError(f"data_source.WATERSHED: {self.watershed} could not be written for layer-2 chunk "
                             f"{coord}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None

    def _watershed_blocks(self):
        if self._blocks is None:
            from ..inputs.storage_blocks import open_blocks
            self._blocks = open_blocks(f"data_source.WATERSHED: {self.watershed}", self.watershed,
                                       self.watershed_mip)
        return self._blocks

    def connect(self) -> None:
        """Open WATERSHED now (a worker's setup), so that a volume that cannot be opened fails early."""
        if self.watershed and not self.watershed_in_place:
            self._watershed_blocks()
