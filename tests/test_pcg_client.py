"""Every table opens in PyChunkedGraph: read through kvdbclient, PyChunkedGraph 3.x's own client.

For tables written with `--pcg_version 2` and `3`, from precomputed files, `--raw` and
`--from_segmentation`: `read_table_meta()` returns the meta we wrote; every row PyChunkedGraph
may read is read without a column filter (each column through its attribute registry); and the
parents, children, atomic cross edges, family-4 edges and counters it decodes pass the same
exactness checks against the independent references as our own decoding does.

kvdbclient's registry is a superset of PyChunkedGraph 2.x's for every column an ingest writes
(0:parents, 0:children, 0:meta, 0:version, 1:counter, 3:atomic_cross_edges_<n>), so it speaks
for both versions.
"""
import json

import numpy as np
import pytest
from kvdbclient import BigTableClient, BigTableConfig

import pcg_standins
import pipeline
from beam_ingest.cli import main as cli
from beam_ingest.launch.plan import plan_ingest
from beam_ingest.store import cells, table_state
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import TS, TableStructure, open_table, run_ingest, state_rows, target
from reference import Reference
from test_end_to_end import check_against_reference
from test_raw import raw_dataset
from test_runs import cells_of
from test_segmentation import precomputed_config
from test_v3 import expected_lifted, table_lifted


def check_through_pcg(config, graph_id, layout, pcg_version, reference_config=None):
    """The table as PyChunkedGraph reads it equals the reference (and our own decoding)."""
    table, ref = check_against_reference(reference_config or config, graph_id, layout, via="pcg")
    read = table.pcg
    try:
        settings = plan_ingest(config, graph_id).settings
        meta = read.meta
        assert type(meta) is pcg_standins.ChunkedGraphMeta  # PyChunkedGraph's class names, not a placeholder
        gc, ds = meta.graph_config, meta.data_source
        assert type(gc) is pcg_standins.GraphConfig and type(ds) is pcg_standins.DataSource
        assert gc.ID == graph_id and list(gc.CHUNK_SIZE) == list(settings.graph_config.CHUNK_SIZE)
        assert (gc.FANOUT, gc.LAYER_ID_BITS, gc.SPATIAL_BITS) == (2, 8, settings.graph_config.SPATIAL_BITS)
        sds = settings.data_source
        assert tuple(ds) == (sds.EDGES, sds.COMPONENTS, sds.WATERSHED, sds.DATA_VERSION, sds.CV_MIP)
        assert read.version == cells.VERSION_STRINGS[pcg_version]
        ours = TableStructure(graph_id, layout)
        assert (table.parent, table.children, table.cross) == (ours.parent, ours.children, ours.cross)
        assert (table.counters, table.layer1_counters) == (ours.counters, ours.layer1_counters)
        if pcg_version == 3:
            assert table.lifted and table_lifted(graph_id, layout, table) == dict(expected_lifted(ref))
            top = {}
            for sv in table.svs:  # a layer-1 counter per chunk with SVs: its largest segment id
                chunk = int(layout.chunk_of(np.uint64(sv), 1))
                top[chunk] = max(top.get(chunk, 0), int(layout.segment_of(np.uint64(sv), 1)))
            assert table.layer1_counters == {cells.counter_key(c): v for c, v in top.items()}
        else:
            assert not table.lifted and not table.layer1_counters
        # the server's own id allocation reads: the root chunk's 256 counters cover every root id
        assert read.max_node_id(int(layout.root_chunk_id), root_chunk=True) == max(table.roots)
        l2 = max(n for n in table.children if int(layout.layer_of(np.uint64(n))) == 2)
        assert read.max_node_id(int(layout.chunk_of(np.uint64(l2), 2))) >= l2
    finally:
        read.close()
    return table, ref


@pytest.mark.parametrize("pcg_version", [2, 3])
def test_precomputed_tables_open_in_pcg(tmp_path, graph_id, pcg_version):
    info = generate(str(tmp_path / "data"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=21))
    _, _, plan = run_ingest(info["config"], graph_id, f"--pcg_version={pcg_version}")
    check_through_pcg(info["config"], graph_id, plan.layout, pcg_version)


@pytest.mark.parametrize("pcg_version", [2, 3])
def test_raw_tables_open_in_pcg(tmp_path, graph_id, pcg_version):
    info = raw_dataset(tmp_path, 4, seed=22)
    _, _, plan = run_ingest(info["config"], graph_id, "--raw", f"--pcg_version={pcg_version}")
    check_through_pcg(info["config"], graph_id, plan.layout, pcg_version)


@pytest.mark.parametrize("pcg_version", [2, 3])
def test_segmentation_tables_open_in_pcg(tmp_path, graph_id, pcg_version):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=23))
    _, _, plan = run_ingest(info["config"], graph_id, "--from_segmentation", f"--pcg_version={pcg_version}")
    check_through_pcg(info["config"], graph_id, plan.layout, pcg_version,
                      reference_config=precomputed_config(info, tmp_path))


def test_the_ingest_keeps_its_own_cells_in_a_row_pcg_never_reads(tmp_path, graph_id):
    info = generate(str(tmp_path / "data"), SyntheticSpec(chunks=(2, 2, 1), svs_per_chunk=20, seed=24))
    run_ingest(info["config"], graph_id)
    rows = state_rows(graph_id)
    assert set(rows.read(cells.META_ROW)) == {cells.META}
    assert set(rows.read(cells.VERSION_ROW)) == {cells.VERSION}
    own = rows.read()
    assert set(own) == {table_state.RUN, table_state.COMPLETE}  # the claim was released
    assert json.loads(own[table_state.COMPLETE][0])["identity"] == json.loads(own[table_state.RUN][0])["identity"]
    key = cells.BOOKKEEPING_ROW  # none of the keys PyChunkedGraph reads
    assert not key.isdigit() and key not in (b"meta", b"version", b"params", b"ioperations")
    assert not key.startswith((b"i", b"f"))


def test_no_column_outside_pcgs_registry_reaches_a_row_it_reads(graph_id):
    """The rule where rows are made: the launcher's small rows refuse a foreign column in a
    row PyChunkedGraph reads, and the graph rows' encoder writes only registry columns."""
    from google.cloud.bigtable_v2.types import MutateRowsRequest

    from beam_ingest.hierarchy.types import Groups, Rows
    from beam_ingest.store import wire
    from beam_ingest.store.admin import create_table
    create_table(open_table(graph_id))
    rows = state_rows(graph_id)
    with pytest.raises(ValueError, match=r"0:beam_ingest_run are not PyChunkedGraph's.*'beam_ingest'"):
        rows.write({table_state.RUN: b"{}"}, TS, row_key=cells.META_ROW)
    with pytest.raises(ValueError, match="0:beam_ingest_complete"):
        cells.check_pcg_columns(cells.row_key(5), [(cells.FAMILY_HIERARCHY, table_state.COMPLETE)])
    rows.write({table_state.RUN: b"{}"}, TS)  # its own row takes them
    assert cells.is_pcg_column("3", b"atomic_cross_edges_7") and cells.is_pcg_column("4", b"cross_edges_7")
    assert not cells.is_pcg_column("0", b"atomic_cross_edges_7") and not cells.is_pcg_column("0", b"x")
    batch = Rows(node_ids=np.array([5, 6], np.uint64), parent_ids=np.array([77, 77], np.uint64),
                 children_of=np.array([77], np.uint64), children=Groups(np.array([5, 6], np.uint64), np.array([0, 2])),
                 cross_node=np.array([77], np.uint64), cross_own=np.array([5], np.uint64),
                 cross_other=np.array([9], np.uint64), cross_layer=np.array([3]),
                 counter_chunks=np.array([1, 2], np.uint64), counter_values=np.array([3, 4]),
                 counter_buckets=np.array([-1, 7]), lifted_node=np.array([77], np.uint64),
                 lifted_layer=np.array([3]), lifted_partner=np.array([99], np.uint64))
    parsed = MutateRowsRequest.pb().FromString(wire.encode_rows(batch, TS * 1000).payload)
    columns = {(m.set_cell.family_name, m.set_cell.column_qualifier) for e in parsed.entries for m in e.mutations}
    assert {f for f, _ in columns} == {"0", "1", "3", "4"}
    assert all(cells.is_pcg_column(f, q) for f, q in columns), columns


# Tables written before this change: the same cells, in the `meta` row.

def make_legacy(graph_id, claim_age_s=None):
    """Rewrite a table into the layout earlier versions wrote: the ingest's cells in family 0
    of the `meta` row, at the timestamps they had, and no row of their own."""
    rows = state_rows(graph_id)
    own = rows.read()
    mutations = [table_state._delete(table_state.CLAIM), table_state._delete(table_state.CLAIM_BY)]
    mutations += [table_state._set(q, v, ms) for q, (v, ms) in own.items() if q in (table_state.RUN, table_state.COMPLETE)]
    if claim_age_s is not None:
        import time
        now = int((time.time() - claim_age_s) * 1000)
        mutations += [table_state._set(table_state.CLAIM, b"0123abcd", now),
                      table_state._set(table_state.CLAIM_BY, json.dumps({"host": "elsewhere", "pid": 1}).encode(), now)]
    rows._call("test", lambda client: client.mutate_row(request={
        "table_name": rows.table_name, "row_key": cells.META_ROW, "mutations": mutations}))
    from google.cloud.bigtable_v2.types import Mutation
    rows._call("test", lambda client: client.mutate_row(request={
        "table_name": rows.table_name, "row_key": cells.BOOKKEEPING_ROW,
        "mutations": [Mutation(delete_from_row=Mutation.DeleteFromRow())]}))
    return own


def pcg_opens(graph_id):
    t = target()
    client = BigTableClient(graph_id, config=BigTableConfig(PROJECT=t.project, INSTANCE=t.instance))
    try:
        with pcg_standins.registered():
            return client.read_table_meta()
    finally:
        client.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("legacy") / "data"),
                    SyntheticSpec(chunks=(5, 3, 4), svs_per_chunk=20, seed=25))


def test_a_legacy_table_fails_verify_and_continue_moves_its_cells(dataset, graph_id, capsys):
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    _, _, plan = run_ingest(dataset["config"], graph_id)
    own = make_legacy(graph_id)
    with pytest.raises(KeyError, match="Unknown key 0:beam_ingest_"):  # what PyChunkedGraph saw
        pcg_opens(graph_id)
    verify = ["verify", "--config", dataset["config"], "--graph_id", graph_id, "--sample", "5"]
    assert cli(verify) == 1
    out = capsys.readouterr().out
    assert "cannot be opened by PyChunkedGraph" in out and "0:beam_ingest_complete" in out
    assert "0:beam_ingest_run" in out and "--if_exists=continue" in out
    # status reads the legacy completion mark, and says that PyChunkedGraph cannot open the table yet
    assert cli(["status", "--graph_id", graph_id]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line == ("table   : complete, but written by an earlier version of this ingest: PyChunkedGraph cannot "
                    "open it until a rerun with --if_exists=continue moves the ingest's own cells out of its meta "
                    "row (nothing else is rewritten)")

    args = ["--config", dataset["config"], "--graph_id", graph_id, "--if_exists=continue"]
    assert pipeline.main(args) == 0
    assert "is complete already" in capsys.readouterr().out
    rows = state_rows(graph_id)
    assert set(rows.read(cells.META_ROW)) == {cells.META}
    assert rows.read() == own  # the same identity and completion mark, at their timestamps
    assert pcg_opens(graph_id).graph_config.ID == graph_id
    assert cells_of(graph_id) == cells_of(clean)
    assert cli(verify) == 0
    capsys.readouterr()
    assert cli(["status", "--graph_id", graph_id]) == 0
    assert capsys.readouterr().out.startswith("table   : complete: every chunk proven written")
    check_through_pcg(dataset["config"], graph_id, plan.layout, 2)


def test_an_interrupted_legacy_table_is_finished_by_continue(dataset, graph_id, capsys):
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=4")
    own = make_legacy(graph_id)
    assert table_state.COMPLETE not in own
    assert pipeline.main(["--config", dataset["config"], "--graph_id", graph_id, "--if_exists=continue"]) == 0
    rows = state_rows(graph_id)
    assert set(rows.read(cells.META_ROW)) == {cells.META}
    assert rows.read()[table_state.RUN] == own[table_state.RUN]
    assert cells_of(graph_id) == cells_of(clean)
    pcg_opens(graph_id)


def test_a_legacy_launchers_live_claim_is_respected(dataset, graph_id, capsys):
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=3")
    make_legacy(graph_id, claim_age_s=5)
    capsys.readouterr()
    args = ["--config", dataset["config"], "--graph_id", graph_id, "--if_exists=continue"]
    assert pipeline.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "launcher of an earlier version" in err[0], err
    assert table_state.CLAIM in state_rows(graph_id).legacy_cells()  # left alone
    assert table_state.CLAIM not in state_rows(graph_id).read()  # ours was released
    make_legacy(graph_id, claim_age_s=table_state.CLAIM_TTL_S + 60)  # its launcher is long gone
    assert pipeline.main(args) == 0
    assert not state_rows(graph_id).legacy_cells()
    pcg_opens(graph_id)


def test_killed_between_run_record_and_meta_starts_afresh(dataset, graph_id):
    """The run record is written before `meta`: a table with a record and no meta is a run
    killed in between, and `continue` starts it afresh."""
    from beam_ingest.store.admin import create_table
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean)
    create_table(open_table(graph_id))
    state_rows(graph_id).write({table_state.RUN: b'{"identity": "x", "graph_id": "g", "ingest_ms": 1, '
                                                 b'"table_nonce": "n", "inputs": {}}'}, TS)
    run_ingest(dataset["config"], graph_id, "--if_exists=continue")
    assert cells_of(graph_id) == cells_of(clean)


def test_the_demo_table_opens_with_the_documented_snippets(tmp_path, graph_id, capsys):
    """docs/pychunkedgraph.md: the demo's table, read by examples/open_in_pcg.py and by the
    snippet a user pastes, both through kvdbclient."""
    import os
    import re
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert cli(["demo", "--graph_id", graph_id, "--chunks", "2", "2", "2", "--out", str(tmp_path / "demo"),
                "--use_configured_bigtable"]) == 0
    sv = re.search(r"the chain of SV (\d+) up to its root", capsys.readouterr().out).group(1)
    t = target()
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "open_in_pcg.py"), graph_id, sv,
                          t.project, t.instance], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == f"opened {graph_id}: meta _Surrogate, table version 2.0.0", out
    assert lines[1] == f"  {sv} (supervoxel)" and lines[-1].endswith("(root)") and len(lines) >= 4, out
    with open(os.path.join(root, "docs", "pychunkedgraph.md")) as fh:
        doc = fh.read()
    snippet = re.search(r"The heart of .*?```python\n(.*?)```", doc, re.S).group(1)
    snippet = snippet.replace("72057594037927937", sv).replace('"demo_graph"', repr(graph_id))
    scope = {}
    exec(compile(snippet, "docs/pychunkedgraph.md", "exec"), scope)
    printed = capsys.readouterr().out.split()
    assert printed[0] == "2.0.0" and int(printed[1]) == int(lines[2].split(":")[0])  # the SV's parent
    scope["client"].close()
