"""A layer-2 chunk's L2 cache rows, from its watershed block and its layer-2 build.

The voxels come with the chunk (`--from_segmentation`: the relabelled block step 1 already
holds) or are read from WATERSHED here (precomputed and raw inputs), once per chunk, with the
same file-by-file reads as the segmentation reader.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .features import FAMILY, chunk_ranks, ranked_features, row_cells


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """The cache a run writes; handed to the workers with the job."""
    table_id: str
    resolution: tuple          # nm per voxel of the watershed at the graph's mip (x, y, z)
    watershed: str | None = None  # where the layer-2 stage reads a chunk's voxels; None: they come with it
    mip: int = 0
    accept_mismatch: bool = False  # WATERSHED and the graph may disagree (counted, not refused)


def parents_of_supervoxels(rows) -> tuple[np.ndarray, np.ndarray]:
    """From a layer-2 build's rows: its supervoxels, ascending, and the layer-2 parent of each
    (the build writes a parent cell for every supervoxel it read, and only for those)."""
    order = np.argsort(rows.node_ids, kind="stable")
    return rows.node_ids[order], rows.parent_ids[order]


def cache_rows(voxels, chunk_size, rows, resolution) -> tuple[list, tuple[int, int]]:
    """The chunk's cache rows `(row key, [(family, qualifier, value), ...])`, one per layer-2
    node with a voxel in the chunk, in id order, and `disagreement(...)`. `voxels`: the chunk's
    block, (x, y, z), cut at the dataset's far edge, as `(label numbers, supervoxel id of each
    number)` (`numbered`)."""
    svs, parents = parents_of_supervoxels(rows)
    ids, ranks = chunk_ranks(voxels[0], voxels[1], chunk_size, svs, parents)
    found = [(key, [(FAMILY, qualifier, value) for qualifier, value in cells])
             for key, cells in row_cells(ranked_features(ids, ranks, resolution))]
    return found, disagreement(voxels[1], svs, parents, ids)


def disagreement(id_of_label: np.ndarray, svs: np.ndarray, parents: np.ndarray, ids: np.ndarray) -> tuple[int, int]:
    """Where a chunk's voxels and its layer-2 build disagree: `(layer-2 nodes of the build with
    no voxel in the block, supervoxel ids in the block that the build does not know)`. Both are
    0 when WATERSHED and the graph come from the same segmentation."""
    present = np.asarray(id_of_label, np.uint64)
    present = present[present != 0]
    unknown = int(np.count_nonzero(~np.isin(present, svs)))
    nodes = np.unique(np.asarray(parents, np.uint64))
    without = int(len(nodes) - np.count_nonzero(np.isin(nodes, ids)))
    return without, unknown


def numbered(watershed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block of supervoxel ids as `(label numbers, supervoxel id of each number)`."""
    import fastremap
    numbers, mapping = fastremap.renumber(np.asarray(watershed), preserve_zero=True, in_place=False)
    id_of_label = np.zeros(max(mapping.values(), default=0) + 1, np.uint64)
    id_of_label[np.fromiter(mapping.values(), np.int64, len(mapping))] = np.fromiter(mapping.keys(), np.uint64,
                                                                                      len(mapping))
    return numbers, id_of_label


class WatershedVoxels:
    """Reads layer-2 chunks' blocks of WATERSHED (picklable; `connect()` on the worker)."""

    def __init__(self, url: str, mip: int, layout):
        self.url, self.mip, self.layout = url, int(mip), layout
        self._blocks = None
        self.requests = 0

    def __getstate__(self):
        return {"url": self.url, "mip": self.mip, "layout": self.layout}

    def __setstate__(self, state):
        self.__init__(state["url"], state["mip"], state["layout"])

    def connect(self):
        if self._blocks is None:
            from cloudvolume import CloudVolume

            from ..deadline import within
            from ..inputs.storage_blocks import StorageBlocks
            where = f"data_source.WATERSHED: {self.url}"
            volume = within(where, CloudVolume, self.url, mip=self.mip, progress=False, fill_missing=False,
                            bounded=False, cache=False, lru_bytes=0, provenance={})
            self._blocks = StorageBlocks(volume)

    def read(self, coord) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's block, `numbered`."""
        return numbered(self.read_block(coord))

    def read_block(self, coord) -> np.ndarray:
        """The chunk's block of WATERSHED, its supervoxel ids (x, y, z)."""
        from ..errors import InputError
        from ..deadline import within
        self.connect()
        start, stop = self.layout.voxel_box(coord)
        before = self._blocks.files_read
        try:
            block = within(f"voxels {start.tolist()}..{stop.tolist()}", self._blocks.read, start, stop)
        except InputError:
            raise
        except Exception as exc:  # storage and format errors vary
            raise InputError(f"data_source.WATERSHED: {self.url} cannot be read for the L2 cache of layer-2 chunk "
                             f"{tuple(coord)} (voxels {start.tolist()}..{stop.tolist()}): {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        finally:
            self.requests += max(self._blocks.files_read - before, 1)
        return np.asarray(block)[..., 0]
