"""Bigtable admin (table, families, meta/version rows) and a batched, checked row writer."""
from __future__ import annotations

import concurrent.futures
import datetime
import logging
import os
import re
import threading
import time

import numpy as np

from google.api_core import exceptions as gexc
from google.cloud.bigtable import Client, column_family, row_filters

from . import cells

log = logging.getLogger(__name__)

# A status code per row from mutate_rows: these are worth retrying.
RETRYABLE_CODES = {4, 8, 10, 13, 14}  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE
TRANSIENT_EXCEPTIONS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted,
                        gexc.Aborted, gexc.InternalServerError)

VERSION_STRING = "2.0.0"

# Retries of failed rows: exponential backoff from INITIAL_BACKOFF_S, capped at MAX_BACKOFF_S.
MAX_ATTEMPTS = 8
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0


# Google's id rules (a project may carry a domain prefix, "example.com:my-project").
PROJECT_ID = re.compile(r"([a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
INSTANCE_ID = re.compile(r"[a-z][-a-z0-9]{4,31}[a-z0-9]")


class TableError(RuntimeError):
    """The target table cannot be used as asked (exists, differs, missing...)."""


class WriteError(RuntimeError):
    """Rows that could not be written after all retries."""


def family_rules():
    return {
        cells.FAMILY_HIERARCHY: None,
        cells.FAMILY_COUNTERS: column_family.MaxVersionsGCRule(1),
        cells.FAMILY_OPERATIONS: None,
        cells.FAMILY_CROSS_EDGES: None,
    }


def resolve_instance(project: str | None, instance: str | None) -> tuple[str, str]:
    """Project and instance from config/env; the emulator accepts any names."""
    emulator = os.environ.get("BIGTABLE_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TableError(f"BIGTABLE_EMULATOR_HOST: expected host:port, got {emulator!r}")
        return project or "emulator", instance or "emulator"
    if not project or not instance:
        raise TableError(
            "no Bigtable configured: set backend_client.CONFIG.PROJECT/INSTANCE or the "
            "BIGTABLE_PROJECT/BIGTABLE_INSTANCE environment variables (or BIGTABLE_EMULATOR_HOST "
            "for a local emulator; `python -m beam_ingest demo` starts one for you)")
    if not PROJECT_ID.fullmatch(project):
        raise TableError(f"Bigtable project {project!r} (backend_client.CONFIG.PROJECT or BIGTABLE_PROJECT) is not "
                         "a valid project id")
    if not INSTANCE_ID.fullmatch(instance):
        raise TableError(f"Bigtable instance {instance!r} (backend_client.CONFIG.INSTANCE or BIGTABLE_INSTANCE) is "
                         "not a valid instance id (6-33 characters: lower-case letters, digits, '-')")
    return project, instance


def open_table(project: str, instance: str, table_id: str, admin: bool = False):
    client = Client(project=project, admin=admin)
    return client.instance(instance).table(table_id)


def timestamp_from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)


def read_cell(table, row_key: bytes, family: str, qualifier: bytes):
    """The latest cell `(value, timestamp)` or None."""
    row = table.read_row(row_key, filter_=row_filters.CellsColumnLimitFilter(1))
    if row is None:
        return None
    found = row.cells.get(family, {}).get(qualifier)
    if not found:
        return None
    return found[0].value, found[0].timestamp


def table_split_keys(layout, n_tablets: int) -> list[bytes]:
    """Row keys that cut the table into about `n_tablets` ranges of similar write load.

    Keys are `%020d` node ids, so rows sort by layer, then x, y, z, then segment. About
    half of all rows are supervoxels and a quarter layer-2 nodes: those layers are cut
    along x-y slabs of chunks; every higher layer and the counters start a range of their own.
    """
    from . import cells
    if n_tablets <= 1:
        return []
    keys = set()
    for layer, share in ((1, 0.5), (2, 0.25)):
        nx, ny, _ = layout.chunks_per_axis(2)
        slabs = nx * ny
        for k in range(1, max(1, int(n_tablets * share)) + 1):
            slab = min(slabs - 1, k * slabs // (int(n_tablets * share) + 1))
            x, y = divmod(slab, ny)
            keys.add(cells.row_key(layout.chunk_id(layer, x, y, 0)))
    for layer in range(2, layout.layer_count + 1):
        keys.add(cells.row_key(layout.chunk_id(layer, 0, 0, 0)))
    keys.add(b"i")
    return sorted(keys)


def prepare_table(table, if_exists: str, meta_bytes: bytes, ingest_ms: int | None, same_graph,
                  split_keys=()) -> int:
    """Create (or check) the table and write meta/version rows; return the ingest time (ms).

    `if_exists`: "fail" refuses an existing table, "continue" reuses it when its meta row
    describes the same graph (and reuses its ingest time, so cells match the first run),
    "recreate" deletes and recreates it. `same_graph(meta_bytes_in_table)` compares metas.
    """
    exists = table.exists()
    if exists and if_exists == "fail":
        raise TableError(
            f"table {table.table_id!r} already exists; pass --if_exists=continue to resume an "
            "interrupted ingest into it, or --if_exists=recreate to delete it and start over")
    if exists and if_exists == "recreate":
        log.warning("deleting existing table %s (--if_exists=recreate)", table.table_id)
        table.delete()
        exists = False
    if exists:
        found = read_cell(table, cells.META_ROW, cells.FAMILY_HIERARCHY, cells.META)
        if found is None:
            raise TableError(f"table {table.table_id!r} exists but has no meta row: not an ingest "
                             "of this tool; refusing to continue into it")
        existing_meta, stamp = found
        reason = same_graph(existing_meta)
        if reason:
            raise TableError(f"table {table.table_id!r} holds a different graph ({reason}); "
                             "refusing to continue into it")
        table_ms = int(stamp.timestamp() * 1000)
        if ingest_ms is not None and ingest_ms != table_ms:
            raise TableError(f"--ingest_timestamp={ingest_ms} differs from the table's ingest time "
                             f"{table_ms}; leave it unset to continue the earlier run")
        log.info("continuing into existing table %s (ingest time %d)", table.table_id, table_ms)
        return table_ms
    if ingest_ms is None:
        ingest_ms = int(time.time() * 1000)
    table.create(initial_split_keys=list(split_keys), column_families=family_rules())
    project, instance = table._instance._client.project, table._instance.instance_id
    writer = RowWriter(project, instance, table.table_id, ingest_ms, max_inflight=1)
    writer.write([(cells.META_ROW, [(cells.FAMILY_HIERARCHY, cells.META, meta_bytes)]),
                  (cells.VERSION_ROW, [(cells.FAMILY_HIERARCHY, cells.VERSION,
                                        VERSION_STRING.encode("utf8"))])])
    writer.flush()
    return ingest_ms


def data_client():
    """The generated Bigtable data API client (the emulator when BIGTABLE_EMULATOR_HOST is set)."""
    from google.cloud.bigtable_v2 import BigtableClient
    from google.cloud.bigtable_v2.services.bigtable.transports import BigtableGrpcTransport
    host = os.environ.get("BIGTABLE_EMULATOR_HOST")
    if host:
        import grpc
        channel = grpc.insecure_channel(host, options=[("grpc.max_send_message_length", -1),
                                                       ("grpc.max_receive_message_length", -1)])
        return BigtableClient(transport=BigtableGrpcTransport(channel=channel))
    return BigtableClient()


class MutateRowsTransport:
    """MutateRows over the data client's gRPC channel, with requests already serialized.

    The channel carries the client's credentials; the routing header is the one the
    generated client sends. Responses come back as raw protobuf messages; gRPC errors
    are raised as google.api_core exceptions.
    """

    def __init__(self, table_name: str, app_profile_id: str = ""):
        from google.api_core import gapic_v1
        from google.cloud.bigtable_v2.types import MutateRowsResponse
        channel = data_client().transport.grpc_channel
        self._call = channel.unary_stream("/google.bigtable.v2.Bigtable/MutateRows", request_serializer=None,
                                          response_deserializer=MutateRowsResponse.pb().FromString)
        self._metadata = (gapic_v1.routing_header.to_grpc_metadata(
            {"table_name": table_name, "app_profile_id": app_profile_id}),)

    def mutate_rows(self, request: bytes, timeout: float):
        import grpc
        try:
            yield from self._call(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise gexc.from_grpc_error(exc) from None


def mutate_rows_transport(table_name: str):
    return MutateRowsTransport(table_name)


class RowWriter:
    """Writes serialized entries with MutateRows, checking every row's status.

    Entries are buffered and sent `batch_rows` at a time by background threads, so
    building and encoding go on while Bigtable works; at most `max_inflight` requests
    are in flight per writer (flow control), further writes wait. Failed rows (a
    retryable per-row status, or a transient RPC error for the whole request) are
    re-sent with exponential backoff; a row still failing after `max_attempts`, or
    rejected outright, raises `WriteError` naming it (from `drain()`).
    """

    def __init__(self, project: str, instance: str, table_id: str, ingest_ms: int, batch_rows: int = 2000,
                 max_attempts: int | None = None, transport=None, timeout_s: float = 300.0, max_inflight: int = 2,
                 max_queued: int = 16):
        from . import wire
        self.table_id = table_id
        self.table_name = f"projects/{project}/instances/{instance}/tables/{table_id}"
        self.timestamp_micros = int(ingest_ms) * 1000
        self.batch_rows = batch_rows
        self.max_attempts = max_attempts or MAX_ATTEMPTS
        self.initial_backoff_s = INITIAL_BACKOFF_S
        self.max_backoff_s = MAX_BACKOFF_S
        self.timeout_s = timeout_s
        self.transport = transport or mutate_rows_transport(self.table_name)
        self._prefix = bytes([1 << 3 | 2]) + wire.varint(len(self.table_name)) + self.table_name.encode()
        self._wire = wire
        self.pending = []
        self.pending_rows = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.retries = 0
        self.wait_s = 0.0  # time spent waiting for a free in-flight slot (Bigtable is the limit)
        self.max_inflight = max(1, int(max_inflight))
        # Flow control: up to max_queued batches handed over and not yet acknowledged, of
        # which max_inflight are being sent; a deeper queue keeps Bigtable busy while this
        # thread builds and encodes the next rows.
        self.max_queued = max(self.max_inflight, int(max_queued))
        self._slots = threading.BoundedSemaphore(self.max_queued)
        self._lock = threading.Lock()
        self._pool = None
        self._futures = []

    def write_rows(self, rows, compressor=None):
        """Queue every cell of a `Rows` batch."""
        self._add(self._wire.encode_rows(rows, self.timestamp_micros, compressor))

    def write(self, row_cells):
        """Queue `(row key, [(family, qualifier, value), ...])` rows."""
        self._add(self._wire.encode_cells(row_cells, self.timestamp_micros))

    def _add(self, entries):
        if len(entries):
            self.pending.append(entries)
            self.pending_rows += len(entries)
        if self.pending_rows >= self.batch_rows:
            self.flush()

    def flush(self):
        """Hand every queued entry to the senders (returns once they are in flight)."""
        entries = self._wire.EncodedEntries.concat(self.pending)
        self.pending, self.pending_rows = [], 0
        for start in range(0, len(entries), self.batch_rows):
            batch = entries.slice(start, min(start + self.batch_rows, len(entries)))
            if self.max_inflight == 1:
                self._send(batch)
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

    def drain(self):
        """Write everything queued and wait for it; raises the first write failure."""
        self.flush()
        waited = time.perf_counter()
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

    def _mutate(self, entries):
        """One MutateRows call; returns the status code and message of every entry."""
        n = len(entries)
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
        backoff = self.initial_backoff_s
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                codes, messages = self._mutate(entries)
            except TRANSIENT_EXCEPTIONS as exc:
                failed = np.arange(len(entries))
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                ok = codes == 0
                with self._lock:
                    self.rows_written += int(ok.sum())
                    self.bytes_written += int(np.diff(entries.offsets)[ok].sum())
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
            if len(failed) == 0:
                return
            entries = entries.take(failed)
            if attempt < self.max_attempts:
                self.retries += 1
                log.warning("%d row(s) of table %s failed to write (%s); retrying in %.1fs",
                            len(failed), self.table_id, last_error, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        raise WriteError(f"{len(entries)} row(s) of table {self.table_id!r} could not be written after "
                         f"{self.max_attempts} attempts, first {bytes(entries.keys[0])!r}: {last_error}")
