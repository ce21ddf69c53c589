"""The types every input reader hands to the hierarchy: one chunk's edges and components.

Readers (`inputs/`) produce `ChunkInputs`; the layer-2 build (`hierarchy/`) consumes them.
Neither package imports the other: both import this module.
"""
from __future__ import annotations

import dataclasses

import numpy as np

EDGE_KINDS = ("in_chunk", "between_chunk", "cross_chunk")


@dataclasses.dataclass
class Edges:
    """Parallel arrays of one edge kind."""
    ids1: np.ndarray
    ids2: np.ndarray
    affinities: np.ndarray
    areas: np.ndarray

    @classmethod
    def empty(cls) -> "Edges":
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint64),
                   np.empty(0, np.float32), np.empty(0, np.uint64))

    def __len__(self):
        return len(self.ids1)


@dataclasses.dataclass
class ChunkInputs:
    """Everything layer 2 needs of one chunk."""
    coord: tuple[int, int, int]
    edges: dict[str, Edges]
    component_svs: np.ndarray     # uint64, the SVs the components file maps
    component_labels: np.ndarray  # int64, component index of each
    edges_file: str = ""          # where the edges / components came from, for error messages
    components_file: str = ""     # ("" when they did not come from one file)
    # the chunk's voxels, when the reader has them: (label numbers (x, y, z), supervoxel id of each)
    voxels: tuple | None = None

    @classmethod
    def empty(cls, coord) -> "ChunkInputs":
        return cls(tuple(coord), {k: Edges.empty() for k in EDGE_KINDS},
                   np.empty(0, np.uint64), np.empty(0, np.int64))


def off_grid(layout, ids) -> np.ndarray:
    """Mask of the SV ids whose layer-2 chunk coordinate lies outside the layout's chunk grid."""
    return np.any(layout.coords_of(ids, 1) >= np.asarray(layout.n_chunks, np.int64), axis=1)


def off_grid_text(layout, sv) -> str:
    """`lies in chunk (x, y, z), outside the AxBxC layer-2 chunk grid` for one SV id."""
    coord = tuple(int(v) for v in layout.coords_of(sv, 1)[0])
    return f"lies in chunk {coord}, outside the {'x'.join(str(n) for n in layout.n_chunks)} layer-2 chunk grid"


class ChunkReader:
    """What the layer-2 build reads a chunk's inputs with; the precomputed, raw and
    segmentation readers implement it.

    `read(element)` returns the chunk's `ChunkInputs`. An element is what the stage before
    the build hands it: a chunk coordinate, or, for readers that need their neighbours' data,
    a coordinate with that data (`coord_of` names the chunk). A reader is pickled to the
    workers without clients; `connect()` opens them there, once per worker. `requests` and
    `rounds` count storage calls and sequential round trips, for the counters."""
    requests = 0
    rounds = 0

    def connect(self) -> None:
        pass

    def coord_of(self, element) -> tuple:
        return tuple(int(c) for c in element)

    def read(self, element) -> ChunkInputs:
        raise NotImplementedError
