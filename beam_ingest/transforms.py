"""The Beam wiring: PTransforms around the pure build and the Bigtable writer."""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from . import checkpoint
from .build.layer2 import build_layer2
from .build.parents import build_parent_layer
from .build.roots import build_roots, root_bucket
from .build.types import Rows
from .layout import ROOT_COUNTER_BUCKETS, GraphLayout
from .progress import ROOTS as ROOTS_PROGRESS

NAMESPACE = "ingest"
ENCODE_ROWS = 20_000  # rows pooled per encoding call in the sink
ROWS = "rows"
SAVED = "saved"
ROOTS = "roots"
log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """Raised by `--fail_at_layer` (tests of recovery)."""


def _count(name: str, value: int = 1):
    Metrics.counter(NAMESPACE, name).inc(int(value))


class _BuildFn(beam.DoFn):
    def __init__(self, layout: GraphLayout, layer: int, fail_at_layer: int | None, checkpoint_url=None):
        self.layout = layout
        self.layer = layer
        self.fail_at_layer = fail_at_layer
        self.checkpoint_url = checkpoint_url

    def _emit(self, rows, summary, root_bound, coord):
        if self.fail_at_layer == self.layer:
            raise InjectedFailure(f"injected failure at layer {self.layer} chunk {tuple(coord)}")
        _count(f"layer{self.layer}_chunks")
        coord = tuple(int(c) for c in coord)
        rows.done = [(self.layer, coord)]
        yield beam.pvalue.TaggedOutput(ROWS, rows)  # even when empty: it marks the chunk done
        parent = tuple(c >> 1 for c in coord)  # the parent chunk (FANOUT 2)
        if root_bound is not None and len(root_bound.components):
            bucket = root_bucket(root_bound.source_chunk)
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.roots_name(self.layer, root_bound),
                                      checkpoint.encode_root_bound(bucket, root_bound))
                yield beam.pvalue.TaggedOutput(SAVED, ("roots", 1))
            yield beam.pvalue.TaggedOutput(ROOTS, (bucket, root_bound))
        if self.layer < self.layout.layer_count:
            if self.checkpoint_url:
                checkpoint.write_file(self.checkpoint_url, checkpoint.summary_name(self.layer, coord),
                                      checkpoint.encode_summary(parent, summary))
                yield beam.pvalue.TaggedOutput(SAVED, ("summaries", 1))
            # even when empty, so that every parent chunk is built (and counted done)
            yield parent, summary


class BuildLayer2Fn(_BuildFn):
    def __init__(self, layout, reader, fail_at_layer=None, checkpoint_url=None):
        super().__init__(layout, 2, fail_at_layer, checkpoint_url)
        self.reader = reader

    def setup(self):
        self.reader.connect()

    def process(self, coord):
        start = time.perf_counter()
        requests_before, rounds_before = self.reader.requests, self.reader.rounds
        inputs = self.reader.read(coord)
        _count("layer2_storage_requests", self.reader.requests - requests_before)
        _count("layer2_storage_rounds", self.reader.rounds - rounds_before)
        read_done = time.perf_counter()
        rows, summary, root_bound, stats = build_layer2(inputs, self.layout)
        _count("layer2_read_us", (read_done - start) * 1e6)
        _count("layer2_us", (time.perf_counter() - start) * 1e6)
        _count("layer2_svs", stats.svs)
        _count("layer2_edges", stats.edges)
        _count("layer2_active_edges", stats.active_edges)
        _count("layer2_nodes", stats.nodes)
        yield from self._emit(rows, summary, root_bound, coord)


class BuildParentLayerFn(_BuildFn):
    def process(self, element, *checkpoints_below):  # side inputs only order the stages
        coord, summaries = element
        start = time.perf_counter()
        rows, summary, root_bound, stats = build_parent_layer(self.layer, coord, summaries, self.layout)
        _count(f"layer{self.layer}_us", (time.perf_counter() - start) * 1e6)
        _count(f"layer{self.layer}_nodes", stats.nodes)
        _count(f"layer{self.layer}_skipped_singletons", stats.skipped)
        if stats.dangling_edges:
            _count(f"layer{self.layer}_dangling_cross_edges", stats.dangling_edges)
            log.debug("layer %d chunk %s: %d cross edge copies without a mirror (kept, join nothing)",
                        self.layer, tuple(coord), stats.dangling_edges)
        yield from self._emit(rows, summary, root_bound, coord)


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


class WriteRowsFn(beam.DoFn):
    """Writes `Rows` batches to Bigtable (or only counts them with `skip_writes`).

    Rows are encoded as they arrive and sent in the background; a bundle is complete
    only once every one of its rows is acknowledged (`finish_bundle` drains the writer),
    so a failed write fails the bundle and Beam's retry rewrites identical cells.
    """

    def __init__(self, project, instance, table_id, ingest_ms, skip_writes=False, batch_rows=2000,
                 max_inflight=2, redis=None, progress_id=None, stage=None):
        self.project, self.instance, self.table_id = project, instance, table_id
        self.stage = stage
        self.ingest_ms = ingest_ms
        self.skip_writes = skip_writes
        self.batch_rows = batch_rows
        self.max_inflight = max_inflight
        self.redis = redis
        self.progress_id = progress_id or table_id

    def setup(self):
        import zstandard
        from .progress import ProgressCache
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.writer = None
        self.progress = ProgressCache(self.redis, self.progress_id) if self.redis else None
        if not self.skip_writes:
            from .store.bigtable import RowWriter
            self.writer = RowWriter(self.project, self.instance, self.table_id, self.ingest_ms,
                                    batch_rows=self.batch_rows, max_inflight=self.max_inflight)

    def start_bundle(self):
        self._reported = ((0, 0, 0.0) if self.writer is None
                          else (self.writer.rows_written, self.writer.bytes_written, self.writer.wait_s))
        self._buffer, self._buffered = [], 0
        self._done = []

    def process(self, rows):
        self._done.extend(rows.done)
        if self.writer is None:
            self._count_rows(rows.row_count(), 0)  # dropped unencoded: the build alone is measured
            return
        # Small batches are pooled so encoding works on large arrays.
        self._buffer.append(rows)
        self._buffered += len(rows.node_ids) + len(rows.children_of)
        if self._buffered >= ENCODE_ROWS:
            self._encode()

    def _encode(self):
        start = time.perf_counter()
        if self._buffer:
            self.writer.write_rows(Rows.concat(self._buffer), self.compressor)
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
        self._mark_done()

    def _count_rows(self, rows: int, nbytes: int):
        """Totals, and per stage (`rows_written_Layer2`, ..., `rows_written_Roots`)."""
        _count("rows_written", rows)
        _count("bytes_written", nbytes)
        if self.stage:
            _count(f"rows_written_{self.stage}", rows)
            _count(f"bytes_written_{self.stage}", nbytes)

    def _mark_done(self):
        """Every row of these chunks is written: record them as done."""
        from .progress import record_local
        by_layer = {}
        for layer, coord in self._done:
            by_layer.setdefault(layer, []).append(coord)
        for layer, coords in by_layer.items():
            record_local(self.progress_id, layer, len(coords))
            if self.progress is not None:
                self.progress.mark_done(layer, coords)
        self._done = []

    def teardown(self):
        if getattr(self, "writer", None) is not None:
            self.writer.close()


def _expand_slab(x, layout):
    _, ny, nz = layout.n_chunks
    for y in range(ny):
        for z in range(nz):
            yield (x, y, z)


class BuildGraph(beam.PTransform):
    """Builds the graph: returns its rows as PCollections of `Rows`, one per stage.

    They stay separate (no Flatten) so that each stage's writes are fused into that stage
    and overlap with its build, instead of waiting for every stage to finish.
    """

    def __init__(self, layout: GraphLayout, reader, coords=None, fail_at_layer=None, top_layer=None,
                 checkpoint_url=None, start_layer=2, done_layer2=()):
        """`coords`: only these layer-2 chunks; `top_layer`: stop after building this layer
        (then no roots are assigned) — together they make the `--test` run.
        `checkpoint_url`: save every layer's summaries there; `start_layer`: build from this
        layer on, reading layer `start_layer - 1`'s checkpoint (validated here, at once).
        `done_layer2`: layer-2 chunks already written (Redis says so); those whose summary is
        checkpointed are read back instead of rebuilt."""
        super().__init__()
        self.top_layer = top_layer or layout.layer_count
        self.layout = layout
        self.reader = reader
        self.coords = coords
        self.fail_at_layer = fail_at_layer
        self.checkpoint_url = checkpoint_url
        self.start_layer = start_layer
        self.restart_summaries = self.restart_roots = None
        if start_layer > 2:
            self.restart_summaries = checkpoint.list_layer(checkpoint_url, "summaries", start_layer - 1)
            self.restart_roots = [name for layer in range(2, start_layer)
                                  for name in checkpoint.list_layer(checkpoint_url, "roots", layer)]
        self.skipped, self.skipped_summaries, self.skipped_roots = set(), [], []
        if done_layer2 and checkpoint_url and start_layer == 2:
            self.skipped_summaries, all_roots = checkpoint.saved_layer2(checkpoint_url, done_layer2)
            self.skipped = {tuple(int(v) for v in n[len("layer2/"):-len(".npz")].split("_"))
                            for n in self.skipped_summaries}
            chunk_ids = {f"roots/layer2_{int(layout.chunk_id(2, *c))}.npz" for c in self.skipped}
            self.skipped_roots = [n for n in all_roots if n in chunk_ids]

    def _mark_saved(self, saved, layer, already=(0, 0)):
        """Write layer's checkpoint markers; returns them as a side input that the next layer
        waits for, so a layer's checkpoint is complete before the layer above starts.
        `already`: summary and root-bound files saved by an earlier run and reused."""
        if not self.checkpoint_url:
            return ()
        seeds = saved.pipeline | f"SavedSeedLayer{layer}" >> beam.Create([("summaries", already[0]),
                                                                           ("roots", already[1])])
        url = self.checkpoint_url
        marked = ((saved, seeds)
                  | f"AllSavedLayer{layer}" >> beam.Flatten()
                  | f"CountSavedLayer{layer}" >> beam.CombinePerKey(sum)
                  | f"MarkCheckpointLayer{layer}" >> beam.MapTuple(
                      lambda kind, n, layer=layer: checkpoint.mark_complete(url, kind, layer, n)))
        return (beam.pvalue.AsList(marked),)

    def _read_checkpoint(self, pbegin, label, summary_names, root_names):
        url = self.checkpoint_url
        summaries = (pbegin
                     | f"{label}Summaries" >> beam.Create(summary_names)
                     | f"{label}Spread" >> beam.Reshuffle()
                     | f"{label}ReadSummaries" >> beam.Map(
                         lambda name: checkpoint.decode_summary(checkpoint.read_file(url, name))))
        roots = (pbegin
                 | f"{label}RootBound" >> beam.Create(root_names)
                 | f"{label}ReadRootBound" >> beam.Map(
                     lambda name: checkpoint.decode_root_bound(checkpoint.read_file(url, name))))
        return summaries, roots

    def expand(self, pbegin):
        layout = self.layout
        rows = {}
        after = ()  # side inputs the next layer waits for (its checkpoint markers)
        if self.start_layer > 2:
            summaries, saved_roots = self._read_checkpoint(pbegin, "Checkpoint", self.restart_summaries,
                                                           self.restart_roots)
            roots = [saved_roots]
        else:
            if self.coords is None:
                coords = (pbegin
                          | "Layer2Slabs" >> beam.Create(list(range(layout.n_chunks[0])))
                          | "Layer2Coords" >> beam.FlatMap(_expand_slab, layout))
            else:
                coords = pbegin | "Layer2Coords" >> beam.Create([tuple(c) for c in self.coords])
            if self.skipped:
                skipped = self.skipped
                coords = coords | "SkipDoneChunks" >> beam.Filter(lambda c: tuple(c) not in skipped)
            coords = coords | "SpreadChunks" >> beam.Reshuffle()
            built = coords | "BuildLayer2" >> beam.ParDo(
                BuildLayer2Fn(layout, self.reader, self.fail_at_layer, self.checkpoint_url)).with_outputs(
                    ROWS, ROOTS, SAVED, main="summary")
            rows["Layer2"] = built[ROWS]
            roots = [built[ROOTS]]
            summaries = built.summary
            if self.skipped:
                saved_summaries, saved_roots = self._read_checkpoint(
                    pbegin, "DoneLayer2", self.skipped_summaries, self.skipped_roots)
                summaries = (summaries, saved_summaries) | "Layer2Summaries" >> beam.Flatten()
                roots.append(saved_roots)
            after = self._mark_saved(built[SAVED], 2, (len(self.skipped_summaries), len(self.skipped_roots)))
        for layer in range(max(3, self.start_layer), self.top_layer + 1):
            built = (summaries
                     | f"GroupLayer{layer}" >> beam.GroupByKey()
                     | f"BuildLayer{layer}" >> beam.ParDo(
                         BuildParentLayerFn(layout, layer, self.fail_at_layer, self.checkpoint_url),
                         *after).with_outputs(ROWS, ROOTS, SAVED, main="summary"))
            rows[f"Layer{layer}"] = built[ROWS]
            roots.append(built[ROOTS])
            summaries = built.summary
            after = self._mark_saved(built[SAVED], layer)
        if self.top_layer < layout.layer_count:
            return rows
        seeds = pbegin | "RootBuckets" >> beam.Create([(n, None) for n in range(ROOT_COUNTER_BUCKETS)])
        root_rows = ((roots + [seeds])
                     | "AllRootBound" >> beam.Flatten()
                     | "GroupRootBuckets" >> beam.GroupByKey()
                     | "AssignRootIds" >> beam.ParDo(BuildRootsFn(layout)))
        rows["Roots"] = root_rows
        return rows


class WriteToChunkedGraph(beam.PTransform):
    def __init__(self, project, instance, table_id, ingest_ms, skip_writes=False, batch_rows=2000,
                 max_inflight=2, redis=None, progress_id=None):
        super().__init__()
        self.args = (project, instance, table_id, ingest_ms, skip_writes, batch_rows, max_inflight, redis,
                     progress_id)

    def expand(self, rows_by_stage):
        for stage, rows in rows_by_stage.items():
            _ = rows | f"Write{stage}" >> beam.ParDo(WriteRowsFn(*self.args, stage=stage))
        return rows_by_stage
