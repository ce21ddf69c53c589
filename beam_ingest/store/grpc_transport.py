"""The gRPC transport of the writer: MutateRows requests sent as pre-serialized bytes over
channels with keepalive, one connection each, replaced when a call says it may be dead."""
from __future__ import annotations

import logging
import threading

from google.api_core import exceptions as gexc

log = logging.getLogger(__name__)


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


# gRPC status codes after which a transport gives up its channel (its connection may be dead).
RECONNECT_CODES = ("DEADLINE_EXCEEDED", "UNAVAILABLE")


def channel_options() -> list:
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
    options = channel_options()
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
