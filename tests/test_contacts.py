"""Counting contacts inside a chunk: each way of counting pairs (a bincount for few labels,
one sort of packed codes for many, np.unique beyond 32-bit codes) gives the same edges, and
a chunk with thousands of supervoxels matches the plain-loop reference."""
from __future__ import annotations

import numpy as np
import pytest

from beam_ingest.inputs import segmentation
from beam_ingest.inputs.segmentation import _count_pairs, in_chunk_contacts, label_chunk, segment_table
from seg_reference import seg_reference


def _parts(rng, width, sizes, weighted):
    firsts = [rng.integers(0, width, n).astype(np.uint16) for n in sizes]
    seconds = [rng.integers(0, width, n).astype(np.uint16) for n in sizes]
    weights = [rng.random(n, dtype=np.float32) if weighted else None for n in sizes]
    return firsts, seconds, weights


@pytest.mark.parametrize("weighted", [True, False])
def test_every_way_of_counting_pairs_agrees(monkeypatch, weighted):
    rng = np.random.default_rng(7)
    width = 60
    firsts, seconds, weights = _parts(rng, width, [3000, 0, 1700], weighted)
    code = np.concatenate([f.astype(np.int64) * width + s for f, s in zip(firsts, seconds)])
    expected_keys, expected_area = np.unique(code, return_counts=True)
    expected_sums = (np.bincount(np.searchsorted(expected_keys, code), np.concatenate(weights))
                     if weighted else None)

    dense = _count_pairs(firsts, seconds, weights, width, width * width)
    beyond_32_bits = _count_pairs(firsts, seconds, weights, width, (1 << 32) + 1)
    monkeypatch.setattr(segmentation, "DENSE_PAIR_CODES", 0)
    packed = _count_pairs(firsts, seconds, weights, width, width * width)
    for keys, area, sums in (dense, packed, beyond_32_bits):
        np.testing.assert_array_equal(keys, expected_keys)
        np.testing.assert_array_equal(area, expected_area)
        if weighted:
            np.testing.assert_allclose(sums, expected_sums, rtol=1e-12)
        else:
            assert sums is None


def _blobs(rng, shape, cell):
    """Labels constant on `cell`-sized boxes (random large ids, some background)."""
    coarse = [-(-s // cell) for s in shape]
    ids = rng.integers(1, 1 << 60, size=coarse, dtype=np.uint64)
    ids[rng.random(coarse) < 0.05] = 0
    volume = ids.repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)[:shape[0], :shape[1], :shape[2]]
    # jagged faces, so contact areas differ between pairs
    flip = rng.random(shape) < 0.2
    volume[1:][flip[1:]] = volume[:-1][flip[1:]]
    return np.asfortranarray(volume)


@pytest.mark.parametrize("with_affinities", [True, False])
def test_many_supervoxels_in_one_chunk_match_the_reference(monkeypatch, with_affinities):
    rng = np.random.default_rng(11)
    shape = (36, 36, 18)
    supervoxels = _blobs(rng, shape, 2)
    affinities = rng.random(shape + (3,), dtype=np.float32) if with_affinities else None
    ids, labels, rank_of = label_chunk((0, 0, 0), supervoxels)
    n = len(ids.ids)
    assert (n + 1) ** 2 > segmentation.DENSE_PAIR_CODES  # counted by the packed sort

    edges = in_chunk_contacts(labels, n, affinities, rank_of)
    table = segment_table(0, n)
    got = {(int(a), int(b)): (float(f), int(area)) for a, b, f, area in
           zip(table[edges.ids1], table[edges.ids2], edges.affinities, edges.areas)}
    reference = seg_reference(supervoxels, shape, (0, 0, 0), lambda c: 0, affinities=affinities)
    expected = {pair: value for pair, value in reference["edges"][(0, 0, 0)]["in_chunk"].items()
                if pair[0] != pair[1]}  # self-edges are added later, by finish_chunk
    assert len(expected) > 5000
    assert got == expected

    monkeypatch.setattr(segmentation, "DENSE_PAIR_CODES", 1 << 40)  # the same chunk by a bincount
    dense = in_chunk_contacts(labels, n, affinities, rank_of)
    for field in ("ids1", "ids2", "affinities", "areas"):
        np.testing.assert_array_equal(getattr(dense, field), getattr(edges, field))
