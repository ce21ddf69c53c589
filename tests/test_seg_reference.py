"""Self-test of tests/seg_reference.py on hand-made volumes with hand-computed answers."""
import math
import random

import numpy as np
import pytest
import zstandard

from beam_ingest.inputs.protos import ChunkComponentsMsg, ChunkEdgesMsg
from beam_ingest.layout import GraphLayout
from seg_reference import diff_edges, read_seg_outputs, seg_reference

INF = math.inf


def cid(c):
    """A toy layer-1 chunk id for coords in {0, 1}^3: 256, 512, 768, ... (low 8 bits free)."""
    return (1 + c[0] + 2 * c[1] + 4 * c[2]) << 8


def coord_of(sv):
    n = (sv >> 8) - 1
    return (n & 1, (n >> 1) & 1, (n >> 2) & 1)


C0, CX, CY, CXY = (0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)   # cid: 256, 512, 768, 1024


def empty():
    return {"in_chunk": {}, "between_chunk": {}, "cross_chunk": {}}


def edges(**kinds):
    out = empty()
    out.update(kinds)
    return out


def grid(rows_by_z):
    """Volume [x, y, z] from rows written as text: rows_by_z[z][y][x]."""
    nz, ny, nx = len(rows_by_z), len(rows_by_z[0]), len(rows_by_z[0][0])
    v = np.zeros((nx, ny, nz), dtype=np.uint64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v[x, y, z] = rows_by_z[z][y][x]
    return v


def test_in_chunk_contact():
    s = np.zeros((4, 4, 2), dtype=np.uint64)
    s[0, 0, :] = 5
    s[1, 0, :] = 7
    r = seg_reference(s, (2, 2, 2), (17, 5, 3), cid)
    assert r["relabel"] == {(5, C0): 257, (7, C0): 258}
    assert r["edges"] == {C0: edges(in_chunk={(257, 258): (1.0, 2)})}
    assert r["components"] == {C0: [(257,), (258,)]}
    want = np.zeros((4, 4, 2), dtype=np.uint64)
    want[0, 0, :] = 257
    want[1, 0, :] = 258
    assert r["watershed"].dtype == np.uint64 and (r["watershed"] == want).all()
    assert r["sv_map"] == {C0: {257: 5, 258: 7}}


def test_ids_ranked_ascending_per_chunk():
    s = np.zeros((4, 2, 1), dtype=np.uint64)
    s[0, 0, 0], s[1, 1, 0] = 90, 3          # chunk (0,0,0): 3 -> 257, 90 -> 258
    s[2, 0, 0], s[3, 1, 0] = 90, 40         # chunk (1,0,0): 40 -> 513, 90 -> 514
    r = seg_reference(s, (2, 2, 1), (0, 0, 0), cid)
    assert r["relabel"] == {(3, C0): 257, (90, C0): 258, (40, CX): 513, (90, CX): 514}


def test_between_contact():
    s = np.zeros((4, 4, 2), dtype=np.uint64)
    s[1, 0, 0] = 5
    s[2, 0, 0] = 9
    r = seg_reference(s, (2, 2, 2), (0, 0, 0), cid)
    assert r["relabel"] == {(5, C0): 257, (9, CX): 513}
    assert r["edges"] == {C0: edges(between_chunk={(257, 513): (1.0, 1)}),
                          CX: edges(between_chunk={(513, 257): (1.0, 1)})}
    assert r["components"] == {C0: [(257,), (513,)], CX: [(257,), (513,)]}


def test_cross_chunk_contact():
    s = np.zeros((4, 4, 2), dtype=np.uint64)
    s[1, 0, 0] = s[2, 0, 0] = 5
    s[1, 1, 0] = s[2, 1, 0] = 5
    r = seg_reference(s, (2, 2, 2), (0, 0, 0), cid)
    assert r["relabel"] == {(5, C0): 257, (5, CX): 513}
    assert r["edges"] == {C0: edges(cross_chunk={(257, 513): (INF, 2)}),
                          CX: edges(cross_chunk={(513, 257): (INF, 2)})}
    # cross edges are not between edges: the other piece is not a member
    assert r["components"] == {C0: [(257,)], CX: [(513,)]}


def test_u_shaped_piece_is_one_supervoxel():
    # z = 0 only; x across, y down. Chunks 2 x 3 x 1: x 0..1 -> (0,0,0), x 2..3 -> (1,0,0).
    # In chunk (0,0,0) id 5 has two disconnected parts (rows y=0 and y=2); they join in x=2.
    s = grid([[[5, 5, 5, 0],
               [0, 7, 5, 0],
               [5, 5, 5, 0]]])
    r = seg_reference(s, (2, 3, 1), (0, 0, 0), cid)
    assert r["relabel"] == {(5, C0): 257, (7, C0): 258, (5, CX): 513}
    assert r["edges"] == {
        C0: edges(in_chunk={(257, 258): (1.0, 2)},            # y pairs at x=1: 5-7, 7-5
                  between_chunk={(258, 513): (1.0, 1)},       # 7 at x=1 - 5 at x=2, y=1
                  cross_chunk={(257, 513): (INF, 2)}),        # rows y=0 and y=2
        CX: edges(between_chunk={(513, 258): (1.0, 1)},
                  cross_chunk={(513, 257): (INF, 2)}),
    }
    # without objects the pieces of one original id share a group
    assert r["components"] == {C0: [(257, 513), (258,)], CX: [(258,), (513,)]}
    assert (r["watershed"][:, :, 0] == np.array([[257, 0, 257], [257, 258, 257],
                                                  [513, 513, 513], [0, 0, 0]], dtype=np.uint64)).all()


def test_diagonal_contact_is_no_edge_and_isolated_pieces_get_self_edges():
    s = np.zeros((4, 4, 2), dtype=np.uint64)
    s[0, 0, 0], s[1, 1, 0] = 5, 7            # diagonal inside chunk (0,0,0)
    s[1, 1, 1], s[2, 2, 1] = 8, 9            # diagonal across chunks (0,0,0) / (1,1,0)
    s[3, 0, 0] = 4                           # alone in chunk (1,0,0)
    r = seg_reference(s, (2, 2, 2), (0, 0, 0), cid)
    # 8 sits on top of 7 at (1,1): that is a z contact (in_chunk), so 7 and 8 are not isolated
    assert r["relabel"] == {(5, C0): 257, (7, C0): 258, (8, C0): 259, (4, CX): 513, (9, CXY): 1025}
    assert r["edges"] == {
        C0: edges(in_chunk={(257, 257): (1.0, 0), (258, 259): (1.0, 1)}),
        CX: edges(in_chunk={(513, 513): (1.0, 0)}),
        CXY: edges(in_chunk={(1025, 1025): (1.0, 0)}),
    }
    assert r["components"] == {C0: [(257,), (258,), (259,)], CX: [(513,)], CXY: [(1025,)]}


def test_affinities_average_at_the_upper_voxel_of_each_pair():
    s = np.zeros((4, 4, 2), dtype=np.uint64)
    s[0, 0, :] = 5
    s[0, 1, 0] = 5
    s[1, 0, :] = 7
    s[0, 2, 0] = 9                           # chunk (0,1,0), touches 5 at (0,1,0) along y
    s[2, 0, 0] = 5                           # chunk (1,0,0), touches 7 at (1,0,0) along x
    a = np.full((4, 4, 2, 3), 0.9, dtype=np.float32)   # decoys everywhere else
    a[1, 0, 0, 0], a[1, 0, 1, 0] = 0.25, 0.5           # x links 5 -> 7 end at x=1
    a[0, 2, 0, 1] = 0.125                              # y link 5 -> 9 ends at y=2
    a[2, 0, 0, 0] = 0.75                               # x link 7 -> 5' ends at x=2
    r = seg_reference(s, (2, 2, 2), (0, 0, 0), cid, affinities=a)
    assert r["relabel"] == {(5, C0): 257, (7, C0): 258, (5, CX): 513, (9, CY): 769}
    assert r["edges"] == {
        C0: edges(in_chunk={(257, 258): (0.375, 2)},
                  between_chunk={(257, 769): (0.125, 1), (258, 513): (0.75, 1)}),
        CX: edges(between_chunk={(513, 258): (0.75, 1)}),
        CY: edges(between_chunk={(769, 257): (0.125, 1)}),
    }
    # the mean is stored as float32
    a[1, 0, 1, 0] = 0.1
    r = seg_reference(s, (2, 2, 2), (0, 0, 0), cid, affinities=a)
    got = r["edges"][C0]["in_chunk"][(257, 258)][0]
    assert got == float(np.float32((0.25 + float(np.float32(0.1))) / 2))


def test_cross_chunk_affinity_is_inf_even_with_affinities():
    s = np.zeros((4, 2, 1), dtype=np.uint64)
    s[1, 0, 0] = s[2, 0, 0] = 5
    a = np.full((4, 2, 1, 3), 0.5, dtype=np.float32)
    r = seg_reference(s, (2, 2, 1), (0, 0, 0), cid, affinities=a)
    assert r["edges"][C0] == edges(cross_chunk={(257, 513): (INF, 1)})


OBJ_S = grid([[[5, 6, 7, 7],
               [0, 6, 0, 8]]])
OBJ_O = grid([[[1, 1, 0, 1],      # 7's voxel on the face is unmapped, its other voxel says 1
               [3, 0, 0, 2]]])    # 3 lies under background, 0 under part of 6: both ignored


def test_objects_grouping():
    r = seg_reference(OBJ_S, (2, 2, 1), (0, 0, 0), cid, objects=OBJ_O)
    assert r["relabel"] == {(5, C0): 257, (6, C0): 258, (7, CX): 513, (8, CX): 514}
    assert r["objects"] == {(5, C0): 1, (6, C0): 1, (7, CX): 1, (8, CX): 2}
    assert r["edges"] == {
        C0: edges(in_chunk={(257, 258): (1.0, 1)}, between_chunk={(258, 513): (1.0, 1)}),
        CX: edges(in_chunk={(513, 514): (1.0, 1)}, between_chunk={(513, 258): (1.0, 1)}),
    }
    assert r["components"] == {C0: [(257, 258, 513)], CX: [(258, 513), (514,)]}


def test_unmapped_pieces_are_left_out():
    o = OBJ_O.copy()
    o[3, 1, 0] = 0                            # 8 unmapped
    o[0, 0, 0] = 0                            # 5 unmapped
    r = seg_reference(OBJ_S, (2, 2, 1), (0, 0, 0), cid, objects=o)
    assert r["components"] == {C0: [(258, 513)], CX: [(258, 513)]}
    o[:] = 0
    r = seg_reference(OBJ_S, (2, 2, 1), (0, 0, 0), cid, objects=o)
    assert r["components"] == {}
    assert set(r["edges"]) == {C0, CX}


def test_without_objects_every_id_is_its_own_object():
    r = seg_reference(OBJ_S, (2, 2, 1), (0, 0, 0), cid)
    assert r["components"] == {C0: [(257,), (258,), (513,)], CX: [(258,), (513,), (514,)]}


def test_error_two_labels_under_one_piece():
    s = np.zeros((4, 2, 1), dtype=np.uint64)
    s[0, 0, 0] = s[1, 0, 0] = 5
    o = np.zeros_like(s)
    o[0, 0, 0], o[1, 0, 0] = 1, 2
    with pytest.raises(ValueError) as err:
        seg_reference(s, (2, 2, 1), (0, 0, 0), cid, objects=o)
    msg = str(err.value)
    assert "supervoxel 5" in msg and "1" in msg and "2" in msg and "(0, 0, 0)" in msg


def test_error_two_labels_under_pieces_in_adjacent_chunks():
    s = np.zeros((4, 2, 1), dtype=np.uint64)
    s[1, 0, 0] = s[2, 0, 0] = 5
    o = np.zeros_like(s)
    o[1, 0, 0], o[2, 0, 0] = 11, 12
    with pytest.raises(ValueError) as err:
        seg_reference(s, (2, 2, 1), (0, 0, 0), cid, objects=o)
    msg = str(err.value)
    assert "supervoxel 5" in msg and "11" in msg and "12" in msg and "(0, 0, 0)" in msg
    # one side unmapped: no error, the cross edge stays, the unmapped piece is in no group
    o[1, 0, 0] = 0
    r = seg_reference(s, (2, 2, 1), (0, 0, 0), cid, objects=o)
    assert r["edges"][C0] == edges(cross_chunk={(257, 513): (INF, 1)})
    assert r["components"] == {CX: [(513,)]}


def test_error_too_many_ids_in_a_chunk():
    s = np.zeros((4, 2, 1), dtype=np.uint64)
    s[0, 0, 0], s[1, 0, 0], s[0, 1, 0] = 1, 2, 3
    s[2, 0, 0] = 4
    seg_reference(s, (2, 2, 1), (0, 0, 0), cid, max_segment=3)
    with pytest.raises(ValueError, match=r"chunk \(0, 0, 0\)"):
        seg_reference(s, (2, 2, 1), (0, 0, 0), cid, max_segment=2)


def _write_edges(path, kinds):
    msg = ChunkEdgesMsg()
    for kind, rows in kinds.items():
        part = getattr(msg, kind)
        part.node_ids1 = np.array([r[0] for r in rows], dtype="<u8").tobytes()
        part.node_ids2 = np.array([r[1] for r in rows], dtype="<u8").tobytes()
        part.affinities = np.array([r[2] for r in rows], dtype="<f4").tobytes()
        part.areas = np.array([r[3] for r in rows], dtype="<u8").tobytes()
    path.write_bytes(zstandard.ZstdCompressor().compress(msg.SerializeToString()))


def test_reader_normalises_orientation_and_matches_reference(tmp_path):
    s = grid([[[5, 5, 5, 0],
               [0, 7, 5, 0],
               [5, 5, 5, 0]]])
    ref = seg_reference(s, (2, 3, 1), (0, 0, 0), cid)
    (tmp_path / "e").mkdir()
    (tmp_path / "c").mkdir()
    # as a pipeline might write them: in_chunk reversed, between/cross foreign end first
    _write_edges(tmp_path / "e" / "edges_0_0_0.proto.zst", {
        "in_chunk": [(258, 257, 1.0, 2)],
        "between_chunk": [(513, 258, 1.0, 1)],
        "cross_chunk": [(257, 513, INF, 2)]})
    _write_edges(tmp_path / "e" / "edges_1_0_0.proto.zst", {
        "between_chunk": [(513, 258, 1.0, 1)],
        "cross_chunk": [(257, 513, INF, 2)]})
    for name, flat in (("components_0_0_0.proto", [2, 257, 513, 1, 258]),
                       ("components_1_0_0.proto", [1, 258, 1, 513])):
        (tmp_path / "c" / name).write_bytes(ChunkComponentsMsg(components=flat).SerializeToString())
    got_edges, got_comps = read_seg_outputs(str(tmp_path / "e"), "file://" + str(tmp_path / "c"), coord_of)
    assert got_edges == ref["edges"]
    assert diff_edges(ref["edges"], got_edges) == []
    assert got_comps == ref["components"]

    # a wrong area and a duplicate are seen
    _write_edges(tmp_path / "e" / "edges_1_0_0.proto.zst", {
        "between_chunk": [(513, 258, 1.0, 3)], "cross_chunk": [(257, 513, INF, 2)]})
    got_edges, _ = read_seg_outputs(str(tmp_path / "e"), str(tmp_path / "c"), coord_of)
    assert diff_edges(ref["edges"], got_edges) == [
        "chunk (1, 0, 0) between_chunk (513, 258): expected (1.0, 1), got (1.0, 3)"]
    _write_edges(tmp_path / "e" / "edges_1_0_0.proto.zst", {
        "cross_chunk": [(257, 513, INF, 2), (513, 257, INF, 2)]})
    with pytest.raises(ValueError, match="duplicate"):
        read_seg_outputs(str(tmp_path / "e"), str(tmp_path / "c"), coord_of)


def test_random_volume_invariants_with_real_layout():
    """24x24x12 random blobs on a real layout: every id has a piece, copies mirror, areas add up."""
    rng = random.Random(7)
    shape, chunk = (24, 24, 12), (8, 8, 4)
    layout = GraphLayout(chunk, (17, 5, 3), shape)
    s = np.zeros(shape, dtype=np.uint64)
    for x in range(shape[0]):
        for y in range(shape[1]):
            for z in range(shape[2]):
                if rng.random() < 0.85:
                    s[x, y, z] = 1000 + (x // 5) * 7 + (y // 6) * 3 + (z // 3) + rng.choice((0, 0, 0, 50))
    r = seg_reference(s, chunk, (17, 5, 3), lambda c: int(layout.chunk_id(1, *c)),
                      max_segment=(1 << layout.segment_bits(1)) - 1)
    ws = r["watershed"]
    assert ((ws == 0) == (s == 0)).all()
    coord = lambda sv: tuple(int(v) for v in layout.coords_of(sv, 1)[0])
    seen = set()
    pairs = 0
    for c, kinds in r["edges"].items():
        for kind, found in kinds.items():
            for (a, b), (aff, area) in found.items():
                assert coord(a) == c
                seen.add(a)
                seen.add(b)
                if kind == "in_chunk":
                    assert a <= b and coord(b) == c
                    pairs += area
                else:
                    assert r["edges"][coord(b)][kind][(b, a)] == (aff, area)
                    assert (kind == "cross_chunk") == (r["sv_map"][c][a] == r["sv_map"][coord(b)][b])
                    pairs += area / 2     # each of the two copies counts half
    assert seen == {int(v) for v in np.unique(ws) if v}
    count = 0
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        a, b = ws[tuple(lo)], ws[tuple(hi)]
        count += int(((a != 0) & (b != 0) & (a != b)).sum())
    assert pairs == count
