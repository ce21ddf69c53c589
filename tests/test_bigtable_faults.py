"""Ingests through the strict front (tests/bigtable_front.py) failing as Bigtable fails: a
run that can finish finishes exact, a throttled run slows down and says so, and a run that
cannot finish exits non-zero with one line naming the cause, never 0."""
import re

import pytest

from beam_ingest.launch.ingest import main
from beam_ingest.store import row_writer
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from bigtable_front import Faults
from helpers import TS
from test_runs import cells_of


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("faults") / "data"),
                    SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=40, seed=23))


@pytest.fixture(scope="module")
def clean_cells(small, bigtable_emulator, tmp_path_factory):
    graph = "faults-clean-reference"
    assert main(["--config", small["config"], "--graph_id", graph, f"--ingest_timestamp={TS}"]) == 0
    return cells_of(graph)


def ingest(small, graph_id, *extra):
    return main(["--config", small["config"], "--graph_id", graph_id, f"--ingest_timestamp={TS}",
                 "--write_batch_rows=20", *extra])


def test_a_throttled_run_backs_off_completes_exact_and_says_how_long(small, clean_cells, strict_front, graph_id,
                                                                       capsys, monkeypatch):
    monkeypatch.setattr(row_writer, "THROTTLE_BACKOFF_S", 0.05)
    strict_front.set_faults(Faults(seed=5, burst_rate=0.05, burst_s=1.0, exhausted_rate=0.2, entry_rate=0.02))
    assert ingest(small, graph_id, "--max_inflight_writes=4") == 0
    out = capsys.readouterr().out
    assert cells_of(graph_id) == clean_cells
    assert strict_front.stats["bursts"] >= 1 and strict_front.stats["request RESOURCE_EXHAUSTED"] >= 5
    throttled = re.search(r"Bigtable: writes throttled \(RESOURCE_EXHAUSTED\) for ([\d.]+) s in all", out)
    assert throttled and float(throttled.group(1)) > 0.1, out


def test_throttling_that_never_ends_fails_the_run_naming_it(small, strict_front, graph_id, capsys, monkeypatch):
    monkeypatch.setattr(row_writer, "THROTTLE_BACKOFF_S", 0.05)
    monkeypatch.setattr(row_writer, "THROTTLE_LIMIT_S", 1.5)
    strict_front.set_faults(Faults(seed=6, exhausted_rate=1.0))
    assert ingest(small, graph_id) == 1
    err = capsys.readouterr().err
    assert re.search(r"^error: .*Bigtable throttled them \(RESOURCE_EXHAUSTED\) for \d+ s without a pause", err,
                     re.MULTILINE), err


@pytest.mark.parametrize("faults, cause", [
    (Faults(seed=7, entry_rate=1.0), r"after 3 attempts, first b'\d{20}': status (14|4|10) injected: entry failed"),
    (Faults(seed=8, request_rate=1.0), r"after 3 attempts, first b'\d{20}': (ServiceUnavailable|DeadlineExceeded)"),
])
def test_failures_beyond_the_retries_fail_the_run_naming_the_cause(small, strict_front, graph_id, capsys, monkeypatch,
                                                                   faults, cause):
    monkeypatch.setattr(row_writer, "INITIAL_BACKOFF_S", 0.01)
    monkeypatch.setattr(row_writer, "MAX_ATTEMPTS", 3)
    strict_front.set_faults(faults)
    assert ingest(small, graph_id) == 1
    err = capsys.readouterr().err
    assert re.search(r"^error: .*could not be written to emulator .*" + cause, err, re.MULTILINE), err


def test_the_session_front_injects_faults_into_every_run(strict_front, small, clean_cells, graph_id):
    """The default every other test runs under: a few entries and requests fail, some are
    throttled; the table is still exact."""
    from conftest import SESSION_FAULTS
    strict_front.set_faults(SESSION_FAULTS)
    before = dict(strict_front.stats)
    assert ingest(small, graph_id) == 0
    assert cells_of(graph_id) == clean_cells
    injected = sum(strict_front.stats[k] - before.get(k, 0)
                   for k in ("entries failed", "request UNAVAILABLE", "request DEADLINE_EXCEEDED",
                             "request RESOURCE_EXHAUSTED"))
    assert injected > 0


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
    return generate_segmentation(str(tmp_path_factory.mktemp("faults-seg") / "data"), SegmentationSpec(seed=57))


@pytest.mark.parametrize("kind", ["v3", "segmentation with the L2 cache"])
def test_heavy_faults_with_large_batches_still_end_exact(kind, small, seg, strict_front, graph_id):
    """5% of entries answered UNAVAILABLE in OK responses, 2% of requests UNAVAILABLE, 5%
    RESOURCE_EXHAUSTED, batches of 2,000 rows: a v3 ingest and a --from_segmentation ingest
    with the cache end exact."""
    from helpers import run_ingest
    from test_l2cache import cache_cells
    data, extra = (small, ["--pcg_version=3"]) if kind == "v3" else (
        seg, ["--from_segmentation", "--pcg_version=3", f"--l2cache_table={graph_id[:40]}-c"])
    clean_extra = [e.replace(graph_id[:40], graph_id[:40] + "-clean") for e in extra]
    run_ingest(data["config"], graph_id[:40] + "-clean", *clean_extra)
    strict_front.set_faults(Faults(seed=11, entry_rate=0.05, request_rate=0.02, exhausted_rate=0.05))
    before = dict(strict_front.stats)
    run_ingest(data["config"], graph_id[:40], *extra, "--write_batch_rows=2000")
    assert strict_front.stats["entries failed"] - before.get("entries failed", 0) > 50
    assert cells_of(graph_id[:40]) == cells_of(graph_id[:40] + "-clean")
    if kind != "v3":
        assert cache_cells(f"{graph_id[:40]}-c")[0] == cache_cells(f"{graph_id[:40]}-clean-c")[0]


def test_reads_and_single_row_writes_that_fail_are_retried(small, clean_cells, strict_front, graph_id, capsys):
    """A third of every other data API call (ReadRows, MutateRow, CheckAndMutateRow: the
    claim, the run record, the completion mark, status and verify reads) fails UNAVAILABLE:
    the ingest, a `continue` of the finished table, `status` and `verify` still succeed."""
    from beam_ingest.cli import main as cli_main
    strict_front.set_faults(Faults(seed=12, other_rate=0.3))
    assert ingest(small, graph_id) == 0
    assert ingest(small, graph_id, "--if_exists=continue") == 0
    assert cli_main(["status", "--graph_id", graph_id]) == 0
    assert cli_main(["verify", "--graph_id", graph_id, "--config", small["config"]]) == 0
    out = capsys.readouterr().out
    assert "complete" in out
    assert sum(v for k, v in strict_front.stats.items() if k.endswith(" UNAVAILABLE") and not k.startswith("request")) > 5
    strict_front.set_faults(Faults())
    assert cells_of(graph_id) == clean_cells
