"""The Bigtable write path under failures: transient errors are retried, persistent ones fail loudly."""
import collections
import threading

import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable_v2.types import MutateRowsRequest, MutateRowsResponse

from beam_ingest.store import grpc_transport, row_writer
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TableStructure, run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of


class FlakyTransport:
    """A test double for the MutateRows transport: the real emulator behind it, with injected failures.

    Every other call that carries a row for the first time raises UNAVAILABLE; in the
    others, rows at odd positions seen for at most the second time are reported failed
    with `odd_code` (and not written), the rest are written. So every row fails once or
    twice before it lands. With `always`, odd rows fail every time.
    """

    def __init__(self, table_name, emulator_host, odd_code=14, always=False):
        self.real = grpc_transport.MutateRowsTransport(table_name, emulator_host)
        self.calls = 0
        self.seen = collections.Counter()
        self.lock = threading.Lock()
        self.odd_code = odd_code
        self.always = always
        self.failed_rows = 0

    def mutate_rows(self, request: bytes, timeout):
        pb = MutateRowsRequest.pb().FromString(request)
        with self.lock:
            self.calls += 1
            first_time = any(self.seen[e.row_key] == 0 for e in pb.entries)
            for e in pb.entries:
                self.seen[e.row_key] += 1
            if first_time and self.calls % 2 and not self.always:
                raise gexc.ServiceUnavailable("injected: emulator unavailable")
            fail = [i for i, e in enumerate(pb.entries)
                    if i % 2 and (self.always or self.seen[e.row_key] <= 2)]
            self.failed_rows += len(fail)
        failing = set(fail)
        keep = [i for i in range(len(pb.entries)) if i not in failing]
        sub = MutateRowsRequest.pb()(table_name=pb.table_name, entries=[pb.entries[i] for i in keep])
        response_pb = MutateRowsResponse.pb()
        if keep:
            for response in self.real.mutate_rows(sub.SerializeToString(), timeout):
                yield response_pb(entries=[{"index": keep[e.index], "status": {"code": e.status.code}}
                                           for e in response.entries])
        yield response_pb(entries=[{"index": i, "status": {"code": self.odd_code, "message": "injected"}}
                                   for i in fail])


def use_flaky(monkeypatch, **kwargs):
    made = []

    def factory(table_name, emulator_host):
        made.append(FlakyTransport(table_name, emulator_host, **kwargs))
        return made[-1]

    monkeypatch.setattr(row_writer, "mutate_rows_transport", factory)
    return made


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("writes") / "data"),
                    SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=40, seed=21))


def test_transient_failures_are_retried_and_table_is_exact(small, graph_id, monkeypatch):
    _, clean_counters, _ = run_ingest(small["config"], graph_id + "-clean")
    made = use_flaky(monkeypatch)
    monkeypatch.setattr(row_writer, "INITIAL_BACKOFF_S", 0.001)  # fast backoff for the test
    _, counters, plan = run_ingest(small["config"], graph_id, "--write_batch_rows=50")
    assert sum(f.calls for f in made) > 20 and sum(f.failed_rows for f in made) > 100
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    check_against_reference(small["config"], graph_id, plan.layout)
    assert counters["rows_written"] == clean_counters["rows_written"]  # each row counted once, when it lands


def test_rows_that_keep_failing_fail_the_run_loudly(small, graph_id, monkeypatch):
    use_flaky(monkeypatch, always=True)
    monkeypatch.setattr(row_writer, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(row_writer, "MAX_ATTEMPTS", 3)
    with pytest.raises(Exception, match=r"could not be written to emulator [\d.:]+ \(project emulator, instance emulator\) after 3 attempts, first b'\d{20}'"):
        run_ingest(small["config"], graph_id)


def test_rejected_rows_fail_at_once(small, graph_id, monkeypatch):
    use_flaky(monkeypatch, odd_code=3, always=True)  # INVALID_ARGUMENT: not retryable
    with pytest.raises(Exception, match=r"was rejected: status 3 injected"):
        run_ingest(small["config"], graph_id)


@pytest.mark.parametrize("inflight", [1, 4])
def test_pooled_encoding_in_many_parts_and_batches_writes_the_exact_table(small, graph_id, monkeypatch, inflight):
    """The graph sink pools chunks until ENCODE_ROWS rows, encodes them, and sends batches while
    the bundle goes on: here pools of a few chunks (chunk labels past the first), sent 7 rows a
    request, so every chunk's acknowledgements come from several requests and several pools."""
    from beam_ingest.pipeline import sink
    monkeypatch.setattr(sink, "ENCODE_ROWS", 30)
    run_ingest(small["config"], graph_id + "-clean")
    _, counters, plan = run_ingest(small["config"], graph_id, "--write_batch_rows=7",
                                   f"--max_inflight_writes={inflight}")
    assert counters["rows_written"] > 30 * 10
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    check_against_reference(small["config"], graph_id, plan.layout)
