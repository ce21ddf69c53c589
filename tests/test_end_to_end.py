"""Whole ingests into the Bigtable emulator, checked against the independent reference."""
import pytest

from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import TableStructure, run_ingest
from reference import Reference

SHAPES = {
    "1x1x1": SyntheticSpec(chunks=(1, 1, 1), svs_per_chunk=40, seed=1, empty_chunk_fraction=0),
    "2x2x2": SyntheticSpec(chunks=(2, 2, 2), svs_per_chunk=30, seed=2),
    "3x5x2-partial": SyntheticSpec(chunks=(3, 5, 2), svs_per_chunk=25, seed=3, partial_last_chunk=True),
    "tall-z": SyntheticSpec(chunks=(1, 2, 9), svs_per_chunk=25, seed=4),
    "random-larger": SyntheticSpec(chunks=(6, 5, 4), svs_per_chunk=60, seed=5, global_fraction=0.15),
}


def check_against_reference(config, graph_id, layout, via="ours"):
    """The table, decoded `via` this project's decoders or PyChunkedGraph's client library,
    equals the independent reference."""
    ref = Reference(config)
    table = TableStructure(graph_id, layout, via=via)
    assert layout.layer_count == ref.layer_count
    assert table.svs == ref.svs
    l2 = lambda nodes: {leaves for layer, leaves in nodes if layer == 2}
    assert l2(table.nodes) == l2(ref.nodes), "layer-2 partition differs"
    top = lambda nodes: {leaves for layer, leaves in nodes if layer == layout.layer_count}
    assert top(table.nodes) == top(ref.nodes), "root partition differs"
    assert table.nodes == ref.nodes, "nodes (layer, SV set) differ"
    assert table.ancestor_layers == ref.ancestor_layers
    assert table.l2_cross == {k: v for k, v in ref.l2_cross.items() if v}
    return table, ref


@pytest.mark.parametrize("shape", list(SHAPES))
def test_ingest_matches_reference(tmp_path, graph_id, shape):
    info = generate(str(tmp_path / "data"), SHAPES[shape])
    _, counters, plan = run_ingest(info["config"], graph_id)
    table, ref = check_against_reference(info["config"], graph_id, plan.layout)
    assert counters["layer2_svs"] == len(ref.svs)
    assert counters["roots"] == len(table.roots)
