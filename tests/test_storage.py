"""Every input and output path as file://, s3:// (moto) and gs:// (fake-gcs-server)."""
import os

import numpy as np
import pytest
import yaml
from cloudfiles import CloudFiles

from beam_ingest.launch.config import load_config
from beam_ingest.chunk_inputs import Edges
from beam_ingest.inputs.precomputed import PrecomputedReader, edges_filename, encode_edges
from beam_ingest.errors import InputError
from beam_ingest.inputs.watershed import read_watershed_info
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from helpers import run_ingest
from test_end_to_end import check_against_reference


def upload(local_dir, url):
    files = []
    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                files.append((os.path.relpath(path, local_dir), fh.read()))
    CloudFiles(url).puts(files, raw=True, compress=None)


def test_readers_on_every_backend(storage_url):
    a = np.array([72057594037927937, 72057594037927938], np.uint64)
    edges = {"in_chunk": Edges(a, a[::-1], np.ones(2, np.float32), np.ones(2, np.uint64))}
    CloudFiles(storage_url).put(f"edges/{edges_filename((0, 0, 0))}", encode_edges(edges), raw=True, compress=None)
    CloudFiles(storage_url).put(f"edges/{edges_filename((1, 0, 0))}", b"corrupt", raw=True, compress=None)
    reader = PrecomputedReader(f"{storage_url}/edges", f"{storage_url}/components")
    got = reader.read((0, 0, 0))
    assert got.edges["in_chunk"].ids1.tolist() == a.tolist() and len(got.component_svs) == 0
    assert all(len(e) == 0 for e in reader.read((5, 5, 5)).edges.values())  # missing = empty
    with pytest.raises(InputError, match=r"edges/edges_1_0_0\.proto\.zst \(chunk \(1, 0, 0\)\)"):
        reader.read((1, 0, 0))
    CloudFiles(storage_url).put("ws/info", b'{"scales": [{"size": [128, 64, 64], "voxel_offset": [1, 2, 3], '
                                           b'"resolution": [8, 8, 40]}]}', raw=True, compress=None)
    assert read_watershed_info(f"{storage_url}/ws").size == (128, 64, 64)
    with pytest.raises(InputError, match="not found"):
        read_watershed_info(f"{storage_url}/no-ws")


def test_ingest_from_every_backend(storage_url, graph_id, tmp_path):
    info = generate(str(tmp_path / "data"), SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=25, seed=31))
    upload(str(tmp_path / "data"), storage_url)
    with open(info["config"]) as fh:
        cfg = yaml.safe_load(fh)
    for key in ("EDGES", "COMPONENTS", "WATERSHED"):
        cfg["data_source"][key] = storage_url + "/" + cfg["data_source"][key].rsplit("/", 1)[1]
    CloudFiles(storage_url).put("config.yml", yaml.safe_dump(cfg).encode(), raw=True, compress=None)
    assert load_config(f"{storage_url}/config.yml").data_source.EDGES == f"{storage_url}/edges"
    _, _, plan = run_ingest(f"{storage_url}/config.yml", graph_id, f"--checkpoint_dir={storage_url}/ckpt")
    check_against_reference(info["config"], graph_id, plan.layout)  # the reference reads the local copy
    assert CloudFiles(f"{storage_url}/ckpt").get("layer2/_COMPLETE") is not None
