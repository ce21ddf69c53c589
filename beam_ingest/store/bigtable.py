"""Bigtable admin (table, families, meta/version rows) and a batched, checked row writer."""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import logging
import os
import random
import re
import threading
import time
import warnings

import numpy as np

from google.api_core import exceptions as gexc
from google.cloud.bigtable import Client, column_family, row_filters

from . import cells, limits
from ..errors import TableError

# google-cloud-bigtable warns on every client it makes for an emulator; the launcher already
# says which Bigtable it writes to (Target.describe), in every process that makes clients
warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator", category=RuntimeWarning)

log = logging.getLogger(__name__)

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


# Google's id rules (a project may carry a domain prefix, "example.com:my-project").
PROJECT_ID = re.compile(r"([a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
INSTANCE_ID = re.compile(r"[a-z][-a-z0-9]{4,31}[a-z0-9]")


class WriteError(RuntimeError):
    """Rows that could not be written after all retries."""


def family_rules(pcg_version: int = 2):
    """Column families and GC rules of a table of `pcg_version` (3 adds family 4; family 3
    keeps no GC rule: a MaxAge would expire the ingest's atomic cross edges)."""
    rules = {
        cells.FAMILY_HIERARCHY: None,
        cells.FAMILY_COUNTERS: column_family.MaxVersionsGCRule(1),
        cells.FAMILY_OPERATIONS: None,
        cells.FAMILY_CROSS_EDGES: None,
    }
    if pcg_version >= 3:
        rules[cells.FAMILY_LIFTED] = None
    return rules


@dataclasses.dataclass(frozen=True)
class Target:
    """The Bigtable instance of a run, decided once by the launcher and handed to every worker
    with the job: nothing that writes or reads the table looks at a worker's environment."""
    project: str
    instance: str
    emulator_host: str | None = None  # host:port of a Bigtable emulator; None: Google Cloud Bigtable

    def table_name(self, table_id: str) -> str:
        return f"projects/{self.project}/instances/{self.instance}/tables/{table_id}"

    def describe(self) -> str:
        where = f"emulator {self.emulator_host}" if self.emulator_host else "Bigtable"
        return f"{where} (project {self.project}, instance {self.instance})"


def resolve_target(project: str | None, instance: str | None, environ=None) -> Target:
    """The target from config/options and the launcher's environment (BIGTABLE_EMULATOR_HOST);
    the emulator accepts any names."""
    env = os.environ if environ is None else environ
    emulator = env.get("BIGTABLE_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TableError(f"BIGTABLE_EMULATOR_HOST: expected host:port, got {emulator!r}")
        return Target(project or "emulator", instance or "emulator", emulator)
    if not project or not instance:
        raise TableError(
            "no Bigtable configured: set backend_client.CONFIG.PROJECT/INSTANCE or the "
            "BIGTABLE_PROJECT/BIGTABLE_INSTANCE environment variables, or BIGTABLE_EMULATOR_HOST=host:port for a "
            "Bigtable emulator you started (cbtemulator, or `gcloud beta emulators bigtable start`)")
    if not PROJECT_ID.fullmatch(project):
        raise TableError(f"Bigtable project {project!r} (backend_client.CONFIG.PROJECT or BIGTABLE_PROJECT) is not "
                         "a valid project id")
    if not INSTANCE_ID.fullmatch(instance):
        raise TableError(f"Bigtable instance {instance!r} (backend_client.CONFIG.INSTANCE or BIGTABLE_INSTANCE) is "
                         "not a valid instance id (6-33 characters: lower-case letters, digits, '-')")
    return Target(project, instance, None)


class _TargetClient(Client):
    """google-cloud-bigtable's Client for one Target: its admin channels go to the target's
    emulator (not $BIGTABLE_EMULATOR_HOST) and carry GRPC_CHANNEL_OPTIONS (keepalive) on a
    connection of their own. Used by the launcher and the operator commands."""

    def __init__(self, target: Target, admin: bool = False):
        credentials = None
        if target.emulator_host:
            from google.auth.credentials import AnonymousCredentials
            credentials = AnonymousCredentials()
        super().__init__(project=target.project, admin=admin, credentials=credentials)
        self._emulator_host = target.emulator_host

    def _create_gapic_client_channel(self, client_class, grpc_transport):
        options = _channel_options()
        if self._emulator_host:
            import grpc
            return grpc_transport(channel=grpc.insecure_channel(self._emulator_host, options=options),
                                  host=self._emulator_host)
        host = client_class.DEFAULT_ENDPOINT
        return grpc_transport(channel=grpc_transport.create_channel(host=host, credentials=self._credentials,
                                                                    options=options), host=host)


def open_table(target: Target, table_id: str, admin: bool = False):
    """The table through google-cloud-bigtable (admin calls; the operator commands' reads)."""
    return _TargetClient(target, admin=admin).instance(target.instance).table(table_id)


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


REACH_DEADLINE_S = 20.0  # the launcher's first call: an unreachable Bigtable is an error within this


def describe_target(table) -> str:
    client = table._instance._client
    return Target(client.project, table._instance.instance_id, client._emulator_host).describe()


def admin_call(table, what: str, call, deadline_s: float = REACH_DEADLINE_S):
    """Run an admin call with a deadline; unreachable or refusing Bigtable -> one TableError."""
    from google.api_core.retry import Retry
    retry = Retry(initial=0.25, maximum=2.0, timeout=deadline_s,
                  predicate=lambda exc: isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded)))
    try:
        return call(retry=retry, timeout=deadline_s)
    except (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        raise TableError(f"{describe_target(table)} unreachable while {what} (gave up after {deadline_s:.0f} s: "
                         f"{_short(exc)})") from None
    except (gexc.Unauthenticated, gexc.PermissionDenied) as exc:
        raise TableError(f"{describe_target(table)} refused {what}: {_short(exc)} (check credentials and "
                         "the project/instance names)") from None


def _short(exc) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(getattr(cause, "message", None) or cause).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def table_exists(table, deadline_s: float = REACH_DEADLINE_S) -> bool:
    from google.cloud.bigtable.table import VIEW_NAME_ONLY
    client = table._instance._client.table_admin_client
    try:
        admin_call(table, f"looking up table {table.table_id!r}", lambda **kw: client.get_table(
            request={"name": table.name, "view": VIEW_NAME_ONLY}, **kw), deadline_s)
        return True
    except gexc.NotFound:
        return False


def create_table(table, split_keys=(), pcg_version: int = 2, families: dict | None = None) -> None:
    """Create the table with its families (a graph table's of `pcg_version`, or `families`);
    AlreadyExists (another launcher was faster) -> TableError."""
    try:
        table.create(initial_split_keys=list(split_keys),
                     column_families=family_rules(pcg_version) if families is None else families)
    except gexc.AlreadyExists:
        raise TableError(f"table {table.table_id!r} was created by another launcher at the same moment: one "
                         "launcher per graph") from None
    except (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        raise TableError(f"{describe_target(table)} unreachable while creating table {table.table_id!r}: "
                         f"{_short(exc)}") from None


# Options of every Bigtable gRPC channel (data here; the launcher's admin channels may reuse
# them). Keepalive: a connection that goes silent without a reset (a NAT or load balancer
# that dropped it) is pinged after 30 s without activity, also between calls, and closed
# when the ping is not answered, failing its calls with UNAVAILABLE. gRPC core waits for the
# ping ack up to `grpc.http2.ping_timeout_ms` (default 1 min once keepalive is on), not only
# `keepalive_timeout_ms`: measured with grpcio 1.85 through a blackholing relay, the three
# keepalive options alone detect a dead connection in 30 + 60 s; with the ping timeout also
# at 10 s, in 30 + 10 s.
GRPC_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.ping_timeout_ms", 10_000),
)

# Deadline of one MutateRows attempt (a batch takes well under a second when Bigtable is
# healthy). A call past it, or failing UNAVAILABLE, is retried over a fresh channel.
MUTATE_TIMEOUT_S = 60.0

# gRPC status codes after which a transport gives up its channel (its connection may be dead).
RECONNECT_CODES = ("DEADLINE_EXCEEDED", "UNAVAILABLE")


def _channel_options() -> list:
    """GRPC_CHANNEL_OPTIONS and a connection of the channel's own (see data_client)."""
    return list(GRPC_CHANNEL_OPTIONS) + [("grpc.use_local_subchannel_pool", 1)]


def data_client(emulator_host: str | None):
    """The generated Bigtable data API client: of the emulator at `emulator_host` if there is
    one, else of Google Cloud Bigtable (never decided by this process's environment).

    Its channel has GRPC_CHANNEL_OPTIONS (keepalive) and a connection of its own (a local
    subchannel pool: gRPC otherwise shares one connection among all channels to the same
    target with the same options, so a "new" channel would reuse a dead connection).
    In production the channel is the transport's own `create_channel`, with the default
    credentials and scopes.
    """
    from google.cloud.bigtable_v2 import BigtableClient
    from google.cloud.bigtable_v2.services.bigtable.transports import BigtableGrpcTransport
    options = _channel_options()
    if emulator_host:
        import grpc
        channel = grpc.insecure_channel(emulator_host, options=options)
    else:
        channel = BigtableGrpcTransport.create_channel(f"{BigtableGrpcTransport.DEFAULT_HOST}:443",
                                                       options=options)
    return BigtableClient(transport=BigtableGrpcTransport(channel=channel))


class _Channel:
    """One gRPC channel of a transport, its MutateRows callable and its calls in flight."""

    def __init__(self, emulator_host: str | None):
        from google.cloud.bigtable_v2.types import MutateRowsResponse
        self.channel = data_client(emulator_host).transport.grpc_channel
        self.call = self.channel.unary_stream("/google.bigtable.v2.Bigtable/MutateRows", request_serializer=None,
                                              response_deserializer=MutateRowsResponse.pb().FromString)
        self.in_flight = 0
        self.retired = False


class MutateRowsTransport:
    """MutateRows over the data client's gRPC channel, with requests already serialized.

    The channel carries the client's credentials; the routing header is the one the
    generated client sends. Responses come back as raw protobuf messages; gRPC errors
    are raised as google.api_core exceptions.

    Shared by the writer's threads. A call failing with DEADLINE_EXCEEDED or UNAVAILABLE
    retires the channel it went over (once, whichever thread sees it first): later calls
    go over a fresh channel, on a new connection; the old channel is closed when its last
    call in flight ends, so no other thread's call is cancelled under it.
    """

    def __init__(self, table_name: str, emulator_host: str | None, app_profile_id: str = ""):
        from google.api_core import gapic_v1
        self.table_name = table_name
        self.emulator_host = emulator_host
        self._metadata = (gapic_v1.routing_header.to_grpc_metadata(
            {"table_name": table_name, "app_profile_id": app_profile_id}),)
        self._lock = threading.Lock()
        self._current = _Channel(self.emulator_host)
        self.channels_opened = 1

    def mutate_rows(self, request: bytes, timeout: float):
        import grpc
        with self._lock:
            if self._current.retired:  # closed by close(): open another
                self._current = _Channel(self.emulator_host)
                self.channels_opened += 1
            current = self._current
            current.in_flight += 1
        try:
            yield from current.call(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            if code is not None and code.name in RECONNECT_CODES:
                self._replace(current, code.name)
            raise gexc.from_grpc_error(exc) from None
        finally:
            with self._lock:
                current.in_flight -= 1
                close = current.retired and current.in_flight == 0
            if close:
                current.channel.close()

    def _replace(self, failed: _Channel, why: str):
        with self._lock:
            if failed is not self._current:
                return  # another thread's failure on the same channel replaced it already
            log.warning("MutateRows to %s failed with %s: reconnecting over a fresh channel",
                        self.table_name, why)
            try:
                fresh = _Channel(self.emulator_host)
            except Exception as exc:  # e.g. credentials not found this time: the next failure tries again
                log.warning("could not open a fresh Bigtable channel (%s); keeping the old one", exc)
                return
            self._current = fresh
            self.channels_opened += 1
            failed.retired = True  # closed by the last of its calls (this one included)

    def close(self):
        """Close the channel now, or when its last call in flight ends (a later call opens another)."""
        with self._lock:
            current, current.retired = self._current, True
            close = current.in_flight == 0
        if close:
            current.channel.close()


def mutate_rows_transport(table_name: str, emulator_host: str | None):
    return MutateRowsTransport(table_name, emulator_host)


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
