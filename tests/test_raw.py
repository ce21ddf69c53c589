"""Raw agglomeration input: sharded files, DATA_VERSIONs, and the precomputed files it writes."""
import os
import zlib

import numpy as np
import pytest
import yaml

from beam_ingest.errors import InputError
from beam_ingest.inputs.raw import RawReader, decode_records, edge_dtype, sum_duplicates
from beam_ingest.inputs.sharded import ShardReader, index_dtype, write_shard
from beam_ingest.launch.plan import plan_ingest
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest
from test_end_to_end import check_against_reference
from test_runs import cells_of


def raw_dataset(tmp_path, version, seed=41):
    return generate(str(tmp_path / "raw"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=25, seed=seed, raw=True,
                                                         data_version=version))


@pytest.mark.parametrize("version", [2, 3, 4])
def test_raw_build_equals_build_from_the_files_it_wrote(tmp_path, graph_id, version):
    info = raw_dataset(tmp_path, version)
    _, counters, plan = run_ingest(info["config"], graph_id + "-raw", "--raw")
    root = str(tmp_path / "raw")
    assert os.listdir(os.path.join(root, "edges")) and os.listdir(os.path.join(root, "components"))
    # three rounds of parallel ranged reads (headers, indexes, payloads) per folder (edges, remap)
    assert counters["layer2_storage_rounds"] <= 3 * 2 * plan.layout.chunk_count(2)
    assert counters["layer2_storage_requests"] > counters["layer2_storage_rounds"]
    _, _, _ = run_ingest(info["config"], graph_id + "-pre")
    assert cells_of(graph_id + "-raw") == cells_of(graph_id + "-pre")
    check_against_reference(info["config"], graph_id + "-raw", plan.layout)


def test_precomputed_files_are_written_once(tmp_path, graph_id):
    info = raw_dataset(tmp_path, 4)
    run_ingest(info["config"], graph_id, "--raw", "--skip_writes")
    edges = tmp_path / "raw" / "edges"
    stamps = {p.name: p.stat().st_mtime_ns for p in edges.iterdir()}
    run_ingest(info["config"], graph_id, "--raw", "--skip_writes")  # a retry of every chunk
    assert {p.name: p.stat().st_mtime_ns for p in edges.iterdir()} == stamps


def test_unset_output_paths_write_nothing(tmp_path, graph_id):
    info = raw_dataset(tmp_path, 4)
    with open(info["config"]) as fh:
        cfg = yaml.safe_load(fh)
    del cfg["data_source"]["EDGES"], cfg["data_source"]["COMPONENTS"]
    with open(info["config"], "w") as fh:
        yaml.safe_dump(cfg, fh)
    _, counters, _ = run_ingest(info["config"], graph_id, "--raw", "--skip_writes")
    assert counters["layer2_svs"] > 0 and not (tmp_path / "raw" / "edges").exists()


def test_versions_weight_by_resolution_and_sum_duplicates():
    rec = np.zeros(3, edge_dtype(3))
    rec["sv1"], rec["sv2"] = [1, 1, 2], [5, 5, 6]
    rec["aff_x"], rec["aff_y"], rec["aff_z"] = 0.5, 0.25, 0.125
    rec["area_x"], rec["area_y"], rec["area_z"] = 2, 3, 4
    sv1, sv2, aff, area = decode_records(rec.tobytes(), 3, (8, 8, 40), "f")
    assert np.allclose(aff, 0.5 * 8 + 0.25 * 8 + 0.125 * 40) and np.allclose(area, 2 * 8 + 3 * 8 + 4 * 40)
    summed = sum_duplicates(sv1, sv2, aff, area)
    assert summed.ids1.tolist() == [1, 2] and summed.areas.tolist() == [400, 200]
    with pytest.raises(InputError, match="not whole DATA_VERSION 2 records"):
        decode_records(rec.tobytes()[:-3], 2, (8, 8, 40), "f")


def test_shard_corruption_is_named(tmp_path):
    good = write_shard({7: b"payload-bytes"}, False)
    cases = {
        "crc.data": (good[:21] + bytes([good[21] ^ 1]) + good[22:], r"crc mismatch in the payload at byte 20"),
        "index.data": (good[:4] + np.array([10**6, 28], "<u8").tobytes() + good[20:],
                       r"the index at byte 1000000 .* runs past the end of the file"),
        "magic.data": (b"XX01" + good[4:], r"not a sharded file"),
        "indexcrc.data": (good[:-1] + bytes([good[-1] ^ 1]), r"crc mismatch in the index"),
        "empty.data": (b"", r"empty file \(0 bytes\), not a sharded file"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    reader = ShardReader(str(tmp_path))
    assert reader.read({"missing.data": {7}}, False, "chunk (0, 0, 0)") == {}
    for name, (_, message) in cases.items():
        with pytest.raises(InputError, match=rf"{name} \(chunk \(0, 0, 0\)\): {message}"):
            reader.read({name: {7}}, False, "chunk (0, 0, 0)")


def test_raw_needs_agglomeration_key(tmp_path):
    info = generate(str(tmp_path / "pre"), SyntheticSpec(chunks=(2, 2, 1), svs_per_chunk=5))
    from beam_ingest.errors import ConfigError
    with pytest.raises(ConfigError, match="ingest_config.AGGLOMERATION: required"):
        plan_ingest(info["config"], "g", raw=True)


def test_corrupt_raw_file_stops_the_ingest_naming_it(tmp_path, graph_id, capsys):
    import pipeline
    info = raw_dataset(tmp_path, 4)
    path = tmp_path / "raw" / "agg" / "chunked_rg" / "in_chunk_0_1_1_1.data"
    data = bytearray(path.read_bytes())
    data[25] ^= 0xFF  # inside the first payload
    path.write_bytes(bytes(data))
    assert pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--raw"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "in_chunk_0_1_1_1.data (chunk (1, 1, 1)): crc mismatch in the payload at byte" in err[0]


def test_wrong_data_version_is_named(tmp_path, graph_id, capsys):
    import pipeline
    info = raw_dataset(tmp_path, 3)
    text = open(info["config"]).read().replace("DATA_VERSION: 3", "DATA_VERSION: 4")
    open(info["config"], "w").write(text)
    assert pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--raw", "--skip_writes"]) == 2
    err = capsys.readouterr().err
    assert "not whole DATA_VERSION 4 records" in err and "is DATA_VERSION right?" in err


def duplicate_index_entry(data: bytes, pair_keys: bool, which: int = 0) -> bytes:
    """The same container with index record `which` listed twice (crc and header fixed up)."""
    offset, length = (int(v) for v in np.frombuffer(data[4:20], "<u8"))
    records = np.frombuffer(data[offset:offset + length - 4], index_dtype(pair_keys))
    index = np.concatenate([records, records[which:which + 1]]).tobytes()
    index += np.uint32(zlib.crc32(index)).tobytes()
    return data[:4] + np.array([offset, len(index)], "<u8").tobytes() + data[20:offset] + index


def test_duplicate_index_entry_is_refused(tmp_path):
    single = write_shard({7: b"first", 9: b"other"}, False)
    (tmp_path / "single.data").write_bytes(duplicate_index_entry(single, False))
    pair = write_shard({(3, 4): b"ab", (4, 3): b"ba"}, True)
    (tmp_path / "pair.data").write_bytes(duplicate_index_entry(pair, True, which=1))
    reader = ShardReader(str(tmp_path))
    with pytest.raises(InputError, match=r"single\.data \(chunk \(0, 0, 0\)\): the index lists key 7 2 times"):
        reader.read({"single.data": {7}}, False, "chunk (0, 0, 0)")
    with pytest.raises(InputError, match=r"pair\.data \(chunk \(0, 0, 0\)\): the index lists key \(4, 3\) 2 times"):
        reader.read({"pair.data": {(3, 4), (4, 3)}}, True, "chunk (0, 0, 0)")
    # a chunk that does not read the duplicated key is not affected; unique keys read as before
    assert reader.read({"single.data": {9}}, False, "chunk (0, 0, 0)") == {("single.data", 9): b"other"}
    assert reader.read({"pair.data": {(3, 4)}}, True, "c") == {("pair.data", (3, 4)): b"ab"}


def test_duplicate_index_entry_stops_the_raw_ingest(tmp_path, graph_id, capsys):
    import pipeline
    info = raw_dataset(tmp_path, 4)
    layout = plan_ingest(info["config"], graph_id, raw=True).layout
    path = tmp_path / "raw" / "agg" / "chunked_rg" / "between_chunks_0_1_1_1.data"
    data = path.read_bytes()
    offset, length = (int(v) for v in np.frombuffer(data[4:20], "<u8"))
    key = tuple(int(k) for k in np.frombuffer(data[offset:offset + length - 4], index_dtype(True))[0]["chunkid"])
    coords = [tuple(int(v) for v in layout.coords_of(np.uint64(k), 1)[0]) for k in key]
    path.write_bytes(duplicate_index_entry(data, True))
    assert pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--raw", "--skip_writes"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    assert "between_chunks_0_1_1_1.data (chunk (" in err[0]
    assert f"the index lists key {key} (layer-1 chunks {coords[0]} and {coords[1]}) 2 times" in err[0]


def test_raw_sv_outside_the_grid_is_named_before_anything_is_written(tmp_path):
    from beam_ingest.layout import GraphLayout
    layout = GraphLayout((64, 64, 64), (0, 0, 0), (256, 256, 128))  # 4x4x2
    me = int(layout.chunk_id(1, 1, 1, 0))
    own, far = me | 1, int(layout.chunk_id(1, 1000, 1000, 1000)) | 5
    rec = np.zeros(2, edge_dtype(2))
    rec["sv1"], rec["sv2"] = [own, own], [me | 2, far]
    agg = tmp_path / "agg"
    (agg / "chunked_rg").mkdir(parents=True)
    (agg / "remap").mkdir()
    (agg / "chunked_rg" / "in_chunk_0_1_1_0.data").write_bytes(write_shard({me: rec.tobytes()}, False))
    out = tmp_path / "edges"
    reader = RawReader(str(agg), layout, 2, (8, 8, 40))  # it writes nothing: EDGES are written by the stage
    with pytest.raises(InputError, match=rf"in_chunk_0_1_1_0\.data \(chunk \(1, 1, 0\)\): SV {far} of the payload "
                                         rf"keyed {me} lies in chunk \(1000, 1000, 1000\), outside the 4x4x2"):
        reader.read((1, 1, 0))
    assert not out.exists()
    rec["sv2"] = [me | 2, me | 3]
    (agg / "chunked_rg" / "in_chunk_0_1_1_0.data").write_bytes(write_shard({me: rec.tobytes()}, False))
    pairs = np.array([[own, me | 2], [me | 3, far]], "<u8")
    (agg / "remap" / "done_0_1_1_0.data").write_bytes(write_shard({me: pairs.tobytes()}, False))
    with pytest.raises(InputError, match=rf"done_0_1_1_0\.data \(chunk \(1, 1, 0\)\): SV {far} of the payload "
                                         rf"keyed {me} lies in chunk \(1000, 1000, 1000\)"):
        reader.read((1, 1, 0))
    assert not out.exists()
