"""A strict Bigtable front for the tests: an in-process gRPC server in front of the emulator
that holds requests to the service's limits and fails the way the service does.

    front = BigtableFront(emulator.host, Faults(entry_rate=0.02, seed=1))
    os.environ["BIGTABLE_EMULATOR_HOST"] = front.host
    ...
    front.stats   # what it saw and what it injected
    front.stop()

Every RPC is relayed as raw bytes (the data API, the table admin API, long-running
operations), with the caller's metadata and deadline. MutateRows and MutateRow are decoded
and refused with INVALID_ARGUMENT, as the service refuses them, when a request holds more
than 100,000 mutations, a row key over 4 KiB, a qualifier over 16 KiB, a value over
100 MiB, a row over 256 MiB, or a timestamp that is not a whole millisecond. MutateRows
also meets, from `Faults` (seeded): added latency; whole-request failures (UNAVAILABLE,
DEADLINE_EXCEEDED); RESOURCE_EXHAUSTED, per request and in bursts during which every
request is refused; and transient failures of single entries (UNAVAILABLE,
DEADLINE_EXCEEDED, ABORTED) in an otherwise OK response, those entries not being applied.
The other data API calls (reads, single-row writes, check-and-mutate) can fail UNAVAILABLE.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import random
import threading
import time

import grpc
from google.cloud.bigtable_v2.types import bigtable as data_api
from google.rpc import code_pb2

from beam_ingest.store import limits

SERVER_STREAMING = {f"/google.bigtable.v2.Bigtable/{name}" for name in (
    "ReadRows", "SampleRowKeys", "MutateRows", "GenerateInitialChangeStreamPartitions", "ReadChangeStream",
    "ExecuteQuery")}
MUTATE_ROWS = "/google.bigtable.v2.Bigtable/MutateRows"
MUTATE_ROW = "/google.bigtable.v2.Bigtable/MutateRow"
ENTRY_CODES = (code_pb2.UNAVAILABLE, code_pb2.DEADLINE_EXCEEDED, code_pb2.ABORTED)
MESSAGE_BYTES = 512 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MESSAGE_BYTES), ("grpc.max_receive_message_length", MESSAGE_BYTES)]


@dataclasses.dataclass
class Faults:
    """What the front injects into MutateRows; rates are per request, `entry_rate` per entry."""
    seed: int = 0
    entry_request_rate: float = 1.0  # the share of requests in which entries may fail, each at `entry_rate`
    entry_rate: float = 0.0        # an entry answered UNAVAILABLE / DEADLINE_EXCEEDED / ABORTED, not applied
    request_rate: float = 0.0      # the whole request fails UNAVAILABLE or DEADLINE_EXCEEDED, not applied
    exhausted_rate: float = 0.0    # the whole request fails RESOURCE_EXHAUSTED
    burst_rate: float = 0.0        # a request starts a burst: every request refused RESOURCE_EXHAUSTED
    burst_s: float = 1.0           # for this long
    latency_s: float = 0.0         # each request waits uniformly up to this long
    other_rate: float = 0.0        # any other data API call (ReadRows, MutateRow, CheckAndMutateRow, ...)
                                   # fails UNAVAILABLE before it reaches the emulator


class BigtableFront:
    def __init__(self, upstream: str, faults: Faults | None = None):
        self.faults = faults or Faults()
        self._random = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._burst_until = 0.0
        self.stats = collections.Counter()
        self.largest_request = 0  # most mutations seen in one MutateRows request (tests reset it)
        self._channel = grpc.insecure_channel(upstream, options=CHANNEL_OPTIONS)
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="front"),
                                   options=CHANNEL_OPTIONS)
        self._server.add_generic_rpc_handlers([_Relay(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{self.port}"
        self._server.start()

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._random = random.Random(faults.seed)
            self._burst_until = 0.0

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    # ---- what the service would do ----------------------------------------------------------

    def _draw(self) -> float:
        with self._lock:
            return self._random.random()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _request_fault(self):
        """The status a whole MutateRows request fails with now, or None."""
        faults = self.faults
        if faults.latency_s:
            time.sleep(self._draw() * faults.latency_s)
        now = time.monotonic()
        with self._lock:
            if now < self._burst_until:
                return grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: throttled (burst)"
            roll = self._random.random()
            if roll < faults.burst_rate:
                self._burst_until = now + faults.burst_s
                self.stats["bursts"] += 1  # under the lock already
                return grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: throttled (burst starts)"
            roll = self._random.random()
            if roll < faults.exhausted_rate:
                return grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: throttled"
            roll = self._random.random()
            if roll < faults.request_rate:
                return (self._random.choice([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]),
                        "injected: request failed")
        return None

    def mutate_rows(self, request_bytes: bytes, context):
        request = data_api.MutateRowsRequest.pb().FromString(request_bytes)
        self._count("mutate_rows")
        problem = _over_limits(request.entries)
        if problem:
            self._count("refused")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        mutations = sum(len(entry.mutations) for entry in request.entries)
        with self._lock:
            self.largest_request = max(self.largest_request, mutations)
        fault = self._request_fault()
        if fault:
            self._count(f"request {fault[0].name}")
            context.abort(*fault)
        n = len(request.entries)
        with self._lock:
            failing = {}
            if self._random.random() < self.faults.entry_request_rate:
                failing = {i: self._random.choice(ENTRY_CODES) for i in range(n)
                           if self._random.random() < self.faults.entry_rate}
        self._count("entries", n)
        self._count("entries failed", len(failing))
        kept = [i for i in range(n) if i not in failing]
        statuses = {i: (code, "injected: entry failed") for i, code in failing.items()}
        if kept:
            forwarded = data_api.MutateRowsRequest.pb()(
                table_name=request.table_name, app_profile_id=request.app_profile_id,
                entries=[request.entries[i] for i in kept])
            call = self._channel.unary_stream(MUTATE_ROWS, request_serializer=None, response_deserializer=None)
            try:
                for raw in call(forwarded.SerializeToString(), metadata=_metadata(context),
                                timeout=context.time_remaining()):
                    for item in data_api.MutateRowsResponse.pb().FromString(raw).entries:
                        statuses[kept[item.index]] = (item.status.code, item.status.message)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
        response = data_api.MutateRowsResponse.pb()()
        for i in range(n):
            code, message = statuses.get(i, (code_pb2.UNAVAILABLE, "no status"))
            item = response.entries.add(index=i)
            item.status.code, item.status.message = code, message
        yield response.SerializeToString()

    def mutate_row(self, request_bytes: bytes, context) -> bytes:
        request = data_api.MutateRowRequest.pb().FromString(request_bytes)
        self._count("mutate_row")
        problem = _over_limits([request])
        if problem:
            self._count("refused")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return self.relay_unary(MUTATE_ROW, request_bytes, context)

    def _other_fault(self, method: str, context) -> None:
        """Fail a data API call other than MutateRows at `other_rate` (UNAVAILABLE, not applied)."""
        if not method.startswith("/google.bigtable.v2.Bigtable/") or not self.faults.other_rate:
            return
        if self._draw() < self.faults.other_rate:
            self._count(f"{method.rsplit('/', 1)[1]} UNAVAILABLE")
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected: call failed")

    def relay_unary(self, method: str, request: bytes, context) -> bytes:
        self._other_fault(method, context)
        call = self._channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            return call(request, metadata=_metadata(context), timeout=context.time_remaining())
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())

    def relay_stream(self, method: str, request: bytes, context):
        self._other_fault(method, context)
        call = self._channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        try:
            yield from call(request, metadata=_metadata(context), timeout=context.time_remaining())
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())


def _metadata(context) -> tuple:
    return tuple((key, value) for key, value in context.invocation_metadata()
                 if not key.startswith(":") and key not in ("user-agent", "grpc-timeout", "te", "content-type"))


def _over_limits(entries) -> str | None:
    """Why the service would refuse a request of these entries (MutateRows entries or a
    MutateRowRequest: each has `row_key` and `mutations`), or None."""
    total = 0
    for entry in entries:
        if len(entry.row_key) > limits.MAX_ROW_KEY_BYTES:
            return f"Row key too long: {len(entry.row_key)} bytes"
        row_bytes = len(entry.row_key)
        for mutation in entry.mutations:
            total += 1
            if not mutation.HasField("set_cell"):
                continue
            cell = mutation.set_cell
            if len(cell.column_qualifier) > limits.MAX_QUALIFIER_BYTES:
                return f"Qualifier too long: {len(cell.column_qualifier)} bytes"
            if len(cell.value) > limits.MAX_CELL_BYTES:
                return f"Value too large: {len(cell.value)} bytes"
            if cell.timestamp_micros != -1 and cell.timestamp_micros % 1000:
                return f"Timestamp not in milliseconds: {cell.timestamp_micros} micros"
            row_bytes += len(cell.column_qualifier) + len(cell.value)
        if row_bytes > limits.MAX_ROW_BYTES:
            return f"Row too large: {row_bytes} bytes"
    if total > limits.MAX_MUTATIONS_PER_REQUEST:
        return f"Too many mutations: {total} in one request, at most {limits.MAX_MUTATIONS_PER_REQUEST}"
    return None


class _Relay(grpc.GenericRpcHandler):
    def __init__(self, front: BigtableFront):
        self.front = front

    def service(self, details):
        method = details.method
        front = self.front
        if method == MUTATE_ROWS:
            return grpc.unary_stream_rpc_method_handler(front.mutate_rows)
        if method == MUTATE_ROW:
            return grpc.unary_unary_rpc_method_handler(front.mutate_row)
        if method in SERVER_STREAMING:
            return grpc.unary_stream_rpc_method_handler(lambda request, context: front.relay_stream(method, request, context))
        return grpc.unary_unary_rpc_method_handler(lambda request, context: front.relay_unary(method, request, context))
