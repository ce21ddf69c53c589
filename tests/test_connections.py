"""Bigtable data connections that go silent: keepalive, a per-attempt deadline and a fresh channel.

A connection dropped without a reset (a NAT or load balancer forgetting it) used to hang
every MutateRows attempt for 300 s on the same dead HTTP/2 connection. These tests put a
relay of our own (tests/faultproxy.py) between the writer and the emulator and blackhole
the connections it carries: writes and a whole ingest must finish, exact, within a bound.
Keepalive and deadline are lowered here to keep the tests short;
`test_production_constants` pins the real values.
"""
import itertools
import threading
import time

import pytest

from beam_ingest.store import admin, grpc_transport, row_writer, targets, wire
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from faultproxy import FaultProxy
from helpers import TS, open_table, run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of

INGEST_GUARD_S = 180  # a hang guard, not a speed check: without keepalive/deadline a run hangs ~40 min
WRITE_GUARD_S = 90

KEEPALIVE_KEYS = ("grpc.keepalive_time_ms", "grpc.keepalive_timeout_ms", "grpc.keepalive_permit_without_calls",
                  "grpc.http2.ping_timeout_ms")


@pytest.fixture(autouse=True)
def no_service_faults(strict_front):
    """These tests break the TCP connection and count the channels that replace it: the
    front's injected service failures (which replace a channel too) are off here."""
    from bigtable_front import Faults
    strict_front.set_faults(Faults())
    yield


def fast_failover(monkeypatch, keepalive_ms: int | None = 1000, deadline_s: float = 5.0):
    """Lower keepalive (`None`: none at all) and the MutateRows deadline for a test."""
    options = [o for o in getattr(grpc_transport, "GRPC_CHANNEL_OPTIONS", ()) if o[0] not in KEEPALIVE_KEYS]
    if keepalive_ms is not None:
        options += [("grpc.keepalive_time_ms", keepalive_ms), ("grpc.keepalive_timeout_ms", keepalive_ms),
                    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.ping_timeout_ms", keepalive_ms)]
    # raising=False: so that these tests also run (and fail) against code without the constants
    monkeypatch.setattr(grpc_transport, "GRPC_CHANNEL_OPTIONS", tuple(options), raising=False)
    monkeypatch.setattr(row_writer, "MUTATE_TIMEOUT_S", deadline_s, raising=False)
    monkeypatch.setattr(row_writer, "INITIAL_BACKOFF_S", 0.05)


class Guard:
    """Closes the proxy after `seconds` (so a hung client gets its connections closed and
    the test ends, failing) and measures the wall time of the block."""

    def __init__(self, proxy: FaultProxy, seconds: float):
        self.proxy, self.seconds = proxy, seconds
        self.fired = False

    def _fire(self):
        self.fired = True
        self.proxy.close()

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.daemon = True
        self.start = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.elapsed = time.perf_counter() - self.start
        if self.fired:
            pytest.fail(f"still blocked after {self.seconds} s on a blackholed connection (guard fired; "
                        f"ended {self.elapsed:.0f} s after the start)")


@pytest.fixture
def proxied(bigtable_emulator, graph_id, monkeypatch):
    """A fresh table (and a client for it going straight to the emulator), a FaultProxy in
    front of the emulator, and the Target that goes through it."""
    table = open_table(graph_id)
    table.create(column_families=admin.family_rules())
    proxy = FaultProxy(bigtable_emulator.host)
    yield table, proxy, targets.Target("emulator", "emulator", proxy.host)
    proxy.close()


def rows(start, stop):
    return [(b"row%05d" % i, [("0", b"q", b"value %d" % i)]) for i in range(start, stop)]


def stored(table):
    return {row.row_key: row.cells["0"][b"q"][0].value for row in table.read_rows()}


def expected(stop):
    return {key: cell[0][2] for key, cell in rows(0, stop)}


def test_production_constants():
    options = dict(grpc_transport.GRPC_CHANNEL_OPTIONS)
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # gRPC core waits this long for a keepalive ping's ack (its default, 60 s, would win over the 10 s above)
    assert options["grpc.http2.ping_timeout_ms"] == 10_000
    assert options["grpc.max_send_message_length"] == -1 and options["grpc.max_receive_message_length"] == -1
    assert row_writer.MUTATE_TIMEOUT_S == 60
    assert row_writer.RowWriter(targets.Target("p", "i"), "t", TS, transport=object()).timeout_s == 60


def test_production_channel_has_keepalive_and_default_credentials(monkeypatch):
    """Without the emulator the channel comes from the transport's create_channel, with our
    options and the default credentials (here stubbed: anonymous)."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigtable_v2.services.bigtable.transports import BigtableGrpcTransport
    monkeypatch.delenv("BIGTABLE_EMULATOR_HOST", raising=False)
    asked = []
    monkeypatch.setattr(google.auth, "default", lambda **kw: (asked.append(kw), (AnonymousCredentials(), "p"))[1])
    made = []
    real = BigtableGrpcTransport.create_channel.__func__

    def spy(cls, host, **kwargs):
        made.append((host, kwargs))
        return real(cls, host, **kwargs)

    monkeypatch.setattr(BigtableGrpcTransport, "create_channel", classmethod(spy))
    client = grpc_transport.data_client(None)
    assert len(made) == 1
    host, kwargs = made[0]
    assert host == "bigtable.googleapis.com:443"
    assert kwargs.get("credentials") is None  # google.auth.default() decides
    assert set(grpc_transport.GRPC_CHANNEL_OPTIONS) <= set(kwargs["options"])
    assert asked and set(asked[0]["default_scopes"]) == set(BigtableGrpcTransport.AUTH_SCOPES)
    client.transport.grpc_channel.close()


def test_writer_survives_a_blackhole_through_keepalive(proxied, graph_id, monkeypatch):
    """Deadline out of reach: only keepalive can notice the dead connection."""
    table, proxy, through = proxied
    fast_failover(monkeypatch, keepalive_ms=1000, deadline_s=WRITE_GUARD_S * 2)
    writer = row_writer.RowWriter(through, graph_id, TS, batch_rows=10, max_inflight=1)
    writer.write(rows(0, 20))
    writer.flush()
    assert proxy.blackhole() >= 1
    with Guard(proxy, WRITE_GUARD_S) as guard:
        writer.write(rows(20, 40))
        writer.flush()
    assert guard.elapsed < 20, f"took {guard.elapsed:.1f} s"  # ~2 s: 1 s to the ping, 1 s for its ack
    assert writer.transport.channels_opened == 2
    assert stored(table) == expected(40)
    writer.close()


def test_writer_survives_a_blackhole_through_deadline_and_fresh_channel(proxied, graph_id, monkeypatch):
    """No keepalive: the attempt's deadline ends it, and the retry must go over a new connection,
    even while another call still holds the old channel open (a new channel with the same
    options would otherwise share the dead connection); that call is not cancelled under it."""
    from google.api_core import exceptions as gexc
    table, proxy, through = proxied
    fast_failover(monkeypatch, keepalive_ms=None, deadline_s=2.0)
    writer = row_writer.RowWriter(through, graph_id, TS, batch_rows=10, max_inflight=1)
    writer.write(rows(0, 20))
    writer.flush()
    connections = proxy.connections
    assert proxy.blackhole() >= 1
    straggler = []

    def slow_call():  # on the old channel, with a longer deadline
        request = wire.request_prefix(writer.table_name) + wire.encode_cells(rows(900, 901), TS * 1000).payload
        try:
            list(writer.transport.mutate_rows(request, 6.0))
        except Exception as exc:
            straggler.append(exc)

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.2)
    with Guard(proxy, WRITE_GUARD_S) as guard:
        writer.write(rows(20, 40))
        writer.flush()
    assert guard.elapsed < 5, f"took {guard.elapsed:.1f} s"  # one 2 s deadline, then the retry
    assert writer.transport.channels_opened == 2
    assert proxy.connections == connections + 1
    thread.join()
    assert len(straggler) == 1 and isinstance(straggler[0], gexc.DeadlineExceeded)  # its own deadline
    assert stored(table) == expected(40)
    writer.close()


def test_threads_sharing_a_transport_replace_its_channel_once(proxied, graph_id, monkeypatch):
    """Several calls in flight when the connection dies: one fresh channel for all of them, and
    the old one closed only after its last call ended (nobody's call is cancelled under it)."""
    table, proxy, through = proxied
    fast_failover(monkeypatch, keepalive_ms=None, deadline_s=2.0)
    channels = []

    class Recorded(grpc_transport._Channel):
        def __init__(self, emulator_host):
            super().__init__(emulator_host)
            self.closes = []
            real_close = self.channel.close

            def close():
                self.closes.append(self.in_flight)
                real_close()

            self.channel.close = close
            channels.append(self)

    monkeypatch.setattr(grpc_transport, "_Channel", Recorded)
    writer = row_writer.RowWriter(through, graph_id, TS, batch_rows=5, max_inflight=4)
    calls = itertools.count(1)
    real = writer.transport.mutate_rows
    holes = []

    def mutate_rows(request, timeout):
        if next(calls) == 8:  # calls 5-7 may still be in flight
            holes.append(proxy.blackhole())
        return real(request, timeout)

    writer.transport.mutate_rows = mutate_rows
    with Guard(proxy, WRITE_GUARD_S) as guard:
        for start in range(0, 200, 20):
            writer.write(rows(start, start + 20))
        writer.drain()
    assert holes and holes[0] >= 1
    assert guard.elapsed < 20, f"took {guard.elapsed:.1f} s"
    assert writer.retries >= 1
    assert len(channels) == 2  # one replacement for every call that failed on the dead connection
    old, new = channels
    assert old.closes == [0] and new.closes == []
    writer.close()
    assert new.closes == [0]
    assert stored(table) == expected(200)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("connections") / "data"),
                    SyntheticSpec(chunks=(4, 4, 2), svs_per_chunk=40, seed=31))


@pytest.mark.parametrize("scope", ["data", "all"])
def test_ingest_through_a_blackhole_finishes_exact(dataset, bigtable_emulator, graph_id, monkeypatch, scope):
    """`data`: the writers' connections go through the proxy (the launcher's admin client talks to
    the emulator directly); `all`: every connection of the run goes through it."""
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean, "--write_batch_rows=50")  # straight to the emulator
    fast_failover(monkeypatch, keepalive_ms=1000, deadline_s=5.0)
    proxy = FaultProxy(bigtable_emulator.host)
    if scope == "all":  # the launcher resolves its target from here: every connection goes through the proxy
        monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", proxy.host)
    transports = []

    def factory(table_name, emulator_host):  # the real transport, counted
        assert emulator_host == bigtable_emulator.host or scope == "all" and emulator_host == proxy.host
        transports.append(grpc_transport.MutateRowsTransport(table_name, proxy.host))
        return transports[-1]

    calls = itertools.count(1)
    holes = []
    real = grpc_transport.MutateRowsTransport.mutate_rows

    def mutate_rows(self, request, timeout):  # blackholes once the pipeline's writes are under way
        if next(calls) == 12:
            holes.append(proxy.blackhole())
        return real(self, request, timeout)

    monkeypatch.setattr(row_writer, "mutate_rows_transport", factory)
    monkeypatch.setattr(grpc_transport.MutateRowsTransport, "mutate_rows", mutate_rows)
    try:
        with Guard(proxy, INGEST_GUARD_S) as guard:
            _, _, plan = run_ingest(dataset["config"], graph_id, "--write_batch_rows=50")
    finally:
        proxy.close()
        monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", bigtable_emulator.host)  # read back directly
    assert holes and holes[0] >= 1, "the blackhole was never reached"
    assert sum(getattr(t, "channels_opened", 1) for t in transports) > len(transports), "no reconnect"
    print(f"ingest through a blackhole: {guard.elapsed:.1f} s, {next(calls) - 1} MutateRows calls, "
          f"{holes[0]} connection(s) blackholed")
    assert cells_of(graph_id) == cells_of(clean)
    check_against_reference(dataset["config"], graph_id, plan.layout)
