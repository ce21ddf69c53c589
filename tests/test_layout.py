import numpy as np
import pytest

from beam_ingest.layout import GraphLayout, LayoutError, bits_per_layer, layer_count_for


def layout(n=(4, 4, 2), spatial=10):
    return GraphLayout(chunk_size=(64, 64, 32), voxel_offset=(10, 20, 30),
                       voxel_counts=tuple(c * s for c, s in zip(n, (64, 64, 32))), spatial_bits=spatial)


@pytest.mark.parametrize("n_chunks, expected", [((1, 1, 1), 2), ((2, 1, 1), 3), ((3, 1, 1), 4), ((4, 4, 2), 4),
                                                ((5, 2, 9), 6), ((1024, 1, 1), 12), ((1025, 1, 1), 13)])
def test_layer_count(n_chunks, expected):
    assert layer_count_for(n_chunks) == expected


def test_partial_chunk_rounds_up():
    lay = GraphLayout((64, 64, 32), (0, 0, 0), (129, 64, 1))
    assert lay.n_chunks == (3, 1, 1)
    assert lay.layer_count == 4


def test_bits_per_layer():
    assert bits_per_layer(4, 10) == {4: 1, 3: 1, 2: 10, 1: 10}
    assert bits_per_layer(7, 5) == {7: 1, 6: 1, 5: 2, 4: 3, 3: 4, 2: 5, 1: 5}
    with pytest.raises(LayoutError, match="SPATIAL_BITS=4 is smaller than the 5 bits"):
        bits_per_layer(7, 4)


def test_hand_computed_ids():
    lay = layout()
    assert lay.layer_count == 4
    # layer 2, (1, 2, 3): 2 << 56 | 1 << 46 | 2 << 36 | 3 << 26
    assert int(lay.chunk_id(2, 1, 2, 3)) == 144185694460313600
    assert int(lay.root_chunk_id) == 288230376151711744
    # layer 3 (1, 0, 1) uses 1 bit per axis: 3 << 56 | 1 << 55 | 1 << 53
    assert int(lay.chunk_id(3, 1, 0, 1)) == 261208778387488768
    node = lay.chunk_id(2, 1, 2, 3) | np.uint64(77)
    assert int(lay.layer_of(node)) == 2
    assert lay.coords_of(node, 2).tolist() == [[1, 2, 3]]
    assert int(lay.segment_of(node, 2)) == 77
    assert int(lay.chunk_of(node, 2)) == 144185694460313600
    assert lay.segment_bits(2) == 64 - 8 - 30


def test_id_round_trip_vectorized():
    lay = layout((7, 3, 5))
    rng = np.random.default_rng(0)
    for layer in range(1, lay.layer_count):
        per_axis = lay.chunks_per_axis(max(layer, 2))
        coords = np.stack([rng.integers(0, n, 100) for n in per_axis], -1)
        seg = rng.integers(1, 1 << 20, 100).astype(np.uint64)
        ids = lay.chunk_id(layer, coords[:, 0], coords[:, 1], coords[:, 2]) | seg
        assert (lay.layer_of(ids) == layer).all()
        assert (lay.coords_of(ids, layer) == coords).all()
        assert (lay.segment_of(ids, layer) == seg).all()


def test_cross_layer():
    lay = layout((8, 8, 8))  # 5 layers
    a = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 1], [3, 0, 0], [0, 0, 0]])
    b = np.array([[1, 0, 0], [2, 0, 0], [2, 2, 2], [4, 0, 0], [7, 7, 7]])
    assert lay.cross_layer(a, b).tolist() == [2, 3, 3, 4, 4]


def test_chunks_per_axis_and_count():
    lay = layout((5, 3, 1))
    assert lay.layer_count == 5
    assert lay.chunks_per_axis(2) == (5, 3, 1)
    assert lay.chunks_per_axis(3) == (3, 2, 1)
    assert lay.chunks_per_axis(4) == (2, 1, 1)
    assert lay.chunks_per_axis(5) == (1, 1, 1)
    assert lay.chunk_count(2) == 15


def test_refusals():
    with pytest.raises(LayoutError, match="FANOUT=3"):
        GraphLayout((64, 64, 64), (0, 0, 0), (640, 64, 64), fanout=3)
    with pytest.raises(LayoutError, match="SPATIAL_BITS=10 is smaller than the 11 bits layer 2 needs"):
        GraphLayout((1, 64, 64), (0, 0, 0), (2000, 64, 64), spatial_bits=10)
    with pytest.raises(LayoutError, match="empty"):
        GraphLayout((64, 64, 64), (0, 0, 0), (0, 64, 64))
