"""A corpus of bad inputs: each ends in a clear, one-line error naming the key, file and chunk.

Never a silently wrong table; where the table was already created, the error says it is
partially written and how to go on.
"""
import json
import os

import numpy as np
import pytest
import yaml
import zstandard

import pipeline
from beam_ingest.chunk_inputs import Edges
from beam_ingest.inputs.precomputed import decode_components, decode_edges, encode_components, encode_edges
from beam_ingest.inputs.protos import ChunkComponentsMsg, ChunkEdgesMsg
from beam_ingest.layout import GraphLayout
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import open_table

SPEC = SyntheticSpec(chunks=(2, 2, 2), svs_per_chunk=12, seed=3, empty_chunk_fraction=0)
LAYOUT = GraphLayout((64, 64, 32), (17, 5, 3), (128 - 21, 128 - 21, 64 - 10))
CHUNK = (1, 0, 1)
EDGES = f"edges/edges_{CHUNK[0]}_{CHUNK[1]}_{CHUNK[2]}.proto.zst"
COMPONENTS = f"components/components_{CHUNK[0]}_{CHUNK[1]}_{CHUNK[2]}.proto"


def _edit_edges(root, change):
    path = os.path.join(root, EDGES)
    with open(path, "rb") as fh:
        edges = decode_edges(fh.read(), path)
    change(edges)
    with open(path, "wb") as fh:
        fh.write(encode_edges(edges))


def _write(root, name, data):
    with open(os.path.join(root, name), "wb") as fh:
        fh.write(data)


def _config(root, section, key, value):
    path = os.path.join(root, "config.yml")
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    cfg[section][key] = value
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)


def _sv(coord, seg):
    return int(LAYOUT.chunk_id(1, *coord)) | seg


def _outside_in_chunk(edges):
    e = edges["in_chunk"]
    edges["in_chunk"] = Edges(np.append(e.ids1, _sv(CHUNK, 1)), np.append(e.ids2, _sv((0, 0, 0), 1)),
                              np.append(e.affinities, 1), np.append(e.areas, 1))


def _neither_end(edges):
    edges["between_chunk"] = Edges(np.array([_sv((0, 0, 0), 1)], np.uint64), np.array([_sv((0, 1, 0), 1)], np.uint64),
                                   np.ones(1, np.float32), np.ones(1, np.uint64))


def _layer_bits(edges):
    e = edges["in_chunk"]
    bad = np.uint64(int(LAYOUT.chunk_id(2, *CHUNK)) | 3)
    edges["in_chunk"] = Edges(np.append(e.ids1, bad), np.append(e.ids2, bad), np.append(e.affinities, 1),
                              np.append(e.areas, 1))


def _append(kind, a, b):
    def change(edges):
        e = edges[kind]
        edges[kind] = Edges(np.append(e.ids1, np.uint64(a)), np.append(e.ids2, np.uint64(b)),
                            np.append(e.affinities, np.float32(1)), np.append(e.areas, np.uint64(1)))
    return change


FAR = (1000, 1000, 1000)  # encodable in the SV id (10 spatial bits), far outside the 2x2x2 grid
OFF_GRID = (rf"SV {_sv(FAR, 1)} of %s edge #\d+ .* lies in chunk \(1000, 1000, 1000\), "
            r"outside the 2x2x2 layer-2 chunk grid")


def _component_off_grid(root):
    path = os.path.join(root, COMPONENTS)
    with open(path, "rb") as fh:
        svs, labels = decode_components(fh.read(), path)
    _write(root, COMPONENTS, encode_components(np.append(svs, np.uint64(_sv(FAR, 1))),
                                               np.append(labels, labels.max() + 1)))


def _mismatched(root):
    msg = ChunkEdgesMsg()
    msg.in_chunk.node_ids1 = np.array([_sv(CHUNK, 1), _sv(CHUNK, 2)], "<u8").tobytes()
    msg.in_chunk.node_ids2 = np.array([_sv(CHUNK, 2)], "<u8").tobytes()
    _write(root, EDGES, zstandard.ZstdCompressor().compress(msg.SerializeToString()))


CASES = {
    # name: (how to break the dataset, expected message, table created before the error?)
    "truncated zstd": (lambda r: _write(r, EDGES, open(os.path.join(r, EDGES), "rb").read()[:-9]),
                       rf"{EDGES} \(chunk \(1, 0, 1\)\): not a valid zstd", True),
    "corrupt zstd": (lambda r: _write(r, EDGES, b"\x28\xb5\x2f\xfd garbage"),
                     rf"{EDGES} \(chunk \(1, 0, 1\)\): not a valid zstd", True),
    "garbage protobuf": (lambda r: _write(r, EDGES, zstandard.ZstdCompressor().compress(b"\xff\xfe\xfd\xfc" * 8)),
                         rf"{EDGES} \(chunk \(1, 0, 1\)\): not a valid ChunkEdgesMsg", True),
    "mismatched lengths": (_mismatched, r"in_chunk arrays have mismatched lengths", True),
    "in-chunk edge leaves the chunk": (
        lambda r: _edit_edges(r, _outside_in_chunk),
        rf"{EDGES} \(chunk \(1, 0, 1\)\): in_chunk edge #\d+ .* has an end outside", True),
    "edge with neither end in the chunk": (
        lambda r: _edit_edges(r, _neither_end),
        rf"{EDGES} \(chunk \(1, 0, 1\)\): between_chunk edge #0 .* neither end", True),
    "id whose layer bits are not 1": (lambda r: _edit_edges(r, _layer_bits),
                                      rf"{EDGES} \(chunk \(1, 0, 1\)\): id \d+ of in_chunk edge #\d+ .* is not a "
                                      r"supervoxel id \(its layer bits say 2", True),
    "cross edge to an SV outside the volume": (
        lambda r: _edit_edges(r, _append("cross_chunk", _sv(CHUNK, 1), _sv(FAR, 1))),
        rf"{EDGES} \(chunk \(1, 0, 1\)\): " + OFF_GRID % "cross_chunk", True),
    "between edge from an SV outside the volume": (
        lambda r: _edit_edges(r, _append("between_chunk", _sv(FAR, 1), _sv(CHUNK, 1))),
        rf"{EDGES} \(chunk \(1, 0, 1\)\): " + OFF_GRID % "between_chunk", True),
    "in-chunk edge to an SV outside the volume": (
        lambda r: _edit_edges(r, _append("in_chunk", _sv(CHUNK, 1), _sv(FAR, 1))),
        rf"{EDGES} \(chunk \(1, 0, 1\)\): " + OFF_GRID % "in_chunk", True),
    "component SV outside the volume": (
        _component_off_grid,
        rf"{COMPONENTS} \(chunk \(1, 0, 1\)\): SV {_sv(FAR, 1)} of the components lies in chunk \(1000, 1000, 1000\), "
        r"outside the 2x2x2 layer-2 chunk grid", True),
    "zero-byte components file next to edges": (
        lambda r: _write(r, COMPONENTS, b""),
        rf"{COMPONENTS} \(chunk \(1, 0, 1\)\): empty file \(0 bytes\) but edges_1_0_1\.proto\.zst has \d+ edges", True),
    "garbage components": (lambda r: _write(r, COMPONENTS, b"\x0a\xff\xff\xff"),
                           rf"{COMPONENTS} \(chunk \(1, 0, 1\)\): not a valid ChunkComponentsMsg", True),
    "component group past the end": (
        lambda r: _write(r, COMPONENTS, ChunkComponentsMsg(components=[5, _sv(CHUNK, 1)]).SerializeToString()),
        r"claims 5 members, only 1 remain", True),
    "SV in two components": (
        lambda r: _write(r, COMPONENTS, encode_components(np.array([_sv(CHUNK, 1)] * 2, np.uint64), np.array([0, 1]))),
        rf"{COMPONENTS} \(chunk \(1, 0, 1\)\): SV \d+ is listed in more than one component", True),
    "missing watershed info": (lambda r: os.remove(os.path.join(r, "watershed", "info")),
                               r"watershed info .*/watershed/info: not found", False),
    "malformed watershed info": (lambda r: _write(r, "watershed/info", b'{"scales": [{"size": [1, 2]}]}'),
                                 r"scales\[0\]\.voxel_offset|missing key 'voxel_offset'", False),
    "bit budget too small": (lambda r: (_config(r, "graph_config", "CHUNK_SIZE", [1, 1, 1]),
                                        _config(r, "graph_config", "SPATIAL_BITS", 5)),
                             r"SPATIAL_BITS=5 is smaller than the 7 bits layer 2 needs for 9 layers", False),
    "FANOUT other than 2": (lambda r: _config(r, "graph_config", "FANOUT", 3),
                            r"graph_config\.FANOUT: only 2 is supported", False),
    "wrong DATA_VERSION": (lambda r: _config(r, "data_source", "DATA_VERSION", 7),
                           r"data_source\.DATA_VERSION: must be 2, 3 or 4", False),
    "empty dataset": (lambda r: [os.remove(os.path.join(r, "edges", n)) for n in os.listdir(os.path.join(r, "edges"))],
                      r"data_source\.EDGES: no edges_<x>_<y>_<z>\.proto\.zst files under", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error(case, tmp_path, graph_id, capsys):
    break_it, message, table_created = CASES[case]
    root = str(tmp_path / "data")
    info = generate(root, SPEC)
    break_it(root)
    code = pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--ingest_timestamp=1700000000000"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert __import__("re").search(message, lines[0]), lines[0]
    assert open_table(graph_id).exists() == table_created
    if table_created:
        assert f"Table '{graph_id}' is partially written" in err and "--if_exists=continue" in err
