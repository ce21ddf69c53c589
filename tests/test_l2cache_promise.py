"""The L2 cache held to the graph's promise: a table named by --l2cache_table is ours or it is
refused (before anything is created, never deleted); exit 0 proves the cache exists with this
run's rows and no other; inputs that disagree are named; operator commands say when a table is
no graph. Each case was an observed failure of the first version of the cache."""
import shutil

import numpy as np
import pytest
import yaml

import pipeline
from beam_ingest.cli import main as cli
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import open_table, run_ingest
from test_l2cache import cache_cells, expected_cache


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return generate_segmentation(str(tmp_path_factory.mktemp("promise") / "data"), SegmentationSpec(seed=31))


@pytest.fixture(scope="module")
def other_seg(tmp_path_factory):
    """Another segmentation of the same geometry (another seed)."""
    return generate_segmentation(str(tmp_path_factory.mktemp("promise-other") / "data"), SegmentationSpec(seed=77))


def main_err(argv, capsys):
    """pipeline.main's exit status and its stderr."""
    capsys.readouterr()
    code = pipeline.main(argv)
    return code, capsys.readouterr().err


def user_table(table_id, rows=5):
    """A table of somebody else's: family cf, `rows` rows."""
    table = open_table(table_id)
    table.create(column_families={"cf": None})
    for i in range(rows):
        row = table.direct_row(b"user-%d" % i)
        row.set_cell("cf", b"q", b"value %d" % i)
        row.commit()
    return table


def row_count(table_id):
    return sum(1 for _ in open_table(table_id).read_rows())


@pytest.mark.parametrize("if_exists", ["continue", "recreate", "fail"])
def test_a_users_table_named_as_the_cache_is_refused_and_kept(seg, graph_id, capsys, if_exists):
    cache = graph_id[:40] + "-u"
    user_table(cache)
    code, err = main_err(["--config", seg["config"], "--graph_id", graph_id, "--from_segmentation",
                          f"--l2cache_table={cache}", f"--if_exists={if_exists}"], capsys)
    assert code == 2 and err.startswith(f"error: --l2cache_table: table '{cache}'"), err
    assert len(err.strip().splitlines()) == 1
    assert row_count(cache) == 5 and not open_table(graph_id).exists()


def test_a_graph_table_or_another_graphs_cache_is_refused_before_anything_is_created(seg, graph_id, capsys):
    run_ingest(seg["config"], graph_id + "-a", "--from_segmentation", f"--l2cache_table={graph_id}-ac")
    for cache, said in ((graph_id + "-a", "is the table of graph"), (graph_id + "-ac", "is the L2 cache of graph")):
        for if_exists in ("continue", "recreate"):
            code, err = main_err(["--config", seg["config"], "--graph_id", graph_id, "--from_segmentation",
                                  f"--l2cache_table={cache}", f"--if_exists={if_exists}"], capsys)
            assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
            assert not open_table(graph_id).exists()
    assert open_table(graph_id + "-ac").exists()  # never deleted


def test_a_deleted_cache_is_written_again_by_continue_not_reported_complete(seg, graph_id, capsys):
    cache = graph_id[:40] + "-c"
    argv = ["--config", seg["config"], "--graph_id", graph_id, "--from_segmentation", f"--l2cache_table={cache}"]
    assert main_err(argv, capsys)[0] == 0
    clean = cache_cells(cache)[0]
    capsys.readouterr()
    assert cli(["status", "--graph_id", graph_id]) == 0
    assert capsys.readouterr().out.startswith("table   : complete")
    open_table(cache).delete()
    assert cli(["status", "--graph_id", graph_id]) == 0
    assert f"NOT complete: its L2 cache table '{cache}' is missing" in capsys.readouterr().out
    _, counters, _ = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                "--if_exists=continue", timestamp=None)
    assert not counters.get("already_complete") and counters["l2cache_rows"] == len(clean)
    assert cache_cells(cache)[0] == clean
    # complete now: the next continue has nothing to do
    _, counters, _ = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                "--if_exists=continue", timestamp=None)
    assert counters.get("already_complete")


def test_continue_with_a_cache_of_an_earlier_graph_is_refused_and_recreate_leaves_no_stale_row(
        seg, other_seg, graph_id, capsys):
    cache = graph_id[:40] + "-c"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    open_table(graph_id).delete()
    argv = ["--config", other_seg["config"], "--graph_id", graph_id, "--from_segmentation",
            f"--l2cache_table={cache}", "--ingest_timestamp=1700000000123"]
    code, err = main_err(argv + ["--if_exists=continue"], capsys)
    assert code == 2 and "holds the L2 cache of another run of graph" in err, err
    assert not open_table(graph_id).exists()
    assert main_err(argv + ["--if_exists=recreate"], capsys)[0] == 0
    _, _, plan = run_ingest(other_seg["config"], graph_id + "-x", "--from_segmentation", timestamp=None)
    assert cache_cells(cache)[0] == expected_cache(plan.settings.data_source.WATERSHED, graph_id, plan)


def test_verify_reads_every_cache_row_key_and_names_rows_of_no_node(seg, graph_id, capsys):
    cache = graph_id[:40] + "-c"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    args = ["verify", "--config", seg["config"], "--graph_id", graph_id, "--sample", "1", "--from_segmentation",
            f"--l2cache_table={cache}"]
    capsys.readouterr()
    assert cli(args) == 0
    out = capsys.readouterr().out
    rows = len(cache_cells(cache)[0])
    assert f"L2 cache: {rows} rows for {rows} layer-2 nodes of the graph" in out, out
    stray = b"%020d" % (int(sorted(cache_cells(cache)[0])[-1]) + 1)  # an id of no node, in the layer-2 range
    row = open_table(cache).direct_row(stray)
    row.set_cell("0", b"size_nm3", np.uint32(3).tobytes())
    row.commit()
    assert cli(args) == 1
    out = capsys.readouterr().out
    assert "L2 cache holds 1 row(s) that are not layer-2 nodes of this graph" in out and stray.decode() in out
    gone = sorted(cache_cells(cache)[0])[3]
    open_table(cache).mutate_rows([_deleted(open_table(cache), stray), _deleted(open_table(cache), gone)])
    assert cli(args) == 1
    assert "L2 cache has no row for 1 layer-2 node(s)" in capsys.readouterr().out


def _deleted(table, key):
    row = table.direct_row(key)
    row.delete()
    return row


def precomputed_config(seg, watershed_of, tmp_path):
    """`seg`'s config as precomputed input (EDGES/COMPONENTS a segmentation run wrote), with
    `watershed_of`'s WATERSHED."""
    with open(seg["config"]) as fh:
        config = yaml.safe_load(fh)
    with open(watershed_of["config"]) as fh:
        config["data_source"]["WATERSHED"] = yaml.safe_load(fh)["data_source"]["WATERSHED"]
    path = tmp_path / "mixed.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_watershed_of_another_segmentation_fails_the_run_naming_chunks_unless_accepted(
        seg, other_seg, graph_id, capsys, tmp_path):
    run_ingest(seg["config"], graph_id + "-s1", "--from_segmentation")  # writes seg's EDGES/COMPONENTS/WATERSHED
    run_ingest(other_seg["config"], graph_id + "-s2", "--from_segmentation")
    config = precomputed_config(seg, other_seg, tmp_path)
    cache = graph_id[:40] + "-c"
    code, err = main_err(["--config", config, "--graph_id", graph_id, f"--l2cache_table={cache}",
                          "--ingest_timestamp=1700000000123"], capsys)
    assert code == 2, err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: data_source.WATERSHED disagrees with the graph's inputs in ") and \
        "layer-2 nodes without a voxel" in first and "--l2cache_accept_mismatch" in first, err
    assert ": 0 node(s) without voxels, 0 unknown" not in first  # only chunks that disagree are named
    _, counters, plan = run_ingest(config, graph_id, f"--l2cache_table={cache}", "--if_exists=recreate",
                                   "--l2cache_accept_mismatch")
    without, unknown = counters["l2cache_nodes_without_voxels"], counters["l2cache_unknown_svs"]
    assert without > 0 and unknown > 0
    cells, named = cache_cells(cache)
    assert counters["layer2_nodes"] - without == len(cells) == counters["l2cache_rows"]
    from beam_ingest.ops.report import format_summary
    assert "accepted by --l2cache_accept_mismatch" in format_summary(counters, plan.layout.layer_count, 1.0)
    # the same run over consistent inputs disagrees nowhere
    same = precomputed_config(seg, seg, tmp_path)
    _, counters, _ = run_ingest(same, graph_id + "-ok", f"--l2cache_table={cache}-ok")
    assert not counters.get("l2cache_nodes_without_voxels") and not counters.get("l2cache_unknown_svs")


def test_watershed_without_chunks_is_refused_before_anything_is_created(seg, graph_id, capsys, tmp_path):
    run_ingest(seg["config"], graph_id + "-s", "--from_segmentation")
    with open(seg["config"]) as fh:
        config = yaml.safe_load(fh)
    ws = config["data_source"]["WATERSHED"].replace("file://", "")
    bare = tmp_path / "bare_ws"
    bare.mkdir()
    shutil.copy(f"{ws}/info", bare / "info")
    config["data_source"]["WATERSHED"] = "file://" + str(bare)
    path = tmp_path / "bare.yml"
    path.write_text(yaml.safe_dump(config))
    code, err = main_err(["--config", str(path), "--graph_id", graph_id, f"--l2cache_table={graph_id[:40]}-c"],
                         capsys)
    assert code == 2 and err.startswith("error: data_source.WATERSHED:") and "L2 cache" in err, err
    assert not open_table(graph_id).exists() and not open_table(graph_id[:40] + "-c").exists()


@pytest.mark.parametrize("command", [
    ["inspect", "--graph_id", "CACHE", "--summary"],
    ["status", "--graph_id", "CACHE"],
    ["flush-redis", "--graph_id", "CACHE"],
    ["verify", "--config", "CONFIG", "--graph_id", "CACHE", "--from_segmentation"],
])
def test_operator_commands_pointed_at_a_cache_table_say_so(seg, graph_id, capsys, with_redis, command):
    cache = graph_id[:40] + "-c"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    capsys.readouterr()
    code = cli([seg["config"] if c == "CONFIG" else cache if c == "CACHE" else c for c in command])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --graph_id: table '{cache}' is the L2 cache of graph "), err
    assert len(err.strip().splitlines()) == 1


def test_ingest_into_a_cache_or_a_users_table_is_refused(seg, graph_id, capsys):
    cache = graph_id[:40] + "-c"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    user_table(graph_id + "-u")
    for table in (cache, graph_id + "-u"):
        for if_exists in ("continue", "recreate"):
            code, err = main_err(["--config", seg["config"], "--graph_id", table, "--from_segmentation",
                                  f"--if_exists={if_exists}"], capsys)
            assert code == 2 and err.startswith(f"error: --graph_id: table '{table}' is "), err
    assert row_count(graph_id + "-u") == 5 and open_table(cache).exists()


def test_verify_with_a_graph_table_as_the_cache_names_it(seg, graph_id, capsys):
    run_ingest(seg["config"], graph_id, "--from_segmentation")
    capsys.readouterr()
    assert cli(["verify", "--config", seg["config"], "--graph_id", graph_id, "--from_segmentation", "--sample", "1",
                f"--l2cache_table={graph_id}"]) == 1
    assert f"is not the cache of '{graph_id}': it is the table of graph" in capsys.readouterr().out


def test_a_cache_of_over_5000_nodes_with_default_options_from_segmentation_and_precomputed(
        tmp_path_factory, graph_id, capsys):
    """At the size where the first version failed: bundles of thousands of cache rows, sent in
    batches of the default --write_batch_rows, from both inputs; the two caches are equal."""
    data = generate_segmentation(str(tmp_path_factory.mktemp("big") / "data"), SegmentationSpec(
        seed=5, chunks=(4, 4, 3), chunk_size=(32, 32, 16), voxels_per_sv=40.0, object_span=1, unmapped_fraction=0.2))
    first, again = graph_id[:38] + "-seg", graph_id[:38] + "-pre"
    assert main_err(["--config", data["config"], "--graph_id", first, "--from_segmentation",
                     f"--l2cache_table={first}-c"], capsys)[0] == 0
    cells = cache_cells(f"{first}-c")[0]
    assert len(cells) >= 5000
    assert main_err(["--config", data["config"], "--graph_id", again, f"--l2cache_table={again}-c"], capsys)[0] == 0
    assert cache_cells(f"{again}-c")[0] == cells
