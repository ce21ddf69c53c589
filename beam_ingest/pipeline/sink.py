"""The sink: writes each stage's rows to Bigtable, proves every chunk's rows acknowledged,
and writes the completion mark once every layer is proven."""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
import typing

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from . import checkpoint, completion, stages
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
class _SinkFn(beam.DoFn):
    """What every sink does: write rows to one Bigtable table (or only count them with
    `skip_writes`) and report, per chunk, that every one of its entries was acknowledged
    (`completion.Acks`, with the counts `stages.counted` names).

    Each chunk of a bundle is labelled by its place in the bundle, and the writer counts the
    acknowledged entries of each label, whichever request carried them; a chunk is done once
    they equal the entries queued for it, and the progress channel and Redis are told at
    once. A bundle is complete only once every one of its entries is acknowledged
    (`finish_bundle` drains the writer), so a failed write fails the bundle and Beam's retry
    rewrites identical cells; a chunk still short after the drain is left out of the `Acks`
    (the proof then names it) and counted as `unacknowledged_chunks`.

    Subclasses queue their rows in `process` (`_add_chunk`, `_queued`) and may hold them
    until `_send_held`; `name` is the stage's step name (per-sink metrics)."""

    def __init__(self, sink: SinkSpec, table_id: str, name: str):
        self.sink, self.table_id, self.name = sink, table_id, name

    def setup(self):
        self.writer = None
        self.progress = _ChunkProgress(self.sink)  # the graph's progress, whichever table is written
        if not self.sink.skip_writes:
            from ..store.row_writer import RowWriter
            self.writer = RowWriter(self.sink.target, self.table_id, self.sink.ingest_ms,
                                    batch_rows=self.sink.batch_rows, max_inflight=self.sink.max_inflight)

    def start_bundle(self):
        self._reported = ((0, 0, 0.0) if self.writer is None
                          else (self.writer.rows_written, self.writer.bytes_written, self.writer.wait_s))
        self._troubles = _WriterTroubles(self.writer, self.name)
        self._reset_chunks()
        if self.writer is not None:
            self.writer.take_acked()

    def _reset_chunks(self):
        self._chunks = []  # (stage, coord) of each chunk since the last flush: its label is its place here
        self._counts = []  # per chunk: [entries queued, then the stage's other counts]
        self._known = 0  # chunks whose queued entries are known (handed to the writer)
        self._acked = collections.Counter()  # entries acknowledged per chunk, so far
        self._told = set()  # chunks already reported done to the progress channel

    def _add_chunk(self, stage, coord, counts) -> int:
        """A chunk of the bundle, with its counts after the queued entries; returns its label."""
        self.progress.started(stage)
        self._chunks.append((stage, coord))
        self._counts.append([0, *counts])
        return len(self._chunks) - 1

    def _queued(self, first: int, queued) -> None:
        """Entries queued for the chunks `first`, `first + 1`, ... (with `skip_writes`: the
        entries they would have been); those with none, or all dropped, are done."""
        queued = list(queued)
        for i, n in enumerate(queued):
            self._counts[first + i][0] = int(n)
        self._known = max(self._known, first + len(queued))
        self._tell(range(first, first + len(queued)))

    def _send_held(self):
        """Hand the writer what the subclass holds back (pooled for encoding)."""

    def _count_written(self, rows: int, nbytes: int, drain_s: float, wait_s: float):
        """The sink's metrics for what was written since the last count: rows, bytes, time
        spent draining the writer and waiting for a free request slot."""

    def _take_acked(self):
        """The chunks with acknowledgements since the last call (all are added to `_acked`)."""
        newly = self.writer.take_acked()
        self._acked.update(newly)
        return newly.keys()

    def _tell_acked(self):
        if self.writer is not None:
            self._tell(self._take_acked())

    def _tell(self, candidates):
        """Report to the progress channel the `candidates` now fully acknowledged."""
        by_stage = {}
        for i in candidates:
            if i < self._known and i not in self._told and (self.writer is None
                                                            or self._acked.get(i, 0) == self._counts[i][0]):
                self._told.add(i)
                stage, coord = self._chunks[i]
                by_stage.setdefault(stage, []).append(coord)
        for stage, coords in by_stage.items():
            self.progress.done(stage, coords)

    def finish_bundle(self):
        _count(f"sink_bundles_{self.name}")
        for acks in self._flush():
            yield WindowedValue(acks, 0, [GlobalWindow()])

    def _flush(self):
        """Drain the writer and acknowledge the chunks sent since the last flush."""
        if self.writer is not None:
            self._send_held()
            start = time.perf_counter()
            self.writer.drain(while_waiting=self._tell_acked)
            drain_s = time.perf_counter() - start
            rows, nbytes, wait_s = self.writer.rows_written, self.writer.bytes_written, self.writer.wait_s
            self._count_written(rows - self._reported[0], nbytes - self._reported[1], drain_s,
                                wait_s - self._reported[2])
            self._reported = (rows, nbytes, wait_s)
            self._troubles.count()
            self._take_acked()
        yield from self._acknowledge()

    def _acknowledge(self):
        """The `Acks` of the chunks whose every entry was acknowledged, one per stage; the
        progress channel is told of those it was not told of yet."""
        by_stage = {}
        for i, ((stage, coord), counts) in enumerate(zip(self._chunks, self._counts)):
            if self.writer is not None and self._acked.get(i, 0) != counts[0]:
                _count("unacknowledged_chunks")
                log.error("%s: not every row was acknowledged by Bigtable (%d of %d entries)",
                          stages.describe(stage, coord), self._acked.get(i, 0), counts[0])
                continue
            coords, columns, untold = by_stage.setdefault(stage, ([], [], []))
            coords.append(coord)
            columns.append(counts)
            if i not in self._told:
                untold.append(coord)
        for stage, (coords, columns, untold) in by_stage.items():
            acks = completion.Acks.of(stage, coords, columns)
            self.progress.done(stage, untold)
            self._acknowledged(acks)
            yield acks
        self._reset_chunks()

    def _acknowledged(self, acks: completion.Acks):
        """Called with each stage's `Acks` of a flush, before they are handed on."""

    def teardown(self):
        if getattr(self, "progress", None) is not None:
            self.progress.close()
        if getattr(self, "writer", None) is not None:
            self.writer.close()


class WriteRowsFn(_SinkFn):
    """The graph's sink: `Rows` batches of one stage, pooled and encoded as they arrive and
    sent in the background; counts per chunk its parent cells, children cells and supervoxels
    (the completion proof's totals). With a checkpoint, layer 2's `Acks` are saved, so that a
    continued run reads those chunks back instead of building them again."""

    def __init__(self, sink: SinkSpec, stage=None):
        super().__init__(sink, sink.table_id, stage or "rows")
        self.stage = stage

    def setup(self):
        import zstandard
        super().setup()
        self.compressor = zstandard.ZstdCompressor(level=3)

    def start_bundle(self):
        super().start_bundle()
        self._buffer, self._buffered, self._buffered_since = [], 0, 0.0

    def process(self, chunk: stages.ChunkRows):
        rows = chunk.rows
        label = self._add_chunk(chunk.stage, chunk.coord, [len(rows.node_ids), len(rows.children_of), chunk.svs])
        if self.writer is None:
            count = rows.row_count()  # dropped unencoded: the build alone is measured
            self._count_rows(count, 0)
            self._queued(label, [count])
        else:
            # Small batches are pooled so encoding works on large arrays.
            if not self._buffer:
                self._buffered_since = time.monotonic()
            self._buffer.append(rows)
            self._buffered += len(rows.node_ids) + len(rows.children_of)
            if (self._buffered >= min(ENCODE_ROWS, 4 * self.sink.batch_rows)
                    or time.monotonic() - self._buffered_since >= ENCODE_WAIT_S):
                self._send_held()
            self._tell_acked()
        if self.sink.ack_each_element:
            yield from self._flush()

    def _send_held(self):
        start = time.perf_counter()
        if self._buffer:
            base = len(self._chunks) - len(self._buffer)
            sizes = [rows.column_lengths() for rows in self._buffer]
            self._queued(base, self.writer.write_rows(Rows.concat(self._buffer), self.compressor, label_base=base,
                                                      part_sizes=sizes).tolist())
        self._buffer, self._buffered = [], 0
        _count("write_us", (time.perf_counter() - start) * 1e6)

    def _count_written(self, rows: int, nbytes: int, drain_s: float, wait_s: float):
        _count("write_us", drain_s * 1e6)
        self._count_rows(rows, nbytes)
        _count("write_wait_us", wait_s * 1e6)

    def _count_rows(self, rows: int, nbytes: int):
        """Totals, and per stage (`rows_written_Layer2`, ..., `rows_written_Roots`)."""
        _count("rows_written", rows)
        _count("bytes_written", nbytes)
        if self.stage:
            _count(f"rows_written_{self.stage}", rows)
            _count(f"bytes_written_{self.stage}", nbytes)

    def _acknowledged(self, acks: completion.Acks):
        if self.sink.checkpoint_url and acks.stage == 2 and not self.sink.skip_writes:
            checkpoint.write_acks(self.sink.checkpoint_url, self.sink.identity, acks.coords, acks.columns())


class WriteCacheRowsFn(_SinkFn):
    """The L2 cache's sink: each layer-2 chunk's cache rows into the cache table; counts per
    chunk its rows, and its nodes without voxels and unknown supervoxels
    (`stages.CACHE_COUNTS`)."""

    def __init__(self, sink: SinkSpec, table_id: str):
        super().__init__(sink, table_id, stages.step_name(stages.L2CACHE))

    def process(self, element):
        coord, rows, disagreement = element
        label = self._add_chunk(stages.L2CACHE, coord, list(disagreement))
        _count("l2cache_rows_written", len(rows))
        if self.writer is None:
            self._queued(label, [len(rows)])  # counted, not written
        else:
            self._queued(label, [self.writer.write(rows, label=label) if rows else 0])
            self._tell_acked()
        if self.sink.ack_each_element:
            yield from self._flush()


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
        from ..store.row_writer import RowWriter
        writer = RowWriter(self.sink.target, table_id, self.sink.ingest_ms, max_inflight=1)
        try:
            writer.write([row])
            writer.drain()
        finally:
            writer.close()
