"""`--ocdbt`: tables in which PyChunkedGraph 3.x can split supervoxels: the meta says so, and
WATERSHED's OCDBT copy is written in the same run, opened here exactly as the server opens it."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import yaml

import pipeline
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import TS, forget_half_of_layer2_acks, run_ingest

ts = pytest.importorskip("tensorstore")  # a pinned requirement: always there in CI

SPEC = SegmentationSpec(chunks=(3, 2, 2), voxel_offset=(0, 0, 0))


def pcg_open_copy(watershed: str):
    """PyChunkedGraph 3.x's own open of the copy (pychunkedgraph/graph/ocdbt.py,
    get_seg_source_and_destination_ocdbt with create=False), restated: WATERSHED's schema
    from tensorstore's neuroglancer_precomputed driver, then the OCDBT spec with it."""
    src = ts.open({"driver": "neuroglancer_precomputed", "kvstore": watershed}).result()
    schema = src.schema
    dst_spec = {"driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "ocdbt", "base": os.path.join(watershed, "ocdbt", "base"),
                            "config": {"compression": {"id": "zstd", "level": 12}}}}
    return ts.open(dst_spec, create=False, rank=schema.rank, dtype=schema.dtype, codec=schema.codec,
                   domain=schema.domain, shape=schema.shape, chunk_layout=schema.chunk_layout,
                   dimension_units=schema.dimension_units, delete_existing=False).result()


def watershed_voxels(watershed: str) -> np.ndarray:
    """WATERSHED's base scale, read with cloud-volume (its local gzip files end in .gz, which
    tensorstore does not read)."""
    from cloudvolume import CloudVolume
    volume = CloudVolume(watershed, mip=0, progress=False)
    return np.asarray(volume[volume.bounds])[..., 0]


def the_copy(watershed: str) -> np.ndarray:
    return np.asarray(pcg_open_copy(watershed)[..., 0].read().result())


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return generate_segmentation(str(tmp_path_factory.mktemp("ocdbt") / "seg"), SPEC)


def _config(volumes, tmp_path, **data_source):
    with open(volumes["config"]) as fh:
        config = yaml.safe_load(fh)
    config["data_source"]["WATERSHED"] = f"file://{tmp_path}/watershed"
    config["data_source"]["EDGES"] = f"file://{tmp_path}/edges"
    config["data_source"]["COMPONENTS"] = f"file://{tmp_path}/components"
    config["data_source"].update(data_source)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_from_segmentation_the_copy_opens_as_pcg_opens_it_and_equals_watershed(volumes, tmp_path, graph_id):
    from pcg_client import PcgRead
    config = _config(volumes, tmp_path)
    _, counters, plan = run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt",
                                   "--sv_split_threshold=7", "--write_batch_rows=50")
    watershed = f"file://{tmp_path}/watershed"
    expected = watershed_voxels(watershed)
    assert expected.any() and expected.shape == tuple(plan.layout.voxel_counts)
    np.testing.assert_array_equal(the_copy(watershed), expected)
    read = PcgRead(graph_id, "emulator", "emulator")  # the meta as PyChunkedGraph's client reads it
    try:
        assert read.meta.custom_data["seg"] == {"ocdbt": True, "sv_split_threshold": 7}
    finally:
        read.close()


def test_precomputed_input_copies_watershed_block_by_block(volumes, tmp_path, graph_id):
    """EDGES, COMPONENTS and WATERSHED of a segmentation run, ingested as precomputed input:
    the copy is made from WATERSHED's blocks (one read per chunk, with the L2 cache's)."""
    first = tmp_path / "first"
    run_ingest(_config(volumes, first), graph_id + "-seg", "--from_segmentation")
    second = tmp_path / "second"
    shutil.copytree(first / "watershed", second / "watershed")
    config = _config(volumes, second, EDGES=f"file://{first}/edges", COMPONENTS=f"file://{first}/components")
    run_ingest(config, graph_id, "--pcg_version=3", "--ocdbt", f"--l2cache_table={graph_id}-cache",
               "--write_batch_rows=40")
    watershed = f"file://{second}/watershed"
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))


def test_ocdbt_needs_version_3_and_a_zero_offset(volumes, tmp_path, graph_id, capsys):
    assert pipeline.main(["--config", volumes["config"], "--graph_id", graph_id, "--from_segmentation",
                          "--ocdbt"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --ocdbt: needs --pcg_version 3 (supervoxel splitting is a "
                                               "PyChunkedGraph 3.x feature)")
    assert pipeline.main(["--config", volumes["config"], "--graph_id", graph_id, "--sv_split_threshold=3"]) == 2
    assert "--sv_split_threshold: applies to --ocdbt only" in capsys.readouterr().err
    offset = generate_segmentation(str(tmp_path / "offset"), SegmentationSpec(chunks=(2, 2, 1)))
    assert pipeline.main(["--config", _config(offset, tmp_path), "--graph_id", graph_id, "--from_segmentation",
                          "--pcg_version=3", "--ocdbt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: --ocdbt: data_source.WATERSHED starts at voxel offset \[5, 3, 2\]; "
                                      r"PyChunkedGraph 3.x opens", err[0]), err
    assert not (tmp_path / "watershed").exists()  # nothing created


def test_another_graphs_copy_is_refused_before_anything_is_created(volumes, tmp_path, graph_id, capsys):
    config = _config(volumes, tmp_path)
    run_ingest(config, graph_id + "-a", "--from_segmentation", "--pcg_version=3", "--ocdbt")
    marker = json.loads((tmp_path / "watershed" / "ocdbt" / "beam_ingest_graph.json").read_text())
    assert marker == {"graph_id": graph_id + "-a"}
    before = the_copy(f"file://{tmp_path}/watershed")
    code = pipeline.main(["--config", config, "--graph_id", graph_id + "-b", "--from_segmentation",
                          "--pcg_version=3", "--ocdbt", "--if_exists=recreate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds the OCDBT copy of graph" in err[0], err
    from helpers import open_table
    from beam_ingest.store.admin import table_exists
    assert not table_exists(open_table(graph_id + "-b"))
    np.testing.assert_array_equal(the_copy(f"file://{tmp_path}/watershed"), before)


def test_the_copy_is_skipped_by_a_dry_run(volumes, tmp_path, graph_id):
    config = _config(volumes, tmp_path)
    _, counters, _ = pipeline.run(["--config", config, "--graph_id", graph_id, "--from_segmentation",
                                   "--pcg_version=3", "--ocdbt", "--dry_run=true", f"--ingest_timestamp={TS}"])
    assert counters["dry_run"] == 1
    assert not (tmp_path / "watershed" / "ocdbt").exists()


def test_two_worker_processes_write_one_copy(volumes, tmp_path, graph_id):
    """Several writers, no coordinator: each writes its own chunks' boxes, and tensorstore's
    optimistic concurrency on the OCDBT manifest keeps every one of them."""
    config = _config(volumes, tmp_path)
    run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt",
               "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--write_batch_rows=50")
    watershed = f"file://{tmp_path}/watershed"
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))


def test_verify_compares_the_copy_and_finds_a_damaged_box(volumes, tmp_path, graph_id, capsys):
    from beam_ingest.cli import main as cli
    config = _config(volumes, tmp_path)
    run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt")
    capsys.readouterr()
    assert cli(["verify", "--config", config, "--graph_id", graph_id, "--from_segmentation", "--sample", "100"]) == 0
    out = capsys.readouterr().out
    assert "the OCDBT copy's boxes of 12 chunk(s)" in out and "OK:" in out, out
    watershed = f"file://{tmp_path}/watershed"
    store = pcg_open_copy(watershed)
    store[0:2, 0:2, 0:1, 0].write(np.full((2, 2, 1), 12345, np.uint64)).result()  # as a bad split would
    assert cli(["verify", "--config", config, "--graph_id", graph_id, "--from_segmentation", "--sample", "100"]) == 1
    out = capsys.readouterr().out
    assert "layer-2 chunk (0, 0, 0): its box of the OCDBT copy differs from WATERSHED in 4 of" in out, out


def test_a_failed_run_continued_rewrites_what_is_missing_and_ends_identical(volumes, tmp_path, graph_id):
    """A run stopped before half of its layer-2 chunks were acknowledged (their acks dropped
    from the checkpoint, their boxes of the copy wiped, as a kill would leave them): the
    continued run rebuilds those chunks and writes their boxes again; the others it skips,
    keeping the boxes the first run wrote (the copy is kept, not made afresh)."""
    config = _config(volumes, tmp_path)
    checkpoint = f"--checkpoint_dir=file://{tmp_path}/checkpoint"
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt", "--fail_at_layer=3",
                   checkpoint)
    lost = forget_half_of_layer2_acks(tmp_path / "checkpoint")
    watershed = f"file://{tmp_path}/watershed"
    store, chunk = pcg_open_copy(watershed), np.asarray(SPEC.chunk_size)
    end = np.asarray(store.domain.exclusive_max[:3])
    for coord in lost:
        lo = np.asarray(coord) * chunk
        hi = np.minimum(lo + chunk, end)
        store[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], 0].write(np.zeros(tuple(hi - lo), np.uint64)).result()
    assert (the_copy(watershed) != watershed_voxels(watershed)).any()
    _, counters, _ = run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt",
                                "--if_exists=continue", checkpoint)
    assert counters["layer2_chunks"] == len(lost) > 0
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))


def test_the_copy_on_gcs(volumes, tmp_path, graph_id, gcs_server, monkeypatch):
    """WATERSHED and its copy on gs:// (fake-gcs-server: tensorstore's GCS driver is pointed at
    it as STORAGE_EMULATOR_HOST points google-cloud-storage at it)."""
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", os.environ["STORAGE_EMULATOR_HOST"])
    base = f"{gcs_server}/ocdbt-{graph_id}"
    config = _config(volumes, tmp_path, WATERSHED=f"{base}/watershed", EDGES=f"{base}/edges",
                     COMPONENTS=f"{base}/components")
    run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt", "--write_batch_rows=50")
    watershed = f"{base}/watershed"
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))


def test_recreate_over_our_own_copy_ends_equal_to_watershed(volumes, tmp_path, graph_id):
    config = _config(volumes, tmp_path)
    run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt")
    watershed = f"file://{tmp_path}/watershed"
    pcg_open_copy(watershed)[0:4, 0:4, 0:2, 0].write(np.full((4, 4, 2), 777, np.uint64)).result()
    assert (the_copy(watershed) == 777).sum() == 32
    run_ingest(config, graph_id, "--from_segmentation", "--pcg_version=3", "--ocdbt", "--if_exists=recreate")
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))


def test_raw_input_copies_watershed_block_by_block(tmp_path, graph_id):
    """--raw: the layer-2 stage reads each chunk's WATERSHED block for the copy (painted here)."""
    from cloudvolume import CloudVolume

    from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
    info = generate(str(tmp_path / "raw"), SyntheticSpec(chunks=(3, 2, 2), svs_per_chunk=20, seed=46, raw=True,
                                                         voxel_offset=(0, 0, 0)))
    watershed = f"file://{tmp_path}/raw/watershed"
    volume = CloudVolume(watershed, mip=0, progress=False)
    size = tuple(int(v) for v in volume.bounds.size3())
    painted = (np.arange(int(np.prod(size)), dtype=np.uint64) * 7919 % 1000).reshape(size, order="F")
    volume[0:size[0], 0:size[1], 0:size[2]] = painted
    run_ingest(info["config"], graph_id, "--raw", "--pcg_version=3", "--ocdbt", "--write_batch_rows=30")
    np.testing.assert_array_equal(the_copy(watershed), watershed_voxels(watershed))
    assert (the_copy(watershed) == painted).all()
