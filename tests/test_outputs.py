"""Exit 0 proves the files a run writes besides the table, and a dry run writes nothing.

EDGES and COMPONENTS (and SV_MAP) are what the server reads at edit time: after a run each
holds exactly what this run computes, whatever an earlier run on other data, a full disk or
a dry run left there.
"""
import os

import pytest
import yaml

import pipeline
from beam_ingest.store.reader import read_all
from beam_ingest.synthetic.precomputed import SyntheticSpec, generate
from beam_ingest.synthetic.segmentation import SegmentationSpec, generate_segmentation
from helpers import open_table, run_ingest
from test_runs import cells_of


def folder_bytes(*folders):
    """`{relative path: bytes}` of every file under the folders (file:// URLs or paths)."""
    out = {}
    for folder in folders:
        root = folder.removeprefix("file://")
        for base, _, names in os.walk(root):
            for name in names:
                path = os.path.join(base, name)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, os.path.dirname(root))] = fh.read()
    return out


def load(config):
    with open(config) as fh:
        return yaml.safe_load(fh)


def save(cfg, path):
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return str(path)


def raw_data(tmp_path, name, seed, empty):
    return generate(str(tmp_path / name), SyntheticSpec(chunks=(3, 3, 2), svs_per_chunk=20, seed=seed, raw=True,
                                                        empty_chunk_fraction=empty))


def outputs_of(config, keys=("EDGES", "COMPONENTS")):
    cfg = load(config)
    return [cfg["data_source"][k] for k in keys]


# 1. dry runs --------------------------------------------------------------------------------

def test_a_dry_run_on_the_local_runner_writes_nothing(tmp_path, graph_id, capsys):
    a = raw_data(tmp_path, "a", 31, 0.0)
    run_ingest(a["config"], graph_id, "--raw")
    table_before = read_all(open_table(graph_id))
    files_before = folder_bytes(*outputs_of(a["config"]))
    b = raw_data(tmp_path, "b", 32, 0.2)  # other inputs, pointed at the same table
    capsys.readouterr()
    argv = ["--config", b["config"], "--graph_id", graph_id, "--raw"]
    assert pipeline.main(argv + ["--dry_run=True"]) == 0
    out = capsys.readouterr().out
    assert "dry run of graph" in out and "nothing was created, written or run" in out
    assert read_all(open_table(graph_id)) == table_before  # not one cell, not one timestamp
    assert folder_bytes(*outputs_of(a["config"])) == files_before
    assert not any(os.path.exists(p.removeprefix("file://")) for p in outputs_of(b["config"]))
    # into a table that does not exist: none is created
    assert pipeline.main(["--config", b["config"], "--graph_id", graph_id + "-new", "--raw", "--dry_run=True"]) == 0
    assert not open_table(graph_id + "-new").exists()


def test_a_dry_run_of_segmentation_input_writes_nothing(tmp_path, graph_id, capsys):
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=33, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    cfg["ingest_config"]["SV_MAP"] = "file://" + str(tmp_path / "seg" / "sv_map")
    config = save(cfg, tmp_path / "seg.yml")
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation", "--dry_run=true"]) == 0
    assert "nothing was created" in capsys.readouterr().out
    for key in ("WATERSHED", "EDGES", "COMPONENTS"):
        assert not os.path.exists(cfg["data_source"][key].removeprefix("file://")), key
    assert not os.path.exists(str(tmp_path / "seg" / "sv_map"))
    assert not open_table(graph_id).exists()


def test_dry_run_values(tmp_path, graph_id, capsys):
    a = raw_data(tmp_path, "a", 34, 0.0)
    assert pipeline.main(["--config", a["config"], "--graph_id", graph_id, "--raw", "--dry_run=maybe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --dry_run: expected true or false, got 'maybe'"]
    assert not open_table(graph_id).exists()
    # false means false (Beam itself would take the string "false" as a dry run)
    assert pipeline.main(["--config", a["config"], "--graph_id", graph_id, "--raw", "--dry_run=false"]) == 0
    assert open_table(graph_id).exists()


# 2, 3. files left by other runs, partial files ----------------------------------------------

def test_raw_files_of_another_graph_in_the_same_folders_are_replaced(tmp_path, graph_id):
    a = raw_data(tmp_path, "a", 35, 0.0)
    b = raw_data(tmp_path, "b", 36, 0.3)
    run_ingest(b["config"], graph_id + "-fresh", "--raw")  # b's own files, in b's folders
    expected = folder_bytes(*outputs_of(b["config"]))
    run_ingest(a["config"], graph_id + "-a", "--raw")  # a's files in a's folders
    cfg = load(b["config"])
    cfg["data_source"]["EDGES"], cfg["data_source"]["COMPONENTS"] = outputs_of(a["config"])
    b_into_a = save(cfg, tmp_path / "b_into_a.yml")
    assert len(folder_bytes(*outputs_of(a["config"]))) > len(expected)  # a has files where b has none
    run_ingest(b_into_a, graph_id + "-b", "--raw")
    rename = lambda files: {k.split("/", 1)[1]: v for k, v in files.items()}
    assert rename(folder_bytes(*outputs_of(a["config"]))) == rename(expected)
    assert cells_of(graph_id + "-b") == cells_of(graph_id + "-fresh")


def test_a_partial_file_is_rewritten(tmp_path, graph_id):
    a = raw_data(tmp_path, "a", 37, 0.0)
    run_ingest(a["config"], graph_id + "-fresh", "--raw")
    expected = folder_bytes(*outputs_of(a["config"]))
    edges = outputs_of(a["config"])[0].removeprefix("file://")
    victim = sorted(os.listdir(edges))[0]
    open(os.path.join(edges, victim), "wb").close()  # a full disk's 0-byte file
    with pytest.raises(Exception, match="injected failure at layer 3"):
        run_ingest(a["config"], graph_id, "--raw", "--fail_at_layer=3")
    open(os.path.join(edges, victim), "wb").close()
    run_ingest(a["config"], graph_id, "--raw", "--if_exists=continue", timestamp=None)
    assert folder_bytes(*outputs_of(a["config"])) == expected
    assert not [n for n in os.listdir(edges) if ".tmp-" in n]


def test_segmentation_files_of_another_graph_are_replaced(tmp_path, graph_id):
    a = generate_segmentation(str(tmp_path / "a"), SegmentationSpec(seed=38, chunks=(2, 2, 2)))
    b = generate_segmentation(str(tmp_path / "b"), SegmentationSpec(seed=39, chunks=(2, 2, 2), voxels_per_sv=60))
    from cloudvolume import CloudVolume
    for key in ("supervoxels", "objects"):  # b's chunk (1, 1, 1) is background: it has no files at all
        cv = CloudVolume(b[key], progress=False)
        start = [int(o) + c for o, c in zip(cv.voxel_offset, (8, 8, 4))]
        stop = [int(m) for m in cv.bounds.maxpt]
        cv[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = 0
    keys = ("EDGES", "COMPONENTS", "WATERSHED")
    for info in (a, b):
        cfg = load(info["config"])
        cfg["ingest_config"]["SV_MAP"] = cfg["data_source"]["EDGES"].replace("edges", "sv_map")
        save(cfg, info["config"])
    run_ingest(b["config"], graph_id + "-fresh", "--from_segmentation")
    outputs = lambda info: outputs_of(info["config"], keys) + [load(info["config"])["ingest_config"]["SV_MAP"]]
    expected = folder_bytes(*outputs(b))
    assert not any(name.endswith("_1_1_1.npy") or "_1_1_1.proto" in name for name in expected)
    run_ingest(a["config"], graph_id + "-a", "--from_segmentation")
    cfg = load(b["config"])
    for key in keys:
        cfg["data_source"][key] = load(a["config"])["data_source"][key]
    cfg["ingest_config"]["SV_MAP"] = load(a["config"])["ingest_config"]["SV_MAP"]
    run_ingest(save(cfg, tmp_path / "b_into_a.yml"), graph_id + "-b", "--from_segmentation")
    rename = lambda files: {k.split("/", 1)[1]: v for k, v in files.items() if not k.endswith("info")}
    assert rename(folder_bytes(*outputs(a))) == rename(expected)
    assert cells_of(graph_id + "-b") == cells_of(graph_id + "-fresh")


# 6. every output in the run identity ----------------------------------------------------------

def test_adding_sv_map_to_a_table_is_not_a_continue(tmp_path, graph_id, capsys):
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=40, chunks=(2, 2, 2)))
    run_ingest(info["config"], graph_id, "--from_segmentation")
    cfg = load(info["config"])
    cfg["ingest_config"]["SV_MAP"] = "file://" + str(tmp_path / "seg" / "sv_map")
    config = save(cfg, tmp_path / "with_map.yml")
    capsys.readouterr()
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation",
                          "--if_exists=continue"]) == 2
    err = capsys.readouterr().err
    assert "was ingested from other inputs" in err and "segmentation.SV_MAP: table None vs this run" in err
    assert not os.path.exists(str(tmp_path / "seg" / "sv_map"))
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation",
                          "--if_exists=recreate"]) == 0
    assert len(os.listdir(str(tmp_path / "seg" / "sv_map"))) == 8


# 4, 9. every path checked, every output probed, before anything is created -------------------

BAD_PATHS = [
    ("gcs://b/edges", r"data_source.EDGES: 'gcs://b/edges' has an unknown scheme gcs://"),
    ("bogus://x/edges", r"data_source.EDGES: 'bogus://x/edges' has an unknown scheme bogus://"),
    ("gs:/b/edges", r"data_source.EDGES: 'gs:/b/edges' is not a URL \(gs:/ has one slash; write gs://...\)"),
    ("https://example.com/edges", r"data_source.EDGES: 'https://example.com/edges' cannot be written"),
    ("/proc/edges", r"data_source.EDGES: '/proc/edges' is not writable here"),
    ("{config}/edges", r"data_source.EDGES: '.*config.yml/edges' cannot be created: .*config.yml is a file"),
]


@pytest.mark.parametrize("path, message", BAD_PATHS, ids=[p for p, _ in BAD_PATHS])
def test_bad_output_paths_are_refused_before_anything_is_created(tmp_path, graph_id, capsys, path, message,
                                                                 monkeypatch):
    import re
    monkeypatch.chdir(tmp_path)
    a = raw_data(tmp_path, "a", 41, 0.0)
    cfg = load(a["config"])
    cfg["data_source"]["EDGES"] = path.format(config=a["config"])
    config = save(cfg, tmp_path / "bad.yml")
    before = sorted(os.listdir(tmp_path))
    capsys.readouterr()
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--raw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match("error: " + message, err[0]), err
    assert not open_table(graph_id).exists()
    assert sorted(os.listdir(tmp_path)) == before  # no gcs: or bogus: folder in the working directory


@pytest.mark.parametrize("value, message", [
    ("bogus://x", r"--checkpoint_dir: 'bogus://x' has an unknown scheme"),
    ("/proc/checkpoints", r"--checkpoint_dir: '/proc/checkpoints' is not writable here"),
    ("{config}/ckpt", r"--checkpoint_dir: .* is a file, not a folder"),
])
def test_bad_checkpoint_dirs_are_refused_before_anything_is_created(tmp_path, graph_id, capsys, value, message):
    import re
    a = raw_data(tmp_path, "a", 42, 0.0)
    capsys.readouterr()
    assert pipeline.main(["--config", a["config"], "--graph_id", graph_id, "--raw",
                          "--checkpoint_dir=" + value.format(config=a["config"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match("error: " + message, err[0]), err
    assert not open_table(graph_id).exists()


@pytest.fixture
def read_only_folder(tmp_path):
    import subprocess
    source, mount = tmp_path / "ro-source", tmp_path / "ro"
    source.mkdir()
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("key", ["COMPONENTS", "WATERSHED"])
def test_a_read_only_output_is_refused_before_anything_is_created(tmp_path, graph_id, capsys, read_only_folder, key):
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=43, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    cfg["data_source"][key] = "file://" + str(read_only_folder / key.lower())
    config = save(cfg, tmp_path / "ro.yml")
    capsys.readouterr()
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: data_source.{key}: " in err[0] and "Read-only file system" in err[0], err
    assert not open_table(graph_id).exists()
    for other in ("EDGES", "COMPONENTS", "WATERSHED"):
        assert not os.path.exists(cfg["data_source"][other].removeprefix("file://")), other


# 5. outputs are never inputs, whatever the spelling ------------------------------------------

def test_watershed_naming_supervoxels_in_another_spelling_never_rewrites_them(tmp_path, graph_id, capsys):
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=44, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    sv = cfg["ingest_config"]["SUPERVOXELS"]
    assert sv.startswith("file://")
    cfg["data_source"]["WATERSHED"] = sv.removeprefix("file://") + "/"  # /d/sv/ for file:///d/sv
    config = save(cfg, tmp_path / "alias.yml")
    before = folder_bytes(sv)
    capsys.readouterr()
    assert pipeline.main(["--config", config, "--graph_id", graph_id, "--from_segmentation"]) == 2
    err = capsys.readouterr().err
    assert "data_source.WATERSHED names SUPERVOXELS" in err  # the in-place case: checked, never rewritten
    assert folder_bytes(sv) == before
    # OBJECTS is read, never written
    cfg = load(info["config"])
    cfg["data_source"]["WATERSHED"] = cfg["ingest_config"]["OBJECTS"].removeprefix("file://")
    objects_before = folder_bytes(cfg["ingest_config"]["OBJECTS"])
    assert pipeline.main(["--config", save(cfg, tmp_path / "obj.yml"), "--graph_id", graph_id + "-o",
                          "--from_segmentation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_source.WATERSHED:" in err[0] and "is the input ingest_config.OBJECTS" in err[0]
    assert folder_bytes(cfg["ingest_config"]["OBJECTS"]) == objects_before
    assert not open_table(graph_id + "-o").exists()


# 7, 9. volumes refused up front: channels, encodings; signed ids supported --------------------

def rewrite(url, dest, channels=None, data_type=None, encoding=None, values=None):
    """`url`'s volume at `dest` with another channel count, data type or encoding."""
    import numpy as np
    from cloudvolume import CloudVolume
    source = CloudVolume(url, progress=False)
    info = dict(source.info, scales=[dict(source.info["scales"][0])])
    data = source[:, :, :]
    if channels:
        info["num_channels"] = channels
        data = np.repeat(data[..., :1], channels, axis=3)
    if data_type:
        info["data_type"] = data_type
        data = values(data) if values else data.astype(data_type)
    if encoding:
        info["scales"][0]["encoding"] = encoding
    copy = CloudVolume(dest, info=info, progress=False)
    copy.commit_info()
    if encoding != "jpeg":
        copy[:, :, :] = data
    return dest


@pytest.mark.parametrize("case", ["SUPERVOXELS 2 channels", "OBJECTS 2 channels", "WATERSHED 2 channels",
                                  "WATERSHED jpeg"])
def test_volumes_of_the_wrong_shape_are_refused_before_anything_is_created(tmp_path, graph_id, capsys, case):
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=45, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    key = case.split()[0]
    dest = "file://" + str(tmp_path / "changed")
    if key in ("SUPERVOXELS", "OBJECTS"):
        cfg["ingest_config"][key] = rewrite(cfg["ingest_config"][key], dest, channels=2)
        message = f"ingest_config.{key}: {dest} "
    else:  # an existing WATERSHED with the right geometry
        run_ingest(info["config"], graph_id + "-first", "--from_segmentation")
        cfg["data_source"]["WATERSHED"] = rewrite(cfg["data_source"]["WATERSHED"], dest,
                                                  **({"channels": 2} if "channels" in case else {"encoding": "jpeg"}))
        message = f"data_source.WATERSHED: {dest} exists "
    edges = cfg["data_source"]["EDGES"] = "file://" + str(tmp_path / "new-edges")
    capsys.readouterr()
    assert pipeline.main(["--config", save(cfg, tmp_path / "c.yml"), "--graph_id", graph_id,
                          "--from_segmentation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + message), err
    assert ("2 channel" in err[0]) if "channels" in case else ("stored as jpeg" in err[0])
    assert not open_table(graph_id).exists() and not os.path.exists(edges.removeprefix("file://"))


def test_signed_ids_with_negative_values_are_ingested(tmp_path, graph_id):
    import numpy as np
    from test_end_to_end import check_against_reference
    from test_segmentation import precomputed_config
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=46, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    for key in ("SUPERVOXELS", "OBJECTS"):
        cfg["ingest_config"][key] = rewrite(cfg["ingest_config"][key], "file://" + str(tmp_path / key.lower()),
                                            data_type="int64", values=lambda d: -d.astype(np.int64))
    cfg["ingest_config"]["SV_MAP"] = "file://" + str(tmp_path / "sv_map")
    config = save(cfg, tmp_path / "signed.yml")
    info["config"] = config
    _, counters, plan = run_ingest(config, graph_id, "--from_segmentation")
    assert counters["completion_proven"] == 1 and counters["layer2_svs"] > 0
    check_against_reference(precomputed_config(info, tmp_path), graph_id, plan.layout)
    originals = np.concatenate([np.load(tmp_path / "sv_map" / n) for n in os.listdir(tmp_path / "sv_map")])
    assert len(originals) == counters["layer2_svs"] and (originals.view(np.int64) < 0).all()


@pytest.mark.parametrize("option, message", [
    ("--runner=PortableRunner", r"--runner=PortableRunner: needs --job_endpoint"),
    ("--runner=SparkRunner", r"--runner=SparkRunner: cannot run a job here \(RuntimeError: Unable to fetch remote "
                             r"job server jar .* stage the jar at"),
    ("--runner=PrismRunner", r"--runner=PrismRunner: cannot run a job here"),
    ("--runner=InteractiveRunner", r"--runner=InteractiveRunner: runs pipelines in a notebook"),
    ("--runner=NoSuchRunner", r"--runner=NoSuchRunner: unknown runner \(known: DataflowRunner"),
    ("--direct_num_workers=-1", r"--direct_num_workers: must be >= 0"),
])
def test_runners_that_cannot_run_here_are_refused_before_the_table(tmp_path, graph_id, capsys, option, message):
    """(This machine reaches no Maven or GitHub: Spark's job server jar and Prism's binary
    cannot be fetched, as on many clusters without internet access.)"""
    import re
    a = raw_data(tmp_path, "a", 47, 0.0)
    capsys.readouterr()
    assert pipeline.main(["--config", a["config"], "--graph_id", graph_id, "--raw", option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match("error: " + message, err[0]), err
    assert not open_table(graph_id).exists()
    assert not any(os.path.exists(p.removeprefix("file://")) for p in outputs_of(a["config"]))


# 10. messages that name what failed ---------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    import subprocess
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_names_the_key_and_the_file(tmp_path, graph_id, capsys, tiny_disk):
    a = raw_data(tmp_path, "a", 48, 0.0)
    cfg = load(a["config"])
    cfg["data_source"]["EDGES"] = "file://" + str(tiny_disk / "edges")
    capsys.readouterr()
    assert pipeline.main(["--config", save(cfg, tmp_path / "tiny.yml"), "--graph_id", graph_id, "--raw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: data_source.EDGES: file://{tiny_disk}/edges/edges_"), err
    assert "could not be written (OSError: [Errno 28] No space left on device)" in err[0], err
    assert "partially written" in err[1]
    assert not [n for n in os.listdir(tiny_disk / "edges") if ".tmp-" in n]  # no partial file left
    for name in os.listdir(tiny_disk / "edges"):  # what is there is whole
        assert os.path.getsize(tiny_disk / "edges" / name) > 0


def test_a_restart_reports_the_whole_graphs_totals(tmp_path, graph_id, capsys):
    info = generate(str(tmp_path / "d"), SyntheticSpec(chunks=(4, 3, 2), svs_per_chunk=20, seed=49))
    _, clean, _ = run_ingest(info["config"], graph_id + "-clean")
    ckpt = "file://" + str(tmp_path / "ckpt")
    with pytest.raises(Exception, match="injected failure at layer 4"):
        run_ingest(info["config"], graph_id, f"--checkpoint_dir={ckpt}", "--fail_at_layer=4")
    capsys.readouterr()
    assert pipeline.main(["--config", info["config"], "--graph_id", graph_id, f"--checkpoint_dir={ckpt}",
                          "--start_layer=4", "--if_exists=continue"]) == 0
    out = capsys.readouterr().out
    assert f"SVs {clean['layer2_svs']} (0 in the chunks built by this run, the rest carried from the checkpoint)" in out, out


# 8. storage that never answers -----------------------------------------------------------------

@pytest.fixture
def silent_http(tmp_path):
    """An HTTP server on loopback that serves `info` files from a folder and never answers
    anything else (or nothing at all, for `serve_info=False`): it accepts, reads, and waits."""
    import http.server
    import threading
    release = threading.Event()
    state = {"root": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            if state["root"] and path.endswith("/info"):
                local = os.path.join(state["root"], path.lstrip("/"))
                if os.path.exists(local):
                    with open(local, "rb") as fh:
                        body = fh.read()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
            release.wait(120)  # never answers while the test runs

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def short_deadline(monkeypatch):
    from beam_ingest import deadline
    monkeypatch.setattr(deadline, "STORAGE_DEADLINE_S", 3.0)
    return 3.0


@pytest.mark.parametrize("key", ["SUPERVOXELS", "WATERSHED"])
def test_storage_that_never_answers_the_launcher_ends_the_run(tmp_path, graph_id, capsys, silent_http,
                                                              short_deadline, key):
    import time
    _, url = silent_http
    if key == "SUPERVOXELS":
        info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=50, chunks=(2, 2, 2)))
        section, args = "ingest_config", ["--from_segmentation"]
    else:  # precomputed input whose watershed (the grid's bounds) never answers
        info = generate(str(tmp_path / "pre"), SyntheticSpec(chunks=(2, 2, 2), svs_per_chunk=10, seed=51))
        section, args = "data_source", []
    cfg = load(info["config"])
    cfg[section][key] = f"{url}/{key.lower()}"
    capsys.readouterr()
    start = time.time()
    assert pipeline.main(["--config", save(cfg, tmp_path / "silent.yml"), "--graph_id", graph_id] + args) == 2
    assert time.time() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{url}/{key.lower()}/info: no answer in 3 s" in err[0], err
    assert not open_table(graph_id).exists()


def test_storage_that_stops_answering_the_workers_ends_the_run(tmp_path, graph_id, capsys, silent_http,
                                                               short_deadline):
    import time
    state, url = silent_http
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=52, chunks=(2, 2, 2)))
    state["root"] = str(tmp_path / "seg")
    cfg = load(info["config"])
    cfg["ingest_config"]["SUPERVOXELS"] = f"{url}/supervoxels"  # its info answers, its chunks never do
    capsys.readouterr()
    start = time.time()
    assert pipeline.main(["--config", save(cfg, tmp_path / "silent.yml"), "--graph_id", graph_id,
                          "--from_segmentation"]) == 2
    assert time.time() - start < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert f"ingest_config.SUPERVOXELS: {url}/supervoxels cannot be read for layer-2 chunk" in err[0], err
    assert "no answer in 3 s" in err[0] and "partially written" in err[1]


# verify: the files too -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["--raw", "--from_segmentation"])
def test_verify_finds_files_another_run_left(tmp_path, graph_id, capsys, mode):
    """A table built before this fix could have kept an earlier graph's files: `verify` with
    the run's input mode compares each sampled chunk's files with what its inputs give."""
    from beam_ingest.cli import main as cli
    if mode == "--raw":
        a, b = raw_data(tmp_path, "a", 53, 0.0), raw_data(tmp_path, "b", 54, 0.0)
    else:
        a = generate_segmentation(str(tmp_path / "a"), SegmentationSpec(seed=55, chunks=(2, 2, 2)))
        b = generate_segmentation(str(tmp_path / "b"), SegmentationSpec(seed=56, chunks=(2, 2, 2)))
    run_ingest(a["config"], graph_id + "-a", mode)
    run_ingest(b["config"], graph_id, mode)
    args = ["verify", "--config", b["config"], "--graph_id", graph_id, "--sample", "20", mode]
    capsys.readouterr()
    assert cli(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "the EDGES/COMPONENTS files of" in out and "OK: the table matches" in out
    edges_a, edges_b = (outputs_of(x["config"])[0].removeprefix("file://") for x in (a, b))
    name = sorted(set(os.listdir(edges_a)) & set(os.listdir(edges_b)))[0]
    with open(os.path.join(edges_a, name), "rb") as src, open(os.path.join(edges_b, name), "wb") as dst:
        dst.write(src.read())  # what an earlier version kept: the other graph's file
    assert cli(args) == 1
    out = capsys.readouterr().out
    assert f"EDGES file file://{edges_b}/{name}" in out and "is not what the inputs give" in out, out


def test_cv_mip_above_0_with_a_written_watershed_is_refused_up_front(tmp_path, graph_id, capsys):
    """The WATERSHED the ingest writes has a single scale; workers and PyChunkedGraph would open
    it at CV_MIP and fail (a second scale added to the inputs makes CV_MIP=1 valid for them)."""
    from cloudvolume import CloudVolume
    info = generate_segmentation(str(tmp_path / "seg"), SegmentationSpec(seed=57, chunks=(2, 2, 2)))
    cfg = load(info["config"])
    for key in ("SUPERVOXELS", "OBJECTS", "AFFINITIES"):
        cv = CloudVolume(cfg["ingest_config"][key], progress=False)
        cv.add_scale([2, 2, 1])
        cv.commit_info()
    cfg["data_source"]["CV_MIP"] = 1
    capsys.readouterr()
    assert pipeline.main(["--config", save(cfg, tmp_path / "mip1.yml"), "--graph_id", graph_id,
                          "--from_segmentation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data_source.CV_MIP: 1 with --from_segmentation"), err
    assert not open_table(graph_id).exists()
    assert not os.path.exists(cfg["data_source"]["WATERSHED"].removeprefix("file://"))
