"""`--from_segmentation` (docs/segmentation-input.md): volumes in, PyChunkedGraph inputs and table out.

What the pipeline writes (WATERSHED, EDGES, COMPONENTS) is compared with an independent
plain-Python reference (tests/seg_reference.py); then the table must equal, cell for cell,
the table built afterwards from those files, and the union-find reference.
"""
import dataclasses
import json
import os

import numpy as np
import pytest
import yaml
from cloudvolume import CloudVolume

import pipeline
from beam_ingest.errors import ConfigError, InputError
from beam_ingest.synthetic.segmentation import SegmentationSpec, copy_volume, generate_segmentation
from helpers import forget_half_of_layer2_acks, run_ingest
from seg_reference import diff_edges, read_seg_outputs, seg_reference
from test_end_to_end import check_against_reference
from test_runs import cells_of


def volume(url, fill_missing=False):
    return np.asarray(CloudVolume(url, progress=False, fill_missing=fill_missing)[:, :, :])


def config_of(info):
    with open(info["config"]) as fh:
        return yaml.safe_load(fh)


def write_config(cfg, path):
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return str(path)


def precomputed_config(info, tmp_path):
    """The same graph read back from the files the segmentation run wrote."""
    cfg = config_of(info)
    cfg.pop("ingest_config", None)
    return write_config(cfg, tmp_path / "from_files.yml")


def check_outputs(info, plan, fill_missing=False):
    """WATERSHED, EDGES and COMPONENTS equal the plain-Python reference."""
    layout = plan.layout
    cfg = config_of(info)
    sv = volume(info["supervoxels"], fill_missing)[..., 0]
    objects = volume(info["objects"], fill_missing)[..., 0] if info.get("objects") else None
    affinities = volume(info["affinities"], fill_missing) if info.get("affinities") else None
    ref = seg_reference(sv, layout.chunk_size, layout.voxel_offset, lambda c: int(layout.chunk_id(1, *c)),
                        objects=objects, affinities=affinities, max_segment=(1 << layout.segment_bits(1)) - 1)
    ws = volume(cfg["data_source"]["WATERSHED"])[..., 0]
    assert ws.dtype == np.uint64
    assert np.array_equal(ws, ref["watershed"])
    coord_of = lambda s: tuple(int(v) for v in layout.coords_of(np.uint64(s), 1)[0])
    edges, components = read_seg_outputs(cfg["data_source"]["EDGES"], cfg["data_source"]["COMPONENTS"], coord_of)
    assert not diff_edges(ref["edges"], edges, rel=1e-6)
    assert components == ref["components"]
    return ref


SPECS = {
    "objects+affinities": SegmentationSpec(seed=1),
    "no-objects": SegmentationSpec(seed=2, objects=False),
    "no-affinities": SegmentationSpec(seed=3, affinities=False),
    # storage chunks that do not divide CHUNK_SIZE (8, 8, 4): chunks read files shared with neighbours
    "odd-storage-chunks": SegmentationSpec(seed=14, storage_chunk=(5, 3, 3)),
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_segmentation_matches_reference_and_files(tmp_path, graph_id, kind):
    info = generate_segmentation(str(tmp_path / "data"), SPECS[kind])
    _, counters, plan = run_ingest(info["config"], graph_id, "--from_segmentation")
    assert counters["completion_proven"] == 1
    ref = check_outputs(info, plan)
    assert counters["layer2_svs"] == len(ref["relabel"])
    # the table equals the one built from the files it wrote, and the union-find reference
    run_ingest(precomputed_config(info, tmp_path), graph_id + "-files")
    assert cells_of(graph_id) == cells_of(graph_id + "-files")
    check_against_reference(precomputed_config(info, tmp_path), graph_id, plan.layout)


def test_sv_map_and_retry_write_identical_bytes(tmp_path, graph_id):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=4))
    cfg = config_of(info)
    cfg["ingest_config"]["SV_MAP"] = "file://" + str(tmp_path / "data" / "sv_map")
    config = write_config(cfg, tmp_path / "with_map.yml")
    _, _, plan = run_ingest(config, graph_id, "--from_segmentation")
    outputs = [os.path.join(root, name) for key in ("EDGES", "COMPONENTS")
               for root, _, names in os.walk(cfg["data_source"][key].removeprefix("file://")) for name in names]
    before = {p: open(p, "rb").read() for p in outputs}
    ws_before = volume(cfg["data_source"]["WATERSHED"])
    run_ingest(config, graph_id, "--from_segmentation", "--if_exists=recreate")
    assert {p: open(p, "rb").read() for p in outputs} == before
    assert np.array_equal(volume(cfg["data_source"]["WATERSHED"]), ws_before)
    # SV_MAP: per chunk, position k - 1 holds the original id of segment k
    sv = volume(info["supervoxels"])[..., 0]
    ws = ws_before[..., 0]
    maps = {}
    for name in os.listdir(tmp_path / "data" / "sv_map"):
        x, y, z = (int(v) for v in name.removeprefix("sv_map_").removesuffix(".npy").split("_"))
        maps[(x, y, z)] = np.load(tmp_path / "data" / "sv_map" / name)
    mask = ws != 0
    seg = (ws[mask] & np.uint64((1 << plan.layout.segment_bits(1)) - 1)).astype(np.int64)
    coords = plan.layout.coords_of(ws[mask], 1)
    originals = np.array([maps[tuple(c)][k - 1] for c, k in zip(coords.tolist(), seg.tolist())], np.uint64)
    assert np.array_equal(originals, sv[mask].astype(np.uint64))


def test_already_encoded_supervoxels_are_not_rewritten(tmp_path, graph_id):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=5))
    run_ingest(info["config"], graph_id, "--from_segmentation")
    cfg = config_of(info)
    encoded = cfg["data_source"]["WATERSHED"]
    cfg["ingest_config"] = {"SUPERVOXELS": encoded}  # the relabelled volume, named twice
    cfg["data_source"]["EDGES"] = "file://" + str(tmp_path / "again" / "edges")
    cfg["data_source"]["COMPONENTS"] = "file://" + str(tmp_path / "again" / "components")
    config = write_config(cfg, tmp_path / "in_place.yml")
    folder = encoded.removeprefix("file://")
    stamps = {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns for r, _, ns in os.walk(folder) for n in ns}
    run_ingest(config, graph_id + "-again", "--from_segmentation")
    assert {os.path.join(r, n): os.stat(os.path.join(r, n)).st_mtime_ns
            for r, _, ns in os.walk(folder) for n in ns} == stamps  # nothing rewritten
    # without OBJECTS the components differ (one group per supervoxel): compare with the reference instead
    _, _, plan = run_ingest(precomputed_config({**info, "config": config}, tmp_path), graph_id + "-files")
    assert cells_of(graph_id + "-again") == cells_of(graph_id + "-files")


def test_non_encoded_supervoxels_named_as_watershed_are_refused(tmp_path, graph_id):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=6))
    cfg = config_of(info)
    cfg["data_source"]["WATERSHED"] = cfg["ingest_config"]["SUPERVOXELS"]
    config = write_config(cfg, tmp_path / "bad.yml")
    code = pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation"])
    assert code != 0


def _rewrite(url, array):
    cv = CloudVolume(url, progress=False)
    cv[:, :, :] = array


def test_one_supervoxel_under_two_objects_across_a_face(tmp_path, graph_id, capsys):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=7))
    layout_chunk = np.asarray(config_of(info)["graph_config"]["CHUNK_SIZE"])
    sv = volume(info["supervoxels"])[..., 0]
    objects = volume(info["objects"])[..., 0]
    # a supervoxel with voxels on both sides of the first x face, under a non-zero object
    face = layout_chunk[0]
    left, right = sv[face - 1], sv[face]
    shared = np.intersect1d(left[left != 0], right[right != 0])
    s = next(int(v) for v in shared if objects[sv == v].max() > 0)
    changed = objects.copy()
    part = (sv == s) & (np.arange(sv.shape[0])[:, None, None] >= face)
    changed[part] = objects[sv == s].max() + 1000
    _rewrite(info["objects"], changed[..., np.newaxis])
    code = pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"supervoxel {s}" in err and "layer-2 chunk" in err and "under object" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_more_ids_than_segment_bits(tmp_path, graph_id, capsys):
    """SPATIAL_BITS 16 leave 8 segment bits (255 ids): a chunk of 256 distinct ids is refused."""
    d = tmp_path / "dense"
    info = CloudVolume.create_new_info(1, "segmentation", "uint64", "raw", [4, 4, 40], [0, 0, 0], [8, 8, 8],
                                       chunk_size=[8, 8, 4])
    cv = CloudVolume(f"file://{d}/sv", info=info, progress=False)
    cv.commit_info()
    cv[:, :, :] = (np.arange(8 * 8 * 8, dtype=np.uint64).reshape(8, 8, 8) + 1)[..., np.newaxis]
    cfg = {"data_source": {"WATERSHED": f"file://{d}/ws", "EDGES": f"file://{d}/edges",
                           "COMPONENTS": f"file://{d}/components"},
           "graph_config": {"CHUNK_SIZE": [8, 8, 4], "SPATIAL_BITS": 16},
           "ingest_config": {"SUPERVOXELS": f"file://{d}/sv"}}
    config = write_config(cfg, tmp_path / "dense.yml")
    code = pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2 and "layer-2 chunk (0, 0, 0) holds 256 supervoxel ids" in err


def test_config_mistakes_are_one_line_before_anything_is_created(tmp_path, graph_id, capsys):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=8))
    cfg = config_of(info)
    ws = cfg["data_source"]["WATERSHED"].removeprefix("file://")
    cases = []
    missing = {**cfg, "ingest_config": {k: v for k, v in cfg["ingest_config"].items() if k != "SUPERVOXELS"}}
    cases.append((missing, "ingest_config.SUPERVOXELS: required key is missing"))
    swapped = {**cfg, "ingest_config": {**cfg["ingest_config"], "AFFINITIES": cfg["ingest_config"]["OBJECTS"]}}
    cases.append((swapped, "ingest_config.AFFINITIES"))
    odd = {**cfg, "graph_config": {**cfg["graph_config"], "CHUNK_SIZE": [c + 1 for c in
                                                                          cfg["graph_config"]["CHUNK_SIZE"]]}}
    cases.append((odd, None))  # a CHUNK_SIZE the existing WATERSHED's storage chunks do not divide (below)
    for i, (bad, message) in enumerate(cases[:2]):
        code = pipeline.main(["--config", write_config(bad, tmp_path / f"bad{i}.yml"), "--graph_id", graph_id,
                              "--from_segmentation"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(ws)
    # the output exists with a storage chunk that does not divide the new CHUNK_SIZE
    run_ingest(info["config"], graph_id + "-first", "--from_segmentation")
    code = pipeline.main(["--config", write_config(odd, tmp_path / "odd.yml"), "--graph_id", graph_id + "-odd",
                          "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2 and "does not divide graph_config.CHUNK_SIZE" in err
    # an input in an encoding whose codec is not installed (jxl needs imagecodecs): its info is enough
    jxl = str(tmp_path / "jxl_objects")
    info_jxl = dict(CloudVolume(cfg["ingest_config"]["OBJECTS"], progress=False).info)
    info_jxl["scales"] = [dict(info_jxl["scales"][0], encoding="jxl")]
    CloudVolume("file://" + jxl, info=info_jxl, progress=False).commit_info()
    bad = {**cfg, "ingest_config": {**cfg["ingest_config"], "OBJECTS": "file://" + jxl}}
    code = pipeline.main(["--config", write_config(bad, tmp_path / "jxl.yml"), "--graph_id", graph_id + "-jxl",
                          "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2 and "ingest_config.OBJECTS" in err and "stored as jxl, which cannot be decoded here" in err \
        and "pip install imagecodecs" in err and len(err.strip().splitlines()) == 1, err
    # an existing sharded WATERSHED: it could not be written chunk by chunk
    sharded = {**cfg, "data_source": {**cfg["data_source"], "WATERSHED": copy_volume(
        cfg["data_source"]["WATERSHED"], "file://" + str(tmp_path / "sharded_ws"), sharded=True)}}
    code = pipeline.main(["--config", write_config(sharded, tmp_path / "sharded.yml"), "--graph_id",
                          graph_id + "-sharded", "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2 and "sharded_ws exists and is sharded" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ConfigError, match="--raw and --from_segmentation"):
        run_ingest(info["config"], graph_id, "--from_segmentation", "--raw")


def test_missing_storage_files_stop_the_run_or_read_as_background(tmp_path, graph_id, capsys):
    from cloudfiles import CloudFiles
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=11))
    gone = {}
    for key in ("supervoxels", "objects", "affinities"):  # one storage file of each, in different chunks
        files = CloudFiles(info[key] + "/4_4_40")
        names = sorted(files.list())
        gone[key] = names[{"supervoxels": 3, "objects": len(names) // 2, "affinities": -2}[key]]
        files.delete(gone[key])
    code = pipeline.main(["--config", info["config"], "--graph_id", graph_id, "--from_segmentation"])
    err = capsys.readouterr().err
    assert code == 2 and len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    assert "cannot be read for layer-2 chunk" in err and "does not exist" in err
    assert any(name.removesuffix(".gz") in err for name in gone.values()), err
    with pytest.raises(ConfigError, match="--fill_missing: applies to --from_segmentation only"):
        run_ingest(info["config"], graph_id, "--fill_missing")
    # --fill_missing: the missing regions are background (affinity 0), and everything is as from those volumes
    _, counters, plan = run_ingest(info["config"], graph_id + "-filled", "--from_segmentation", "--fill_missing")
    assert counters["completion_proven"] == 1
    check_outputs(info, plan, fill_missing=True)
    run_ingest(precomputed_config(info, tmp_path), graph_id + "-files")
    assert cells_of(graph_id + "-filled") == cells_of(graph_id + "-files")


def test_test_run_prints_the_counts_of_what_it_writes(tmp_path, graph_id, capsys):
    """--test: the 8 centre chunks, with their face neighbours' voxels; counts printed first equal
    the files the run writes, which equal those of a whole run."""
    from seg_reference import read_seg_outputs
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=12, chunks=(4, 4, 3)))
    cfg = config_of(info)
    _, counters, plan = run_ingest(info["config"], graph_id, "--from_segmentation", "--test")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith("chunk (")]
    coords = [tuple(c) for c in plan.layout.test_coords()]
    assert len(lines) == len(coords) == counters["layer2_chunks"]
    printed = {}
    for line in lines:
        coord = tuple(int(v) for v in line.split("(", 1)[1].split(")", 1)[0].split(","))
        printed[coord] = int(line.split("):", 1)[1].split(" edges", 1)[0])
    assert sum(printed.values()) == counters["layer2_edges"]
    written = sorted(os.listdir(cfg["data_source"]["EDGES"].removeprefix("file://")))
    assert written == sorted(f"edges_{x}_{y}_{z}.proto.zst" for x, y, z in coords)
    test_files = {n: open(os.path.join(cfg["data_source"]["EDGES"].removeprefix("file://"), n), "rb").read()
                  for n in written}
    run_ingest(info["config"], graph_id + "-all", "--from_segmentation")
    for name, data in test_files.items():  # a test chunk's edges include those to chunks outside the test
        assert open(os.path.join(cfg["data_source"]["EDGES"].removeprefix("file://"), name), "rb").read() == data


def test_resume_rebuilds_only_unacknowledged_chunks_with_their_neighbours(tmp_path, graph_id):
    """Kill at layer 3, lose some layer-2 acknowledgements: those chunks are read again with their
    face neighbours (done ones are read, not rewritten) and the table and files equal a clean run's."""
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=13))
    cfg = config_of(info)
    run_ingest(info["config"], graph_id + "-clean", "--from_segmentation")
    outputs = {key: cfg["data_source"][key].removeprefix("file://") for key in ("EDGES", "COMPONENTS", "WATERSHED")}
    snapshot = {os.path.join(r, n): open(os.path.join(r, n), "rb").read()
                for folder in outputs.values() for r, _, ns in os.walk(folder) for n in ns}
    ckpt = f"file://{tmp_path}/ckpt"
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(info["config"], graph_id, "--from_segmentation", f"--checkpoint_dir={ckpt}", "--fail_at_layer=3")
    lost = forget_half_of_layer2_acks(tmp_path / "ckpt")
    removed = 0
    for x, y, z in lost:  # their files go too: the resume must write them again
        path = os.path.join(outputs["EDGES"], f"edges_{x}_{y}_{z}.proto.zst")
        if os.path.exists(path):
            os.remove(path)
            removed += 1
    assert removed
    _, counters, _ = run_ingest(info["config"], graph_id, "--from_segmentation", f"--checkpoint_dir={ckpt}",
                                "--if_exists=continue", timestamp=None)
    assert counters["layer2_chunks"] == len(lost)
    n = np.asarray(info["n_chunks"])
    touched = {tuple(int(v) for v in np.add(c, d)) for c in lost for d in [(0, 0, 0)] + [
        tuple(s * (k == a) for k in range(3)) for a in range(3) for s in (-1, 1)]}
    touched = {c for c in touched if all(0 <= v < m for v, m in zip(c, n))}
    assert counters["segmentation_chunks"] == len(touched)  # chunks touching no rebuilt chunk are not read
    assert cells_of(graph_id) == cells_of(graph_id + "-clean")
    assert {os.path.join(r, n): open(os.path.join(r, n), "rb").read()
            for folder in outputs.values() for r, _, ns in os.walk(folder) for n in ns} == snapshot


def test_other_objects_geometry_is_refused(tmp_path, graph_id):
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=9))
    other = generate_segmentation(str(tmp_path / "other"), dataclasses.replace(SegmentationSpec(seed=9),
                                                                               voxel_offset=(0, 0, 0)))
    cfg = config_of(info)
    cfg["ingest_config"]["OBJECTS"] = other["objects"]
    with pytest.raises(InputError, match="ingest_config.OBJECTS and ingest_config.SUPERVOXELS differ"):
        run_ingest(write_config(cfg, tmp_path / "mixed.yml"), graph_id, "--from_segmentation")


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_segmentation_on_object_storage(tmp_path, graph_id, store, request):
    """Volumes in and outputs on S3 (moto) and GCS (fake-gcs-server)."""
    from cloudfiles import CloudFiles
    server = request.getfixturevalue("s3_server" if store == "s3" else "gcs_server")
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=10, chunks=(2, 2, 2), affinities=False))
    local = CloudFiles("file://" + str(tmp_path / "data"))
    files = [(n, local.get(n)) for n in sorted({n.removesuffix(".gz") for n in local.list()})]  # decompressed
    base = f"{server}/seg-{graph_id}"
    CloudFiles(base).puts(files, raw=True, compress=None)
    cfg = config_of(info)
    for key in ("SUPERVOXELS", "OBJECTS"):
        cfg["ingest_config"][key] = base + "/" + cfg["ingest_config"][key].rstrip("/").rsplit("/", 1)[1]
    for key in ("WATERSHED", "EDGES", "COMPONENTS"):
        cfg["data_source"][key] = base + "/" + cfg["data_source"][key].rstrip("/").rsplit("/", 1)[1] + "-out"
    _, _, plan = run_ingest(write_config(cfg, tmp_path / "remote.yml"), graph_id, "--from_segmentation")
    run_ingest(info["config"], graph_id + "-local", "--from_segmentation")
    assert cells_of(graph_id) == cells_of(graph_id + "-local")
    remote_ws = np.asarray(CloudVolume(cfg["data_source"]["WATERSHED"], progress=False)[:, :, :])
    assert np.array_equal(remote_ws, volume(config_of(info)["data_source"]["WATERSHED"]))
    assert CloudFiles(cfg["data_source"]["EDGES"]).get("edges_0_0_0.proto.zst") == \
        CloudFiles(config_of(info)["data_source"]["EDGES"]).get("edges_0_0_0.proto.zst")


@pytest.mark.parametrize("kind", ["sharded", "compresso", "crackle"])
def test_sharded_and_label_codec_volumes_are_read_chunk_by_chunk(tmp_path, graph_id, kind):
    # no partial last chunk: see copy_volume
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=15, partial_last_chunk=False))
    _, plain, _ = run_ingest(info["config"], graph_id + "-plain", "--from_segmentation")
    cfg = config_of(info)
    for key in ("SUPERVOXELS", "OBJECTS", "AFFINITIES"):
        if kind == "sharded" or key != "AFFINITIES":  # the label codecs are for labels
            info[key.lower()] = cfg["ingest_config"][key] = copy_volume(
                cfg["ingest_config"][key], "file://" + str(tmp_path / kind / key.lower()), sharded=kind == "sharded",
                encoding=None if kind == "sharded" else kind)
    for key in ("WATERSHED", "EDGES", "COMPONENTS"):
        cfg["data_source"][key] = "file://" + str(tmp_path / kind / ("out_" + key.lower()))
    config = write_config(cfg, tmp_path / f"{kind}.yml")
    _, counters, plan = run_ingest(config, graph_id, "--from_segmentation")
    check_outputs({**info, "config": config}, plan)
    assert cells_of(graph_id) == cells_of(graph_id + "-plain")
    # each storage chunk is fetched and decoded on its own, as the plain files are (a cutout counts one)
    assert counters["segmentation_storage_files"] == plain["segmentation_storage_files"] > \
        3 * counters["segmentation_chunks"]


@pytest.mark.parametrize("store", ["file", "s3"])
def test_watershed_with_several_storage_chunks_per_chunk_is_written_whole(tmp_path, graph_id, store, request):
    """An existing WATERSHED whose storage chunks are smaller than CHUNK_SIZE (8 storage files
    per layer-2 chunk, as a 256x256x512 chunk has 16 of 128^3): every file of every chunk is
    written, sequentially (file://) and by the writer's thread pool (object storage)."""
    info = generate_segmentation(str(tmp_path / "data"), SegmentationSpec(seed=12, chunks=(2, 2, 2),
                                                                          affinities=False))
    run_ingest(info["config"], graph_id + "-plain", "--from_segmentation")
    cfg = config_of(info)
    plain = volume(cfg["data_source"]["WATERSHED"])
    base = ("file://" + str(tmp_path / "out")) if store == "file" else \
        f"{request.getfixturevalue('s3_server')}/ws-{graph_id}"
    small = json.loads(json.dumps(CloudVolume(cfg["data_source"]["WATERSHED"], progress=False).info))
    chunk = cfg["graph_config"]["CHUNK_SIZE"]
    small["scales"][0]["chunk_sizes"] = [[c // 2 for c in chunk]]
    cfg["data_source"].update(WATERSHED=base + "/ws", EDGES=base + "/edges", COMPONENTS=base + "/components")
    CloudVolume(cfg["data_source"]["WATERSHED"], info=small, progress=False).commit_info()
    run_ingest(write_config(cfg, tmp_path / "small.yml"), graph_id, "--from_segmentation")
    assert cells_of(graph_id) == cells_of(graph_id + "-plain")
    written = CloudVolume(cfg["data_source"]["WATERSHED"], progress=False)
    assert list(written.scales[0]["chunk_sizes"][0]) == [c // 2 for c in chunk]
    assert np.array_equal(np.asarray(written[:, :, :]), plain)
