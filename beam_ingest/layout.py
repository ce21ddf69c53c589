"""Graph layout: layer count, chunk grid per layer, bit masks and node-id encoding.

Everything here is a pure function of the graph config and the watershed bounds
(docs/table-format.md). Id functions accept scalars or numpy arrays.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

ROOT_COUNTER_BUCKETS = 256


class LayoutError(ValueError):
    """The config cannot encode the volume."""


def layer_count_for(n_chunks) -> int:
    """`ceil(log2(max(n_chunks))) + 2` (the layer count PyChunkedGraph derives)."""
    largest = int(max(n_chunks))
    return int(math.ceil(math.log2(largest))) + 2 if largest > 1 else 2


def bits_per_layer(layer_count: int, spatial_bits: int) -> dict[int, int]:
    """Bits per spatial coordinate, keyed by layer (1 .. layer_count)."""
    bits = {}
    for layer in range(layer_count, 1, -1):
        bits[layer] = max(1, layer_count - layer)
    if spatial_bits < bits[2]:
        raise LayoutError(
            f"graph_config.SPATIAL_BITS={spatial_bits} is smaller than the {bits[2]} bits "
            f"layer 2 needs for {layer_count} layers")
    bits[2] = max(spatial_bits, bits[2])
    bits[1] = bits[2]
    return bits


@dataclasses.dataclass(frozen=True)
class GraphLayout:
    chunk_size: tuple[int, int, int]
    voxel_offset: tuple[int, int, int]
    voxel_counts: tuple[int, int, int]
    layer_id_bits: int = 8
    spatial_bits: int = 10
    fanout: int = 2

    def __post_init__(self):
        if self.fanout != 2:
            raise LayoutError(
                f"graph_config.FANOUT={self.fanout} is not supported: PyChunkedGraph's "
                "layout uses powers of 2 per layer, so FANOUT must be 2")
        if any(c <= 0 for c in self.chunk_size):
            raise LayoutError(f"graph_config.CHUNK_SIZE must be positive, got {list(self.chunk_size)}")
        if any(v <= 0 for v in self.voxel_counts):
            raise LayoutError(f"watershed volume is empty: size {list(self.voxel_counts)}")
        self.bits  # raises when SPATIAL_BITS cannot encode the grid
        if self.segment_bits(2) < 1:
            raise LayoutError(
                f"LAYER_ID_BITS={self.layer_id_bits} and SPATIAL_BITS={self.spatial_bits} "
                "leave no bits for segment ids")

    # -- grid ---------------------------------------------------------------------
    @property
    def n_chunks(self) -> tuple[int, int, int]:
        return tuple(int(-(-v // c)) for v, c in zip(self.voxel_counts, self.chunk_size))

    def voxel_box(self, coord) -> tuple[np.ndarray, np.ndarray]:
        """Absolute voxel `(start, stop)` of layer-2 chunk `coord`, cut at the dataset's far edge."""
        offset, size, chunk = (np.asarray(v, np.int64) for v in (self.voxel_offset, self.voxel_counts,
                                                                self.chunk_size))
        start = offset + np.asarray(coord, np.int64) * chunk
        return start, np.minimum(start + chunk, offset + size)

    @functools.cached_property
    def layer_count(self) -> int:
        return layer_count_for(self.n_chunks)

    @property
    def root_layer(self) -> int:
        return self.layer_count

    @functools.cached_property
    def bits(self) -> dict[int, int]:
        return bits_per_layer(self.layer_count, self.spatial_bits)

    def chunks_per_axis(self, layer: int) -> tuple[int, int, int]:
        if layer >= self.layer_count:
            return (1, 1, 1)
        scale = 1 << (layer - 2)
        return tuple(int(-(-n // scale)) for n in self.n_chunks)

    def chunk_count(self, layer: int) -> int:
        return int(np.prod(self.chunks_per_axis(layer)))

    def layer2_coords(self) -> np.ndarray:
        """All layer-2 chunk coordinates, (n, 3) int64, x fastest-varying last."""
        nx, ny, nz = self.n_chunks
        grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1)
        return grid.reshape(-1, 3).astype(np.int64)

    def test_coords(self) -> list[tuple[int, int, int]]:
        """The layer-2 chunks of a `--test` run: the children of the centre layer-3 chunk."""
        if self.layer_count == 2:
            return [(0, 0, 0)]
        centre = [n // 2 for n in self.chunks_per_axis(3)]
        return [(2 * cx + dx, 2 * cy + dy, 2 * cz + dz)
                for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)
                for cx, cy, cz in [centre]
                if 2 * cx + dx < self.n_chunks[0] and 2 * cy + dy < self.n_chunks[1]
                and 2 * cz + dz < self.n_chunks[2]]

    def parent_coord(self, coord, layer: int) -> tuple[int, int, int]:
        """Coordinate at `layer` of the chunk containing layer-2 `coord`."""
        if layer >= self.layer_count:
            return (0, 0, 0)
        shift = layer - 2
        return tuple(int(c) >> shift for c in coord)

    # -- ids ------------------------------------------------------------------------
    def segment_bits(self, layer: int) -> int:
        return 64 - self.layer_id_bits - 3 * self.bits[layer]

    def chunk_id(self, layer: int, x, y, z):
        """Chunk id(s) of `layer` at coordinates x, y, z (scalars or arrays)."""
        b = self.bits[layer]
        layer_shift = np.uint64(64 - self.layer_id_bits)
        x_shift = np.uint64(64 - self.layer_id_bits - b)
        y_shift = np.uint64(64 - self.layer_id_bits - 2 * b)
        z_shift = np.uint64(64 - self.layer_id_bits - 3 * b)
        return ((np.uint64(layer) << layer_shift)
                | (np.asarray(x, dtype=np.uint64) << x_shift)
                | (np.asarray(y, dtype=np.uint64) << y_shift)
                | (np.asarray(z, dtype=np.uint64) << z_shift))

    @property
    def root_chunk_id(self) -> np.uint64:
        return np.uint64(self.chunk_id(self.layer_count, 0, 0, 0))

    def layer_of(self, node_ids) -> np.ndarray:
        return (np.asarray(node_ids, dtype=np.uint64) >> np.uint64(64 - self.layer_id_bits)).astype(np.int64)

    def coords_of(self, node_ids, layer: int) -> np.ndarray:
        """(n, 3) chunk coordinates of ids known to be of `layer` (layer-1 ids use layer-2 bits)."""
        ids = np.atleast_1d(np.asarray(node_ids, dtype=np.uint64))
        b = self.bits[layer]
        mask = np.uint64((1 << b) - 1)
        shifts = [64 - self.layer_id_bits - k * b for k in (1, 2, 3)]
        return np.stack([((ids >> np.uint64(s)) & mask) for s in shifts], -1).astype(np.int64)

    def chunk_of(self, node_ids, layer: int):
        """Chunk id(s) of ids of `layer` (segment bits zeroed)."""
        ids = np.asarray(node_ids, dtype=np.uint64)
        seg = self.segment_bits(layer)
        return (ids >> np.uint64(seg)) << np.uint64(seg)

    def segment_of(self, node_ids, layer: int):
        ids = np.asarray(node_ids, dtype=np.uint64)
        return ids & np.uint64((1 << self.segment_bits(layer)) - 1)

    def cross_layer(self, coords_a: np.ndarray, coords_b: np.ndarray) -> np.ndarray:
        """Cross-edge layer of edges between layer-2 chunks `coords_a[i]` and `coords_b[i]`."""
        a = np.asarray(coords_a, dtype=np.int64).reshape(-1, 3)
        b = np.asarray(coords_b, dtype=np.int64).reshape(-1, 3)
        layer = np.ones(len(a), dtype=np.int64)
        for _ in range(2, self.layer_count):
            layer += np.any(a != b, axis=1)
            a = a // self.fanout
            b = b // self.fanout
        return layer
