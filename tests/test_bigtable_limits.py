"""Bigtable's limits on a write, held by the strict front (tests/bigtable_front.py) as the
service holds them, and kept by the writer whatever the options."""
import grpc
import numpy as np
import pytest
from google.cloud.bigtable_v2.types import MutateRowsRequest

from beam_ingest.store import admin, limits, row_writer, wire
from bigtable_front import Faults
from helpers import open_table, target

TS_MS = 1_700_000_000_123


def new_table(graph_id):
    table = open_table(graph_id)
    admin.create_table(table)
    return table


def wide_rows(n_rows, cells_per_row, value=b"v"):
    return [(b"row-%08d" % i, [("0", b"q%03d" % c, value) for c in range(cells_per_row)]) for i in range(n_rows)]


def count_cells(table):
    return sum(len(cells) for row in table.read_rows() for cells in row.cells.get("0", {}).values())


def raw_mutate_rows(host, table_name, entries):
    """One MutateRows request straight to `host`, bypassing the writer; returns its statuses."""
    channel = grpc.insecure_channel(host)
    try:
        call = channel.unary_stream("/google.bigtable.v2.Bigtable/MutateRows", request_serializer=None,
                                    response_deserializer=None)
        request = MutateRowsRequest.pb()(table_name=table_name, entries=entries)
        return list(call(request.SerializeToString(), timeout=60))
    finally:
        channel.close()


def entry(key, n_cells, timestamp_micros=TS_MS * 1000, value=b"v"):
    return {"row_key": key, "mutations": [{"set_cell": {"family_name": "0", "column_qualifier": b"q%d" % c,
                                                        "timestamp_micros": timestamp_micros, "value": value}}
                                          for c in range(n_cells)]}


# ---- the front is strict ----------------------------------------------------------------------

def test_front_refuses_a_request_over_100000_mutations_which_the_emulator_accepts(bigtable_emulator, strict_front,
                                                                                   graph_id):
    strict_front.set_faults(Faults())  # raw requests, no retries: the session's injected faults would fail them
    table = new_table(graph_id)
    name = table.name
    entries = [entry(b"r%05d" % i, 20) for i in range(5001)]  # 100,020 mutations
    raw_mutate_rows(bigtable_emulator.emulator.host, name, entries)  # the emulator: all written
    with pytest.raises(grpc.RpcError) as refused:
        raw_mutate_rows(bigtable_emulator.host, name, entries)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "100020" in refused.value.details()
    raw_mutate_rows(bigtable_emulator.host, name, entries[:5000])  # 100,000: accepted


@pytest.mark.parametrize("bad, why", [
    (entry(b"k" * 4097, 1), "Row key too long"),
    (entry(b"k", 1, timestamp_micros=TS_MS * 1000 + 1), "Timestamp not in milliseconds"),
    ({"row_key": b"k", "mutations": [{"set_cell": {"family_name": "0", "column_qualifier": b"q" * (16 * 1024 + 1),
                                                   "timestamp_micros": 0, "value": b""}}]}, "Qualifier too long"),
])
def test_front_refuses_what_the_service_refuses(bigtable_emulator, strict_front, graph_id, bad, why):
    strict_front.set_faults(Faults())  # a raw request, no retries: the refusal, not an injected fault
    table = new_table(graph_id)
    with pytest.raises(grpc.RpcError) as refused:
        raw_mutate_rows(bigtable_emulator.host, table.name, [entry(b"fine", 1), bad])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in refused.value.details()


def test_front_fails_single_entries_without_applying_them(strict_front, graph_id):
    table = new_table(graph_id)
    strict_front.set_faults(Faults(seed=3, entry_rate=0.3))
    responses = raw_mutate_rows(strict_front.host, table.name, [entry(b"r%03d" % i, 1) for i in range(200)])
    from google.cloud.bigtable_v2.types import MutateRowsResponse
    statuses = {item.index: item.status.code for raw in responses
                for item in MutateRowsResponse.pb().FromString(raw).entries}
    failed = {i for i, code in statuses.items() if code}
    assert len(statuses) == 200 and 30 < len(failed) < 100
    assert {statuses[i] for i in failed} <= {14, 4, 10}
    written = {row.row_key for row in table.read_rows()}
    assert written == {b"r%03d" % i for i in range(200) if i not in failed}


# ---- the writer keeps within the limits --------------------------------------------------------

@pytest.mark.parametrize("batch_rows", [10_000, 3_000])
def test_writer_cuts_requests_before_100000_mutations(strict_front, graph_id, batch_rows):
    """10,000 rows of 20 cells with --write_batch_rows 10000 would be one request of 200,000
    mutations, which the service refuses; the writer sends at most 100,000 a request."""
    table = new_table(graph_id)
    before, refused = strict_front.stats["mutate_rows"], strict_front.stats["refused"]
    writer = row_writer.RowWriter(target(), graph_id, TS_MS, batch_rows=batch_rows, max_inflight=4)
    try:
        writer.write(wide_rows(10_000, 20))
        writer.drain()
    finally:
        writer.close()
    assert strict_front.stats["refused"] == refused
    assert writer.rows_written == 10_000 and count_cells(table) == 200_000
    assert strict_front.stats["mutate_rows"] - before >= 2 + (batch_rows == 3_000) * 2


def test_writer_cuts_requests_at_the_byte_budget(strict_front, graph_id, monkeypatch):
    """Rows of 1 MiB values: a request closes before 20 MiB, whatever --write_batch_rows says."""
    table = new_table(graph_id)
    before = strict_front.stats["mutate_rows"]
    writer = row_writer.RowWriter(target(), graph_id, TS_MS, batch_rows=2000, max_inflight=1)
    sent = []
    real = writer.transport.mutate_rows

    def record(request, timeout):
        sent.append(len(request))
        return real(request, timeout)
    monkeypatch.setattr(writer.transport, "mutate_rows", record)
    try:
        writer.write(wide_rows(50, 1, value=b"x" * (1 << 20)))
        writer.drain()
    finally:
        writer.close()
    assert writer.rows_written == 50 and count_cells(table) == 50
    assert max(sent) <= limits.MAX_REQUEST_BYTES + 1000 and len(set(sent)) >= 2
    assert strict_front.stats["mutate_rows"] - before >= 3


def test_batch_stops_take_the_first_limit_reached():
    sizes, mutations = np.full(10, 100), np.array([1, 1, 5, 5, 1, 1, 1, 1, 1, 20])
    assert limits.batch_stops(sizes, mutations, max_rows=4, max_mutations=6, max_bytes=10_000) == [2, 3, 5, 9, 10]
    assert limits.batch_stops(sizes, mutations, max_rows=100, max_mutations=1000, max_bytes=250) == [2, 4, 6, 8, 10]
    assert limits.batch_stops(np.zeros(0), np.zeros(0), max_rows=5) == []


def test_a_cell_over_100_mib_fails_naming_row_column_and_limit(graph_id):
    writer = row_writer.RowWriter(target(), graph_id, TS_MS)
    try:
        with pytest.raises(limits.DataLimitError, match=r"row b'big', column 0:q: a value of 104,857,601 bytes "
                                                        r"is over Bigtable's limit of 104,857,600 bytes a cell"):
            writer.write([(b"big", [("0", b"q", bytes(100 * 1024 * 1024 + 1))])])
    finally:
        writer.close()


def test_a_node_cell_over_100_mib_names_the_node_row_and_column(monkeypatch):
    monkeypatch.setattr(limits, "MAX_CELL_BYTES", 10)
    from beam_ingest.store import ragged
    values = ragged.Ragged.from_bytes([b"small", b"x" * 11])
    prefixes = [wire.cell_prefix("0", b"children", 5000)]
    with pytest.raises(limits.DataLimitError, match=r"row b'00000000000000000007', column 0:children: "
                                                    r"a value of 11 bytes"):
        wire.node_entries(np.array([3, 7]), np.array([0, 0]), prefixes, values)


def test_a_row_key_over_4_kib_fails_naming_it(graph_id):
    with pytest.raises(limits.DataLimitError, match="row key b'kkkk.*is 4,097 bytes, over Bigtable's limit of 4,096"):
        wire.encode_cells([(b"k" * 4097, [("0", b"q", b"v")])], 0)


# ---- whole ingests, the limit lowered so that every stage's requests must be cut ----------------

@pytest.fixture(scope="module")
def v3_data(tmp_path_factory):
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    return generate(str(tmp_path_factory.mktemp("limits") / "data"),
                    SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=6))


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    return generate_segmentation(str(tmp_path_factory.mktemp("limits-seg") / "data"), SegmentationSpec(seed=33))


LOWERED = 40  # mutations a request: far below what one bundle holds at --write_batch_rows 10000


@pytest.mark.parametrize("inputs", ["precomputed v3", "segmentation v3 with the L2 cache"])
def test_every_sink_cuts_its_requests_at_the_mutation_limit(request, inputs, graph_id, strict_front, monkeypatch):
    """With Bigtable's 100,000 lowered to 40, an ingest at --write_batch_rows 10000 (one request
    a bundle otherwise, of hundreds of mutations) must cut every request, the version-3 rows
    (parents, children, cross edges and lifted edges per layer) and the cache's included:
    the front refuses any request over 40, and the tables equal a run's without the limit."""
    from helpers import run_ingest
    from test_runs import cells_of
    seg = inputs.startswith("segmentation")
    data = request.getfixturevalue("seg_data" if seg else "v3_data")
    extra = ["--pcg_version=3"] + (["--from_segmentation"] if seg else [])
    clean = graph_id[:40] + "-clean"
    run_ingest(data["config"], clean, *extra, *([f"--l2cache_table={clean}-c"] if seg else []))
    monkeypatch.setattr(limits, "MAX_MUTATIONS_PER_REQUEST", LOWERED)
    strict_front.largest_request, refused = 0, strict_front.stats["refused"]
    before = strict_front.stats["mutate_rows"]
    run_ingest(data["config"], graph_id, *extra, "--write_batch_rows=10000", "--max_inflight_writes=4",
               *([f"--l2cache_table={graph_id[:40]}-c"] if seg else []))
    assert strict_front.stats["refused"] == refused
    assert LOWERED // 2 < strict_front.largest_request <= LOWERED  # cut at the limit, never past it
    assert strict_front.stats["mutate_rows"] - before > 30
    assert cells_of(graph_id) == cells_of(clean)
    if seg:
        from test_l2cache import cache_cells
        assert cache_cells(f"{graph_id[:40]}-c")[0] == cache_cells(f"{clean}-c")[0]


def test_the_widest_rows_of_the_most_layers_the_ids_allow_are_cut_within_the_limit(tmp_path, graph_id, strict_front,
                                                                                   monkeypatch):
    """1,024 chunks in a row: 12 layers, the most SPATIAL_BITS=10 allows, version 3 (cross-edge
    and lifted-edge cells per layer; a row's cells span at most the few layers at which its
    chunk's neighbours join, 3 here). With the request limit lowered to ten times the widest
    row, every request is cut below it and the table equals a plain run's."""
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    from helpers import run_ingest
    from test_runs import cells_of
    info = generate(str(tmp_path / "wide"), SyntheticSpec(chunks=(1024, 1, 1), svs_per_chunk=6, chunk_size=(8, 8, 8),
                                                          seed=3, empty_chunk_fraction=0))
    assert info["layer_count"] == 12
    widest = []
    real_add = row_writer.RowWriter._add

    def add(self, entries):
        if len(entries):
            widest.append(int(entries.mutations.max()))
        return real_add(self, entries)
    monkeypatch.setattr(row_writer.RowWriter, "_add", add)
    clean = graph_id[:40] + "-clean"
    run_ingest(info["config"], clean, "--pcg_version=3")
    widest_row = max(widest)
    assert widest_row >= 3
    monkeypatch.setattr(limits, "MAX_MUTATIONS_PER_REQUEST", 10 * widest_row)
    strict_front.largest_request, refused = 0, strict_front.stats["refused"]
    run_ingest(info["config"], graph_id[:40], "--pcg_version=3", "--write_batch_rows=10000")
    assert strict_front.stats["refused"] == refused
    assert widest_row < strict_front.largest_request <= 10 * widest_row
    assert cells_of(graph_id[:40]) == cells_of(clean)
