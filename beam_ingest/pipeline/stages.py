"""Every stage of the build, named once.

A stage is a layer of the graph (2 .. layer count), the root-id buckets (`ROOTS`) or the L2
cache's layer-2 chunks (`L2CACHE`). Its key is what progress (the launcher's channel,
Redis), the sinks' acknowledgements, the completion proof and the checkpoint all call it;
this module says, for each: its name in the job's step names, how progress and the proof
describe it, the chunks it must acknowledge, and what its sink counts per chunk.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..layout import ROOT_COUNTER_BUCKETS

ROOTS = "roots"      # the root-id buckets: root ids are k * ROOT_BUCKETS + bucket
L2CACHE = "l2cache"  # the L2 cache's rows, one proof per layer-2 chunk (a table of their own)
ROOT_BUCKETS = ROOT_COUNTER_BUCKETS

# What a sink counts per acknowledged chunk (the named fields of `completion.Acks.counts`):
# the graph's stages: entries written, parent cells, children cells, supervoxels (the
# completion proof's totals); the L2 cache: its rows, the chunk's layer-2 nodes without a
# voxel in WATERSHED and the supervoxels of its WATERSHED block the graph does not know.
GRAPH_COUNTS = ("rows", "parents", "children", "svs")
CACHE_COUNTS = ("rows", "nodes_without_voxels", "unknown_svs")


def counted(stage) -> tuple[str, ...]:
    return CACHE_COUNTS if stage == L2CACHE else GRAPH_COUNTS


def step_name(stage) -> str:
    """The stage's part of the job's step names (`WriteLayer2`, `ProveRoots`, `WriteL2Cache`).
    Dataflow's update matches steps by name: these never change."""
    return {ROOTS: "Roots", L2CACHE: "L2Cache"}.get(stage, f"Layer{stage}")


def label(stage) -> str:
    """How progress bars, progress lines and `status` name the stage."""
    return {ROOTS: "roots", L2CACHE: "L2 cache"}.get(str(stage), f"layer {stage}")


def proof_label(stage) -> str:
    """How the completion proof names the stage in its messages."""
    return {ROOTS: "root buckets", L2CACHE: "L2 cache"}.get(stage, f"layer {stage}")


def describe(stage, coord) -> str:
    """One chunk of the stage, as messages name it."""
    if stage == ROOTS:
        return f"root bucket {int(coord[0])}"
    if stage == L2CACHE:
        return f"the L2 cache of layer-2 chunk {tuple(int(c) for c in coord)}"
    return f"layer-{stage} chunk {tuple(int(c) for c in coord)}"


def coord_width(stage) -> int:
    """A chunk of the stage is a bucket number (roots) or a chunk coordinate."""
    return 1 if stage == ROOTS else 3


def expected_chunks(layout, stage, coords=None) -> np.ndarray:
    """The chunks a run must acknowledge for `stage`: the whole grid, or the given ones (the
    L2 cache's are layer 2's)."""
    if stage == ROOTS:
        return np.arange(ROOT_BUCKETS, dtype=np.int64).reshape(-1, 1)
    if coords is not None:
        return np.asarray(coords, np.int64).reshape(-1, 3)
    shape = layout.chunks_per_axis(2 if stage == L2CACHE else stage)
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1).astype(np.int64)


def display_order(stage) -> tuple:
    """Layers ascending, the L2 cache right after layer 2, the root buckets last (keys may
    come back as strings, from Redis or the progress channel)."""
    stage = str(stage)
    if stage == ROOTS:
        return (float("inf"), 0)
    return (2, 1) if stage == L2CACHE else (int(stage), 0)


def chunk_totals(layout, start_layer: int = 2, test_coords=None, top_layer=None, cache: bool = False) -> dict:
    """`{stage: chunks it acknowledges}` for a run: every layer from `start_layer` and the root
    buckets, or with `test_coords` (`--test`) those layer-2 chunks and their one parent at
    `top_layer`; with `cache`, the L2 cache's chunks (layer 2's)."""
    if test_coords is not None:
        totals = {2: len(test_coords), top_layer: 1}
    else:
        totals = {layer: layout.chunk_count(layer) for layer in range(2, layout.layer_count + 1)}
        totals[ROOTS] = ROOT_BUCKETS
    totals = {k: v for k, v in totals.items() if k == ROOTS or k >= start_layer}
    if cache:
        totals[L2CACHE] = totals[2]
    return totals


@dataclasses.dataclass
class ChunkRows:
    """One chunk of a stage on its way to the sink: its rows (`hierarchy.types.Rows`), and what
    the sink reports for it besides them (the supervoxels read: layer 2's, for the proof)."""
    stage: object
    coord: tuple
    rows: object
    svs: int = 0
