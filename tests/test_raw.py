"""Raw agglomeration input: sharded files, DATA_VERSIONs, and the precomputed files it writes."""
import os

import numpy as np
import pytest
import yaml

from beam_ingest.inputs.precomputed import InputError
from beam_ingest.inputs.raw import RawReader, decode_records, edge_dtype, sum_duplicates
from beam_ingest.inputs.sharded import ShardReader, write_shard
from beam_ingest.launcher import plan_ingest
from beam_ingest.synthetic import SyntheticSpec, generate
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
    from beam_ingest.config import ConfigError
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
