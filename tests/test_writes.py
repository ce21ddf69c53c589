"""The Bigtable write path under failures: transient errors are retried, persistent ones fail loudly."""
import pytest
from google.api_core import exceptions as gexc
from google.cloud.bigtable_v2.types import MutateRowsRequest, MutateRowsResponse

from beam_ingest.store import bigtable
from beam_ingest.synthetic import SyntheticSpec, generate
from helpers import TableStructure, run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of


class FlakyClient:
    """A test double for the data client: the real emulator behind it, with injected failures.

    Call 1, 4, 7, ... raise UNAVAILABLE; calls 2, 5, 8, ... write only the even entries and
    report the odd ones as failed with `odd_code`; the others go through untouched.
    """

    def __init__(self, odd_code=14, always=False):
        self.real = bigtable.data_client()
        self.calls = 0
        self.odd_code = odd_code
        self.always = always
        self.failed_rows = 0

    def mutate_rows(self, request, timeout=None):
        self.calls += 1
        phase = self.calls % 3
        if phase == 1 and not self.always:
            raise gexc.ServiceUnavailable("injected: emulator unavailable")
        if phase == 0 and not self.always:
            yield from self.real.mutate_rows(request=request, timeout=timeout)
            return
        pb = MutateRowsRequest.pb(request)
        even = list(range(0, len(pb.entries), 2))
        odd = list(range(1, len(pb.entries), 2))
        sub = MutateRowsRequest.pb()(table_name=pb.table_name, entries=[pb.entries[i] for i in even])
        if even:
            for response in self.real.mutate_rows(request=MutateRowsRequest.wrap(sub), timeout=timeout):
                entries = [{"index": even[e.index], "status": {"code": e.status.code}}
                           for e in MutateRowsResponse.pb(response).entries]
                yield MutateRowsResponse(entries=entries)
        self.failed_rows += len(odd)
        yield MutateRowsResponse(entries=[{"index": i, "status": {"code": self.odd_code, "message": "injected"}}
                                          for i in odd])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("writes") / "data"),
                    SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=40, seed=21))


def test_transient_failures_are_retried_and_table_is_exact(small, graph_id, monkeypatch):
    _, clean_counters, _ = run_ingest(small["config"], graph_id + "-clean")
    flaky = FlakyClient()
    monkeypatch.setattr(bigtable, "data_client", lambda: flaky)
    monkeypatch.setattr(bigtable, "INITIAL_BACKOFF_S", 0.001)  # fast backoff for the test
    _, counters, plan = run_ingest(small["config"], graph_id, "--write_batch_rows=50")
    assert flaky.calls > 20 and flaky.failed_rows > 100
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    check_against_reference(small["config"], graph_id, plan.layout)
    assert counters["rows_written"] == clean_counters["rows_written"]  # each row counted once, when it lands


def test_rows_that_keep_failing_fail_the_run_loudly(small, graph_id, monkeypatch):
    flaky = FlakyClient(always=True)
    monkeypatch.setattr(bigtable, "data_client", lambda: flaky)
    monkeypatch.setattr(bigtable, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(bigtable, "MAX_ATTEMPTS", 3)
    with pytest.raises(Exception, match=r"could not be written after 3 attempts, first b'\d{20}'"):
        run_ingest(small["config"], graph_id)


def test_rejected_rows_fail_at_once(small, graph_id, monkeypatch):
    flaky = FlakyClient(odd_code=3, always=True)  # INVALID_ARGUMENT: not retryable
    monkeypatch.setattr(bigtable, "data_client", lambda: flaky)
    with pytest.raises(Exception, match=r"was rejected: status 3 injected"):
        run_ingest(small["config"], graph_id)
