"""The Beam wiring: PTransforms around the pure build and the Bigtable writer."""
from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
import time
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from . import checkpoint, completion
from .hierarchy.layer2 import build_layer2
from .hierarchy.parents import build_parent_layer
from .hierarchy.roots import build_roots, root_bucket
from .hierarchy.types import Rows
from .inputs.segmentation import ChunkPart
from .layout import ROOT_COUNTER_BUCKETS, GraphLayout
from .metrics import NAMESPACE
from .progress import ROOTS as ROOTS_PROGRESS

ENCODE_ROWS = 20_000  # rows pooled per encoding call in the sink
ROWS = "rows"
SAVED = "saved"
ROOTS = "roots"
log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """Raised by `--fail_at_layer` (tests of recovery)."""


def _count(name: str, value: int = 1):
    Metrics.counter(NAMESPACE, name).inc(int(value))


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

    def _emit(self, rows, summary, root_bound, coord):
        if self.fail_at_layer == self.layer:
            raise InjectedFailure(f"injected failure at layer {self.layer} chunk {tuple(coord)}")
        _count(f"layer{self.layer}_chunks")
        coord = tuple(int(c) for c in coord)
        rows.done = [(self.layer, coord)]
        yield beam.pvalue.TaggedOutput(ROWS, rows)  # even when empty: the chunk must be acknowledged
        parent = tuple(c >> 1 for c in coord)  # the parent chunk (FANOUT 2)
        if root_bound is not None and len(root_bound.components):
            bucket = root_bucket(root_bound.source_chunk)
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.roots_name(self.layer, root_bound),
                                      checkpoint.encode_root_bound(bucket, root_bound, self.identity))
                yield beam.pvalue.TaggedOutput(SAVED, ("roots", 1))
            yield beam.pvalue.TaggedOutput(ROOTS, (bucket, root_bound))
        if self.layer < self.layout.layer_count:
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.summary_name(self.layer, coord),
                                      checkpoint.encode_summary(parent, summary, self.identity))
                yield beam.pvalue.TaggedOutput(SAVED, ("summaries", 1))
            # even when empty, so that every parent chunk is built (and counted done)
            _count("summary_bytes", sum(a.nbytes for a in vars(summary).values()))
            yield parent, summary


class BuildLayer2Fn(_BuildFn):
    def __init__(self, layout, reader, fail_at_layer=None, checkpoint_url=None, identity="", lifted=False):
        super().__init__(layout, 2, fail_at_layer, checkpoint_url, identity, lifted)
        self.reader = reader

    def setup(self):
        self.reader.connect()

    def process(self, element):
        # an element is a chunk coordinate, or (coordinate, what the reader needs besides)
        coord = self.reader.coord_of(element) if hasattr(self.reader, "coord_of") else element
        start = time.perf_counter()
        requests_before, rounds_before = self.reader.requests, self.reader.rounds
        inputs = self.reader.read(element)
        _count("layer2_storage_requests", self.reader.requests - requests_before)
        _count("layer2_storage_rounds", self.reader.rounds - rounds_before)
        read_done = time.perf_counter()
        rows, summary, root_bound, stats = build_layer2(inputs, self.layout, lifted=self.lifted)
        rows.svs = stats.svs
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
        yield from self._emit(rows, summary, root_bound, coord)


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
    """`--from_segmentation`, step 1: reads a chunk once, writes its WATERSHED region, and sends
    its part (ids, contacts inside, boundary planes) to itself and its face neighbours.
    `built(c)`: whether layer-2 chunk `c` is built by this run (the others are read only for
    their neighbours: chunks done before a resume, or outside a `--test` run's chunks)."""

    def __init__(self, reader, built):
        self.reader = reader
        self.built = built

    def setup(self):
        self.reader.connect()

    def process(self, coord):
        start = time.perf_counter()
        requests_before = self.reader.requests
        for target, part in self.reader.read_chunk(coord, write=self.built(coord)):
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
    def process(self, element, *checkpoints_below):  # side inputs only order the stages
        coord, summaries = element
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
        rows.done = [(ROOTS_PROGRESS, (bucket,))]
        _count("roots_us", (time.perf_counter() - start) * 1e6)
        _count("roots", len(rows.children_of))
        yield rows


@dataclasses.dataclass(frozen=True)
class SinkSpec:
    """Where and how the sink writes; handed to every worker with the job (nothing is read
    from a worker's environment: `target` is the launcher's bigtable.Target, None with
    --skip_writes; Redis settings and paths are here too)."""
    target: object
    table_id: str
    ingest_ms: int
    identity: str = ""
    skip_writes: bool = False
    batch_rows: int = 2000
    max_inflight: int = 2
    redis: object = None
    progress_id: str | None = None
    checkpoint_url: str | None = None


@_untyped_output
class WriteRowsFn(beam.DoFn):
    """Writes `Rows` batches to Bigtable (or only counts them with `skip_writes`) and reports,
    per chunk, that every one of its rows was acknowledged (`completion.Acks`).

    Rows are encoded as they arrive and sent in the background; a bundle is complete only
    once every one of its rows is acknowledged (`finish_bundle` drains the writer), so a
    failed write fails the bundle and Beam's retry rewrites identical cells. A chunk is
    reported only when the entries Bigtable acknowledged equal the entries queued for it.
    """

    def __init__(self, sink: SinkSpec, stage=None):
        self.sink = sink
        self.stage = stage

    def setup(self):
        import zstandard
        from .progress import ProgressCache
        sink = self.sink
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.writer = None
        self.progress_id = sink.progress_id or sink.table_id
        self.progress = ProgressCache(sink.redis, self.progress_id, sink.identity) if sink.redis else None
        if not sink.skip_writes:
            from .store.bigtable import RowWriter
            self.writer = RowWriter(sink.target, sink.table_id, sink.ingest_ms,
                                    batch_rows=sink.batch_rows, max_inflight=sink.max_inflight)

    def start_bundle(self):
        self._reported = ((0, 0, 0.0) if self.writer is None
                          else (self.writer.rows_written, self.writer.bytes_written, self.writer.wait_s))
        self._buffer, self._buffered = [], 0
        self._chunks = []  # (layer, coord) of each chunk of the bundle: its label in the writer
        self._counts = []  # per chunk: [queued entries, parent cells, children cells, supervoxels]
        if self.writer is not None:
            self.writer.take_acked()

    def process(self, rows):
        for done in rows.done:
            self._chunks.append(done)
            self._counts.append([0, len(rows.node_ids), len(rows.children_of), rows.svs])
        if self.writer is None:
            count = rows.row_count()  # dropped unencoded: the build alone is measured
            self._counts[-1][0] = count
            self._count_rows(count, 0)
            return
        # Small batches are pooled so encoding works on large arrays.
        self._buffer.append(rows)
        self._buffered += len(rows.node_ids) + len(rows.children_of)
        if self._buffered >= ENCODE_ROWS:
            self._encode()

    def _encode(self):
        start = time.perf_counter()
        if self._buffer:
            base = len(self._chunks) - len(self._buffer)
            queued = self.writer.write_rows(Rows.concat(self._buffer), self.compressor, label_base=base)
            for i, n in enumerate(queued.tolist()):
                self._counts[base + i][0] = n
        self._buffer, self._buffered = [], 0
        _count("write_us", (time.perf_counter() - start) * 1e6)

    def finish_bundle(self):
        if self.writer is not None:
            self._encode()
            start = time.perf_counter()
            self.writer.drain()
            _count("write_us", (time.perf_counter() - start) * 1e6)
            rows, nbytes = self.writer.rows_written, self.writer.bytes_written
            self._count_rows(rows - self._reported[0], nbytes - self._reported[1])
            _count("write_wait_us", (self.writer.wait_s - self._reported[2]) * 1e6)
        yield from self._acknowledge()

    def _acknowledged(self) -> list[bool]:
        if self.writer is None:
            return [True] * len(self._chunks)
        acked = self.writer.take_acked()
        return [acked.get(i, 0) == counts[0] for i, counts in enumerate(self._counts)]

    def _acknowledge(self):
        """Report the chunks whose every entry was acknowledged; mark them done."""
        import numpy as np

        from .progress import record_local
        by_layer = {}
        for ok, (layer, coord), counts in zip(self._acknowledged(), self._chunks, self._counts):
            if not ok:
                _count("unacknowledged_chunks")
                log.error("%s: not every row was acknowledged by Bigtable", completion.describe(layer, coord))
                continue
            by_layer.setdefault(layer, ([], []))
            by_layer[layer][0].append(coord)
            by_layer[layer][1].append(counts)
        for layer, (coords, counts) in by_layer.items():
            acks = completion.Acks(layer, np.asarray(coords, np.int64).reshape(len(coords), -1),
                                   np.asarray(counts, np.int64).reshape(-1, 4))
            record_local(self.progress_id, layer, len(coords))
            if self.progress is not None:
                self.progress.mark_done(layer, coords)
            if self.sink.checkpoint_url and layer == 2 and not self.sink.skip_writes:
                checkpoint.write_acks(self.sink.checkpoint_url, self.sink.identity, acks.coords, acks.counts)
            yield WindowedValue(acks, 0, [GlobalWindow()])
        self._chunks, self._counts = [], []

    def _count_rows(self, rows: int, nbytes: int):
        """Totals, and per stage (`rows_written_Layer2`, ..., `rows_written_Roots`)."""
        _count("rows_written", rows)
        _count("bytes_written", nbytes)
        if self.stage:
            _count(f"rows_written_{self.stage}", rows)
            _count(f"bytes_written_{self.stage}", nbytes)

    def teardown(self):
        if getattr(self, "progress", None) is not None:
            self.progress.flush_pending()
        if getattr(self, "writer", None) is not None:
            self.writer.close()


class ProveLayer(beam.PTransform):
    """One layer's proof: the acknowledged chunks are exactly the expected ones (else the
    pipeline fails naming the missing chunks). The acks (one small columnar `Acks` per
    bundle) meet under one key: a GroupByKey costs a fifth of CombineGlobally's construction
    (its default-value and combiner-lifting stages), and a layer whose acks never come has
    no proof, which the completion proof refuses."""

    def __init__(self, layer, expected):
        super().__init__()
        self.layer, self.expected = layer, expected

    def expand(self, acks):
        layer, expected = self.layer, self.expected
        return (acks
                | "Key" >> beam.Map(lambda part: (layer, part))
                | "Gather" >> beam.GroupByKey()
                | "Check" >> beam.MapTuple(
                    lambda _, parts: completion.check_layer(completion.Acks.concat(layer, list(parts)), expected)
                ).with_output_types(typing.Any))


@_untyped_output
class ProveCompleteFn(beam.DoFn):
    """Every layer proven and the totals agree: count it, and write the completion mark."""

    def __init__(self, sink: SinkSpec, layers, roots: bool, scope: str):
        self.sink, self.layers, self.roots, self.scope = sink, list(layers), roots, scope

    def process(self, keyed_proofs):
        proofs = list(keyed_proofs[1])
        totals = completion.check_totals(proofs, self.layers, self.roots)
        mark = {"identity": self.sink.identity, "scope": self.scope, "finished_ms": int(time.time() * 1000),
                "layers": {str(p["layer"]): p["chunks"] for p in proofs}, **totals}
        if not self.sink.skip_writes:  # through the sink's writer: keepalive, deadlines, checked status
            import json

            from .store import cells, table_state
            from .store.bigtable import RowWriter
            writer = RowWriter(self.sink.target, self.sink.table_id, self.sink.ingest_ms,
                               max_inflight=1)
            try:
                writer.write([(cells.BOOKKEEPING_ROW, [(cells.FAMILY_HIERARCHY, table_state.COMPLETE,
                                                 json.dumps(mark, sort_keys=True).encode())])])
                writer.drain()
            finally:
                writer.close()
        _count("completion_proven")
        yield mark


def _expand_slab(x, layout):
    _, ny, nz = layout.n_chunks
    for y in range(ny):
        for z in range(nz):
            yield (x, y, z)


class BuildGraph(beam.PTransform):
    """Builds the graph and writes it: one build stage per layer, each with its own sink (no
    Flatten, so each stage's writes are fused into it and overlap its build), one proof per
    layer, and the completion proof over all of them. Returns the completion mark."""

    def __init__(self, layout: GraphLayout, reader, sink: SinkSpec, coords=None, fail_at_layer=None,
                 top_layer=None, checkpoint_url=None, start_layer=2, resume=False, pcg_version=2):
        """`coords`: only these layer-2 chunks; `top_layer`: stop after building this layer
        (then no roots are assigned) — together they make the `--test` run.
        `checkpoint_url`: save every layer's summaries there; `start_layer`: build from this
        layer on, reading layer `start_layer - 1`'s checkpoint and the proofs of the layers
        below (validated here, at once). `resume`: layer-2 chunks that the checkpoint records
        as acknowledged for this run's identity are read back instead of rebuilt.
        `pcg_version` 3: also the cells PyChunkedGraph 3.x adds (docs/table-format.md, version 3)."""
        super().__init__()
        self.lifted = pcg_version >= 3
        self.top_layer = top_layer or layout.layer_count
        self.layout = layout
        self.reader = reader
        self.sink = sink
        self.coords = coords
        self.fail_at_layer = fail_at_layer
        self.checkpoint_url = checkpoint_url
        self.start_layer = start_layer
        identity = sink.identity
        self.restart_summaries = self.restart_roots = None
        self.carried_proofs = []
        if start_layer > 2:
            self.restart_summaries = checkpoint.list_layer(checkpoint_url, "summaries", start_layer - 1, identity)
            self.restart_roots = [name for layer in range(2, start_layer)
                                  for name in checkpoint.list_layer(checkpoint_url, "roots", layer, identity)]
            for layer in range(2, start_layer):
                proof = checkpoint.read_marker(checkpoint_url, "summaries", layer, identity).get("proof")
                if not proof:
                    raise checkpoint.CheckpointError(
                        f"checkpoint {checkpoint_url.rstrip('/')}/{checkpoint.complete_name('summaries', layer)} "
                        f"holds no proof that layer {layer}'s rows were written; restart from an earlier layer")
                self.carried_proofs.append(proof)
        self.skipped, self.skipped_summaries, self.skipped_roots = set(), [], []
        self.carried_acks = None
        if resume and checkpoint_url and start_layer == 2:
            coords_acked, counts = checkpoint.acknowledged_layer2(checkpoint_url, identity)
            self.skipped_summaries, all_roots = checkpoint.saved_layer2(checkpoint_url, coords_acked.tolist())
            self.skipped = {tuple(int(v) for v in n[len("layer2/"):-len(".npz")].split("_"))
                            for n in self.skipped_summaries}
            keep = [i for i, c in enumerate(coords_acked.tolist()) if tuple(c) in self.skipped]
            self.carried_acks = completion.Acks(2, coords_acked[keep], counts[keep])
            chunk_ids = {f"roots/layer2_{int(layout.chunk_id(2, *c))}.npz" for c in self.skipped}
            self.skipped_roots = [n for n in all_roots if n in chunk_ids]

    # Creates whose elements are reshuffled, grouped or combined next skip Create's own
    # reshuffle (a GroupByKey stage each, ~0.1 s of a small run); `RootBound` keeps it, as its
    # files are read right after.
    def _layer2_coords(self, pbegin, coords=None):
        if coords is not None:
            return pbegin | "Layer2Coords" >> beam.Create(sorted({tuple(int(v) for v in c) for c in coords}),
                                                              reshuffle=False)
        return (pbegin
                | "Layer2Slabs" >> beam.Create(list(range(self.layout.n_chunks[0])), reshuffle=False)
                | "Layer2Coords" >> beam.FlatMap(_expand_slab, self.layout))

    def _segmentation_parts(self, pbegin):
        """Reads every chunk a built chunk touches (a `--test` run: its chunks and their face
        neighbours; after a resume: the chunks left and theirs); groups the parts by the chunk
        they are for."""
        reader = self.reader
        built = BuiltChunks(self.coords, self.skipped)
        if self.coords is not None:
            coords = self._layer2_coords(pbegin, [n for c in self.coords for n in [tuple(c), *reader.neighbours(c)]])
        else:
            coords = self._layer2_coords(pbegin)
            if self.skipped:
                coords = coords | "SkipUntouchedChunks" >> beam.Filter(
                    lambda c: built(c) or any(built(n) for n in reader.neighbours(c)))
        return (coords
                | "SpreadChunks" >> beam.Reshuffle()
                | "ReadSegmentation" >> beam.ParDo(ReadSegmentationChunkFn(reader, built)).with_output_types(
                    typing.Tuple[typing.Tuple[int, int, int], ChunkPart])
                | "GroupChunkParts" >> beam.GroupByKey())

    def _mark_saved(self, saved, layer, proof, already=(0, 0)):
        """Write layer's checkpoint markers once its summaries are saved and its rows proven
        written; returns them as a side input that the next layer waits for, so a layer's
        checkpoint is complete (and its proof in it) before the layer above starts.
        `already`: summary and root-bound files saved by an earlier run and reused."""
        if not self.checkpoint_url:
            return ()
        seeds = saved.pipeline | f"SavedSeedLayer{layer}" >> beam.Create([("summaries", already[0]),
                                                                           ("roots", already[1])], reshuffle=False)
        url, identity = self.checkpoint_url, self.sink.identity
        marked = ((saved, seeds)
                  | f"AllSavedLayer{layer}" >> beam.Flatten()
                  | f"CountSavedLayer{layer}" >> beam.CombinePerKey(sum)
                  | f"MarkCheckpointLayer{layer}" >> beam.Map(
                      lambda kv, proof, layer=layer: checkpoint.mark_complete(
                          url, kv[0], layer, kv[1], identity, proof if kv[0] == "summaries" else None),
                      beam.pvalue.AsSingleton(proof)))
        return (beam.pvalue.AsList(marked),)

    def _read_checkpoint(self, pbegin, label, summary_names, root_names):
        url, identity = self.checkpoint_url, self.sink.identity
        summaries = (pbegin
                     | f"{label}Summaries" >> beam.Create(summary_names, reshuffle=False)
                     | f"{label}Spread" >> beam.Reshuffle()
                     | f"{label}ReadSummaries" >> beam.Map(
                         lambda name: checkpoint.decode_summary(checkpoint.read_file(url, name), identity, name)))
        roots = (pbegin
                 | f"{label}RootBound" >> beam.Create(root_names)
                 | f"{label}ReadRootBound" >> beam.Map(
                     lambda name: checkpoint.decode_root_bound(checkpoint.read_file(url, name), identity, name)))
        return summaries, roots

    def _write_and_prove(self, rows, stage, layer, expected, carried=None):
        acks = rows | f"Write{stage}" >> beam.ParDo(WriteRowsFn(self.sink, stage=stage))
        if carried is not None and len(carried.coords):
            acks = ((acks, rows.pipeline | f"Carried{stage}Acks" >> beam.Create([carried]))
                    | f"All{stage}Acks" >> beam.Flatten())
        return acks | f"Prove{stage}" >> ProveLayer(layer, expected)

    def expand(self, pbegin):
        layout = self.layout
        proofs = []
        after = ()  # side inputs the next layer waits for (its checkpoint markers)
        test = self.coords is not None
        if self.start_layer > 2:
            summaries, saved_roots = self._read_checkpoint(pbegin, "Checkpoint", self.restart_summaries,
                                                           self.restart_roots)
            roots = [saved_roots]
        else:
            if hasattr(self.reader, "read_chunk"):  # segmentation input: each chunk needs its neighbours' parts
                coords = self._segmentation_parts(pbegin)
            else:
                coords = self._layer2_coords(pbegin, self.coords)
                if self.skipped:
                    skipped = self.skipped
                    coords = coords | "SkipDoneChunks" >> beam.Filter(lambda c: tuple(c) not in skipped)
                coords = coords | "SpreadChunks" >> beam.Reshuffle()
            built = coords | "BuildLayer2" >> beam.ParDo(
                BuildLayer2Fn(layout, self.reader, self.fail_at_layer, self.checkpoint_url,
                              self.sink.identity, self.lifted)).with_outputs(ROWS, ROOTS, SAVED, main="summary")
            proof = self._write_and_prove(built[ROWS], "Layer2", 2, completion.expected_chunks(layout, 2, self.coords),
                                          self.carried_acks)
            proofs.append(proof)
            roots = [built[ROOTS]]
            summaries = built.summary
            if self.skipped:
                saved_summaries, saved_roots = self._read_checkpoint(
                    pbegin, "DoneLayer2", self.skipped_summaries, self.skipped_roots)
                summaries = (summaries, saved_summaries) | "Layer2Summaries" >> beam.Flatten()
                roots.append(saved_roots)
            after = self._mark_saved(built[SAVED], 2, proof, (len(self.skipped_summaries), len(self.skipped_roots)))
        for layer in range(max(3, self.start_layer), self.top_layer + 1):
            built = (summaries
                     | f"GroupLayer{layer}" >> beam.GroupByKey()
                     | f"BuildLayer{layer}" >> beam.ParDo(
                         BuildParentLayerFn(layout, layer, self.fail_at_layer, self.checkpoint_url,
                                            self.sink.identity, self.lifted),
                         *after).with_outputs(ROWS, ROOTS, SAVED, main="summary"))
            expected = completion.expected_chunks(
                layout, layer, [tuple(int(c) >> 1 for c in self.coords[0])] if test else None)
            proof = self._write_and_prove(built[ROWS], f"Layer{layer}", layer, expected)
            proofs.append(proof)
            roots.append(built[ROOTS])
            summaries = built.summary
            after = self._mark_saved(built[SAVED], layer, proof)
        layers = list(range(2, self.top_layer + 1))
        with_roots = self.top_layer == layout.layer_count
        if with_roots:
            seeds = pbegin | "RootBuckets" >> beam.Create([(n, None) for n in range(ROOT_COUNTER_BUCKETS)],
                                                          reshuffle=False)
            root_rows = ((roots + [seeds])
                         | "AllRootBound" >> beam.Flatten()
                         | "GroupRootBuckets" >> beam.GroupByKey()
                         | "AssignRootIds" >> beam.ParDo(BuildRootsFn(layout)))
            proofs.append(self._write_and_prove(root_rows, "Roots", completion.ROOTS,
                                                completion.expected_chunks(layout, completion.ROOTS)))
            layers.append(completion.ROOTS)
        if self.carried_proofs:
            proofs.append(pbegin | "CarriedProofs" >> beam.Create(self.carried_proofs, reshuffle=False))
        return (proofs
                | "AllProofs" >> beam.Flatten()
                | "KeyProofs" >> beam.Map(lambda proof: (None, proof))
                | "GatherProofs" >> beam.GroupByKey()  # not ToList: its default-value stages, for nothing
                | "ProveComplete" >> beam.ParDo(ProveCompleteFn(self.sink, layers, with_roots,
                                                                "test" if test else "full")))
