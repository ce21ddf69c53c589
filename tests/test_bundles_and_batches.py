"""Every input kind, with and without the L2 cache, at a size where things multiply: each
stage's sink sees several bundles (three in-process workers) and sends each bundle's rows in
several MutateRows requests (7 rows a request), through the session's strict, failing
Bigtable front; the tables equal those of a plain run, cell for cell."""
import pytest

from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import run_ingest
from test_l2cache import cache_cells
from test_runs import cells_of

MULTIPLIED = ["--direct_running_mode=multi_threading", "--direct_num_workers=3", "--write_batch_rows=7",
              "--max_inflight_writes=4"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiplied")
    segmentation = generate_segmentation(str(folder / "seg"), SegmentationSpec(seed=53))
    # its EDGES, COMPONENTS and WATERSHED, for the case that reads it as precomputed input
    run_ingest(segmentation["config"], "multiplied-seg-files", "--from_segmentation")
    return {
        "precomputed": generate(str(folder / "pre"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=51)),
        "raw": generate(str(folder / "raw"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=52, raw=True)),
        "segmentation": segmentation,
    }


CASES = {
    "precomputed": ("precomputed", [], False),
    "raw": ("raw", ["--raw"], False),
    "segmentation": ("segmentation", ["--from_segmentation"], False),
    "segmentation with the cache": ("segmentation", ["--from_segmentation"], True),
    # the segmentation dataset read as precomputed input: the cache reads WATERSHED per chunk
    "precomputed with the cache": ("segmentation", [], True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_several_bundles_and_batches_per_sink_write_the_tables_of_a_plain_run(inputs, graph_id, case):
    data, extra, cache = CASES[case]
    config = inputs[data]["config"]
    plain, multiplied = graph_id[:40] + "-plain", graph_id[:40]
    run_ingest(config, plain, *extra, *([f"--l2cache_table={plain}-c"] if cache else []))
    _, counters, _ = run_ingest(config, multiplied, *extra, *MULTIPLIED,
                                *([f"--l2cache_table={multiplied}-c"] if cache else []))
    bundles = {k[len("sink_bundles_"):]: v for k, v in counters.items() if k.startswith("sink_bundles_")}
    requests = {k[len("write_requests_"):]: v for k, v in counters.items() if k.startswith("write_requests_")}
    written = {stage for stage, n in requests.items() if n}
    assert {"Layer2", "Roots"} <= written and ("L2Cache" in written) == cache
    assert all(bundles[stage] >= 2 for stage in written), bundles
    assert all(requests[stage] >= 2 * bundles[stage] for stage in written), (requests, bundles)
    assert cells_of(multiplied) == cells_of(plain)
    if cache:
        assert cache_cells(f"{multiplied}-c")[0] == cache_cells(f"{plain}-c")[0]
