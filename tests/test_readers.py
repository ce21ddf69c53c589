import numpy as np
import pytest
import zstandard

from beam_ingest.hierarchy.layer2 import build_layer2
from beam_ingest.chunk_inputs import ChunkInputs, Edges
from beam_ingest.inputs.precomputed import (PrecomputedReader, decode_components, decode_edges, edges_filename,
                                            components_filename, encode_components, encode_edges)
from beam_ingest.errors import InputError
from beam_ingest.inputs.protos import ChunkEdgesMsg
from beam_ingest.inputs.watershed import read_watershed_info
from beam_ingest.layout import GraphLayout

LAYOUT = GraphLayout((64, 64, 64), (0, 0, 0), (128, 128, 64))  # 2x2x1 chunks, 3 layers


def sv(coord, seg):
    return int(LAYOUT.chunk_id(1, *coord)) | seg


def edges(a, b):
    return Edges(np.array(a, np.uint64), np.array(b, np.uint64), np.ones(len(a), np.float32),
                 np.ones(len(a), np.uint64))


def write_chunk(tmp_path, coord, kinds, groups):
    (tmp_path / "edges").mkdir(exist_ok=True)
    (tmp_path / "components").mkdir(exist_ok=True)
    full = {k: kinds.get(k, edges([], [])) for k in ("in_chunk", "between_chunk", "cross_chunk")}
    (tmp_path / "edges" / edges_filename(coord)).write_bytes(encode_edges(full))
    if not groups:
        return  # an empty mapping: no components file
    svs = np.array([s for g in groups for s in g], np.uint64)
    labels = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    (tmp_path / "components" / components_filename(coord)).write_bytes(encode_components(svs, labels))


def reader(tmp_path):
    return PrecomputedReader(str(tmp_path / "edges"), "file://" + str(tmp_path / "components"))


def test_round_trip_and_missing_files(tmp_path):
    a, b = sv((0, 0, 0), 1), sv((0, 0, 0), 2)
    c = sv((1, 0, 0), 1)
    write_chunk(tmp_path, (0, 0, 0), {"in_chunk": edges([a], [b]), "between_chunk": edges([c], [a])},
                [[a, b, c]])
    got = reader(tmp_path).read((0, 0, 0))
    assert got.edges["in_chunk"].ids1.tolist() == [a]
    assert got.edges["between_chunk"].ids1.tolist() == [c]
    assert sorted(got.component_svs.tolist()) == sorted([a, b, c])
    assert len(set(got.component_labels.tolist())) == 1
    empty = reader(tmp_path).read((1, 1, 0))  # no files: an empty chunk
    assert all(len(e) == 0 for e in empty.edges.values()) and len(empty.component_svs) == 0


def test_orientation_of_between_edges(tmp_path):
    a, b = sv((0, 0, 0), 1), sv((0, 0, 0), 2)
    c = sv((1, 0, 0), 1)
    # the between edge is stored as (c, a): it must be oriented to (a, c)
    write_chunk(tmp_path, (0, 0, 0), {"in_chunk": edges([a], [b]), "between_chunk": edges([c], [a])},
                [[a, b, c]])
    rows, summary, _, _ = build_layer2(reader(tmp_path).read((0, 0, 0)), LAYOUT)
    assert rows.cross_own.tolist() == [a] and rows.cross_other.tolist() == [c]
    assert rows.cross_layer.tolist() == [2]


def test_edge_with_neither_end_in_chunk_is_an_error(tmp_path):
    c, d = sv((1, 0, 0), 1), sv((1, 1, 0), 1)
    write_chunk(tmp_path, (0, 0, 0), {"between_chunk": edges([c], [d])}, [])
    with pytest.raises(InputError, match=r"chunk \(0, 0, 0\).*neither end"):
        build_layer2(reader(tmp_path).read((0, 0, 0)), LAYOUT)


def test_corrupt_files_name_file_and_chunk(tmp_path):
    (tmp_path / "edges").mkdir()
    (tmp_path / "components").mkdir()
    (tmp_path / "edges" / edges_filename((1, 0, 0))).write_bytes(b"not zstd at all")
    with pytest.raises(InputError, match=r"edges_1_0_0\.proto\.zst \(chunk \(1, 0, 0\)\): not a valid zstd"):
        reader(tmp_path).read((1, 0, 0))
    truncated = encode_edges({"in_chunk": edges([1, 2, 3], [4, 5, 6])})[:-7]
    (tmp_path / "edges" / edges_filename((1, 0, 0))).write_bytes(truncated)
    with pytest.raises(InputError, match="edges_1_0_0"):
        reader(tmp_path).read((1, 0, 0))
    garbage = zstandard.ZstdCompressor().compress(b"\xff\xff\xff\xff garbage protobuf")
    (tmp_path / "edges" / edges_filename((1, 0, 0))).write_bytes(garbage)
    with pytest.raises(InputError, match="not a valid ChunkEdgesMsg"):
        reader(tmp_path).read((1, 0, 0))
    (tmp_path / "edges" / edges_filename((1, 0, 0))).unlink()
    (tmp_path / "components" / components_filename((1, 0, 0))).write_bytes(b"\xff\xff\xff")
    with pytest.raises(InputError, match=r"components_1_0_0\.proto \(chunk \(1, 0, 0\)\)"):
        reader(tmp_path).read((1, 0, 0))


def test_mismatched_lengths():
    msg = ChunkEdgesMsg()
    msg.in_chunk.node_ids1 = np.arange(3, dtype="<u8").tobytes()
    msg.in_chunk.node_ids2 = np.arange(2, dtype="<u8").tobytes()
    data = zstandard.ZstdCompressor().compress(msg.SerializeToString())
    with pytest.raises(InputError, match="in_chunk arrays have mismatched lengths"):
        decode_edges(data, "f")
    msg.in_chunk.node_ids2 = b"123"
    with pytest.raises(InputError, match="not a multiple of 8"):
        decode_edges(zstandard.ZstdCompressor().compress(msg.SerializeToString()), "f")


def test_components_groups():
    data = encode_components(np.array([5, 6, 7, 9], np.uint64), np.array([3, 1, 3, 2]))
    svs, labels = decode_components(data, "f")
    mapping = dict(zip(svs.tolist(), labels.tolist()))
    assert mapping[5] == mapping[7] != mapping[6] != mapping[9]
    from beam_ingest.inputs.protos import ChunkComponentsMsg
    bad = ChunkComponentsMsg(components=[3, 1, 2]).SerializeToString()
    with pytest.raises(InputError, match="claims 3 members"):
        decode_components(bad, "f")


def test_watershed_info_errors(tmp_path):
    with pytest.raises(InputError, match="watershed info .*info: not found"):
        read_watershed_info(str(tmp_path / "nothing"))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "info").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_watershed_info(str(tmp_path / "ws"))
    (tmp_path / "ws" / "info").write_text('{"scales": [{"size": [1, 2, 3], "resolution": [4, 4, 40]}]}')
    with pytest.raises(InputError, match="missing key 'voxel_offset'"):
        read_watershed_info(str(tmp_path / "ws"))
    (tmp_path / "ws" / "info").write_text(
        '{"scales": [{"size": [10, 20, 30], "voxel_offset": [1, 2, 3], "resolution": [4, 4, 40]}]}')
    info = read_watershed_info("file://" + str(tmp_path / "ws"))
    assert info.size == (10, 20, 30) and info.voxel_offset == (1, 2, 3)
    with pytest.raises(InputError, match="CV_MIP=1 but the info has 1 scale"):
        read_watershed_info(str(tmp_path / "ws"), mip=1)


GRID = GraphLayout((64, 64, 64), (0, 0, 0), (256, 256, 128))  # 4x4x2 chunks, 4 layers


def gsv(coord, seg):
    return int(GRID.chunk_id(1, *coord)) | seg


FAR_AWAY = (1000, 1000, 1000)  # encodable with 10 spatial bits, outside the 4x4x2 grid


@pytest.mark.parametrize("case", ["between other end", "between own end first", "cross", "in_chunk", "component"])
def test_sv_outside_the_chunk_grid_is_an_error(tmp_path, case):
    here = (1, 2, 0)
    a, b = gsv(here, 1), gsv(here, 2)
    out = gsv(FAR_AWAY, 7)
    kinds = {"in_chunk": edges([a], [b]), "between_chunk": edges([a], [gsv((2, 2, 0), 1)])}
    groups = [[a, b]]
    if case == "between other end":
        kinds["between_chunk"] = edges([a, b], [gsv((2, 2, 0), 1), out])
    elif case == "between own end first":
        kinds["between_chunk"] = edges([a, out], [gsv((2, 2, 0), 1), b])
    elif case == "cross":
        kinds["cross_chunk"] = edges([a], [out])
    elif case == "in_chunk":
        kinds["in_chunk"] = edges([a, b], [b, out])
    else:
        groups = [[a, b], [out]]
    write_chunk(tmp_path, here, kinds, groups)
    inputs = reader(tmp_path).read(here)
    name = r"components_1_2_0\.proto" if case == "component" else r"edges_1_2_0\.proto\.zst"
    with pytest.raises(InputError, match=rf"{name} \(chunk \(1, 2, 0\)\): SV {out} .*lies in chunk "
                                         r"\(1000, 1000, 1000\), outside the 4x4x2 layer-2 chunk grid"):
        build_layer2(inputs, GRID)


def test_sv_outside_the_grid_on_one_axis_only(tmp_path):
    a = gsv((3, 3, 1), 1)
    out = gsv((3, 3, 2), 1)  # z = 2 in a grid of 2 along z: just past the last chunk
    write_chunk(tmp_path, (3, 3, 1), {"between_chunk": edges([a], [out])}, [[a, out]])
    with pytest.raises(InputError, match=r"lies in chunk \(3, 3, 2\), outside the 4x4x2"):
        build_layer2(reader(tmp_path).read((3, 3, 1)), GRID)


def test_far_edges_are_counted_not_refused(tmp_path):
    here = (1, 1, 0)
    a, b = gsv(here, 1), gsv(here, 2)
    face, diagonal = gsv((2, 1, 0), 1), gsv((2, 2, 1), 1)
    far_x, far_y, far_cross = gsv((3, 1, 0), 1), gsv((1, 3, 1), 1), gsv((1, 3, 0), 4)
    write_chunk(tmp_path, here,
                {"in_chunk": edges([a], [b]),
                 "between_chunk": edges([a, face, b, far_y], [diagonal, a, far_x, b]),  # either orientation
                 "cross_chunk": edges([a], [far_cross])},
                [[a, b, face, diagonal, far_x, far_y]])
    rows, summary, _, stats = build_layer2(reader(tmp_path).read(here), GRID)
    assert stats.far_edges == 3
    # they are still stored as atomic cross edges, at the layer where their chunks meet
    stored = dict(zip(rows.cross_other.tolist(), rows.cross_layer.tolist()))
    assert stored[far_x] == 3 and stored[far_y] == 3 and stored[far_cross] == 3 and stored[face] == 3
    assert stored[diagonal] == 3
    near = build_layer2(ChunkInputs(here, {"in_chunk": edges([a], [b]), "between_chunk": edges([a], [face]),
                                           "cross_chunk": edges([], [])}, np.empty(0, np.uint64),
                                    np.empty(0, np.int64)), GRID)[3]
    assert near.far_edges == 0


def test_zero_byte_components_file_next_to_edges_is_an_error(tmp_path):
    a, b = sv((0, 0, 0), 1), sv((0, 0, 0), 2)
    write_chunk(tmp_path, (0, 0, 0), {"in_chunk": edges([a], [b])}, [[a, b]])
    (tmp_path / "components" / components_filename((0, 0, 0))).write_bytes(b"")
    with pytest.raises(InputError, match=r"components_0_0_0\.proto \(chunk \(0, 0, 0\)\): empty file \(0 bytes\) "
                                         r"but edges_0_0_0\.proto\.zst has 1 edges"):
        reader(tmp_path).read((0, 0, 0))


def test_legit_empty_and_missing_components_files(tmp_path):
    a, b = sv((1, 0, 0), 1), sv((1, 0, 0), 2)
    # a chunk whose edges file holds no edges may have an empty (0-byte, valid) components file
    write_chunk(tmp_path, (0, 0, 0), {}, [])
    assert encode_components(np.empty(0, np.uint64), np.empty(0, np.int64)) == b""  # a valid empty message
    (tmp_path / "components" / components_filename((0, 0, 0))).write_bytes(b"")
    got = reader(tmp_path).read((0, 0, 0))
    assert len(got.component_svs) == 0 and all(len(e) == 0 for e in got.edges.values())
    # ... or no edges file and an empty components file
    (tmp_path / "components" / components_filename((0, 1, 0))).write_bytes(b"")
    assert len(reader(tmp_path).read((0, 1, 0)).component_svs) == 0
    # a missing components file is an empty mapping (spec): edges kept, every SV on its own
    write_chunk(tmp_path, (1, 0, 0), {"in_chunk": edges([a], [b])}, [])
    assert not (tmp_path / "components" / components_filename((1, 0, 0))).exists()
    got = reader(tmp_path).read((1, 0, 0))
    assert build_layer2(got, LAYOUT)[3].nodes == 2
