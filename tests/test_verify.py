"""`verify` on a good table and on deliberately damaged ones."""
import numpy as np
import pytest

from beam_ingest.cli import main as cli
from beam_ingest.store import cells, row_writer
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TS, TableStructure, run_ingest, target


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("verify") / "data"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30,
                                                                                   seed=9, empty_chunk_fraction=0))


def damage(graph_id, row_key, family, qualifier, value):
    """Overwrite one cell with a later timestamp (reads take the latest)."""
    writer = row_writer.RowWriter(target(), graph_id, TS + 1000, max_inflight=1)
    writer.write([(row_key, [(family, qualifier, value)])])
    writer.drain()


def verify(dataset, graph_id, capsys):
    code = cli(["verify", "--config", dataset["config"], "--graph_id", graph_id, "--sample", "24"])
    return code, capsys.readouterr().out


def test_good_table_verifies(dataset, graph_id, capsys):
    run_ingest(dataset["config"], graph_id)
    code, out = verify(dataset, graph_id, capsys)
    assert code == 0, out
    assert "OK: the table matches" in out and "checked all 24 layer-2 chunk(s) with input (the graph has 24, 0 without input" in out


@pytest.fixture
def built(dataset, graph_id):
    _, _, plan = run_ingest(dataset["config"], graph_id)
    return TableStructure(graph_id, plan.layout), plan.layout


def test_missing_parent_is_found(dataset, graph_id, built, capsys):
    table, layout = built
    sv = sorted(table.svs)[5]
    damage(graph_id, cells.row_key(sv), "0", b"parents", cells.encode_id(0))
    code, out = verify(dataset, graph_id, capsys)
    assert code == 1 and "MISMATCH" in out and "is at layer 0" in out


def test_wrong_children_are_found(dataset, graph_id, built, capsys):
    table, layout = built
    node = next(n for n, kids in table.children.items() if layout.layer_of(np.uint64(n)) == 2 and len(kids) > 1)
    damage(graph_id, cells.row_key(node), "0", b"children", cells.encode_ids(np.array(table.children[node][:1])))
    code, out = verify(dataset, graph_id, capsys)
    assert code == 1 and f"children of node {node} differ" in out


def test_lost_cross_edges_are_found(dataset, graph_id, built, capsys):
    table, layout = built
    node = next(iter(table.cross))
    layer = next(iter(table.cross[node]))
    damage(graph_id, cells.row_key(node), "3", cells.cross_edges_qualifier(layer),
           cells.encode_ids(np.zeros((0, 2), np.uint64)))
    code, out = verify(dataset, graph_id, capsys)
    assert code == 1 and f"atomic cross edges of node {node} differ" in out


def test_low_counter_is_found(dataset, graph_id, built, capsys):
    table, layout = built
    key = next(k for k in table.counters if b"_" not in k)
    damage(graph_id, key, "1", b"counter", cells.encode_counter(0))
    code, out = verify(dataset, graph_id, capsys)
    assert code == 1 and "does not cover segment id" in out


def test_split_root_is_found(dataset, graph_id, built, capsys):
    table, layout = built
    # re-parent a layer-2 node that has mirrored cross edges onto a new, made-up root
    node = next(n for n in table.cross if any(len(v) for v in table.cross[n].values()))
    fake_root = int(layout.root_chunk_id) | (10**6 * 256 + 7)
    damage(graph_id, cells.row_key(node), "0", b"parents", cells.encode_id(fake_root))
    code, out = verify(dataset, graph_id, capsys)
    assert code == 1 and "have different roots" in out


def test_other_config_is_a_mismatch(dataset, graph_id, built, capsys, tmp_path):
    other = tmp_path / "other.yml"
    other.write_text(open(dataset["config"]).read().replace("SPATIAL_BITS: 10", "SPATIAL_BITS: 9"))
    code = cli(["verify", "--config", str(other), "--graph_id", graph_id])
    assert code == 1 and "does not describe this config" in capsys.readouterr().out
