"""The sink: writes each stage's rows to Bigtable, proves every chunk's rows acknowledged,
and writes the completion mark once every layer is proven."""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
import typing

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from . import checkpoint, completion
from ..hierarchy.types import Rows
from ..metrics import count as _count

ENCODE_ROWS = 20_000  # rows pooled per encoding call, at most; at most 4 requests' worth too: a
# chunk's entries spread over its pool (they are sent in key order), so a pool is what
# progress and acknowledgements advance by
ENCODE_WAIT_S = 0.5  # ... or fewer, when the first of them came this long ago (progress keeps moving)
log = logging.getLogger(__name__)
_untyped_output = beam.typehints.with_output_types(typing.Any)  # see transforms.py


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
    progress_channel: object = None  # progress.ProgressChannel to the launcher, if it listens
    checkpoint_url: str | None = None
    # acknowledge after every element, not at the end of the bundle: for runners that drop
    # what finish_bundle outputs (Beam's DaskRunner); writes then no longer overlap the build
    # of the next chunk
    ack_each_element: bool = False


class _ChunkProgress:
    """Tells the launcher (its progress channel) and Redis of chunks as soon as Bigtable
    acknowledged all of their rows, and of a stage's start when its first chunk arrives."""

    def __init__(self, sink: SinkSpec):
        from .progress import ProgressCache, ProgressReporter
        self.reporter = ProgressReporter(sink.progress_channel) if sink.progress_channel is not None else None
        self.cache = (ProgressCache(sink.redis, sink.progress_id or sink.table_id, sink.identity)
                      if sink.redis else None)

    def started(self, layer):
        if self.reporter is not None:
            self.reporter.started(layer)

    def done(self, layer, coords):
        if not len(coords):
            return
        if self.reporter is not None:
            self.reporter.done(layer, coords)
        if self.cache is not None:
            self.cache.mark_done(layer, coords)

    def close(self):
        if self.cache is not None:
            self.cache.flush_pending()


class _WriterTroubles:
    """Counts, as metrics, what a writer met since the last count: time throttled by Bigtable
    (RESOURCE_EXHAUSTED), requests retried after a transient failure, and requests sent (per
    sink `name`: how many batches each sink's rows took)."""

    def __init__(self, writer, name: str):
        self.writer, self.name = writer, name
        self.reported = (0.0, 0, 0) if writer is None else self._now()

    def _now(self):
        return self.writer.throttled_s, self.writer.retries, self.writer.requests

    def count(self):
        if self.writer is None:
            return
        now = self._now()
        _count("write_throttled_us", (now[0] - self.reported[0]) * 1e6)
        _count("write_retries", now[1] - self.reported[1])
        _count(f"write_requests_{self.name}", now[2] - self.reported[2])
        self.reported = now


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
        sink = self.sink
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.writer = None
        self.progress = _ChunkProgress(sink)
        if not sink.skip_writes:
            from ..store.bigtable import RowWriter
            self.writer = RowWriter(sink.target, sink.table_id, sink.ingest_ms,
                                    batch_rows=sink.batch_rows, max_inflight=sink.max_inflight)

    def start_bundle(self):
        self._reported = ((0, 0, 0.0) if self.writer is None
                          else (self.writer.rows_written, self.writer.bytes_written, self.writer.wait_s))
        self._troubles = _WriterTroubles(self.writer, self.stage or "rows")
        self._buffer, self._buffered, self._buffered_since = [], 0, 0.0
        self._chunks = []  # (layer, coord) of each chunk of the bundle: its label in the writer
        self._counts = []  # per chunk: [queued entries, parent cells, children cells, supervoxels]
        self._encoded = 0  # chunks handed to the writer (their entry counts known)
        self._acked = collections.Counter()  # entries acknowledged per chunk, so far
        self._told = set()  # chunks already reported done to the progress channel
        if self.writer is not None:
            self.writer.take_acked()

    def process(self, rows):
        for layer, coord in rows.done:
            self.progress.started(layer)
            self._chunks.append((layer, coord))
            self._counts.append([0, len(rows.node_ids), len(rows.children_of), rows.svs])
        if self.writer is None:
            count = rows.row_count()  # dropped unencoded: the build alone is measured
            self._counts[-1][0] = count
            self._count_rows(count, 0)
            self._encoded = len(self._chunks)
            self._tell(range(len(self._chunks) - len(rows.done), len(self._chunks)))
        else:
            # Small batches are pooled so encoding works on large arrays.
            if not self._buffer:
                self._buffered_since = time.monotonic()
            self._buffer.append(rows)
            self._buffered += len(rows.node_ids) + len(rows.children_of)
            if (self._buffered >= min(ENCODE_ROWS, 4 * self.sink.batch_rows)
                    or time.monotonic() - self._buffered_since >= ENCODE_WAIT_S):
                self._encode()
            self._tell(self._take_acked())
        if self.sink.ack_each_element:
            yield from self._flush()

    def _encode(self):
        start = time.perf_counter()
        if self._buffer:
            base = len(self._chunks) - len(self._buffer)
            queued = self.writer.write_rows(Rows.concat(self._buffer), self.compressor, label_base=base)
            for i, n in enumerate(queued.tolist()):
                self._counts[base + i][0] = n
            self._encoded = len(self._chunks)
            self._tell([base + i for i, n in enumerate(queued.tolist()) if n == 0])
        self._buffer, self._buffered = [], 0
        _count("write_us", (time.perf_counter() - start) * 1e6)

    def _take_acked(self):
        """The chunks with acknowledgements since the last call (all are added to `_acked`)."""
        newly = self.writer.take_acked()
        self._acked.update(newly)
        return newly.keys()

    def _tell(self, candidates):
        """Report to the progress channel the `candidates` now fully acknowledged."""
        by_layer = {}
        for i in candidates:
            if i < self._encoded and i not in self._told and self._acked.get(i, 0) == self._counts[i][0]:
                self._told.add(i)
                layer, coord = self._chunks[i]
                by_layer.setdefault(layer, []).append(coord)
        for layer, coords in by_layer.items():
            self.progress.done(layer, coords)

    def finish_bundle(self):
        _count(f"sink_bundles_{self.stage or 'rows'}")
        for acks in self._flush():
            yield WindowedValue(acks, 0, [GlobalWindow()])

    def _flush(self):
        """Drain the writer and acknowledge the chunks sent since the last flush."""
        if self.writer is not None:
            self._encode()
            start = time.perf_counter()
            self.writer.drain(while_waiting=lambda: self._tell(self._take_acked()))
            _count("write_us", (time.perf_counter() - start) * 1e6)
            rows, nbytes = self.writer.rows_written, self.writer.bytes_written
            self._count_rows(rows - self._reported[0], nbytes - self._reported[1])
            _count("write_wait_us", (self.writer.wait_s - self._reported[2]) * 1e6)
            self._reported = (rows, nbytes, self.writer.wait_s)
            self._troubles.count()
        yield from self._acknowledge()

    def _acknowledged(self) -> list[bool]:
        if self.writer is None:
            return [True] * len(self._chunks)
        self._take_acked()
        return [self._acked.get(i, 0) == counts[0] for i, counts in enumerate(self._counts)]

    def _acknowledge(self):
        """Report the chunks whose every entry was acknowledged (the proof's `Acks`); tell the
        progress channel of those not told yet."""
        by_layer = {}
        for i, (ok, (layer, coord), counts) in enumerate(zip(self._acknowledged(), self._chunks, self._counts)):
            if not ok:
                _count("unacknowledged_chunks")
                log.error("%s: not every row was acknowledged by Bigtable", completion.describe(layer, coord))
                continue
            by_layer.setdefault(layer, ([], [], []))
            by_layer[layer][0].append(coord)
            by_layer[layer][1].append(counts)
            if i not in self._told:
                by_layer[layer][2].append(coord)
        for layer, (coords, counts, untold) in by_layer.items():
            acks = completion.Acks(layer, np.asarray(coords, np.int64).reshape(len(coords), -1),
                                   np.asarray(counts, np.int64).reshape(-1, 4))
            self.progress.done(layer, untold)
            if self.sink.checkpoint_url and layer == 2 and not self.sink.skip_writes:
                checkpoint.write_acks(self.sink.checkpoint_url, self.sink.identity, acks.coords, acks.counts)
            yield acks
        self._chunks, self._counts, self._encoded, self._told = [], [], 0, set()
        self._acked = collections.Counter()

    def _count_rows(self, rows: int, nbytes: int):
        """Totals, and per stage (`rows_written_Layer2`, ..., `rows_written_Roots`)."""
        _count("rows_written", rows)
        _count("bytes_written", nbytes)
        if self.stage:
            _count(f"rows_written_{self.stage}", rows)
            _count(f"bytes_written_{self.stage}", nbytes)

    def teardown(self):
        if getattr(self, "progress", None) is not None:
            self.progress.close()
        if getattr(self, "writer", None) is not None:
            self.writer.close()


@_untyped_output
class WriteCacheRowsFn(beam.DoFn):
    """Writes each layer-2 chunk's L2 cache rows into the cache table (or only counts them with
    `skip_writes`) and reports the chunks whose rows Bigtable acknowledged, as `Acks` of
    `completion.L2CACHE` (columns: the chunk's cache rows, and its nodes without voxels and
    unknown supervoxels). Each chunk's entries carry its own label, so its acknowledgements are
    counted whichever batch sent them; a chunk not fully acknowledged fails the bundle."""

    def __init__(self, sink: SinkSpec, table_id: str):
        self.sink, self.table_id = sink, table_id

    def setup(self):
        self.writer = None
        self.progress = _ChunkProgress(self.sink)  # the graph's progress, not the cache table's
        if not self.sink.skip_writes:
            from ..store.bigtable import RowWriter
            self.writer = RowWriter(self.sink.target, self.table_id, self.sink.ingest_ms,
                                    batch_rows=self.sink.batch_rows, max_inflight=self.sink.max_inflight)

    def start_bundle(self):
        self._coords, self._rows, self._disagree = [], [], []
        self._acked = collections.Counter()
        self._troubles = _WriterTroubles(self.writer, "L2Cache")
        if self.writer is not None:
            self.writer.take_acked()

    def process(self, element):
        coord, rows, disagreement = element
        self.progress.started(completion.L2CACHE)
        self._coords.append(coord)
        self._rows.append(len(rows))
        self._disagree.append(disagreement)
        if self.writer is not None and rows:
            # labelled by the chunk's place since the last flush: its acknowledgements are
            # counted per chunk, whenever its batches are sent (here, or in the drain)
            self.writer.write(rows, label=len(self._coords) - 1)
            self._tell_acked()
        else:
            self.progress.done(completion.L2CACHE, [coord])
        if self.sink.ack_each_element:
            yield from self._flush()

    def _tell_acked(self):
        """Tell the progress channel of the chunks whose last rows were just acknowledged."""
        newly = self.writer.take_acked()
        self._acked.update(newly)
        self.progress.done(completion.L2CACHE, [self._coords[i] for i in newly if self._acked[i] == self._rows[i]])

    def finish_bundle(self):
        _count("sink_bundles_L2Cache")
        for acks in self._flush():
            yield WindowedValue(acks, 0, [GlobalWindow()])

    def _flush(self):
        if not self._coords:
            return
        if self.writer is not None:
            self.writer.drain(while_waiting=self._tell_acked)
            self._troubles.count()
            self._tell_acked()
            acked = self._acked
            short = [(coord, acked.get(i, 0), n) for i, (coord, n) in enumerate(zip(self._coords, self._rows))
                     if acked.get(i, 0) != n]
            if short:
                coord, got, sent = short[0]
                raise RuntimeError(f"L2 cache: {len(short)} layer-2 chunk(s) not fully acknowledged by Bigtable, "
                                   f"first {tuple(coord)}: {got} of {sent} rows")
        _count("l2cache_rows_written", sum(self._rows))
        counts = np.zeros((len(self._rows), 4), np.int64)
        counts[:, completion.ROWS] = self._rows
        counts[:, [completion.NO_VOXELS, completion.UNKNOWN_SVS]] = np.asarray(self._disagree, np.int64).reshape(-1, 2)
        yield completion.Acks(completion.L2CACHE, np.asarray(self._coords, np.int64).reshape(-1, 3), counts)
        self._coords, self._rows, self._disagree = [], [], []
        self._acked = collections.Counter()

    def teardown(self):
        if getattr(self, "progress", None) is not None:
            self.progress.close()
        if getattr(self, "writer", None) is not None:
            self.writer.close()


class ProveLayer(beam.PTransform):
    """One layer's proof: the acknowledged chunks are exactly the expected ones (else the
    pipeline fails naming the missing chunks). The acks (one small columnar `Acks` per
    bundle) meet under one key: a GroupByKey costs a fifth of CombineGlobally's construction
    (its default-value and combiner-lifting stages), and a layer whose acks never come has
    no proof, which the completion proof refuses."""

    def __init__(self, layer, expected, check=completion.check_layer):
        """`check(acks, expected)`: the proof from the layer's acks (`completion.check_cache`
        for the L2 cache's)."""
        super().__init__()
        self.layer, self.expected, self.check = layer, expected, check

    def expand(self, acks):
        layer, expected, check = self.layer, self.expected, self.check
        return (acks
                | "Key" >> beam.Map(lambda part: (layer, part))
                | "Gather" >> beam.GroupByKey()
                | "Check" >> beam.MapTuple(
                    lambda _, parts: check(completion.Acks.concat(layer, list(parts)), expected)
                ).with_output_types(typing.Any))


@_untyped_output
class ProveCompleteFn(beam.DoFn):
    """Every layer proven and the totals agree: count it, and write the completion mark."""

    def __init__(self, sink: SinkSpec, layers, roots: bool, scope: str, cache_table: str | None = None):
        """`cache_table`: the L2 cache's table, which gets its own completion mark first."""
        self.sink, self.layers, self.roots, self.scope = sink, list(layers), roots, scope
        self.cache_table = cache_table

    def process(self, keyed_proofs):
        proofs = [p for p in keyed_proofs[1] if isinstance(p, dict)]  # not the top layer's checkpoint element
        totals = completion.check_totals(proofs, self.layers, self.roots)
        mark = {"identity": self.sink.identity, "scope": self.scope, "finished_ms": int(time.time() * 1000),
                "layers": {str(p["layer"]): p["chunks"] for p in proofs}, **totals}
        if not self.sink.skip_writes:  # through the sink's writer: keepalive, deadlines, checked status
            import json

            from ..store import cells, table_state
            if self.cache_table is not None:  # the cache's first: the graph's mark says the cache is done too
                from ..l2cache.table import mark_cells
                self._write(self.cache_table, mark_cells(self.sink.identity, completion.cache_totals(mark)))
            self._write(self.sink.table_id, (cells.BOOKKEEPING_ROW, [(cells.FAMILY_HIERARCHY, table_state.COMPLETE,
                                                                      json.dumps(mark, sort_keys=True).encode())]))
        _count("completion_proven")
        yield mark

    def _write(self, table_id: str, row):
        from ..store.bigtable import RowWriter
        writer = RowWriter(self.sink.target, table_id, self.sink.ingest_ms, max_inflight=1)
        try:
            writer.write([row])
            writer.drain()
        finally:
            writer.close()
