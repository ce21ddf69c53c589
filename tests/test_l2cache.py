"""`--l2cache_table`: CAVE's L2 cache written by the ingest itself, for every input.

The features themselves are compared with a per-node reference in test_l2cache_features.py;
here: the run wires the right voxels, parents and chunk boxes to them for every layer-2 chunk,
creates the table as the cache service expects (read through kvdbclient), covers it with
--if_exists and the completion proof, and writes the same cells again on a rerun or a
continue after a failure.
"""
import pickle

import numpy as np
import pytest
from cloudvolume import CloudVolume

import pipeline
from beam_ingest.l2cache.features import CELL_DTYPES, chunk_features, chunk_volume, row_cells
from beam_ingest.store.reader import read_all
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import open_table, run_ingest, state_rows, target
from l2cache_reference import QUALIFIERS, reference_rows
from test_runs import cells_of




@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return generate_segmentation(str(tmp_path_factory.mktemp("l2") / "data"), SegmentationSpec(seed=31))


def cache_cells(table_id):
    """{row key: {qualifier: value}} of the cache table's node rows, and its meta, version and
    own (run record, completion mark) rows."""
    rows = read_all(open_table(table_id))
    named = {k: rows.pop(k) for k in (b"meta", b"version", b"beam_ingest")}
    cells = {key: {q: found[0][0] for (family, q), found in row.items()} for key, row in rows.items()}
    for row in rows.values():
        assert {family for family, _ in row} == {"0"}
        assert len({ts for found in row.values() for _, ts in found}) == 1
    return cells, named


def parents_of_svs(graph_id, layout):
    """{supervoxel: layer-2 parent} read back from the graph table."""
    out = {}
    for key, row in read_all(open_table(graph_id)).items():
        if not key.isdigit():
            continue
        node = np.uint64(int(key))
        if int(layout.layer_of(np.array([node]))[0]) == 1 and ("0", b"parents") in row:
            out[int(node)] = int(np.frombuffer(row[("0", b"parents")][0][0], np.uint64)[0])
    return out


def expected_cache(watershed_url, graph_id, plan):
    """Every layer-2 chunk's rows, from the WATERSHED volume and the graph's own parents."""
    layout = plan.layout
    parents = parents_of_svs(graph_id, layout)
    svs = np.array(sorted(parents), np.uint64)
    l2 = np.array([parents[int(s)] for s in svs], np.uint64)
    vol = CloudVolume(watershed_url, mip=plan.settings.data_source.CV_MIP, progress=False)
    offset, size, chunk = (np.asarray(v) for v in (layout.voxel_offset, layout.voxel_counts, layout.chunk_size))
    out = {}
    for coord in np.ndindex(*layout.n_chunks):
        start = offset + np.asarray(coord) * chunk
        stop = np.minimum(start + chunk, offset + size)
        block = np.asarray(vol[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]])[..., 0]
        labels = chunk_volume(block, layout.chunk_size, svs, l2)
        for key, cells in row_cells(chunk_features(labels, plan.resolution)):
            assert key not in out  # a layer-2 node lies in one chunk
            out[key] = dict(cells)
    return out


def test_segmentation_run_writes_the_cache_of_every_layer2_node(seg, graph_id):
    cache = graph_id[:40] + "-l2"
    _, counters, plan = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                   "--l2cache_cv_path=graphene://https://example.org/segmentation/table/g")
    cells, named = cache_cells(cache)
    expected = expected_cache(plan.settings.data_source.WATERSHED, graph_id, plan)
    assert cells == expected and len(cells) > 100
    assert counters["l2cache_rows"] == len(cells)
    assert state_rows(graph_id).completion_mark()["l2cache_rows"] == len(cells)  # the proof covers the cache
    # every layer-2 node of the graph with a voxel has its row, and no other id (no row for 0)
    layer2 = set(parents_of_svs(graph_id, plan.layout).values())
    assert {int(k) for k in cells} == layer2
    meta = pickle.loads(named[b"meta"][("0", b"meta")][0][0])
    assert meta["graph_id"] == graph_id and meta["cv_path"].startswith("graphene://")
    assert meta["timestamp"] == "2023-11-14 22:13:20"  # the ingest's time (TS), UTC
    # non-PCA cells equal the per-node reference, for a sample of chunks' nodes
    layout = plan.layout
    parents = parents_of_svs(graph_id, layout)
    vol = CloudVolume(plan.settings.data_source.WATERSHED, progress=False)
    block = np.asarray(vol[:, :, :])[..., 0]
    offset = np.asarray(layout.voxel_offset) - np.asarray(vol.bounds.minpt)
    chunk = np.asarray(layout.chunk_size)
    sub = block[offset[0]:offset[0] + chunk[0], offset[1]:offset[1] + chunk[1], offset[2]:offset[2] + chunk[2]]
    labels = chunk_volume(sub, layout.chunk_size, np.array(sorted(parents), np.uint64),
                          np.array([parents[s] for s in sorted(parents)], np.uint64))
    for key, ref in reference_rows(labels, plan.resolution).items():
        for q in QUALIFIERS[:6]:
            assert cells[key][q] == ref[q], (key, q)


@pytest.mark.parametrize("inflight, runner", [
    (1, []), (4, []),
    (4, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
])
def test_cache_bundles_spanning_many_batches_are_counted_as_acknowledged(seg, graph_id, inflight, runner):
    """Every bundle of cache rows is sent in many MutateRows batches (some acknowledged while
    the bundle is still being processed): each chunk is proven by its own acknowledgements.
    In process and in worker processes (Dask's per-element acknowledgements: test_dask.py)."""
    cache = graph_id[:40] + "-l2"
    _, counters, plan = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                   "--write_batch_rows=7", f"--max_inflight_writes={inflight}", *runner)
    cells, _ = cache_cells(cache)
    assert len(cells) > 10 * 7  # many batches
    assert cells == expected_cache(plan.settings.data_source.WATERSHED, graph_id, plan)
    assert counters["l2cache_rows"] == len(cells) == state_rows(graph_id).completion_mark()["l2cache_rows"]


def test_precomputed_input_reads_watershed_for_the_same_cache(seg, graph_id):
    """The precomputed path reads each chunk's WATERSHED block in the layer-2 stage: over the
    volume and files a segmentation run wrote, its cache equals that run's."""
    first, again = graph_id[:38] + "-seg", graph_id[:38] + "-pre"
    run_ingest(seg["config"], first, "--from_segmentation", f"--l2cache_table={first}-c")
    _, counters, _ = run_ingest(seg["config"], again, f"--l2cache_table={again}-c")
    assert cache_cells(f"{again}-c")[0] == cache_cells(f"{first}-c")[0]
    assert counters["l2cache_rows"] > 0


def test_kvdbclient_reads_the_cache_with_the_documented_dtypes(seg, graph_id):
    from kvdbclient import BigTableClient, BigTableConfig, attributes, serializers
    cache = graph_id[:40] + "-l2"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    t = target()
    client = BigTableClient(cache, config=BigTableConfig(PROJECT=t.project, INSTANCE=t.instance, ADMIN=False,
                                                         READ_ONLY=True))
    try:
        meta = client.read_table_meta()
        assert meta["graph_id"] == graph_id
        shapes = {b"rep_coord_nm": (3,), b"chunk_intersect_count": (2, 3), b"pca": (-1, 3)}
        attrs = [attributes._Attribute(key=q, family_id="0", serializer=serializers.NumPyArray(
            dtype=np.dtype(CELL_DTYPES[q]), shape=shapes.get(q))) if q in shapes or q == b"pca_val" else
            attributes._Attribute(key=q, family_id="0", serializer=serializers.NumPyValue(
                dtype=np.dtype(CELL_DTYPES[q]))) for q in QUALIFIERS]
        cells, _ = cache_cells(cache)
        ids = np.array(sorted(int(k) for k in cells), np.uint64)
        read = client.read_nodes(node_ids=ids, properties=attrs)
        assert len(read) == len(ids)
        for node in ids[:: max(1, len(ids) // 25)]:
            row = read[int(node)] if int(node) in read else read[node]
            got = {a.key: row[a][0].value for a in attrs}
            raw = cells[b"%020d" % int(node)]
            assert int(got[b"size_nm3"]) == int(np.frombuffer(raw[b"size_nm3"], np.uint32)[0]) > 0
            assert got[b"rep_coord_nm"].shape == (3,) and got[b"chunk_intersect_count"].shape == (2, 3)
            assert got[b"pca"].shape in ((3, 3), (0, 3))
    finally:
        client.close()


def test_rerun_and_continue_after_a_failure_write_the_same_cache(seg, graph_id):
    cache = graph_id[:40] + "-l2"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    clean = cache_cells(cache)[0]
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                   "--if_exists=recreate", "--fail_at_layer=3")
    _, counters, _ = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                "--if_exists=continue")
    assert cache_cells(cache)[0] == clean
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}", "--if_exists=recreate")
    assert cache_cells(cache)[0] == clean


def test_if_exists_covers_the_cache_table(seg, graph_id, capsys):
    cache = graph_id[:40] + "-l2"
    run_ingest(seg["config"], graph_id + "-first", "--from_segmentation", f"--l2cache_table={cache}")
    argv = ["--config", seg["config"], "--graph_id", graph_id, "--from_segmentation", f"--l2cache_table={cache}"]
    assert pipeline.main(argv) == 2  # the cache table exists: refused before the graph's table is created
    assert "error: --l2cache_table: table" in capsys.readouterr().err
    assert not open_table(graph_id).exists()
    # continue into another graph's cache is refused, naming that graph
    assert pipeline.main(argv + ["--if_exists=continue"]) != 0
    assert f"L2 cache of graph '{graph_id}-first'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--l2cache_table=GRAPH"], "--l2cache_table: 'GRAPH' is the graph's own table"),
    (["--l2cache_cv_path=x"], "--l2cache_cv_path: only with --l2cache_table"),
    (["--l2cache_table=bad table"], "--l2cache_table: 'bad table' is not a valid Bigtable table id"),
    (["--l2cache_table=c", "--start_layer=3", "--checkpoint_dir=/tmp/x", "--if_exists=continue"],
     "--start_layer: a restart above layer 2 cannot write the L2 cache"),
])
def test_cache_option_mistakes_are_one_error_line(seg, graph_id, capsys, extra, message):
    extra = [e.replace("GRAPH", graph_id) for e in extra]
    assert pipeline.main(["--config", seg["config"], "--graph_id", graph_id, "--from_segmentation"] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.replace('GRAPH', graph_id)}"), err
    assert not open_table(graph_id).exists()


def test_skip_writes_computes_the_cache_and_writes_no_table(seg, graph_id):
    cache = graph_id[:40] + "-l2"
    _, counters, _ = run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}",
                                "--skip_writes")
    assert counters["l2cache_rows"] > 0
    assert not open_table(cache).exists()


def test_cells_of_graph_table_do_not_change_with_the_cache(seg, graph_id):
    run_ingest(seg["config"], graph_id + "-a", "--from_segmentation")
    run_ingest(seg["config"], graph_id + "-b", "--from_segmentation", f"--l2cache_table={graph_id[:40]}-l2")
    assert cells_of(graph_id + "-b") == cells_of(graph_id + "-a")


def test_verify_checks_the_cache_rows_of_the_sampled_chunks(seg, graph_id, capsys):
    from beam_ingest.cli import main as cli
    cache = graph_id[:40] + "-l2"
    run_ingest(seg["config"], graph_id, "--from_segmentation", f"--l2cache_table={cache}")
    args = ["verify", "--config", seg["config"], "--graph_id", graph_id, "--sample", "50", "--from_segmentation",
            f"--l2cache_table={cache}"]
    capsys.readouterr()
    assert cli(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    checked = int(out.split(" L2 cache rows")[0].rsplit(", ", 1)[1])
    assert checked == len(cache_cells(cache)[0])  # every chunk sampled: every row compared
    key = sorted(cache_cells(cache)[0])[7]
    row = open_table(cache).direct_row(key)
    row.set_cell("0", b"size_nm3", np.uint32(1).tobytes(), timestamp=None)
    row.commit()
    assert cli(args) == 1
    assert f"L2 cache row {key.decode()} differs in size_nm3" in capsys.readouterr().out
    assert cli(args[:-1] + [f"--l2cache_table={graph_id}"]) == 1  # the graph table is no cache
    assert "is not the cache of" in capsys.readouterr().out


def test_raw_input_reads_watershed_for_the_cache(tmp_path, graph_id):
    """--raw: the layer-2 stage reads each chunk's WATERSHED block (painted here with the
    dataset's supervoxels, as a real watershed holds them) and writes its cache rows."""
    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    info = generate(str(tmp_path / "raw"), SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=20, seed=45, raw=True,
                                                         data_version=4))
    _, _, plan = run_ingest(info["config"], graph_id + "-plain", "--raw")
    layout = plan.layout
    svs = np.array(sorted(parents_of_svs(graph_id + "-plain", layout)), np.uint64)
    chunk_of = layout.coords_of(svs, 1)
    size, chunk = np.asarray(layout.voxel_counts), np.asarray(layout.chunk_size)
    painted = np.zeros(tuple(size), np.uint64)
    for coord in np.ndindex(*layout.n_chunks):
        mine = svs[np.all(chunk_of == np.asarray(coord), axis=1)]
        lo = np.asarray(coord) * chunk
        hi = np.minimum(lo + chunk, size)
        if len(mine) == 0:
            continue
        x, y, z = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        painted[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = mine[(x // 5 + 3 * (y // 4) + 7 * (z // 3)) % len(mine)]
    watershed = plan.settings.data_source.WATERSHED
    vol = CloudVolume(watershed, mip=plan.settings.data_source.CV_MIP, progress=False)
    offset = np.asarray(layout.voxel_offset)
    vol[offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1], offset[2]:offset[2] + size[2]] = painted
    cache = graph_id[:40] + "-l2"
    _, counters, plan = run_ingest(info["config"], graph_id, "--raw", f"--l2cache_table={cache}")
    cells, _ = cache_cells(cache)
    assert cells == expected_cache(watershed, graph_id, plan) and counters["l2cache_rows"] == len(cells) > 50


def test_progress_and_status_show_the_cache_chunks(seg, graph_id, with_redis, capsys, caplog):
    """The status table (Redis) has a row for the cache's chunks, right after layer 2, counted
    as their rows are acknowledged: here by a run that failed above layer 2."""
    import logging

    from beam_ingest.cli import main as cli
    caplog.set_level(logging.INFO, logger="beam_ingest.pipeline.progress")
    args = ["--from_segmentation", f"--l2cache_table={graph_id}-l2"]
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(seg["config"], graph_id, *args, "--fail_at_layer=3")
    _, _, plan = run_ingest(seg["config"], graph_id + "-b", *args, "--skip_writes")
    chunks = plan.layout.chunk_count(2)
    assert any(r.getMessage().startswith(f"L2 cache: {chunks} / {chunks} chunks done in ")
               for r in caplog.records)  # the launcher's line
    capsys.readouterr()
    assert cli(["status", "--graph_id", graph_id]) == 0
    *lines, table_line = capsys.readouterr().out.strip().splitlines()
    assert lines[:3] == [f"2       : {chunks} / {chunks}", f"l2cache : {chunks} / {chunks}",
                         f"3       : 0 / {plan.layout.chunk_count(3)}"]
    assert table_line.startswith("table   : NOT complete")
