"""Tables for PyChunkedGraph 3.x (`--pcg_version 3`, docs/table-format.md, version 3).

The expected family-4 cells are computed here from the union-find reference's hierarchy
straight from the definition, with plain Python: for a non-root node X at layer c, the rows
of `4:cross_edges_<l>` are `[X, A]` for every matched atomic edge `[a, b]` of layer l on
X's layer-2 descendants, A being b's highest ancestor at a layer <= c.
"""
from collections import defaultdict

import numpy as np
import pytest

from beam_ingest.store import cells
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TableStructure, open_table, run_ingest
from reference import Reference
from test_end_to_end import SHAPES, check_against_reference
from test_runs import cells_of

V3_SHAPES = {**SHAPES, "4x3x2": SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=6)}


def expected_lifted(ref: Reference):
    """`{(X as (layer, leaves), l): {(X, A) as (layer, leaves) pairs}}` from the definition."""
    ancestors = defaultdict(list)  # sv -> [(layer, leaves)] ascending by layer
    for layer, leaves in sorted(ref.nodes, key=lambda n: n[0]):
        for sv in leaves:
            ancestors[sv].append((layer, leaves))
    l2_of = {sv: chain[0] for sv, chain in ancestors.items()}
    stored = set()  # every atomic cross edge (a, b, l) stored on a layer-2 node
    for leaves, by_layer in ref.l2_cross.items():
        for layer, pairs in by_layer.items():
            stored.update((a, b, layer) for a, b in pairs)
    out = defaultdict(set)
    for a, b, l in stored:
        if (b, a, l) not in stored:
            continue  # a one-sided copy: no family-4 row
        for x in ancestors[a]:
            c = x[0]
            if c == ref.layer_count or c > l:
                continue  # roots get none; a node above l holds no layer-l edge
            partner = max((n for n in ancestors[b] if n[0] <= c), key=lambda n: n[0])
            out[(x, l)].add((x, partner))
        assert l2_of[a][0] == 2
    return out


def table_lifted(graph_id, layout, table: TableStructure):
    """The same shape read from the table's family 4 (and checks of its encoding)."""
    out = {}
    layer_of = lambda n: int(layout.layer_of(np.uint64(n)))
    for node, by_layer in table.lifted.items():
        for l, rows in by_layer.items():
            assert len(rows) > 0
            assert np.array_equal(rows, np.unique(rows, axis=0)), f"{node} cross_edges_{l}: rows not ascending and distinct"
            assert np.all(rows[:, 0] == node)
            assert layer_of(node) <= l < layout.layer_count
            x = (layer_of(node), table.leaves_of(node))
            out[(x, l)] = {(x, (layer_of(p), table.leaves_of(p))) for p in rows[:, 1].tolist()}
    return out


@pytest.mark.parametrize("shape", list(V3_SHAPES))
def test_v3_table_matches_the_definition(tmp_path, graph_id, shape):
    info = generate(str(tmp_path / "data"), V3_SHAPES[shape])
    _, counters, plan = run_ingest(info["config"], graph_id, "--pcg_version=3")
    layout = plan.layout
    table, ref = check_against_reference(info["config"], graph_id, layout)  # v2 cells unchanged
    assert table.raw[b"version"][("0", b"version")][0][0] == b"3.1.7"
    assert table_lifted(graph_id, layout, table) == dict(expected_lifted(ref))
    assert counters["completion_proven"] == 1


def test_v3_adds_family_4_and_layer1_counters(tmp_path, graph_id):
    info = generate(str(tmp_path / "data"), SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=30, seed=8))
    _, _, plan = run_ingest(info["config"], graph_id, "--pcg_version=3")
    layout = plan.layout
    families = open_table(graph_id).list_column_families()
    assert set(families) == {"0", "1", "2", "3", "4"}
    assert families["3"].gc_rule is None and families["4"].gc_rule is None
    table = TableStructure(graph_id, layout)
    top = defaultdict(int)
    for sv in table.svs:
        chunk = int(layout.chunk_of(np.uint64(sv), 1))
        top[chunk] = max(top[chunk], int(layout.segment_of(np.uint64(sv), 1)))
    assert top  # every layer-1 chunk with SVs has a counter equal to its largest segment id
    assert table.layer1_counters == {cells.counter_key(c): v for c, v in top.items()}


def test_v2_has_no_v3_cells(tmp_path, graph_id):
    info = generate(str(tmp_path / "data"), SyntheticSpec(chunks=(2, 2, 1), svs_per_chunk=20, seed=9))
    _, _, plan = run_ingest(info["config"], graph_id)
    table = TableStructure(graph_id, plan.layout)
    assert not table.layer1_counters
    assert not any(fam == "4" for cols in table.raw.values() for fam, _ in cols)
    assert table.raw[b"version"][("0", b"version")][0][0] == b"2.0.0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("v3") / "data"),
                    SyntheticSpec(chunks=(5, 3, 4), svs_per_chunk=30, seed=11))


def test_v3_multiprocess_and_recovery_equal_a_clean_run(dataset, graph_id):
    clean = graph_id + "-clean"
    run_ingest(dataset["config"], clean, "--pcg_version=3")
    run_ingest(dataset["config"], graph_id + "-mp", "--pcg_version=3", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2")
    assert cells_of(graph_id + "-mp") == cells_of(clean)
    broken = graph_id + "-broken"
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(dataset["config"], broken, "--pcg_version=3", "--fail_at_layer=4")
    run_ingest(dataset["config"], broken, "--pcg_version=3", "--if_exists=continue", timestamp=None)
    assert cells_of(broken) == cells_of(clean)


def test_continue_refuses_to_mix_versions(dataset, graph_id):
    from beam_ingest.errors import TableError
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(dataset["config"], graph_id, "--fail_at_layer=3")
    with pytest.raises(TableError, match=r"--pcg_version=3.*version 2\.0\.0"):
        run_ingest(dataset["config"], graph_id, "--pcg_version=3", "--if_exists=continue", timestamp=None)


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """A version-3 table of a 4x3x2 dataset (all chunks sampled by `verify --sample 24`)."""
    import itertools
    info = generate(str(tmp_path_factory.mktemp("v3verify") / "data"),
                    SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=30, seed=9, empty_chunk_fraction=0))
    return info, itertools.count()


def _v3_table(verified, graph_id):
    info, ids = verified
    name = f"{graph_id}-{next(ids)}"
    _, _, plan = run_ingest(info["config"], name, "--pcg_version=3")
    return info, name, TableStructure(name, plan.layout), plan.layout


def _verify(info, name, capsys):
    from beam_ingest.cli import main as cli
    code = cli(["verify", "--config", info["config"], "--graph_id", name, "--sample", "24"])
    return code, capsys.readouterr().out


def _lifted_cells(table, layout, layer):
    return [(node, fam_q, versions[0][0]) for key, cols in table.raw.items() if key[:1].isdigit()
            for fam_q, versions in cols.items() if fam_q[0] == "4"
            for node in [int(key)] if int(layout.layer_of(np.uint64(node))) == layer]


def test_verify_checks_v3_cells(verified, graph_id, capsys):
    from test_verify import damage
    info, name, table, layout = _v3_table(verified, graph_id)
    code, out = _verify(info, name, capsys)
    assert code == 0, out
    assert "table version: 3.1.7" in out and "lifted cross-edge cells (version 3)" in out
    # a layer-2 node's family-4 cell loses a row
    node, (fam, q), value = _lifted_cells(table, layout, 2)[0]
    rows = cells.decode_edges(value)
    damage(name, cells.row_key(node), fam, q, cells.encode_ids(rows[1:].reshape(-1) if len(rows) > 1
                                                              else np.array([node, node], np.uint64)))
    code, out = _verify(info, name, capsys)
    assert code == 1 and f"lifted cross edges (family 4) of layer-2 node {node} differ" in out


def test_verify_finds_damaged_ancestor_and_counter(verified, graph_id, capsys):
    from test_verify import damage
    info, name, table, layout = _v3_table(verified, graph_id)
    node, (fam, q), value = _lifted_cells(table, layout, 3)[0]
    damage(name, cells.row_key(node), fam, q, cells.encode_ids(np.array([node, node], np.uint64)))
    code, out = _verify(info, name, capsys)
    assert code == 1 and f"node {node} (layer 3) lacks the lifted row" in out
    info, name, table, layout = _v3_table(verified, graph_id)
    key = next(iter(table.layer1_counters))
    damage(name, key, "1", b"counter", cells.encode_counter(table.layer1_counters[key] + 5))
    code, out = _verify(info, name, capsys)
    assert code == 1 and "layer-1 counter" in out


def test_inspect_shows_family_4(verified, graph_id, capsys):
    from beam_ingest.cli import main as cli
    info, name, table, layout = _v3_table(verified, graph_id)
    node = _lifted_cells(table, layout, 2)[0][0]
    sv = table.children[node][0]
    assert cli(["inspect", "--graph_id", name, "--sv", str(sv)]) == 0
    out = capsys.readouterr().out
    assert "4:cross_edges_" in out and "atomic_cross_edges_" in out
