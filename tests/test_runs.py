"""Whole-run properties: determinism across runs and runners, existing tables, recovery."""
import numpy as np
import pytest

from beam_ingest.store import cells
from beam_ingest.errors import TableError
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from beam_ingest.store.reader import read_all
from helpers import TableStructure, open_table, run_ingest
from test_end_to_end import check_against_reference


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 5 x 3 x 4 chunks: 5 layers, so a failure at layer 4 leaves layers 2-3 written
    return generate(str(tmp_path_factory.mktemp("runs") / "data"),
                    SyntheticSpec(chunks=(5, 3, 4), svs_per_chunk=30, seed=11))


def cells_of(graph_id):
    rows = read_all(open_table(graph_id))
    rows.pop(b"meta")  # holds the graph id, which differs between tables
    rows.pop(cells.BOOKKEEPING_ROW)  # the run identity: a nonce per table, the finishing time
    return rows


def test_same_timestamp_same_cells_in_process_and_multiprocess(dataset, graph_id):
    run_ingest(dataset["config"], graph_id + "-a")
    run_ingest(dataset["config"], graph_id + "-b")
    run_ingest(dataset["config"], graph_id + "-mp", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2")
    a = cells_of(graph_id + "-a")
    assert len(a) > 500
    assert cells_of(graph_id + "-b") == a
    assert cells_of(graph_id + "-mp") == a


def test_existing_table_is_never_silently_reused(dataset, graph_id, tmp_path):
    run_ingest(dataset["config"], graph_id)
    with pytest.raises(TableError, match="already exists; pass --if_exists=continue"):
        run_ingest(dataset["config"], graph_id)
    other = tmp_path / "other.yml"
    other.write_text(open(dataset["config"]).read().replace("- 64\n", "- 128\n", 1))
    with pytest.raises(TableError, match=r"different graph \(graph_config differs: CHUNK_SIZE"):
        run_ingest(str(other), graph_id, "--if_exists=continue", timestamp=None)
    with pytest.raises(TableError, match="differs from the table's ingest time"):
        run_ingest(dataset["config"], graph_id, "--if_exists=continue", timestamp=123)
    # recreate: a fresh table with the new timestamp only
    _, _, plan = run_ingest(dataset["config"], graph_id, "--if_exists=recreate", timestamp=1_800_000_000_000)
    TableStructure(graph_id, plan.layout, expect_ms=1_800_000_000_000)


def test_recovery_after_failure_equals_clean_run(dataset, graph_id):
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    broken = graph_id + "-broken"
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], broken, "--fail_at_layer=4")
    partial = cells_of(broken)
    assert 0 < len(partial) < len(cells_of(clean))
    # continue: no timestamp given, the table's ingest time is reused
    _, _, plan = run_ingest(dataset["config"], broken, "--if_exists=continue", timestamp=None)
    assert cells_of(broken) == cells_of(clean)
    check_against_reference(dataset["config"], broken, plan.layout)


def test_skip_writes_touches_no_table(dataset, graph_id):
    _, counters, _ = run_ingest(dataset["config"], graph_id, "--skip_writes")
    assert counters["rows_written"] > 500
    assert not open_table(graph_id).exists()


def test_presplit_table_is_exact(dataset, graph_id):
    from beam_ingest.store.admin import table_split_keys
    _, _, plan = run_ingest(dataset["config"], graph_id, "--table_splits=16")
    keys = table_split_keys(plan.layout, 16)
    assert keys == sorted(set(keys)) and 10 <= len(keys) <= 20
    layer_of_key = lambda k: int(plan.layout.layer_of(np.uint64(int(k)))) if k != b"i" else None
    layers = [layer_of_key(k) for k in keys]
    assert layers.count(1) >= 4 and layers.count(2) >= 3 and b"i" in keys
    assert set(range(2, plan.layout.layer_count + 1)) <= set(layers)
    sampled = [s.row_key for s in open_table(graph_id).sample_row_keys()]
    assert len(sampled) >= len(keys)  # the emulator reports one sample per tablet
    assert cells_of(graph_id) == cells_of_clean(dataset, graph_id)


def cells_of_clean(dataset, graph_id):
    run_ingest(dataset["config"], graph_id + "-plain")
    return cells_of(graph_id + "-plain")


def test_restart_at_layer_4_from_checkpoint_equals_clean_run(dataset, graph_id, tmp_path):
    from beam_ingest.errors import CheckpointError, ConfigError
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    ckpt = "file://" + str(tmp_path / "ckpt")
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=4")
    assert (tmp_path / "ckpt" / "layer3" / "_COMPLETE").exists()
    assert not (tmp_path / "ckpt" / "layer4").exists()
    with pytest.raises(CheckpointError, match="layer4/_COMPLETE not found"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--start_layer=5",
                   "--if_exists=continue", timestamp=None)
    with pytest.raises(ConfigError, match="--start_layer: needs --checkpoint_dir"):
        run_ingest(dataset["config"], graph_id, "--start_layer=4", "--if_exists=continue", timestamp=None)
    _, counters, plan = run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--start_layer=4",
                                   "--if_exists=continue", timestamp=None)
    assert "layer2_chunks" not in counters and "layer3_chunks" not in counters  # not rebuilt
    assert counters["layer4_chunks"] == plan.layout.chunk_count(4)
    assert cells_of(graph_id) == cells_of(clean)
    check_against_reference(dataset["config"], graph_id, plan.layout)


def test_incomplete_checkpoint_is_refused(dataset, graph_id, tmp_path):
    from beam_ingest.errors import CheckpointError
    ckpt = tmp_path / "ckpt"
    run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--skip_writes")
    next((ckpt / "layer3").glob("*.npz")).unlink()
    with pytest.raises(CheckpointError, match=r"layer3/\*: \d+ files, the marker says \d+"):
        run_ingest(dataset["config"], graph_id, f"--checkpoint_dir={ckpt}", "--start_layer=4", "--skip_writes")
