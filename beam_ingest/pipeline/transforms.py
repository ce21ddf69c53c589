"""The build stages: DoFns around the pure layer builds (hierarchy/), one chunk at a time.

Each build emits its rows (for the sink, sink.py), its summary keyed by the parent chunk (for
the layer above) and its root-bound components (for the root assignment); build.py
wires them into one pipeline.
"""
from __future__ import annotations

import logging
import pickle
import threading
import time
import typing

import apache_beam as beam

from . import checkpoint
from ..hierarchy.layer2 import build_layer2
from ..hierarchy.parents import build_parent_layer
from ..hierarchy.roots import build_roots, root_bucket
from ..inputs.segmentation import ChunkPart
from ..layout import GraphLayout
from ..metrics import count as _count
from . import stages

# A build stage has one output of `(tag, value)` pairs, which build.py splits by tag
# (not `with_outputs`: Beam's DaskRunner hands every output of a multi-output ParDo to every
# consumer of any of its tags).
ROWS = "rows"          # stages.ChunkRows for the sink
SAVED = "saved"        # ("summaries" | "roots", 1): a checkpoint file saved
ROOT_BOUND = "roots"   # (bucket, RootBound) for the root assignment
SUMMARY = "summary"    # (parent chunk, Summary) for the layer above
CACHE_ROWS = "l2cache"  # (chunk, its L2 cache rows) for the cache's sink
CHECKPOINTED = "checkpointed"  # the key of a layer's "checkpoint complete" element (never a chunk)
log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """Raised by `--fail_at_layer` (tests of recovery)."""


# Beam infers an undeclared output type from the function's bytecode (~10-30 ms a transform,
# a tenth of a small run's CPU); these always came out Any, which is now said up front.
_untyped_output = beam.typehints.with_output_types(typing.Any)


@_untyped_output
class _BuildFn(beam.DoFn):
    def __init__(self, layout: GraphLayout, layer: int, fail_at_layer: int | None, checkpoint_url=None,
                 identity: str = "", lifted: bool = False):
        self.layout = layout
        self.lifted = lifted  # table version 3: lifted cross edges and layer-1 counters
        self.layer = layer
        self.fail_at_layer = fail_at_layer
        self.checkpoint_url = checkpoint_url
        self.identity = identity

    def _emit(self, rows, summary, root_bound, coord, svs: int = 0):
        if self.fail_at_layer == self.layer:
            raise InjectedFailure(f"injected failure at layer {self.layer} chunk {tuple(coord)}")
        _count(f"layer{self.layer}_chunks")
        coord = tuple(int(c) for c in coord)
        yield ROWS, stages.ChunkRows(self.layer, coord, rows, svs)  # even when empty: it must be acknowledged
        parent = tuple(c >> 1 for c in coord)  # the parent chunk (FANOUT 2)
        if root_bound is not None and len(root_bound.components):
            bucket = root_bucket(root_bound.source_chunk)
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.roots_name(self.layer, root_bound),
                                      checkpoint.encode_root_bound(bucket, root_bound, self.identity))
                yield SAVED, ("roots", 1)
            yield ROOT_BOUND, (bucket, root_bound)
        if self.layer < self.layout.layer_count:
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.summary_name(self.layer, coord),
                                      checkpoint.encode_summary(parent, summary, self.identity))
                yield SAVED, ("summaries", 1)
            # even when empty, so that every parent chunk is built (and counted done)
            _count("summary_bytes", sum(a.nbytes for a in vars(summary).values()))
            yield SUMMARY, (parent, summary)


class BuildLayer2Fn(_BuildFn):
    def __init__(self, layout, reader, fail_at_layer=None, checkpoint_url=None, identity="", lifted=False,
                 cache=None, files=None):
        """`cache`: an l2cache.chunks.CacheSpec: also each chunk's L2 cache rows. `files`: an
        outputs.chunk_files.ChunkFiles: the chunk's inputs written as EDGES and COMPONENTS."""
        super().__init__(layout, 2, fail_at_layer, checkpoint_url, identity, lifted)
        self.reader = reader
        self.cache = cache
        self.files = files

    def setup(self):
        self.reader.connect()
        self.voxels = None  # WATERSHED's blocks, read once per chunk for the L2 cache and the OCDBT copy
        url, mip = None, 0
        if self.cache is not None and self.cache.watershed:
            url, mip = self.cache.watershed, self.cache.mip
        elif self.files is not None and self.files.ocdbt_from_watershed:
            url, mip = self.files.ocdbt, self.files.watershed_mip
        if url is not None:
            from ..l2cache.chunks import WatershedVoxels
            self.voxels = WatershedVoxels(url, mip, self.layout)
            self.voxels.connect()

    def _watershed_block(self, coord):
        """WATERSHED's block of the chunk when the cache or the OCDBT copy needs it (else None);
        the copy's box is written here, before the chunk's rows go on."""
        if self.voxels is None:
            return None
        block = self.voxels.read_block(coord)
        if self.files is not None and self.files.ocdbt_from_watershed:
            self.files.write_copy(coord, self.layout.voxel_box(coord)[0], block)
        return block

    def _cache_rows(self, inputs, rows, coord, block):
        from ..l2cache.chunks import cache_rows, numbered
        start = time.perf_counter()
        voxels = inputs.voxels if inputs.voxels is not None else numbered(block)
        found, (without, unknown) = cache_rows(voxels, self.layout.chunk_size, rows, self.cache.resolution)
        _count("l2cache_us", (time.perf_counter() - start) * 1e6)
        _count("l2cache_rows", len(found))
        if without or unknown:
            _count("l2cache_nodes_without_voxels", without)
            _count("l2cache_unknown_svs", unknown)
            log.warning("layer-2 chunk %s: %d layer-2 node(s) without a voxel in WATERSHED, %d supervoxel(s) in "
                        "WATERSHED that the graph does not know", tuple(coord), without, unknown)
        return found, (without, unknown)

    def process(self, element):
        # an element is a chunk coordinate, or (coordinate, what the reader needs besides)
        coord = self.reader.coord_of(element)
        start = time.perf_counter()
        requests_before, rounds_before = self.reader.requests, self.reader.rounds
        inputs = self.reader.read(element)
        if self.files is not None:
            self.files.write_graph_files(inputs)
        _count("layer2_storage_requests", self.reader.requests - requests_before)
        _count("layer2_storage_rounds", self.reader.rounds - rounds_before)
        read_done = time.perf_counter()
        rows, summary, root_bound, stats = build_layer2(inputs, self.layout, lifted=self.lifted)
        _count("layer2_read_us", (read_done - start) * 1e6)
        _count("layer2_us", (time.perf_counter() - start) * 1e6)
        _count("layer2_svs", stats.svs)
        _count("layer2_edges", stats.edges)
        _count("layer2_active_edges", stats.active_edges)
        _count("layer2_nodes", stats.nodes)
        if stats.far_edges:
            _count("layer2_far_edges", stats.far_edges)
            log.warning("layer-2 chunk %s: %d edges to a chunk that is not a neighbour (kept as given)",
                        tuple(coord), stats.far_edges)
        block = self._watershed_block(coord)
        if self.cache is not None:  # before the rows: the build's outputs may be consumed in place
            yield CACHE_ROWS, (tuple(int(c) for c in coord), *self._cache_rows(inputs, rows, coord, block))
        yield from self._emit(rows, summary, root_bound, coord, stats.svs)


class ChunkPartCoder(beam.coders.Coder):
    """A segmentation chunk part between the two steps: pickled, then zstd (level 1; about half
    the bytes the runner holds or Dataflow shuffles, for ~0.2 ms a part)."""

    def encode(self, part) -> bytes:
        return _zstd()[0].compress(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))

    def decode(self, encoded: bytes):
        return pickle.loads(_zstd()[1].decompress(encoded))

    def estimate_size(self, part) -> int:
        return part.nbytes // 2  # Beam's default encodes the part again (for its size metrics)

    def is_deterministic(self) -> bool:
        return False  # only ever a value, never a key


beam.coders.registry.register_coder(ChunkPart, ChunkPartCoder)


_codecs = threading.local()


def _zstd():
    """This thread's zstd compressor and decompressor (they are not thread-safe; a new context
    per part cost as much as compressing the part)."""
    if not hasattr(_codecs, "pair"):
        import zstandard
        _codecs.pair = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    return _codecs.pair


class ReadSegmentationChunkFn(beam.DoFn):
    """`--from_segmentation`, step 1: reads a chunk once, writes its WATERSHED region and SV_MAP
    file (`files`, an outputs.chunk_files.ChunkFiles), and sends its part (ids, contacts inside,
    boundary planes) to itself and its face neighbours. `built(c)`: whether layer-2 chunk `c`
    is built by this run (the others are read only for their neighbours: chunks done before a
    resume, or outside a `--test` run's chunks)."""

    def __init__(self, reader, built, files=None):
        self.reader = reader
        self.built = built
        self.files = files

    def setup(self):
        self.reader.connect()
        if self.files is not None:
            self.files.connect()

    def process(self, coord):
        start = time.perf_counter()
        requests_before = self.reader.requests
        chunk = self.reader.read_chunk(coord, built=self.built(coord))
        if self.files is not None and self.built(coord):
            self.files.write_relabelled(chunk)
        for target, part in chunk.parts:
            if self.built(target):
                yield target, part
        _count("segmentation_chunks")
        _count("segmentation_storage_files", self.reader.requests - requests_before)
        _count("segmentation_read_us", (time.perf_counter() - start) * 1e6)


class BuiltChunks:
    """Which layer-2 chunks a run builds: all, or the `--test` ones, less those done before."""

    def __init__(self, coords=None, skipped=frozenset()):
        self.coords = None if coords is None else {tuple(int(v) for v in c) for c in coords}
        self.skipped = frozenset(skipped)

    def __call__(self, coord) -> bool:
        coord = tuple(int(v) for v in coord)
        return (self.coords is None or coord in self.coords) and coord not in self.skipped


class BuildParentLayerFn(_BuildFn):
    def process(self, element):
        coord, summaries = element
        if coord == CHECKPOINTED:  # the layer below's checkpoint is complete: it only orders the stages
            return
        start = time.perf_counter()
        rows, summary, root_bound, stats = build_parent_layer(self.layer, coord, summaries, self.layout,
                                                              lifted=self.lifted)
        if self.lifted:
            _count(f"layer{self.layer}_lifted_edges", len(rows.lifted_node))
        _count(f"layer{self.layer}_us", (time.perf_counter() - start) * 1e6)
        _count(f"layer{self.layer}_nodes", stats.nodes)
        _count(f"layer{self.layer}_skipped_singletons", stats.skipped)
        if stats.dangling_edges:
            _count(f"layer{self.layer}_dangling_cross_edges", stats.dangling_edges)
            log.debug("layer %d chunk %s: %d cross edge copies without a mirror (kept, join nothing)",
                      self.layer, tuple(coord), stats.dangling_edges)
        yield from self._emit(rows, summary, root_bound, coord)


@_untyped_output
class BuildRootsFn(beam.DoFn):
    def __init__(self, layout: GraphLayout):
        self.layout = layout

    def process(self, element):
        bucket, parts = element
        start = time.perf_counter()
        rows = build_roots(bucket, [p for p in parts if p is not None], self.layout)
        _count("roots_us", (time.perf_counter() - start) * 1e6)
        _count("roots", len(rows.children_of))
        yield stages.ChunkRows(stages.ROOTS, (bucket,), rows)
