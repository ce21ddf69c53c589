"""A batched, checked row writer: entries queued, sent in requests within Bigtable's limits,
each entry's status checked, failures retried with backoff, throttling waited out, and
acknowledgements counted per label (a chunk is proven written by its own)."""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import random
import threading
import time

import numpy as np
from google.api_core import exceptions as gexc

from . import limits
from .grpc_transport import mutate_rows_transport
from .targets import Target

log = logging.getLogger(__name__)

# Deadline of one MutateRows attempt (a batch takes well under a second when Bigtable is
# healthy). A call past it, or failing UNAVAILABLE, is retried over a fresh channel.
MUTATE_TIMEOUT_S = 60.0


# A status code per row from mutate_rows: these are worth retrying.
RETRYABLE_CODES = {4, 8, 10, 13, 14}  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE


TRANSIENT_EXCEPTIONS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted,
                        gexc.Aborted, gexc.InternalServerError)


# Retries of failed rows: exponential backoff from INITIAL_BACKOFF_S, capped at MAX_BACKOFF_S.
MAX_ATTEMPTS = 8


INITIAL_BACKOFF_S = 0.1


MAX_BACKOFF_S = 10.0


# RESOURCE_EXHAUSTED (Bigtable's nodes are busy) is not a failure: a throttled batch backs off
# (from THROTTLE_BACKOFF_S, doubling to MAX_BACKOFF_S, with jitter so workers spread out) for
# as long as it takes, up to THROTTLE_LIMIT_S of throttling without a pause, and those waits
# do not count as attempts.
THROTTLE_BACKOFF_S = 0.05


THROTTLE_LIMIT_S = 600.0


RESOURCE_EXHAUSTED = 8


class WriteError(RuntimeError):
    """Rows that could not be written after all retries."""


class RowWriter:
    """Writes serialized entries with MutateRows, checking every row's status.

    Entries are buffered and sent `batch_rows` at a time by background threads, so
    building and encoding go on while Bigtable works; at most `max_inflight` requests
    are in flight per writer (flow control), further writes wait. Failed rows (a
    retryable per-row status, or a transient RPC error for the whole request) are
    re-sent with exponential backoff; a row still failing after `max_attempts`, or
    rejected outright, raises `WriteError` naming it (from `drain()`).
    """

    def __init__(self, target: Target, table_id: str, ingest_ms: int, batch_rows: int = 2000,
                 max_attempts: int | None = None, transport=None, timeout_s: float | None = None, max_inflight: int = 2,
                 max_queued: int = 16):
        from . import wire
        self.table_id = table_id
        self.target = target
        self.table_name = target.table_name(table_id)
        self.timestamp_micros = int(ingest_ms) * 1000
        self.batch_rows = batch_rows
        self.max_attempts = max_attempts or MAX_ATTEMPTS
        self.initial_backoff_s = INITIAL_BACKOFF_S
        self.max_backoff_s = MAX_BACKOFF_S
        self.timeout_s = MUTATE_TIMEOUT_S if timeout_s is None else timeout_s  # per MutateRows attempt
        self.transport = transport or mutate_rows_transport(self.table_name, target.emulator_host)
        self._prefix = wire.request_prefix(self.table_name)  # MutateRowsRequest.table_name, UTF-8
        self._wire = wire
        self.pending = []
        self.pending_rows = self.pending_mutations = self.pending_bytes = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.acked = collections.Counter()  # entries acknowledged per label (see write_rows)
        self.retries = 0
        self.requests = 0  # MutateRows calls made (attempts included)
        self.wait_s = 0.0  # time spent waiting for a free in-flight slot (Bigtable is the limit)
        self.throttled_s = 0.0  # time spent backing off after RESOURCE_EXHAUSTED (summed over senders)
        self.throttle_limit_s = THROTTLE_LIMIT_S
        self.max_inflight = max(1, int(max_inflight))
        # Flow control: up to max_queued batches handed over and not yet acknowledged, of
        # which max_inflight are being sent; a deeper queue keeps Bigtable busy while this
        # thread builds and encodes the next rows.
        self.max_queued = max(self.max_inflight, int(max_queued))
        self._slots = threading.BoundedSemaphore(self.max_queued)
        self._lock = threading.Lock()
        self._pool = None
        self._futures = []

    def write_rows(self, rows, compressor=None, label_base: int = 0, part_sizes=None) -> np.ndarray:
        """Queue every cell of a `Rows` batch, the concatenation of parts (one per chunk) whose
        `column_lengths()` are `part_sizes` (None: one part); returns the entries queued per part.

        Entries are labelled `label_base + part`; `take_acked()` tells how many entries of
        each label Bigtable acknowledged, so a caller can prove each chunk fully written."""
        entries = self._wire.encode_rows(rows, self.timestamp_micros, compressor, part_sizes=part_sizes)
        if label_base:
            entries.labels = entries.labels + np.int32(label_base)
        queued = np.bincount(entries.labels - label_base, minlength=1 if part_sizes is None else len(part_sizes))
        self._add(entries)
        return queued

    def take_acked(self) -> collections.Counter:
        """Entries acknowledged per label since the last call."""
        with self._lock:
            acked, self.acked = self.acked, collections.Counter()
        return acked

    def write(self, row_cells, label: int | None = None) -> int:
        """Queue `(row key, [(family, qualifier, value), ...])` rows; with `label`, their
        acknowledgements are counted under it (`take_acked`). Returns the entries queued."""
        entries = self._wire.encode_cells(row_cells, self.timestamp_micros)
        if label is not None:
            entries.labels = np.full(len(entries), label, np.int32)
        self._add(entries)
        return len(entries)

    def _add(self, entries):
        if len(entries):
            limits.check_entries(entries.keys, np.diff(entries.offsets), entries.mutations)
            self.pending.append(entries)
            self.pending_rows += len(entries)
            self.pending_mutations += int(entries.mutations.sum())
            self.pending_bytes += int(entries.offsets[-1])
        if (self.pending_rows >= self.batch_rows or self.pending_mutations >= limits.MAX_MUTATIONS_PER_REQUEST
                or self.pending_bytes >= limits.MAX_REQUEST_BYTES):
            self.flush()

    def flush(self, after_each=None):
        """Hand every queued entry to the senders (returns once they are in flight), in
        requests within `batch_rows` rows and Bigtable's limits (`limits.batch_stops`).
        `after_each`: called after each request sent here (with one sender, `max_inflight` 1)."""
        entries = self._wire.EncodedEntries.concat(self.pending)
        self.pending, self.pending_rows, self.pending_mutations, self.pending_bytes = [], 0, 0, 0
        start = 0
        for stop in limits.batch_stops(np.diff(entries.offsets), entries.mutations, self.batch_rows):
            batch = entries.slice(start, stop)
            start = stop
            if self.max_inflight == 1:
                self._send(batch)
                if after_each is not None:
                    after_each()
                continue
            self._raise_failures(block=False)
            waited = time.perf_counter()
            self._slots.acquire()
            self.wait_s += time.perf_counter() - waited
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.max_inflight, "bigtable-writer")
            future = self._pool.submit(self._send, batch)
            future.add_done_callback(lambda _: self._slots.release())
            self._futures.append(future)

    def drain(self, while_waiting=None, every_s: float = 0.5):
        """Write everything queued and wait for it; raises the first write failure. With
        `while_waiting`, calls it every `every_s` while requests are in flight, or after each
        request when they are sent one by one (progress)."""
        self.flush(after_each=while_waiting)
        waited = time.perf_counter()
        while while_waiting is not None and self._futures:
            concurrent.futures.wait(self._futures, timeout=every_s)
            self._raise_failures(block=False)
            while_waiting()
        self._raise_failures(block=True)
        self.wait_s += time.perf_counter() - waited

    def _raise_failures(self, block: bool):
        pending = []
        for future in self._futures:
            if block or future.done():
                future.result()  # raises WriteError (or any other failure) here
            else:
                pending.append(future)
        self._futures = pending

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        close = getattr(self.transport, "close", None)  # test doubles may have none
        if close is not None:
            close()

    def _mutate(self, entries):
        """One MutateRows call; returns the status code and message of every entry."""
        n = len(entries)
        with self._lock:
            self.requests += 1
        responses = [list(response.entries)
                     for response in self.transport.mutate_rows(self._prefix + entries.payload, self.timeout_s)]
        codes = [item.status.code for items in responses for item in items]
        if len(codes) == n and not any(codes):
            return np.zeros(n, np.int64), {}  # the usual case: all written
        codes = np.full(n, 14, np.int64)  # no status came back: treat as UNAVAILABLE and retry
        messages = {}
        for items in responses:
            for item in items:
                codes[item.index] = item.status.code
                if item.status.code:
                    messages[item.index] = item.status.message
        return codes, messages

    def _send(self, entries):
        backoff, throttle_backoff = self.initial_backoff_s, THROTTLE_BACKOFF_S
        throttled_since = None
        attempt = 0
        last_error = ""
        while True:
            throttled = False
            try:
                codes, messages = self._mutate(entries)
            except TRANSIENT_EXCEPTIONS as exc:
                failed = np.arange(len(entries))
                last_error = f"{type(exc).__name__}: {exc}"
                throttled = isinstance(exc, gexc.ResourceExhausted)
            else:
                ok = codes == 0
                with self._lock:
                    self.rows_written += int(ok.sum())
                    self.bytes_written += int(np.diff(entries.offsets)[ok].sum())
                    if entries.labels is not None:
                        labels, counts = np.unique(entries.labels[ok], return_counts=True)
                        self.acked.update(dict(zip(labels.tolist(), counts.tolist())))
                rejected = np.flatnonzero(~ok & ~np.isin(codes, list(RETRYABLE_CODES)))
                if len(rejected):
                    i = int(rejected[0])
                    raise WriteError(f"row {bytes(entries.keys[i])!r} of table {self.table_id!r} was rejected: "
                                     f"status {codes[i]} {messages.get(i, '')} "
                                     f"({len(rejected)} row(s) rejected)")
                failed = np.flatnonzero(~ok)
                if len(failed):
                    i = int(failed[0])
                    last_error = f"status {codes[i]} {messages.get(i, '')}"
                    throttled = bool(np.all(codes[failed] == RESOURCE_EXHAUSTED))
            if len(failed) == 0:
                return
            entries = entries.take(failed)
            if throttled:
                now = time.monotonic()
                if throttled_since is None:
                    throttled_since = now
                    log.warning("Bigtable is throttling writes to table %s (RESOURCE_EXHAUSTED): backing off",
                                self.table_id)
                elif now - throttled_since > self.throttle_limit_s:
                    raise WriteError(f"{len(entries)} row(s) of table {self.table_id!r} could not be written to "
                                     f"{self.target.describe()}: Bigtable throttled them (RESOURCE_EXHAUSTED) for "
                                     f"{now - throttled_since:.0f} s without a pause; first {bytes(entries.keys[0])!r}. "
                                     "Add Bigtable nodes, or lower --max_inflight_writes or the number of workers")
                pause = throttle_backoff * random.uniform(0.5, 1.0)
                time.sleep(pause)
                with self._lock:
                    self.throttled_s += pause
                throttle_backoff = min(throttle_backoff * 2, self.max_backoff_s)
                continue
            throttled_since, throttle_backoff = None, THROTTLE_BACKOFF_S
            attempt += 1
            if attempt >= self.max_attempts:
                raise WriteError(f"{len(entries)} row(s) of table {self.table_id!r} could not be written to "
                                 f"{self.target.describe()} after {self.max_attempts} attempts, first "
                                 f"{bytes(entries.keys[0])!r}: {last_error}")
            with self._lock:
                self.retries += 1
            log.warning("%d row(s) of table %s failed to write (%s); retrying in %.1fs",
                        len(failed), self.table_id, last_error, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
